/*
 * irq.c - `irqtest`: device interrupts through the 8259 PICs, at CPL3.
 *
 * The rest of the kernel polls with IF=0.  This command remaps the PICs to
 * vectors 0x20-0x2f, installs DPL3 gates for them (so, like exceptions, the
 * handlers run at CPL3 on the current stack), unmasks one device's IRQ at a
 * time, makes that device interrupt, counts what arrives, and leaves again
 * with IF=0 and every PIC input masked.
 *
 *   UART (IRQ 4): the VMM drives the line with KVM_IRQ_LINE (level =
 *   interrupt pending AND MCR.OUT2); we enable IER bit 0 (received data).
 *   virtio-blk (IRQ from virtio_mmio.device=...:<irq>): the VMM raises an
 *   edge through an irqfd when it adds used buffers and the driver did not
 *   set VIRTQ_AVAIL_F_NO_INTERRUPT; the handler reads InterruptStatus and
 *   writes it back to InterruptACK.
 *
 * IF cannot be changed at CPL3 here: PVM runs ring 3 with IOPL=0, so
 * cli/sti #GP and popfq/iretq leave IF alone (../shared/PLATFORM.md).
 * Setting and clearing IF, and the handlers' return, therefore end in an
 * iretq done in ring 0: `int3` through a #BP gate that leads to ring 0 for
 * the duration of the command (isr.S: irq_ring0_iret, irq_set_if).
 */
#include "irq.h"
#include "console.h"
#include "gdt.h"
#include "idt.h"
#include "guest.h"
#include "io.h"
#include "virtio_blk.h"
#include "virtio_mmio.h"

#define PIC1_CMD    0x20
#define PIC1_DATA   0x21
#define PIC2_CMD    0xa0
#define PIC2_DATA   0xa1
#define PIC_EOI     0x20
#define IRQ_VECTOR  0x20        /* IRQ n -> vector 0x20 + n */
#define IRQ_CASCADE 2
#define IRQ_UART    4
#define NR_IRQS     16
#define MASK_ALL    0xffff

#define COM1        0x3f8
#define UART_RBR    0
#define UART_IER    1
#define UART_MCR    4
#define UART_LSR    5
#define IER_RX_DATA 0x01
#define MCR_OUT2    0x08
#define LSR_DR      0x01

#define LAPIC_BASE      0xfee00000ull   /* the default; identity-mapped */
#define LAPIC_SVR       0xf0
#define LAPIC_LVT0      0x350
#define SVR_APIC_ENABLE 0x100
#define LVT_MASKED      0x10000
#define LVT_MODE_MASK   0x700
#define LVT_MODE_EXTINT 0x700

#define WAIT_MS         5000    /* how long to wait for one interrupt */
#define WAIT_CYCLES_NO_TSC (5000ull * 3000000)  /* 5 s at 3 GHz */
#define IDLE_SLICE_US   1000
#define DISK_ROUNDS     3       /* each round must bring its own interrupt */
#define DISK_READS      4       /* one-sector reads per round, all in flight */

#define RFLAGS_IF   0x200
#define VEC_BP      3



extern u8 tss[];                                /* boot.S: RSP0 at offset 4 */
extern const u64 isr_table[32];                 /* isr.S: exception stubs */
extern const u64 irq_stub_table[NR_IRQS];       /* isr.S: IRQ stubs */
extern const u8 irq_ring0_iret[];               /* isr.S: ring-0 iretq */
void irq_set_if(u64 if_bit);                    /* isr.S */
void irq_dispatch(u64 irq);                     /* called by isr.S */

static volatile u64 irq_count[NR_IRQS];
static u64 irq_virtio_base[NR_IRQS];    /* virtio-mmio registers to ack, or 0 */
static u8 ring0_stack[4096] __attribute__((aligned(16)));

/* Runs at CPL3 with IF=0; returns through irq_ring0_iret. */
void irq_dispatch(u64 irq)
{
    if (irq >= NR_IRQS)
        return;
    irq_count[irq]++;
    u64 base = irq_virtio_base[irq];
    if (base) {
        u32 status = virtio_mmio_read(base, VIRTIO_MMIO_INTERRUPT_STATUS);
        if (status)
            virtio_mmio_write(base, VIRTIO_MMIO_INTERRUPT_ACK, status);
    }
    /* The UART needs no ack here: its line is a level that drops when the
       waiting loop reads RBR, and the PIC input is edge-triggered. */
    if (irq >= 8)
        outb(PIC2_CMD, PIC_EOI);
    outb(PIC1_CMD, PIC_EOI);
}

/* ---- IF, gates, PICs -------------------------------------------------- */

static void irq_enable(void)
{
    irq_set_if(RFLAGS_IF);
}

static void irq_disable(void)
{
    irq_set_if(0);
}

/* IRQ gates, and the #BP gate to ring 0 (on) or back to its fault stub. */
static void gates_install(bool on)
{
    if (on) {
        u64 rsp0 = (u64)(uintptr_t)(ring0_stack + sizeof(ring0_stack));
        __builtin_memcpy(tss + 4, &rsp0, sizeof(rsp0));     /* TSS.RSP0 */
        for (unsigned i = 0; i < NR_IRQS; i++)
            idt[IRQ_VECTOR + i] = idt_gate(irq_stub_table[i], SEL_UCODE, 0);
        idt[VEC_BP] = idt_gate((u64)(uintptr_t)irq_ring0_iret, SEL_KCODE, 0);
    } else {
        idt[VEC_BP] = idt_gate(isr_table[VEC_BP], SEL_UCODE, 0);
    }
}

static void pic_set_mask(u16 mask)      /* bit n set: IRQ n masked */
{
    outb(PIC1_DATA, (u8)mask);
    outb(PIC2_DATA, (u8)(mask >> 8));
}

static void pic_init(void)
{
    outb(PIC1_CMD, 0x11);               /* ICW1: edge, cascade, ICW4 follows */
    outb(PIC2_CMD, 0x11);
    outb(PIC1_DATA, IRQ_VECTOR);        /* ICW2: vector base */
    outb(PIC2_DATA, IRQ_VECTOR + 8);
    outb(PIC1_DATA, 1 << IRQ_CASCADE);  /* ICW3: slave on IRQ 2 */
    outb(PIC2_DATA, IRQ_CASCADE);       /*       slave identity 2 */
    outb(PIC1_DATA, 0x01);              /* ICW4: 8086 mode, normal EOI */
    outb(PIC2_DATA, 0x01);
    pic_set_mask(MASK_ALL);
}

/* Unmask only `irq` (and the cascade when it is on the slave). */
static void pic_only(unsigned irq)
{
    u16 open = (u16)(1u << irq);
    if (irq >= 8)
        open |= 1u << IRQ_CASCADE;
    pic_set_mask((u16)~open);
}

/*
 * The PICs reach the CPU through the local APIC's LINT0, which must be
 * unmasked in ExtINT mode ("virtual wire"), normally the firmware's job.
 * KVM starts the boot CPU that way (our VMM); QEMU's microvm leaves LINT0
 * masked and the APIC software-disabled, where LVT writes cannot unmask.
 * So enable it and set LINT0 if needed, and put both back afterwards.
 */
static u32 saved_svr, saved_lvt0;
static bool lapic_changed;

static u32 lapic_read(u32 off)
{
    return *(volatile u32 *)(uintptr_t)(LAPIC_BASE + off);
}

static void lapic_write(u32 off, u32 val)
{
    *(volatile u32 *)(uintptr_t)(LAPIC_BASE + off) = val;
}

static void lapic_virtual_wire(bool on)
{
    if (on) {
        saved_lvt0 = lapic_read(LAPIC_LVT0);
        lapic_changed = (saved_lvt0 & (LVT_MASKED | LVT_MODE_MASK)) != LVT_MODE_EXTINT;
        if (!lapic_changed)
            return;
        saved_svr = lapic_read(LAPIC_SVR);
        lapic_write(LAPIC_SVR, saved_svr | SVR_APIC_ENABLE);
        lapic_write(LAPIC_LVT0, LVT_MODE_EXTINT);
    } else if (lapic_changed) {
        lapic_write(LAPIC_LVT0, saved_lvt0);
        lapic_write(LAPIC_SVR, saved_svr);
        lapic_changed = false;
    }
}

/* ---- waiting ---------------------------------------------------------- */

/* WAIT_MS from now (a guess at the TSC rate when it is unknown: the idle
   port is a no-op elsewhere, so idle slices cannot measure time). */
struct deadline {
    u64 start, cycles;
};

static void deadline_start(struct deadline *d)
{
    d->start = rdtsc();
    d->cycles = tsc_khz ? (u64)WAIT_MS * tsc_khz : WAIT_CYCLES_NO_TSC;
}

/* Idle one slice (the VMM ends it early on host input); false once the
   time is up. */
static bool deadline_wait(struct deadline *d)
{
    if (rdtsc() - d->start >= d->cycles)
        return false;
    idle_us(IDLE_SLICE_US);
    return true;
}

/* ---- UART ------------------------------------------------------------- */

static bool uart_has_data(void)
{
    return inb(COM1 + UART_LSR) & LSR_DR;
}

static void test_uart(void)
{
    struct deadline dl;
    bool done = false;

    irq_count[IRQ_UART] = 0;
    /* Input typed ahead (say `printf 'irqtest\nexit 0\n' | vmm run`)
       raises the interrupt as soon as IER is set, and is left for the
       shell; otherwise the key typed now is consumed. */
    bool typed_ahead = uart_has_data();
    console_puts("irqtest: type a key\n");
    console_flush();            /* only RX interrupts are enabled: THR polls */
    pic_only(IRQ_UART);
    outb(COM1 + UART_MCR, inb(COM1 + UART_MCR) | MCR_OUT2);
    outb(COM1 + UART_IER, IER_RX_DATA);
    irq_enable();
    deadline_start(&dl);
    do {
        if (!irq_count[IRQ_UART])
            continue;
        if (typed_ahead) {
            done = true;
        } else if (uart_has_data()) {
            /* An LF left over from a CR LF line end is no key. */
            done = inb(COM1 + UART_RBR) != '\n';
        }
    } while (!done && deadline_wait(&dl));
    irq_disable();
    outb(COM1 + UART_IER, 0);
    pic_set_mask(MASK_ALL);

    u64 n = irq_count[IRQ_UART];
    if (done)
        kprintf("irqtest: irq %u (uart) delivered %lu\n", IRQ_UART, n);
    else if (n)
        kprintf("irqtest: irq %u (uart) delivered %lu, but no key within %u s\n",
                IRQ_UART, n, WAIT_MS / 1000);
    else
        kprintf("irqtest: irq %u (uart) NOT delivered (no interrupt within %u s)\n",
                IRQ_UART, WAIT_MS / 1000);
}

/* ---- virtio-blk ------------------------------------------------------- */

static const struct virtio_mmio_device *device_at(u64 base)
{
    for (unsigned i = 0; i < virtio_mmio_count; i++)
        if (virtio_mmio_devices[i].base == base)
            return &virtio_mmio_devices[i];
    return NULL;
}

/* One batch of reads; true once it brought at least one interrupt. */
static bool disk_round(unsigned disk, unsigned irq, int *err)
{
    static u8 buf[DISK_READS][BLK_SECTOR_SIZE] __attribute__((aligned(BLK_SECTOR_SIZE)));
    const struct blk_info *info = blk_get_info(disk);
    struct blk_io ios[DISK_READS];
    struct deadline dl;
    u64 before = irq_count[irq];

    for (unsigned i = 0; i < DISK_READS; i++)
        ios[i] = (struct blk_io){ .type = VIRTIO_BLK_T_IN,
                                  .sector = info->capacity > i ? i : 0,
                                  .buf = buf[i], .len = BLK_SECTOR_SIZE };
    /* The driver polls the used ring as usual; interrupts arrive meanwhile. */
    *err = blk_run(disk, ios, DISK_READS, DISK_READS);
    deadline_start(&dl);
    while (irq_count[irq] == before && deadline_wait(&dl))
        ;
    return irq_count[irq] != before;
}

static void test_disk(unsigned disk)
{
    const struct blk_info *info = blk_get_info(disk);
    const struct virtio_mmio_device *dev = device_at(info->mmio_base);

    if (!dev || dev->irq >= NR_IRQS || dev->irq == IRQ_CASCADE) {
        kprintf("irqtest: disk %u: irq %u is not a PIC input, skipped\n", disk,
                dev ? dev->irq : 0);
        return;
    }
    unsigned irq = dev->irq, rounds = 0;
    u64 base = info->mmio_base;
    int err = BLK_OK;

    /* Start from a clear InterruptStatus: the VMM raises a new edge only
       when a bit goes from 0 to 1. */
    u32 stale = virtio_mmio_read(base, VIRTIO_MMIO_INTERRUPT_STATUS);
    if (stale)
        virtio_mmio_write(base, VIRTIO_MMIO_INTERRUPT_ACK, stale);
    if (!blk_set_interrupts(disk, true)) {
        kprintf("irqtest: disk %u: not working, skipped\n", disk);
        return;
    }
    irq_count[irq] = 0;
    irq_virtio_base[irq] = base;
    pic_only(irq);
    irq_enable();
    /* Several rounds: after the first, an interrupt also proves that the
       handler's return gave the interrupted code IF=1 back. */
    while (rounds < DISK_ROUNDS && disk_round(disk, irq, &err) && !err)
        rounds++;
    irq_disable();
    blk_set_interrupts(disk, false);
    pic_set_mask(MASK_ALL);
    irq_virtio_base[irq] = 0;

    u64 n = irq_count[irq];
    if (err)
        kprintf("irqtest: disk %u: reads failed: %s\n", disk, blk_strerror(err));
    if (rounds == DISK_ROUNDS)
        kprintf("irqtest: irq %u (virtio disk %u) delivered %lu\n", irq, disk, n);
    else
        kprintf("irqtest: irq %u (virtio disk %u) NOT delivered (%lu in %u of %u rounds)\n",
                irq, disk, n, rounds, DISK_ROUNDS);
}

/* ---- the command ------------------------------------------------------ */

void cmd_irqtest(int argc, char **argv)
{
    (void)argc, (void)argv;

    gates_install(true);
    irq_disable();
    lapic_virtual_wire(true);
    pic_init();
    test_uart();
    for (unsigned disk = 0; disk < blk_count(); disk++)
        test_disk(disk);
    irq_disable();
    pic_set_mask(MASK_ALL);
    outb(COM1 + UART_IER, 0);
    lapic_virtual_wire(false);
    gates_install(false);
    console_puts("irqtest: done\n");
}

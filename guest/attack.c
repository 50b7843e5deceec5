/*
 * attack.c - a hostile guest on demand: shell commands that do what a
 * malicious kernel might, so tests can check the VMM stays bounded and alive.
 *
 *   mmiostorm N [STRIDE [BASE]]  read N unbacked MMIO addresses, one per STRIDE
 *   piostorm [SIZE]              read and write every port but the exit device's
 *   faultrec ADDR [FILL]         report a fault record at any address
 *   iostorm N                    N exits, round robin over every device and gaps
 *   cpuidsweep                   CPUID over dense and sampled leaf ranges
 * (attack_virtio.c: vq, vqcycle, vqctl and cfgsweep, a hostile virtio driver)
 */
#include "attack.h"
#include "console.h"
#include "guest.h"
#include "alloc.h"
#include "io.h"
#include "lib.h"
#include "virtio_mmio.h"

#define FOUR_GIB            ((u64)1 << 32)  /* boot.S identity-maps 0..4 GiB */
#define MMIO_HOLE_START     0xc0000000ull   /* the VMM's 32-bit MMIO hole: 3-4 GiB */
#define STORM_STRIDE        8

/* The exit device: power off, fault report, idle.  Touching them would end
   the storm (and the VM), so the port sweep steps over them. */
#define EXIT_PORTS_FIRST    0xf4
#define EXIT_PORTS_LAST     0xff

static void print_cycles(u64 cycles, u64 n)
{
    kprintf(" in %lu cycles", cycles);
    if (tsc_khz && n) {
        u64 ns = cycles <= UINT64_MAX / 1000000 ? cycles * 1000000 / tsc_khz
                                                : cycles / tsc_khz * 1000000;
        kprintf(" (%lu ns each)", ns / n);
    }
    console_putc('\n');
}

void cmd_mmiostorm(int argc, char **argv)
{
    u64 n, stride = STORM_STRIDE, base = MMIO_HOLE_START;

    if (argc < 2 || argc > 4 || !parse_uint_full(argv[1], &n) ||
        (argc > 2 && !parse_uint_full(argv[2], &stride)) ||
        (argc > 3 && !parse_uint_full(argv[3], &base)) ||
        stride < 4 || stride > FOUR_GIB || base >= FOUR_GIB ||
        n > (FOUR_GIB - base) / stride) {
        console_puts("usage: mmiostorm N [STRIDE [BASE]] (stride >= 4, all below 4 GiB)\n");
        return;
    }
    u64 all_ones = 0;
    u64 t0 = rdtsc();
    for (u64 i = 0; i < n; i++) {
        u32 v = *(volatile u32 *)(uintptr_t)(base + i * stride);
        all_ones += v == 0xffffffffu;
    }
    u64 cycles = rdtsc() - t0;
    kprintf("mmiostorm: %lu reads at 0x%lx-0x%lx, %lu all ones,", n, base,
            n ? base + (n - 1) * stride : base, all_ones);
    print_cycles(cycles, n);
}

static u32 port_in(u16 port, u64 size)
{
    if (size == 1)
        return inb(port);
    if (size == 2) {
        u16 v;
        __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port) : "memory");
        return v;
    }
    return inl(port);
}

static void port_out(u16 port, u64 size, u32 v)
{
    if (size == 1)
        outb(port, (u8)v);
    else if (size == 2)
        __asm__ volatile("outw %0, %1" : : "a"((u16)v), "Nd"(port) : "memory");
    else
        outl(port, v);
}

void cmd_piostorm(int argc, char **argv)
{
    u64 ports = 0, all_ones = 0, size = 1;

    if (argc > 2 || (argc == 2 && (!parse_uint_full(argv[1], &size) ||
                                   (size != 1 && size != 2 && size != 4)))) {
        console_puts("usage: piostorm [SIZE] (1, 2 or 4)\n");
        return;
    }
    u32 ones = size == 4 ? 0xffffffffu : (1u << (8 * size)) - 1;
    console_flush();
    u64 t0 = rdtsc();
    /* Wide accesses stop at 0xffff: a word at 0xffff would need bit 0x10000
       of the TSS I/O bitmap (ring 3 gets #GP there, as on hardware). */
    for (u32 port = 0; port + size - 1 <= 0xffff; port++) {
        /* no access that touches a byte of the exit device's ports */
        if (port + size - 1 >= EXIT_PORTS_FIRST && port <= EXIT_PORTS_LAST)
            continue;
        all_ones += port_in((u16)port, size) == ones;
        /* garbage, COM1's registers included: the port's low byte in every byte */
        port_out((u16)port, size, (u8)port * 0x01010101u);
        ports++;
    }
    u64 cycles = rdtsc() - t0;
    uart_init();                        /* the sweep scribbled on COM1 too */
    kprintf("piostorm: %lu ports read and written", ports);
    if (size > 1)
        kprintf(" %lu bytes wide", size);
    kprintf(", %lu read as all ones,", all_ones);
    print_cycles(cycles, 2 * ports);
}

void cmd_faultrec(int argc, char **argv)
{
    u64 addr, fill = 0;

    if (argc < 2 || argc > 3 || !parse_uint_full(argv[1], &addr) || addr >= FOUR_GIB ||
        (argc == 3 && (!parse_uint_full(argv[2], &fill) || fill > 0xff))) {
        console_puts("usage: faultrec ADDR [FILL] (ADDR below 4 GiB, FILL a byte)\n");
        return;
    }
    /* FILL: first write 64 bytes of it at ADDR (a garbage record), if RAM. */
    if (argc == 3 && addr + 64 <= alloc_high_mark())
        memset((void *)(uintptr_t)addr, (int)fill, 64);
    console_flush();
    outl(PORT_FAULT, (u32)addr);
    console_puts("faultrec: still running (the VMM ignored the report)\n");
}

/* ---- iostorm: every kind of exit, over and over ------------------------ */

enum target_kind { PIO_READ, PIO_WRITE, MMIO_READ, MMIO_WRITE };

struct target {
    u8 kind;
    u8 size;                            /* 1, 2, 4 (PIO), 1..8 (MMIO) */
    u64 addr;                           /* port or guest physical address */
    u64 value;                          /* what a write writes */
};

#define STORM_TARGETS_MAX (24 + 7 * VIRTIO_MMIO_MAX_DEVICES)

/* Reads that change nothing and writes whose effect is nil: the guest must
   still work afterwards (no COM1 RBR read: it would eat the shell's input). */
static unsigned storm_targets(struct target *t)
{
    static const struct target fixed[] = {
        { PIO_READ, 1, 0x3fd, 0 },          /* COM1 LSR */
        { PIO_READ, 1, 0x3fa, 0 },          /* COM1 IIR */
        { PIO_READ, 4, 0x3fe, 0 },          /* COM1 MSR, then SCR and past COM1 */
        { PIO_READ, 1, 0x64, 0 },           /* i8042 status */
        { PIO_READ, 2, 0x71, 0 },           /* CMOS data */
        { PIO_READ, 1, 0x21, 0 },           /* PIC (in-kernel) */
        { PIO_READ, 1, 0x40, 0 },           /* PIT (in-kernel) */
        { PIO_READ, 4, 0xcf8, 0 },          /* no PCI here */
        { PIO_READ, 2, 0x510, 0 },          /* no fw_cfg here */
        { PIO_READ, 4, 0xfffc, 0 },         /* the last port, 4 wide */
        { PIO_WRITE, 1, 0x80, 0 },          /* POST: ignored */
        { PIO_WRITE, 2, 0x1234, 0xbeef },   /* nothing there */
        { PIO_WRITE, 4, 0xcfc, 0xffffffff },
        { PIO_WRITE, 1, 0x3ff, 0x5a },      /* COM1 scratch */
        { MMIO_READ, 4, 0xc0000000, 0 },    /* the hole, unclaimed */
        { MMIO_READ, 8, 0xcffffff8, 0 },    /* just below the devices */
        { MMIO_READ, 2, 0xfec00000, 0 },    /* IOAPIC (in-kernel) */
        { MMIO_READ, 4, 0xfee00030, 0 },    /* LAPIC version (in-kernel) */
        { MMIO_READ, 1, 0xffffffff, 0 },    /* the last byte below 4 GiB */
        { MMIO_WRITE, 4, 0xc0001000, 0x12345678 },
        { MMIO_WRITE, 8, 0xe0000000, 0xffffffffffffffffull },
    };
    unsigned n = 0;
    for (; n < sizeof(fixed) / sizeof(fixed[0]); n++)
        t[n] = fixed[n];
    for (unsigned i = 0; i < virtio_mmio_count; i++) {
        u64 b = virtio_mmio_devices[i].base;
        t[n++] = (struct target){ MMIO_READ, 4, b + VIRTIO_MMIO_MAGIC_VALUE, 0 };
        t[n++] = (struct target){ MMIO_READ, 4, b + VIRTIO_MMIO_STATUS, 0 };
        t[n++] = (struct target){ MMIO_READ, 8, b + VIRTIO_MMIO_CONFIG, 0 };
        t[n++] = (struct target){ MMIO_READ, 1, b + 0x801, 0 };      /* past the config */
        t[n++] = (struct target){ MMIO_WRITE, 4, b + VIRTIO_MMIO_INTERRUPT_ACK, 0 };
        t[n++] = (struct target){ MMIO_WRITE, 4, b + 0x0f0, 0xffffffff };  /* reserved */
        t[n++] = (struct target){ MMIO_WRITE, 4, b + VIRTIO_MMIO_QUEUE_NOTIFY, 0 };  /* no new work */
    }
    return n;
}

static u64 storm_one(const struct target *t)
{
    volatile void *p = (volatile void *)(uintptr_t)t->addr;
    u16 port = (u16)t->addr;
    u32 v;

    switch (t->kind) {
    case PIO_READ:
        if (t->size == 1)
            return inb(port);
        if (t->size == 2) {
            u16 w;
            __asm__ volatile("inw %1, %0" : "=a"(w) : "Nd"(port) : "memory");
            return w;
        }
        return inl(port);
    case PIO_WRITE:
        v = (u32)t->value;
        if (t->size == 1)
            outb(port, (u8)v);
        else if (t->size == 2)
            __asm__ volatile("outw %0, %1" : : "a"((u16)v), "Nd"(port) : "memory");
        else
            outl(port, v);
        return 0;
    case MMIO_READ:
        switch (t->size) {
        case 1: return *(volatile u8 *)p;
        case 2: return *(volatile u16 *)p;
        case 4: return *(volatile u32 *)p;
        default: return *(volatile u64 *)p;
        }
    default:
        switch (t->size) {
        case 1: *(volatile u8 *)p = (u8)t->value; break;
        case 2: *(volatile u16 *)p = (u16)t->value; break;
        case 4: *(volatile u32 *)p = (u32)t->value; break;
        default: *(volatile u64 *)p = t->value; break;
        }
        return 0;
    }
}

void cmd_iostorm(int argc, char **argv)
{
    static struct target targets[STORM_TARGETS_MAX];
    u64 n;

    if (argc != 2 || !parse_uint_full(argv[1], &n)) {
        console_puts("usage: iostorm N\n");
        return;
    }
    unsigned count = storm_targets(targets);
    console_flush();
    u64 mix = 0;
    u64 t0 = rdtsc();
    for (u64 i = 0; i < n; i++)
        mix += storm_one(&targets[i % count]) != 0;
    u64 cycles = rdtsc() - t0;
    kprintf("iostorm: %lu accesses over %u targets (%lu non-zero),", n, count, mix);
    print_cycles(cycles, n);
}

/* ---- CPUID: every leaf in the ranges that mean something, samples between */

static u64 fnv(u64 h, u32 v)
{
    for (int i = 0; i < 4; i++, v >>= 8)
        h = (h ^ (v & 0xff)) * 0x100000001b3ull;
    return h;
}

static u64 cpuid_range(u32 first, u32 last, u32 step, u32 subleaves, u64 *hash)
{
    u64 n = 0;
    for (u64 leaf = first; leaf <= last; leaf += step) {
        for (u32 sub = 0; sub < subleaves; sub++) {
            u32 a, b, c, d;
            cpuid((u32)leaf, sub, &a, &b, &c, &d);
            *hash = fnv(fnv(fnv(fnv(*hash, a), b), c), d);
            n++;
        }
    }
    return n;
}

void cmd_cpuidsweep(int argc, char **argv)
{
    u64 hash = 0xcbf29ce484222325ull, n = 0;

    (void)argv;
    if (argc != 1) {
        console_puts("usage: cpuidsweep\n");
        return;
    }
    u32 a0, b0, c0, d0, a1, b1, c1, d1;
    cpuid(0, 0, &a0, &b0, &c0, &d0);
    u64 t0 = rdtsc();
    n += cpuid_range(0, 0x1ff, 1, 4, &hash);                    /* basic leaves, subleaves */
    n += cpuid_range(0x40000000, 0x400001ff, 1, 2, &hash);      /* hypervisor leaves */
    n += cpuid_range(0x80000000, 0x800001ff, 1, 2, &hash);      /* extended leaves */
    n += cpuid_range(0xc0000000, 0xc00000ff, 1, 1, &hash);      /* Centaur */
    n += cpuid_range(0x200, 0x40000010, 0x10001, 1, &hash);     /* the gaps, sampled */
    n += cpuid_range(0x40000200, 0xfffffff0, 0x100003, 1, &hash);
    u64 cycles = rdtsc() - t0;
    cpuid(0, 0, &a1, &b1, &c1, &d1);
    kprintf("cpuidsweep: %lu leaves, hash %016lx, leaf 0 %s,", n, hash,
            a0 == a1 && b0 == b1 && c0 == c1 && d0 == d1 ? "unchanged" : "CHANGED");
    print_cycles(cycles, n);
}

/* hostile: ring-0 attacks on the VMM, chosen by the command line:
 *   msr      rdmsr every index in the architectural, AMD, hypervisor and KVM
 *            ranges and a sample of the rest; write readable ones back with
 *            their own value, unreadable ones with 0 and with all ones.
 *            Every refusal must be a #GP in the guest, never a VMM failure.
 *            Prints "hostile: msr done ..." and powers off with status 0.
 *   strio    string I/O from ring 0 (ring 3 cannot: see PLATFORM.md): rep
 *            ins/outs of every width to a null port, an unclaimed port and
 *            COM1, rep movs/stos between RAM and the MMIO hole, rep ins/outs
 *            with the memory end in the hole. KVM hands
 *            the VMM exits with count > 1. Prints "hostile: strio done ...".
 *   smp      start the second vCPU (INIT, SIPI) in a real-mode loop of port
 *            exits, storm ports and MMIO from this one at the same time, then
 *            power off with the other still looping (run with 2 vCPUs).
 *            Prints "hostile: smp done ...".
 *   triple   a triple fault (the VMM must stop with its crash status).
 * Runs in emulated ring 0 (~1 us an instruction here): keep it short. */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define COM1 0x3f8
#define EXIT_PORT 0xf4

struct mb_info {
    u32 flags, mem_lower, mem_upper, boot_device, cmdline;
} __attribute__((packed));

struct idt_gate {
    u16 offset_low, selector;
    u8 zero, type;
    u16 offset_high;
} __attribute__((packed));

volatile u32 gp_count;
static struct idt_gate idt[256];

void gp_handler(void), other_0(void), other_6(void), other_8(void), other_14(void), other_255(void);
void triple_fault(void) __attribute__((noreturn));

static inline void outb(u16 port, u8 value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline void outl(u16 port, u32 value) { __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20)) /* LSR.THRE */
        ;
    outb(COM1, (u8)c);
}

static void puts(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            putc('\r');
        putc(*s);
    }
}

static void put_dec(u32 value)
{
    char buf[12];
    int i = 0;
    do {
        buf[i++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (i)
        putc(buf[--i]);
}

static void power_off(u32 status)
{
    outl(EXIT_PORT, status);
    for (;;)
        __asm__ volatile("hlt");
}

void unexpected(u32 vector) __attribute__((noreturn));
void unexpected(u32 vector)
{
    puts("hostile: unexpected exception ");
    put_dec(vector);
    puts("\n");
    power_off(3);
    __builtin_unreachable();
}

static void set_gate(unsigned vector, void (*handler)(void))
{
    u32 at = (u32)handler;
    u16 cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    idt[vector] = (struct idt_gate){ (u16)at, cs, 0, 0x8e, (u16)(at >> 16) };  /* present, DPL0, 32-bit interrupt gate */
}

static void load_idt(void)
{
    struct { u16 limit; u32 base; } __attribute__((packed)) ptr = { sizeof(idt) - 1, (u32)idt };
    for (unsigned v = 0; v < 256; v++)
        set_gate(v, other_255);
    set_gate(0, other_0);
    set_gate(6, other_6);
    set_gate(8, other_8);
    set_gate(13, gp_handler);
    set_gate(14, other_14);
    __asm__ volatile("lidt %0" : : "m"(ptr));
}

/* 1 if it read (the #GP handler skips the instruction and counts instead). */
static int rdmsr_safe(u32 index, u64 *value)
{
    u32 before = gp_count, lo = 0, hi = 0;
    __asm__ volatile("rdmsr" : "+a"(lo), "+d"(hi) : "c"(index) : "memory");
    *value = (u64)hi << 32 | lo;
    return gp_count == before;
}

static int wrmsr_safe(u32 index, u64 value)
{
    u32 before = gp_count;
    __asm__ volatile("wrmsr" : : "c"(index), "a"((u32)value), "d"((u32)(value >> 32)) : "memory");
    return gp_count == before;
}

static u32 probed, readable, writes_ok, writes_refused;

static void probe(u32 index)
{
    u64 value;
    probed++;
    if (rdmsr_safe(index, &value)) {
        readable++;
        if (wrmsr_safe(index, value))
            writes_ok++;
        else
            writes_refused++;
        return;
    }
    for (int i = 0; i < 2; i++) {
        if (wrmsr_safe(index, i ? ~0ull : 0))
            writes_ok++;
        else
            writes_refused++;
    }
}

static void probe_range(u32 first, u32 last, u32 step)
{
    for (u64 i = first; i <= last; i += step)
        probe((u32)i);
}

static u8 strbuf[8192];

static u32 count_byte(const u8 *p, u32 n, u8 value)
{
    u32 k = 0;
    for (u32 i = 0; i < n; i++)
        k += p[i] == value;
    return k;
}

static void string_io(void)
{
    u32 n;
    u8 *p;

    for (u32 i = 0; i < sizeof(strbuf); i++)
        strbuf[i] = 'S';
    /* out: 4096 bytes, 2048 words, 1024 dwords to the POST port; 64 bytes to COM1 */
    n = 4096, p = strbuf;
    __asm__ volatile("cld; rep outsb" : "+S"(p), "+c"(n) : "d"(0x80) : "memory");
    n = 2048, p = strbuf;
    __asm__ volatile("cld; rep outsw" : "+S"(p), "+c"(n) : "d"(0x80) : "memory");
    n = 1024, p = strbuf;
    __asm__ volatile("cld; rep outsl" : "+S"(p), "+c"(n) : "d"(0x1234) : "memory");
    puts("hostile: ");
    n = 64, p = strbuf;
    __asm__ volatile("cld; rep outsb" : "+S"(p), "+c"(n) : "d"(COM1) : "memory");
    puts("\n");
    /* in: from an unclaimed port every byte reads 0xff, at every width */
    u32 ones = 0;
    n = 8192, p = strbuf;
    __asm__ volatile("cld; rep insb" : "+D"(p), "+c"(n) : "d"(0x1234) : "memory");
    ones += count_byte(strbuf, 8192, 0xff);
    n = 4096, p = strbuf;
    __asm__ volatile("cld; rep insw" : "+D"(p), "+c"(n) : "d"(0x200) : "memory");
    ones += count_byte(strbuf, 8192, 0xff);
    n = 2048, p = strbuf;
    __asm__ volatile("cld; rep insl" : "+D"(p), "+c"(n) : "d"(0xcfc) : "memory");
    ones += count_byte(strbuf, 8192, 0xff);
    /* backwards (DF=1), ending at the buffer's start */
    n = 1024, p = strbuf + 1023;
    __asm__ volatile("std; rep insb; cld" : "+D"(p), "+c"(n) : "d"(0x1234) : "memory");
    /* MMIO: copy 4 KiB out of the hole, store 4 KiB into it, and copy hole to hole */
    for (u32 i = 0; i < sizeof(strbuf); i++)
        strbuf[i] = 0;
    n = 1024, p = strbuf;
    u8 *hole = (u8 *)0xc0000000;
    __asm__ volatile("cld; rep movsl" : "+D"(p), "+S"(hole), "+c"(n) : : "memory");
    u32 mmio_ones = count_byte(strbuf, 4096, 0xff);
    n = 1024, p = (u8 *)0xc0010000;
    __asm__ volatile("cld; rep stosl" : "+D"(p), "+c"(n) : "a"(0xdeadbeef) : "memory");
    n = 4096, p = (u8 *)0xc0020000, hole = (u8 *)0xc0030000;
    __asm__ volatile("cld; rep movsb" : "+D"(p), "+S"(hole), "+c"(n) : : "memory");
    /* port to MMIO and MMIO to port: both ends exits */
    n = 512, p = (u8 *)0xc0040000;
    __asm__ volatile("cld; rep insb" : "+D"(p), "+c"(n) : "d"(0x1234) : "memory");
    n = 512, p = (u8 *)0xc0050000;
    __asm__ volatile("cld; rep outsw" : "+S"(p), "+c"(n) : "d"(0x80) : "memory");
    puts("hostile: strio done, ");
    put_dec(ones);
    puts(" of 24576 port bytes and ");
    put_dec(mmio_ones);
    puts(" of 4096 MMIO bytes read as 0xff\n");
}

extern const char ap_start[], ap_end[];
#define AP_TRAMPOLINE 0x8000
#define AP_COUNTER ((volatile u32 *)0x9000)
#define LAPIC_SVR ((volatile u32 *)0xfee000f0)
#define LAPIC_ICR_LOW ((volatile u32 *)0xfee00300)
#define LAPIC_ICR_HIGH ((volatile u32 *)0xfee00310)

static void send_ipi(u32 apic_id, u32 command)
{
    *LAPIC_ICR_HIGH = apic_id << 24;
    *LAPIC_ICR_LOW = command;
}

static void two_vcpus(void)
{
    u8 *dst = (u8 *)AP_TRAMPOLINE;
    for (const char *p = ap_start; p < ap_end; p++)
        *dst++ = (u8)*p;
    *AP_COUNTER = 0;
    *LAPIC_SVR = 0x1ff;                         /* software-enabled, spurious vector 0xff */
    send_ipi(1, 0x4500);                        /* INIT */
    send_ipi(1, 0x4600 | (AP_TRAMPOLINE >> 12));  /* STARTUP */
    u32 bsp_rounds = 0, waited = 0;
    for (; bsp_rounds < 5000 || (*AP_COUNTER < 100 && waited < 2000000); bsp_rounds++, waited++) {
        (void)inb(COM1 + 5);
        outb(0x80, 0);
        (void)*(volatile u32 *)0xd0000000;      /* a virtio device's MagicValue, if any */
        (void)*(volatile u32 *)0xc0000000;      /* the hole */
    }
    u32 ap_rounds = *AP_COUNTER;
    puts("hostile: smp done, ");
    put_dec(bsp_rounds);
    puts(" rounds here, ");
    puts(ap_rounds >= 100 ? "at least 100" : "FEWER THAN 100");
    puts(" on the second vCPU\n");
}

static int has_word(const char *cmdline, const char *word)
{
    for (const char *p = cmdline; *p; p++) {
        if (p != cmdline && p[-1] != ' ')
            continue;
        const char *w = word, *q = p;
        while (*w && *q == *w)
            w++, q++;
        if (!*w && (*q == ' ' || !*q))
            return 1;
    }
    return 0;
}

void kmain(const struct mb_info *info)
{
    const char *cmdline = info->flags & (1 << 2) ? (const char *)info->cmdline : "";

    load_idt();
    puts("hostile: ready\n");
    if (has_word(cmdline, "triple")) {
        puts("hostile: triple fault\n");
        triple_fault();
    }
    if (has_word(cmdline, "smp"))
        two_vcpus();
    if (has_word(cmdline, "strio"))
        string_io();
    if (has_word(cmdline, "msr")) {
        probe_range(0, 0x1fff, 1);                      /* architectural */
        probe_range(0x40000000, 0x400000ff, 1);         /* Hyper-V synthetic */
        probe_range(0x4b564d00, 0x4b564dff, 1);         /* KVM paravirtual */
        probe_range(0xc0000000, 0xc0000fff, 1);         /* x86-64 */
        probe_range(0xc0010000, 0xc0011fff, 1);         /* AMD */
        probe_range(0x2000, 0xfffff000, 0x100007);      /* the rest, sampled */
        puts("hostile: msr done, ");
        put_dec(probed);
        puts(" indices, ");
        put_dec(readable);
        puts(" readable, ");
        put_dec(writes_ok);
        puts(" writes taken, ");
        put_dec(writes_refused);
        puts(" refused, ");
        put_dec(gp_count);
        puts(" #GP\n");
    }
    puts("hostile: done\n");
    power_off(0);
}

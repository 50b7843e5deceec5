/* A Multiboot test kernel: prints what the loader handed over on COM1 and
 * powers off through the isa-debug-exit port (0xf4) with the status given
 * as "exit=N" on its command line. Runs in (emulated) ring 0: keep it short. */
typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

#define COM1 0x3f8
#define EXIT_PORT 0xf4

struct mb_info {
    u32 flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    u32 syms[4];
    u32 mmap_length, mmap_addr, drives_length, drives_addr, config_table;
    u32 boot_loader_name;
} __attribute__((packed));

struct mb_module {
    u32 mod_start, mod_end, string, reserved;
} __attribute__((packed));

struct mb_mmap_entry {
    u32 size;
    u64 base_addr, length;
    u32 type;
} __attribute__((packed));

static inline void outb(unsigned short port, u8 value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline void outl(unsigned short port, u32 value) { __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port)); }
static inline u8 inb(unsigned short port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

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

static void put_hex(u64 value, int digits)
{
    puts("0x");
    for (int i = digits - 1; i >= 0; i--)
        putc("0123456789abcdef"[(value >> (i * 4)) & 0xf]);
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

/* "exit=N" anywhere in the command line, else 0 */
static u32 exit_status(const char *cmdline)
{
    for (const char *p = cmdline; *p; p++) {
        if ((p == cmdline || p[-1] == ' ') && p[0] == 'e' && p[1] == 'x' && p[2] == 'i' && p[3] == 't' && p[4] == '=') {
            u32 n = 0;
            for (p += 5; *p >= '0' && *p <= '9'; p++)
                n = n * 10 + (u32)(*p - '0');
            return n;
        }
    }
    return 0;
}

void kmain(u32 magic, const struct mb_info *info, u32 eflags)
{
    u32 cr0;
    __asm__ volatile("mov %%cr0, %0" : "=r"(cr0));
    puts("mbtest: magic ");
    put_hex(magic, 8);
    puts("\nmbtest: state pe=");
    put_dec(cr0 & 1);
    puts(" pg=");
    put_dec(cr0 >> 31);
    puts(" if=");
    put_dec((eflags >> 9) & 1);
    puts(" vm=");
    put_dec((eflags >> 17) & 1);
    puts("\n");
    if (magic != 0x2BADB002) {
        puts("mbtest: not loaded by a Multiboot loader\n");
        outl(EXIT_PORT, 99);
    }
    const char *cmdline = "";
    if (info->flags & (1 << 2)) {
        cmdline = (const char *)info->cmdline;
        puts("mbtest: cmdline \"");
        puts(cmdline);
        puts("\"\n");
    }
    if (info->flags & (1 << 0)) {
        puts("mbtest: mem_lower ");
        put_dec(info->mem_lower);
        puts(" KiB mem_upper ");
        put_dec(info->mem_upper);
        puts(" KiB\n");
    }
    if (info->flags & (1 << 6)) {
        u32 at = info->mmap_addr, end = info->mmap_addr + info->mmap_length;
        while (at < end) {
            const struct mb_mmap_entry *e = (const struct mb_mmap_entry *)at;
            puts("mbtest: mmap ");
            put_hex(e->base_addr, 16);
            puts(" len ");
            put_hex(e->length, 16);
            puts(" type ");
            put_dec(e->type);
            puts("\n");
            at += e->size + 4;
        }
    }
    if (info->flags & (1 << 3)) {
        const struct mb_module *mods = (const struct mb_module *)info->mods_addr;
        for (u32 i = 0; i < info->mods_count; i++) {
            puts("mbtest: module ");
            put_dec(i);
            puts(" size ");
            put_dec(mods[i].mod_end - mods[i].mod_start);
            puts(mods[i].mod_start & 0xfff ? " unaligned" : " page-aligned");
            puts(" first line \"");
            const char *data = (const char *)mods[i].mod_start;
            for (u32 n = 0; n < 64 && mods[i].mod_start + n < mods[i].mod_end && data[n] != '\n'; n++)
                putc(data[n]);
            puts("\"\n");
        }
    }
    if (info->flags & (1 << 9)) {
        puts("mbtest: boot loader \"");
        puts((const char *)info->boot_loader_name);
        puts("\"\n");
    }
    puts("mbtest: done\n");
    outl(EXIT_PORT, exit_status(cmdline));
    for (;;)
        __asm__ volatile("hlt");
}

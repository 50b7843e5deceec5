/* shell.c - the line-editing shell on COM1 (commands: see README.md). */
#include "attack.h"
#include "blk_shell.h"
#include "console_shell.h"
#include "count_shell.h"
#include "console.h"
#include "guest.h"
#include "io.h"
#include "irq.h"
#include "lib.h"
#include "start_info.h"
#include "virtio_mmio.h"

#define LINE_MAX    256         /* longer input is ignored (not echoed) */
#define ARGV_MAX    16
#define IDLE_US     10000       /* idle slice while waiting for input */

struct command {
    const char *name;
    const char *args;
    const char *help;
    void (*run)(int argc, char **argv);
};

static void cmd_help(int argc, char **argv);

/* ---- commands --------------------------------------------------------- */

static void cmd_echo(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (i > 1)
            console_putc(' ');
        console_puts(argv[i]);
    }
    console_putc('\n');
}

static void cmd_mem(int argc, char **argv)
{
    const struct boot_info *bi = &boot_info;
    u64 ram = 0;

    (void)argc, (void)argv;
    if (!bi->memmap_count) {
        console_puts("mem: no memory map in start_info\n");
        return;
    }
    u32 empty = 0;
    for (u32 i = 0; i < bi->memmap_count; i++) {
        const struct hvm_memmap_table_entry *e = &bi->memmap[i];
        if (!e->size) {
            empty++;                    /* e.g. qboot's trailing type-0 entry */
            continue;
        }
        kprintf("0x%016lx-0x%016lx type %u (%s)\n", e->addr,
                e->addr + e->size - 1, e->type, e820_type_name(e->type));
        if (e->type == 1)
            ram += e->size;
    }
    if (empty)
        kprintf("(%u empty entries skipped)\n", empty);
    if (bi->memmap_entries > bi->memmap_count)
        kprintf("(%u more entries not shown)\n",
                bi->memmap_entries - bi->memmap_count);
    kprintf("total RAM: %lu KiB (%lu MiB)\n", ram >> 10, ram >> 20);
}

static void cmd_cmdline(int argc, char **argv)
{
    (void)argc, (void)argv;
    kprintf("%s%s\n", boot_info.cmdline,
            boot_info.cmdline_truncated ? " [truncated]" : "");
    for (unsigned i = 0; i < virtio_mmio_count; i++) {
        const struct virtio_mmio_device *d = &virtio_mmio_devices[i];
        kprintf("virtio-mmio 0x%lx size 0x%lx irq %u", d->base, d->size, d->irq);
        if (d->id >= 0)
            kprintf(" id %ld", d->id);
        console_putc('\n');
    }
}

static void cmd_ticks(int argc, char **argv)
{
    u64 cycles = rdtsc() - boot_tsc;

    (void)argc, (void)argv;
    if (tsc_khz)
        kprintf("ticks: %lu ms since boot (%lu cycles, TSC %u kHz)\n",
                cycles / tsc_khz, cycles, tsc_khz);
    else
        kprintf("ticks: %lu cycles since boot (TSC frequency unknown)\n", cycles);
}

static void cmd_exit(int argc, char **argv)
{
    u64 status = 0;

    if (argc > 2 || (argc == 2 && (!parse_dec_full(argv[1], &status) || status > 127))) {
        console_puts("exit: status must be 0-127\n");
        return;
    }
    power_off((u8)status);
    console_puts("exit: still running (no exit device at port 0xf4?)\n");
}

static void cmd_fault(int argc, char **argv)
{
    const char *kind = argc > 1 ? argv[1] : "pf";

    if (argc > 2)
        kind = "";
    if (!strcmp(kind, "pf")) {
        /* above 4 GiB: not mapped by boot.S */
        __asm__ volatile("movq (%0), %%rax" : : "r"(0x500000000ull) : "rax", "memory");
    } else if (!strcmp(kind, "ud")) {
        __asm__ volatile("ud2");
    } else if (!strcmp(kind, "gp")) {
        /* non-canonical address */
        __asm__ volatile("movq (%0), %%rax" : : "r"(0x8000000000000000ull) : "rax", "memory");
    } else if (!strcmp(kind, "de")) {
        /* In asm: for C, gcc may fold 1/x into a compare, never dividing. */
        u32 zero = 0;
        __asm__ volatile("xorl %%edx, %%edx; movl $1, %%eax; divl %0" : : "r"(zero) : "eax", "edx");
    } else {
        console_puts("usage: fault [pf|ud|gp|de]\n");
        return;
    }
    console_puts("fault: no fault?\n");
}

static void cmd_triplefault(int argc, char **argv)
{
    (void)argc, (void)argv;
    /*
     * #UD with RSP unmapped: pushing the exception frame raises #PF, whose
     * push faults again (#DF), whose push faults again: triple fault.
     */
    __asm__ volatile("movabsq $0x700000000, %%rsp\n\tud2" : : : "memory");
    __builtin_unreachable();
}

static void cmd_spin(int argc, char **argv)
{
    (void)argc, (void)argv;
    console_flush();
    for (;;)
        __asm__ volatile("");
}

static void cmd_ioloop(int argc, char **argv)
{
    u64 n;

    if (argc != 2 || !parse_uint_full(argv[1], &n)) {
        console_puts("usage: ioloop N\n");
        return;
    }
    u64 t0 = rdtsc();
    for (u64 i = 0; i < n; i++)
        outb(PORT_POST, 0);
    u64 cycles = rdtsc() - t0;

    kprintf("ioloop: %lu writes in %lu cycles", n, cycles);
    if (tsc_khz && n) {
        u64 ns = cycles <= UINT64_MAX / 1000000 ? cycles * 1000000 / tsc_khz
                                                : cycles / tsc_khz * 1000000;
        kprintf(" (%lu ns per write)", ns / n);
    }
    console_putc('\n');
}

/* Print exactly N bytes (lines of 62 characters plus CR LF): the serial
   throughput benchmark measures them arriving at the host. */
static void cmd_serialbench(int argc, char **argv)
{
    u64 n;

    if (argc != 2 || !parse_uint_full(argv[1], &n)) {
        console_puts("usage: serialbench N\n");
        return;
    }
    char line[64];
    for (int i = 0; i < 62; i++)
        line[i] = (char)('!' + i);
    line[62] = '\r';
    line[63] = '\n';
    for (u64 done = 0; done < n;) {
        u64 chunk = n - done < sizeof(line) ? n - done : sizeof(line);
        uart_write_raw(line + (sizeof(line) - chunk), chunk);
        done += chunk;
    }
}

static const struct command commands[] = {
    { "help", "", "list commands", cmd_help },
    { "echo", "ARGS...", "print the arguments", cmd_echo },
    { "mem", "", "memory map from start_info", cmd_mem },
    { "cmdline", "", "command line and virtio-mmio devices", cmd_cmdline },
    { "ticks", "", "time since boot (TSC)", cmd_ticks },
    { "exit", "[N]", "power off with status N (0-127, default 0)", cmd_exit },
    { "fault", "[pf|ud|gp|de]", "raise a CPU exception (default pf)", cmd_fault },
    { "triplefault", "", "make exception delivery fail", cmd_triplefault },
    { "spin", "", "loop forever without VM exits", cmd_spin },
    { "count", "N [MS]", "print 1..N, one a line, MS ms apart (default 10)", cmd_count },
    { "ioloop", "N", "time N writes to port 0x80", cmd_ioloop },
    { "disks", "", "list virtio-blk disks", cmd_disks },
    { "ls", "[N]", "list the tar archive on disk N (default 0)", cmd_ls },
    { "cat", "[N:]PATH", "print a file from a disk's tar archive", cmd_cat },
    { "write", "[N:]PATH TEXT", "append file PATH holding TEXT to the archive", cmd_write },
    { "sync", "[N]", "flush disk N (default: all disks)", cmd_sync },
    { "rawwrite", "N SEC TEXT", "write TEXT into sector SEC of disk N, raw", cmd_rawwrite },
    { "blkbench", "[N] [MIB]", "disk benchmark: read, write, 4 KiB random reads", cmd_blkbench },
    { "irqtest", "", "check that UART and disk interrupts arrive (PIC, IF=1)", cmd_irqtest },
    { "serialbench", "N", "print N bytes on the serial console", cmd_serialbench },
    { "ports", "", "list virtio-console ports", cmd_ports },
    { "pipe", "IN OUT", "copy console port IN to port OUT until EOF", cmd_pipe },
    { "conwrite", "PORT TEXT", "write TEXT and a newline to a console port", cmd_conwrite },
    { "mmiostorm", "N [STRIDE [BASE]]", "read N unbacked MMIO addresses (attack)", cmd_mmiostorm },
    { "piostorm", "[SIZE]", "read and write every port but 0xf4-0xff, SIZE bytes wide (attack)", cmd_piostorm },
    { "faultrec", "ADDR [FILL]", "report a fault record at ADDR (attack)", cmd_faultrec },
    { "iostorm", "N", "N port and MMIO accesses over every device (attack)", cmd_iostorm },
    { "cpuidsweep", "", "CPUID over every leaf range (attack)", cmd_cpuidsweep },
    { "vq", "DEV ATTACK", "malformed requests to virtio device DEV (attack)", cmd_vq },
    { "vqcycle", "DEV N [ATTACK]", "N rounds of virtio set-up, request, reset (attack)", cmd_vqcycle },
    { "vqctl", "DEV", "garbage on a console's control queue (attack)", cmd_vqctl },
    { "cfgsweep", "DEV", "every offset and size of a virtio device's window (attack)", cmd_cfgsweep },
    { 0, 0, 0, 0 },
};

static void cmd_help(int argc, char **argv)
{
    (void)argc, (void)argv;
    for (const struct command *c = commands; c->name; c++) {
        char left[32];
        ksnprintf(left, sizeof(left), "%s%s%s", c->name, *c->args ? " " : "",
                  c->args);
        kprintf("%-20s %s\n", left, c->help);
    }
}

/* ---- line handling ---------------------------------------------------- */

static void run_line(char *line)
{
    char *argv[ARGV_MAX + 1];
    int argc = 0;
    char *p = line;

    while (*p) {
        while (is_space(*p))
            *p++ = '\0';
        if (!*p)
            break;
        if (argc == ARGV_MAX) {
            console_puts("too many arguments\n");
            return;
        }
        argv[argc++] = p;
        while (*p && !is_space(*p))
            p++;
    }
    argv[argc] = 0;
    if (!argc)
        return;
    for (const struct command *c = commands; c->name; c++) {
        if (!strcmp(argv[0], c->name)) {
            c->run(argc, argv);
            return;
        }
    }
    kprintf("%s: command not found\n", argv[0]);
}

static void erase(size_t n)
{
    while (n--)
        console_puts("\b \b");
}

enum esc_state { ESC_NONE, ESC_START, ESC_CSI, ESC_SS3 };

void shell_run(void)
{
    static char line[LINE_MAX + 1];
    size_t len = 0;
    enum esc_state esc = ESC_NONE;
    bool after_cr = false;

    console_puts("$ ");
    for (;;) {
        int c = uart_getc();
        if (c < 0) {
            /* Input drained: send the echo, poll once more, then idle. */
            if (!console_flush())
                idle_us(IDLE_US);
            continue;
        }

        /* ANSI escape sequences: ESC [ params/intermediates final, ESC O x */
        if (esc == ESC_START) {
            esc = c == '[' ? ESC_CSI : c == 'O' ? ESC_SS3 : ESC_NONE;
            continue;
        }
        if (esc == ESC_SS3) {
            esc = ESC_NONE;
            continue;
        }
        if (esc == ESC_CSI) {
            if (c >= 0x20 && c <= 0x3f)
                continue;               /* parameter / intermediate byte */
            esc = ESC_NONE;
            if (c >= 0x40 && c <= 0x7e)
                continue;               /* final byte */
            /* anything else aborts the sequence and is handled below */
        }

        bool crlf = after_cr && c == '\n';
        after_cr = c == '\r';
        if (crlf)
            continue;                   /* CR LF counts as one line end */

        switch (c) {
        case '\r':
        case '\n':
            console_putc('\n');
            line[len] = '\0';
            run_line(line);
            len = 0;
            console_puts("$ ");
            break;
        case 0x7f:                      /* DEL */
        case 0x08:                      /* BS */
            if (len) {
                len--;
                erase(1);
            }
            break;
        case 0x15:                      /* Ctrl-U: kill line */
            erase(len);
            len = 0;
            break;
        case 0x03:                      /* Ctrl-C: cancel line */
            console_puts("^C\n$ ");
            len = 0;
            break;
        case 0x1b:
            esc = ESC_START;
            break;
        case '\t':
            c = ' ';
            /* fall through */
        default:
            if (c >= 0x20 && c < 0x7f && len < LINE_MAX) {
                line[len++] = (char)c;
                console_putc((char)c);
            }
            break;
        }
    }
}

/*
 * attack.c - a hostile guest on demand: shell commands that do what a
 * malicious kernel might, so tests can check the VMM stays bounded and alive.
 *
 *   mmiostorm N [STRIDE [BASE]]  read N unbacked MMIO addresses, one per STRIDE
 *   piostorm                     read and write every port but the exit device's
 *   faultrec ADDR                report a fault record at any address
 */
#include "attack.h"
#include "console.h"
#include "guest.h"
#include "io.h"
#include "lib.h"

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

void cmd_piostorm(int argc, char **argv)
{
    u64 ports = 0, all_ones = 0;

    (void)argv;
    if (argc != 1) {
        console_puts("usage: piostorm\n");
        return;
    }
    console_flush();
    u64 t0 = rdtsc();
    for (u32 port = 0; port <= 0xffff; port++) {
        if (port >= EXIT_PORTS_FIRST && port <= EXIT_PORTS_LAST)
            continue;
        all_ones += inb((u16)port) == 0xff;
        outb((u16)port, (u8)port);      /* garbage, COM1's registers included */
        ports++;
    }
    u64 cycles = rdtsc() - t0;
    uart_init();                        /* the sweep scribbled on COM1 too */
    kprintf("piostorm: %lu ports read and written, %lu read as 0xff,", ports, all_ones);
    print_cycles(cycles, 2 * ports);
}

void cmd_faultrec(int argc, char **argv)
{
    u64 addr;

    if (argc != 2 || !parse_uint_full(argv[1], &addr) || addr >= FOUR_GIB) {
        console_puts("usage: faultrec ADDR (below 4 GiB)\n");
        return;
    }
    console_flush();
    outl(PORT_FAULT, (u32)addr);
    console_puts("faultrec: still running (the VMM ignored the report)\n");
}

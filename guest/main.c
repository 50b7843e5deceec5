/* main.c - ring-3 entry: boot info, TSC, then the shell. */
#include "console.h"
#include "fault.h"
#include "guest.h"
#include "io.h"
#include "lx.h"
#include "start_info.h"
#include "virtio_blk.h"
#include "virtio_console.h"
#include "virtio_mmio.h"

u64 boot_tsc;
u32 tsc_khz;

/* TSC frequency from the hypervisor timing leaf (VMware/KVM convention),
   read by boot.S in ring 0: at CPL3 PVM runs CPUID natively on the host. */
extern u32 boot_tsc_khz;

static void tsc_init(void)
{
    tsc_khz = boot_tsc_khz;             /* 0: unknown */
}

/* Entered from boot.S by iretq, at CPL3 with IOPL=3 and IF=0. */
NORETURN void kmain(u64 start_info_pa);

void kmain(u64 start_info_pa)
{
    boot_tsc = rdtsc();
    uart_init();
    idt_init();
    boot_info_init(start_info_pa);
    virtio_mmio_parse_cmdline(boot_info.cmdline);
    tsc_init();
    bool sandbox = lx_bundle_present(); /* a bundle: sandbox mode, no shell */
    vcon_init(sandbox);                 /* the sandbox's streams, when the host gave ports */
    if (sandbox)
        lx_run();
    blk_init();
    console_puts("vmm guest ready\n");
    shell_run();
}

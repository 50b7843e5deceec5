/* lx_main.c - sandbox mode: read the bundle, start the program, report its end. */
#include "lx.h"
#include "alloc.h"
#include "console.h"
#include "gdt.h"
#include "idt.h"
#include "io.h"
#include "lib.h"
#include "start_info.h"

#define MAPPED_LIMIT    0x100000000ull
#define EXIT_CANNOT_EXEC 126
#define EXIT_SIGNAL     125


extern u8 tss[];                                /* boot.S: RSP0 at offset 4 */
extern u64 pt_low[512];                         /* boot.S: 4 KiB PTEs, 0-2 MiB */
extern const u8 lx_ring0_gate[];                /* lx_entry.S */

struct lx_opts lx_opts;
char lx_exec_path[256];
static u64 bundle_pa, bundle_size;
static u64 placed_lo, placed_hi;  /* warm mode: program segments the host wrote */
static bool warm;               /* vmm.warm: the bundle comes over the control port */

/* A whole word of the command line. */
static bool cmdline_has(const char *word)
{
    const char *p = boot_info.cmdline;
    size_t n = strlen(word);
    while (*p) {
        while (*p == ' ')
            p++;
        const char *start = p;
        while (*p && *p != ' ')
            p++;
        if ((size_t)(p - start) == n && !strncmp(start, word, n))
            return true;
    }
    return false;
}

static bool looks_like_bundle(const char *h)
{
    /* bundle.py writes the .vmm/ members first, as ustar. */
    return memcmp(h + 257, "ustar", 5) == 0 && strncmp(h, ".vmm/", 5) == 0;
}

bool lx_bundle_present(void)
{
    if (cmdline_has("vmm.warm")) {
        warm = true;
        return true;
    }
    const struct hvm_start_info *si = (const void *)(uintptr_t)boot_info.start_info_pa;
    if (!si->nr_modules || !si->modlist_paddr || si->modlist_paddr >= MAPPED_LIMIT - 32)
        return false;
    const struct hvm_modlist_entry *m = (const void *)(uintptr_t)si->modlist_paddr;
    if (m->size < 1024 || m->paddr >= MAPPED_LIMIT || m->size > MAPPED_LIMIT - m->paddr)
        return false;
    if (!looks_like_bundle((const char *)(uintptr_t)m->paddr))
        return false;
    bundle_pa = m->paddr;
    bundle_size = m->size;
    return true;
}

static void gate(unsigned v, u64 off, u16 sel, u8 ist)
{
    idt[v] = idt_gate(off, sel, ist);
}

#define LX_R0_MAGIC 0x4c58524f

#define MSR_FS_BASE 0xc0000100
#define MSR_GS_BASE 0xc0000101

static void lx_ring0_wrmsr(u32 msr, u64 value)
{
    register u64 r10 __asm__("r10") = LX_R0_MAGIC;
    __asm__ volatile("int3" : : "c"(msr), "a"((u32)value), "d"((u32)(value >> 32)),
                     "D"(0), "r"(r10) : "memory");
}

/* The program's FS or GS base: by wrfsbase/wrgsbase where boot.S enabled
   them, else through the ring-0 gate (emulated on a software KVM: ~0.1 ms). */
extern u8 boot_fsgsbase;

void lx_set_fs_base(u64 base)
{
    if (boot_fsgsbase)
        __asm__ volatile("wrfsbase %0" : : "r"(base) : "memory");
    else
        lx_ring0_wrmsr(MSR_FS_BASE, base);
}

bool lx_get_fs_base(u64 *base)
{
    if (!boot_fsgsbase)
        return false;           /* then only arch_prctl sets it: the caller knows it */
    __asm__ volatile("rdfsbase %0" : "=r"(*base));
    return true;
}

void lx_set_gs_base(u64 base)
{
    if (boot_fsgsbase)
        __asm__ volatile("wrgsbase %0" : : "r"(base) : "memory");
    else
        lx_ring0_wrmsr(MSR_GS_BASE, base);
}

void lx_ring0_flush_tlb(void)
{
    register u64 r10 __asm__("r10") = LX_R0_MAGIC;
    u64 rax;
    __asm__ volatile("int3" : "=a"(rax) : "D"(1), "r"(r10) : "memory");
    (void)rax;
}

u64 lx_ring0_read_cr2(void)
{
    register u64 r10 __asm__("r10") = LX_R0_MAGIC;
    u64 rax;
    __asm__ volatile("int3" : "=a"(rax) : "D"(2), "r"(r10) : "memory");
    return rax;
}

static bool parse_u64_value(const char *s, u64 *v)
{
    return parse_dec_full(s, v);
}

static void parse_opts(const char *p, u64 len)
{
    char line[300];
    lx_opts.cwd[0] = '/';
    lx_opts.cwd[1] = 0;
    u64 i = 0;
    while (i < len) {
        u64 n = 0;
        while (i < len && p[i] != '\n') {
            if (n < sizeof(line) - 1)
                line[n++] = p[i];
            i++;
        }
        i++;
        line[n] = 0;
        char *eq = line;
        while (*eq && *eq != '=')
            eq++;
        if (!*eq)
            continue;
        *eq = 0;
        const char *k = line, *v = eq + 1;
        u64 num;
        if (!strcmp(k, "seed") && parse_u64_value(v, &num)) {
            lx_opts.have_seed = true;
            lx_opts.seed = num;
        } else if (!strcmp(k, "entropy") && parse_u64_value(v, &num)) {
            lx_opts.entropy = num;
        } else if (!strcmp(k, "clock") && parse_u64_value(v, &num)) {
            lx_opts.have_clock = true;
            lx_opts.clock_ns = num;
        } else if (!strcmp(k, "now") && parse_u64_value(v, &num)) {
            lx_opts.have_now = true;
            lx_opts.now_ns = num;
        } else if (!strcmp(k, "trace")) {
            lx_opts.trace = v[0] == '1';
        } else if (!strcmp(k, "dumpout")) {
            lx_opts.dumpout = v[0] == '1';
        } else if (!strcmp(k, "noout")) {
            lx_opts.noout = v[0] == '1';
        } else if (!strcmp(k, "drained")) {
            lx_opts.drained = v[0] == '1';
        } else if (!strcmp(k, "cwd") && v[0] == '/' && strlen(v) < sizeof(lx_opts.cwd)) {
            memcpy(lx_opts.cwd, v, strlen(v) + 1);
        }
    }
}

/*
 * Warm mode (vmm/sandbox/warm.py): the host snapshots this guest once it has
 * said "ready ROOM TOP" on the control port, and each clone of the snapshot
 * then gets its own bundle: the host writes it into guest RAM page-aligned
 * just under TOP (under the device buffers at the top of RAM, where a PVH
 * module would sit), then sends "VMMBNDL2", the bundle's size and the span
 * [LO, HI) where it wrote the program's segments already (0, 0: nowhere;
 * each a u64, little-endian) on the control port.  Placing the bytes
 * directly saves a copy through the console's receive buffers (~1.5 ms for
 * a 760 KB glibc program), placing the segments a copy here (lx_mem.c).
 * Everything after this reads only the bundle, so no per-run input
 * (options, seed, clock) predates it.
 */
#define WARM_MAGIC "VMMBNDL2"

static void receive_bundle(void)
{
    if (!stream_has_ports())
        lx_cannot_execute("warm mode needs the sandbox's console ports");
    extern char __image_end[];
    u64 top = alloc_high_mark() & ~(LX_PAGE - 1);
    /* Below: the kernel's low allocations and the page map lx_mem_init takes. */
    u64 floor = ((alloc_mark() + LX_PAGE - 1) & ~(LX_PAGE - 1)) + ((top / LX_PAGE + LX_PAGE - 1) & ~(LX_PAGE - 1));
    u64 room = top > floor + LX_PAGE ? top - floor - LX_PAGE : 0;
    if ((u64)(uintptr_t)__image_end > top)
        room = 0;
    stream_control_ready(room, top);

    u8 header[32];
    if (!stream_control_read(header, sizeof(header)) || memcmp(header, WARM_MAGIC, 8) != 0)
        lx_cannot_execute("no bundle header from the host");
    u64 size;
    memcpy(&size, header + 8, sizeof(size));
    memcpy(&placed_lo, header + 16, sizeof(placed_lo));
    memcpy(&placed_hi, header + 24, sizeof(placed_hi));
    if (size < 1024 || size > room) {
        char why[128];
        ksnprintf(why, sizeof(why), "bundle of %lu bytes does not fit in guest RAM (%lu bytes free)", size, room);
        lx_cannot_execute(why);
    }
    u64 dest = (top - size) & ~(LX_PAGE - 1);
    if (!looks_like_bundle((const char *)(uintptr_t)dest))
        lx_cannot_execute("the host sent something that is not a bundle");
    bundle_pa = dest;
    bundle_size = size;
}

/* Nothing below 64 KiB: a NULL dereference must fault.  The kernel's text
   and rodata become read-only, so a stray write by the program faults instead
   of changing the code that reports its outcome.  A warm guest does it
   before it waits for its bundle, so its snapshot has it done: the TLB flush
   is a trip through the ring-0 gate, ~20 shadow page walks a run on a
   software KVM. */
static void protect_kernel(void)
{
    /* int3 to the ring-0 gate, on its own ring-0 stack */
    u64 rsp0 = (u64)(uintptr_t)lx_ring0_stack_top;
    memcpy(tss + 4, &rsp0, sizeof(rsp0));
    gate(3, (u64)(uintptr_t)lx_ring0_gate, SEL_KCODE, 0);
    for (unsigned i = 0; i < LX_LOW_UNMAPPED / LX_PAGE; i++)
        pt_low[i] = 0;
    extern char __image_start[], __rodata_end[];
    for (u64 a = (u64)(uintptr_t)__image_start; a < (u64)(uintptr_t)__rodata_end && a < (2ull << 20); a += LX_PAGE)
        pt_low[a / LX_PAGE] &= ~2ull;   /* clear RW */
    lx_ring0_flush_tlb();
}

void lx_run(void)
{
    static struct lx_regs regs;
    u64 len;

    stream_init();
    if (warm) {
        protect_kernel();       /* in the snapshot the host takes at "ready" */
        receive_bundle();
    }
    lx_mem_init(bundle_pa, bundle_pa + bundle_size, placed_lo, placed_hi);
    lx_fs_init((const u8 *)(uintptr_t)bundle_pa, bundle_size);

    const char *opts = (const char *)lx_fs_file("/.vmm/opts", &len);
    parse_opts(opts ? opts : "", opts ? len : 0);
    lx_time_init();
    lx_signal_init();

    const char *exec = (const char *)lx_fs_file("/.vmm/exec", &len);
    if (!exec || !len || len >= sizeof(lx_exec_path))
        lx_cannot_execute("bundle has no .vmm/exec");
    memcpy(lx_exec_path, exec, len);
    while (len && (lx_exec_path[len - 1] == '\n' || lx_exec_path[len - 1] == 0))
        len--;
    lx_exec_path[len] = 0;
    lx_fs_late_init();

    u64 argv_len, envp_len;
    const char *argv = (const char *)lx_fs_file("/.vmm/argv", &argv_len);
    const char *envp = (const char *)lx_fs_file("/.vmm/envp", &envp_len);
    if (!argv) {
        argv = lx_exec_path;
        argv_len = strlen(lx_exec_path) + 1;
    }
    if (!envp)
        envp_len = 0;

    u64 size;
    const u8 *image = lx_fs_file(lx_exec_path, &size);
    if (!image)
        lx_cannot_execute("no such file");

    /* The program's exceptions to the personality's stubs (int3 stays the
       ring-0 gate's). #PF and #DF on their own stack (IST1): a stack overflow
       into the guard below the program's stack must still be reported. */
    extern u8 lx_ist_stack_top[];
    u64 ist1 = (u64)(uintptr_t)lx_ist_stack_top;
    memcpy(tss + 36, &ist1, sizeof(ist1));
    for (unsigned v = 0; v < 32; v++)
        if (v != 3)
            gate(v, lx_exc_table[v], SEL_UCODE, v == 8 || v == 14 ? 1 : 0);
    if (!warm)
        protect_kernel();       /* now: the allocator read the boot's memory map, below 64 KiB */

    memset(&regs, 0, sizeof(regs));
    lx_load_program(image, size, lx_exec_path, argv, argv_len, envp, envp_len, &regs);
    lx_resume(&regs);
}

static void send_out(void)
{
    if (!stream_wants_out() || lx_opts.noout)
        return;
    u64 cap = 8ull << 20;
    u8 *buf = lx_kpages(cap);
    s64 n = buf ? lx_out_tar(buf, cap) : -1;
    stream_out_archive(buf, n < 0 ? 0 : (u64)n);
}

static NORETURN void power_off_forever(u8 status)
{
    console_flush();
    for (;;) {
        power_off(status);
        idle_us(1000000);
    }
}

void lx_exit_status(int status)
{
    stream_flush();
    status &= 0xff;
    if (lx_opts.trace) {
        LX_TRACE("+++ exited with %d +++", status);
        lx_trace_end();
    }
    send_out();
    stream_outcome_status(status);
    power_off_forever(status > 127 ? 127 : (u8)status);
}

void lx_exit_signal(int sig, u64 addr)
{
    stream_flush();
    if (lx_opts.trace) {
        LX_TRACE("+++ killed by signal %d +++", sig);
        lx_trace_end();
    }
    send_out();
    stream_outcome_signal(sig, addr);
    power_off_forever(EXIT_SIGNAL);
}

void lx_cannot_execute(const char *why)
{
    stream_flush();
    stream_outcome_cannot_execute(why);
    power_off_forever(EXIT_CANNOT_EXEC);
}

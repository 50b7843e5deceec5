"""cffi builder (out-of-line API mode) for the KVM bindings.

Built when the package is installed. Structure layouts and ioctl numbers come
from the kernel's own <linux/kvm.h> through the C compiler: the declarations
below name only the fields we use and end in ``...;`` so cffi asks the
compiler for the real offsets and sizes.
"""

from cffi import FFI

# One decoded exit: what the run loop needs, filled in by C after KVM_RUN.
# Shared by the declarations and the C source, so the two cannot disagree.
VMM_EXIT = """
struct vmm_exit {
    uint32_t reason;
    uint32_t is_write;
    uint64_t addr;      /* port or guest physical address */
    uint32_t size;      /* bytes per access */
    uint32_t count;     /* string I/O repetitions */
    uint64_t value;     /* what the guest wrote (count == 1) */
    uint64_t detail[4]; /* reason-specific: failure codes */
    uint64_t absorbed;  /* exits handled in C on the way (see struct vmm_fastpath) */
};

/* Exits C may handle without returning to Python, as the device models allow. */
struct vmm_fastpath {
    uint8_t ignored_ports[8192];  /* 65536 bits: writes to these ports are dropped */
    int32_t tx_fds[2];            /* where a UART's transmitted bytes go (-1: unused) */
    uint16_t tx_port;             /* the UART's THR port */
    uint8_t tx_enabled;           /* set by the UART model while a THR write is pure output */
};

/* An exception to deliver at the next KVM_RUN (see vmm_queue_exception). */
struct vmm_exception_event { uint8_t injected; uint8_t nr; uint8_t has_error_code; uint8_t pending; uint32_t error_code; };
"""

CDEF = r"""
#define KVM_API_VERSION ...
#define KVM_GET_API_VERSION ...
#define KVM_CREATE_VM ...
#define KVM_CHECK_EXTENSION ...
#define KVM_GET_VCPU_MMAP_SIZE ...
#define KVM_GET_SUPPORTED_CPUID ...
#define KVM_GET_MSR_INDEX_LIST ...
#define KVM_SET_USER_MEMORY_REGION ...
#define KVM_CREATE_VCPU ...
#define KVM_SET_TSS_ADDR ...
#define KVM_CREATE_IRQCHIP ...
#define KVM_CREATE_PIT2 ...
#define KVM_IRQ_LINE ...
#define KVM_IRQFD ...
#define KVM_IOEVENTFD ...
#define KVM_RUN ...
#define KVM_GET_REGS ...
#define KVM_SET_REGS ...
#define KVM_GET_SREGS ...
#define KVM_SET_SREGS ...
#define KVM_SET_CPUID2 ...
#define KVM_SET_MSRS ...
#define KVM_GET_MSRS ...
#define KVM_SET_FPU ...
#define KVM_SET_XCRS ...
#define KVM_GET_XCRS ...
#define KVM_GET_TSC_KHZ ...
#define KVM_GET_XSAVE ...
#define KVM_SET_XSAVE ...
#define KVM_GET_VCPU_EVENTS ...
#define KVM_SET_VCPU_EVENTS ...
#define KVM_SET_GUEST_DEBUG ...
#define KVM_GUESTDBG_ENABLE ...
#define KVM_GUESTDBG_SINGLESTEP ...
#define KVM_GUESTDBG_USE_HW_BP ...
#define KVM_INTERNAL_ERROR_EMULATION ...
#define KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES ...
#define KVM_CAP_EXIT_ON_EMULATION_FAILURE ...
#define KVM_CAP_SET_GUEST_DEBUG ...
#define KVM_CAP_VCPU_EVENTS ...

#define KVM_CAP_USER_MEMORY ...
#define KVM_CAP_SET_TSS_ADDR ...
#define KVM_CAP_EXT_CPUID ...
#define KVM_CAP_NR_VCPUS ...
#define KVM_CAP_MAX_VCPUS ...
#define KVM_CAP_IRQCHIP ...
#define KVM_CAP_IOEVENTFD ...
#define KVM_CAP_IRQFD ...
#define KVM_CAP_IMMEDIATE_EXIT ...
#define KVM_CAP_NR_MEMSLOTS ...
#define KVM_CAP_XCRS ...
#define KVM_CAP_GET_TSC_KHZ ...
#define KVM_CAP_PIT2 ...

#define KVM_EXIT_UNKNOWN ...
#define KVM_EXIT_EXCEPTION ...
#define KVM_EXIT_IO ...
#define KVM_EXIT_HYPERCALL ...
#define KVM_EXIT_DEBUG ...
#define KVM_EXIT_HLT ...
#define KVM_EXIT_MMIO ...
#define KVM_EXIT_IRQ_WINDOW_OPEN ...
#define KVM_EXIT_SHUTDOWN ...
#define KVM_EXIT_FAIL_ENTRY ...
#define KVM_EXIT_INTR ...
#define KVM_EXIT_NMI ...
#define KVM_EXIT_INTERNAL_ERROR ...
#define KVM_EXIT_SYSTEM_EVENT ...
#define KVM_EXIT_IO_IN ...
#define KVM_EXIT_IO_OUT ...
#define KVM_IOEVENTFD_FLAG_PIO ...
#define KVM_IOEVENTFD_FLAG_DATAMATCH ...
#define KVM_IOEVENTFD_FLAG_DEASSIGN ...

struct kvm_userspace_memory_region {
    uint32_t slot; uint32_t flags; uint64_t guest_phys_addr; uint64_t memory_size; uint64_t userspace_addr; ...;
};
struct kvm_irq_level { uint32_t irq; uint32_t level; ...; };
struct kvm_irqfd { uint32_t fd; uint32_t gsi; uint32_t flags; uint32_t resamplefd; ...; };
struct kvm_ioeventfd { uint64_t datamatch; uint64_t addr; uint32_t len; int32_t fd; uint32_t flags; ...; };
struct kvm_pit_config { uint32_t flags; ...; };

struct kvm_regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
    uint64_t rip, rflags;
    ...;
};
struct kvm_segment {
    uint64_t base; uint32_t limit; uint16_t selector; uint8_t type;
    uint8_t present, dpl, db, s, l, g, avl; uint8_t unusable; ...;
};
struct kvm_dtable { uint64_t base; uint16_t limit; ...; };
struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss, tr, ldt;
    struct kvm_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base;
    ...;
};
struct kvm_fpu { uint16_t fcw; uint16_t fsw; uint8_t ftwx; uint32_t mxcsr; ...; };
struct kvm_xsave { uint32_t region[1024]; ...; };
struct kvm_guest_debug_arch { uint64_t debugreg[8]; ...; };
struct kvm_guest_debug { uint32_t control; struct kvm_guest_debug_arch arch; ...; };
struct kvm_xcr { uint32_t xcr; uint64_t value; ...; };
struct kvm_xcrs { uint32_t nr_xcrs; uint32_t flags; struct kvm_xcr xcrs[16]; ...; };
struct kvm_msr_entry { uint32_t index; uint64_t data; ...; };
struct kvm_msrs { uint32_t nmsrs; struct kvm_msr_entry entries[]; ...; };
struct kvm_msr_list { uint32_t nmsrs; uint32_t indices[]; ...; };
struct kvm_cpuid_entry2 {
    uint32_t function; uint32_t index; uint32_t flags; uint32_t eax; uint32_t ebx; uint32_t ecx; uint32_t edx; ...;
};
struct kvm_cpuid2 { uint32_t nent; struct kvm_cpuid_entry2 entries[]; ...; };

struct kvm_run {
    uint8_t request_interrupt_window;
    uint8_t immediate_exit;
    uint32_t exit_reason;
    uint8_t if_flag;
    ...;
};

""" + VMM_EXIT + r"""

/* ---- snapshots (vmm/persist): vCPU, irqchip, clock and dirty-log state ----
   Most structures are opaque here: persist.py saves their bytes whole and
   KVM checks them on the way back in, so only the fields we set are named. */
#define KVM_GET_FPU ...
#define KVM_GET_LAPIC ...
#define KVM_SET_LAPIC ...
#define KVM_GET_MP_STATE ...
#define KVM_SET_MP_STATE ...
#define KVM_GET_DEBUGREGS ...
#define KVM_SET_DEBUGREGS ...
#define KVM_GET_IRQCHIP ...
#define KVM_SET_IRQCHIP ...
#define KVM_GET_PIT2 ...
#define KVM_SET_PIT2 ...
#define KVM_GET_CLOCK ...
#define KVM_SET_CLOCK ...
#define KVM_GET_DIRTY_LOG ...
#define KVM_MEM_LOG_DIRTY_PAGES ...
#define KVM_IRQCHIP_PIC_MASTER ...
#define KVM_IRQCHIP_PIC_SLAVE ...
#define KVM_IRQCHIP_IOAPIC ...
#define KVM_CAP_XSAVE ...
#define KVM_CAP_VCPU_EVENTS ...
#define KVM_CAP_DEBUGREGS ...
#define KVM_CAP_ADJUST_CLOCK ...
struct kvm_lapic_state { ...; };
struct kvm_vcpu_events { ...; };
struct kvm_mp_state { uint32_t mp_state; ...; };
struct kvm_debugregs { ...; };
struct kvm_irqchip { uint32_t chip_id; ...; };
struct kvm_pit_state2 { ...; };
struct kvm_clock_data { uint64_t clock; uint32_t flags; ...; };
struct kvm_dirty_log { uint32_t slot; void *dirty_bitmap; ...; };
int vmm_mincore(void *addr, size_t length, unsigned char *vec);
int vmm_map_over(void *addr, size_t length, int fd, uint64_t offset);
/* ---- end of snapshots ---- */

int vmm_ioctl(int fd, unsigned long request, void *arg);
int vmm_ioctl_value(int fd, unsigned long request, unsigned long arg);
int vmm_run(int fd, struct kvm_run *run, struct vmm_exit *exit, struct vmm_fastpath *fast);
void vmm_complete_read(struct kvm_run *run, uint64_t value);
size_t vmm_io_data_offset(struct kvm_run *run);
int vmm_install_kick_handler(int signo);
int vmm_kick_signal(void);
int vmm_kick_thread(unsigned long thread);
int vmm_emulation_failure(struct kvm_run *run, uint8_t *bytes, uint64_t *flags);
void vmm_debug_exit(struct kvm_run *run, uint64_t *out);
int vmm_queue_exception(int fd, struct vmm_exception_event *ev);
"""

SOURCE = r"""
#define _GNU_SOURCE  /* clone() */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>

/* Every wrapper returns the ioctl's result, or -errno on failure. */
static int vmm_ioctl(int fd, unsigned long request, void *arg)
{
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

static int vmm_ioctl_value(int fd, unsigned long request, unsigned long arg)
{
    int r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

""" + VMM_EXIT + r"""

/* Write one transmitted byte to the console fds; nonzero if Python must
   take over (the console would block), so nothing is ever dropped. A closed
   console is ignored, as the Python path does. A console that blocks while
   the VM is being stopped (a kick sets immediate_exit and interrupts the
   write) loses the byte rather than keeping the VM alive. */
static int vmm_transmit(const struct vmm_fastpath *fast, const struct kvm_run *run, uint8_t byte)
{
    for (int i = 0; i < 2; i++) {
        if (fast->tx_fds[i] < 0)
            continue;
        ssize_t r;
        do
            r = write(fast->tx_fds[i], &byte, 1);
        while (r < 0 && errno == EINTR && !run->immediate_exit);
        if (r < 0 && errno == EAGAIN && i == 0)
            return -1;
    }
    return 0;
}

/* KVM_RUN, then decode the exit in C: the Python run loop then reads a few
   plain fields instead of walking the kvm_run unions. */
static int vmm_run(int fd, struct kvm_run *run, struct vmm_exit *e, struct vmm_fastpath *fast)
{
    e->absorbed = 0;
    for (;;) {
        if (ioctl(fd, KVM_RUN, 0) < 0) {
            e->reason = KVM_EXIT_INTR;
            return -errno;
        }
        if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT && run->io.count == 1) {
            uint16_t port = run->io.port;
            /* A write to a port whose device ignores writes: resume at once. */
            if (fast->ignored_ports[port >> 3] & (1u << (port & 7))) {
                e->absorbed++;
                continue;
            }
            /* A THR write while the UART model says it is pure output. */
            if (fast->tx_enabled && port == fast->tx_port && run->io.size == 1
                && vmm_transmit(fast, run, *((uint8_t *)run + run->io.data_offset)) == 0) {
                e->absorbed++;
                continue;
            }
        }
        break;
    }
    e->reason = run->exit_reason;
    e->value = 0;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        e->is_write = run->io.direction == KVM_EXIT_IO_OUT;
        e->addr = run->io.port;
        e->size = run->io.size;
        e->count = run->io.count;
        if (e->is_write && e->count == 1 && e->size <= 8)
            memcpy(&e->value, (char *)run + run->io.data_offset, e->size);
        break;
    case KVM_EXIT_MMIO:
        e->is_write = run->mmio.is_write;
        e->addr = run->mmio.phys_addr;
        e->size = run->mmio.len <= 8 ? run->mmio.len : 8;
        e->count = 1;
        if (e->is_write)
            memcpy(&e->value, run->mmio.data, e->size);
        break;
    case KVM_EXIT_FAIL_ENTRY:
        e->detail[0] = run->fail_entry.hardware_entry_failure_reason;
        e->detail[1] = run->fail_entry.cpu;
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        e->detail[0] = run->internal.suberror;
        e->detail[1] = run->internal.ndata;
        e->detail[2] = run->internal.ndata > 0 ? run->internal.data[0] : 0;
        e->detail[3] = run->internal.ndata > 1 ? run->internal.data[1] : 0;
        break;
    case KVM_EXIT_SYSTEM_EVENT:
        e->detail[0] = run->system_event.type;
        break;
    case KVM_EXIT_UNKNOWN:
        e->detail[0] = run->hw.hardware_exit_reason;
        break;
    case KVM_EXIT_EXCEPTION:
        e->detail[0] = run->ex.exception;
        e->detail[1] = run->ex.error_code;
        break;
    }
    return 0;
}

/* Hand the result of a guest read back to KVM for the next KVM_RUN. */
static void vmm_complete_read(struct kvm_run *run, uint64_t value)
{
    if (run->exit_reason == KVM_EXIT_IO && run->io.count == 1 && run->io.size <= 8)
        memcpy((char *)run + run->io.data_offset, &value, run->io.size);
    else if (run->exit_reason == KVM_EXIT_MMIO && run->mmio.len <= 8)
        memcpy(run->mmio.data, &value, run->mmio.len);
}

static size_t vmm_io_data_offset(struct kvm_run *run)
{
    return run->io.data_offset;
}


/* ---- snapshots: which pages of a mapping are resident (never-touched
   guest RAM stays a hole in the memory file) ---- */
#include <sys/mman.h>
static int vmm_mincore(void *addr, size_t length, unsigned char *vec)
{
    return mincore(addr, length, vec) < 0 ? -errno : 0;
}

/* Replace [addr, addr+length) of guest RAM, in place, by a private mapping of
   fd from offset, or by zeroed anonymous memory (fd -1): vmm/memory.py. */
static int vmm_map_over(void *addr, size_t length, int fd, uint64_t offset)
{
    int flags = MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE | (fd < 0 ? MAP_ANONYMOUS : 0);
    return mmap(addr, length, PROT_READ | PROT_WRITE, flags, fd, fd < 0 ? 0 : (off_t)offset) == MAP_FAILED ? -errno : 0;
}
/* ---- end of snapshots ---- */

/* KVM_INTERNAL_ERROR_EMULATION: copy the instruction bytes (up to 15) the exit
   carries; returns their count, or -1 when the exit has none. */
static int vmm_emulation_failure(struct kvm_run *run, uint8_t *bytes, uint64_t *flags)
{
    *flags = 0;
    if (run->exit_reason != KVM_EXIT_INTERNAL_ERROR || run->internal.suberror != KVM_INTERNAL_ERROR_EMULATION
        || run->emulation_failure.ndata < 3)
        return -1;
    *flags = run->emulation_failure.flags;
    if (!(*flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES))
        return -1;
    unsigned n = run->emulation_failure.insn_size;
    if (n > sizeof run->emulation_failure.insn_bytes)
        n = sizeof run->emulation_failure.insn_bytes;
    memcpy(bytes, run->emulation_failure.insn_bytes, n);
    return (int)n;
}

/* KVM_EXIT_DEBUG: exception, pc, dr6, dr7. */
static void vmm_debug_exit(struct kvm_run *run, uint64_t *out)
{
    out[0] = run->debug.arch.exception;
    out[1] = run->debug.arch.pc;
    out[2] = run->debug.arch.dr6;
    out[3] = run->debug.arch.dr7;
}

/* Queue an exception for the next KVM_RUN (read-modify-write of the vCPU
   events, so NMI/interrupt state is kept as it is). */
static int vmm_queue_exception(int fd, struct vmm_exception_event *ev)
{
    struct kvm_vcpu_events events;
    memset(&events, 0, sizeof events);
    if (ioctl(fd, KVM_GET_VCPU_EVENTS, &events) < 0)
        return -errno;
    events.exception.injected = ev->injected;
    events.exception.nr = ev->nr;
    events.exception.has_error_code = ev->has_error_code;
    events.exception.pending = ev->pending;
    events.exception.error_code = ev->error_code;
    events.flags &= KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM;
    if (ioctl(fd, KVM_SET_VCPU_EVENTS, &events) < 0)
        return -errno;
    return 0;
}

static void vmm_kick(int signo) { (void)signo; }

/* The vCPU kick: a no-op handler without SA_RESTART, so a signal sent to the
   vCPU thread makes KVM_RUN return EINTR (together with immediate_exit). */
static int vmm_install_kick_handler(int signo)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = vmm_kick;
    sigemptyset(&sa.sa_mask);
    return sigaction(signo, &sa, NULL) < 0 ? -errno : 0;
}

/* SIGRTMIN as glibc has it (Python's signal.SIGRTMIN): here, so that a `vmm exec`
   starts without the signal module (and enum, which it imports). */
static int vmm_kick_signal(void) { return SIGRTMIN; }

/* Kick one thread (a Python thread ident is its pthread_t): pthread_kill's
   error number, ESRCH once the thread has ended. */
static int vmm_kick_thread(unsigned long thread) { return pthread_kill((pthread_t)thread, vmm_kick_signal()); }
"""

# ---- virtio fast path (issue 15): its own declarations and C file ----
import os as _os
import runpy as _runpy

_virtio_fast = _runpy.run_path(_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "virtio_fast_build.py"))
CDEF += _virtio_fast["CDEF"]
SOURCE += _virtio_fast["SOURCE"]
# ---- end virtio fast path ----

# ---- seccomp violation report (vmm/seccomp.py): a SIGSYS handler in C ----
# A filter returns SECCOMP_RET_TRAP for a system call outside its thread's list;
# the kernel then raises SIGSYS on that thread with the call's number in
# si_syscall. Python cannot handle that (its handlers run later, on the main
# thread, without siginfo), so C writes one line naming the thread kind and the
# call, and ends the process with the status vmm.seccomp chose. Only write()
# and exit_group(), which every list allows, run in the handler.
CDEF += r"""
int vmm_seccomp_arm(int status);
void vmm_seccomp_set_kind(const char *kind);
int vmm_seccomp_set_name(int nr, const char *name);
int vmm_seccomp_load(const unsigned char *program, unsigned int length);
int vmm_preload_unwinder(void);
"""
SOURCE += r"""
#include <dlfcn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#define VMM_SECCOMP_NAMES 512
static char vmm_seccomp_names[VMM_SECCOMP_NAMES][28];
static volatile int vmm_seccomp_status = 159;
static __thread char vmm_seccomp_kind[24] = "unfiltered";

static size_t vmm_seccomp_put(char *out, size_t at, size_t cap, const char *s)
{
    while (*s && at + 1 < cap)
        out[at++] = *s++;
    return at;
}

static size_t vmm_seccomp_put_num(char *out, size_t at, size_t cap, long n)
{
    char digits[24];
    int len = 0;
    unsigned long u = n < 0 ? (unsigned long)-n : (unsigned long)n;
    do { digits[len++] = (char)('0' + u % 10); u /= 10; } while (u && len < 22);
    if (n < 0) digits[len++] = '-';
    while (len && at + 1 < cap)
        out[at++] = digits[--len];
    return at;
}

static void vmm_seccomp_sigsys(int signo, siginfo_t *info, void *context)
{
    (void)signo; (void)context;
    char line[200];
    size_t n = 0;
    int nr = info->si_syscall;
    const char *name = (nr >= 0 && nr < VMM_SECCOMP_NAMES && vmm_seccomp_names[nr][0]) ? vmm_seccomp_names[nr] : "unknown";
    n = vmm_seccomp_put(line, n, sizeof line, "vmm: seccomp: the ");
    n = vmm_seccomp_put(line, n, sizeof line, vmm_seccomp_kind);
    n = vmm_seccomp_put(line, n, sizeof line, " thread made system call ");
    n = vmm_seccomp_put(line, n, sizeof line, name);
    n = vmm_seccomp_put(line, n, sizeof line, " (");
    n = vmm_seccomp_put_num(line, n, sizeof line, nr);
    n = vmm_seccomp_put(line, n, sizeof line, "), which its filter does not allow; stopping with status ");
    n = vmm_seccomp_put_num(line, n, sizeof line, vmm_seccomp_status);
    n = vmm_seccomp_put(line, n, sizeof line, "\n");
    ssize_t ignored = write(2, line, n);
    (void)ignored;
    _exit(vmm_seccomp_status);
}

static int vmm_seccomp_arm(int status)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = vmm_seccomp_sigsys;
    sa.sa_flags = SA_SIGINFO;
    sigfillset(&sa.sa_mask);
    vmm_seccomp_status = status;
    return sigaction(SIGSYS, &sa, NULL) < 0 ? -errno : 0;
}

static void vmm_seccomp_set_kind(const char *kind)
{
    strncpy(vmm_seccomp_kind, kind, sizeof vmm_seccomp_kind - 1);
    vmm_seccomp_kind[sizeof vmm_seccomp_kind - 1] = 0;
}

static int vmm_seccomp_set_name(int nr, const char *name)
{
    if (nr < 0 || nr >= VMM_SECCOMP_NAMES)
        return -1;
    strncpy(vmm_seccomp_names[nr], name, sizeof vmm_seccomp_names[nr] - 1);
    return 0;
}

/* Load a BPF program libseccomp made earlier (seccomp_export_bpf, kept by
   vmm/seccomp.py) on the calling thread, as seccomp_load does with its
   default attributes: no_new_privs, then SECCOMP_SET_MODE_FILTER without TSYNC. */
static int vmm_seccomp_load(const unsigned char *program, unsigned int length)
{
    struct sock_fprog prog;
    if (length == 0 || length % sizeof(struct sock_filter) || length / sizeof(struct sock_filter) > BPF_MAXINSNS)
        return -EINVAL;
    prog.len = (unsigned short)(length / sizeof(struct sock_filter));
    prog.filter = (struct sock_filter *)program;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -errno;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return -errno;
    return 0;
}

/* glibc dlopens libgcc_s the first time a thread ends (pthread_exit unwinds
   it): load it while every call is still allowed. 0, or -1 when not found. */
static int vmm_preload_unwinder(void)
{
    return dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_NODELETE) ? 0 : -1;
}
"""
# ---- end seccomp violation report ----

# ---- the VM's kernel teardown, handed to a child (vmm/builder.py) ----
# Closing a VM's fd and unmapping its RAM cost the kernel 1-15 ms here
# (kvm_destroy_vm waits for SRCU grace periods, timer-tick bound). A one-VM
# command that has its answer need not make its caller wait for that: a
# child sharing the process's memory and file table (CLONE_VM | CLONE_FILES,
# so it holds the last references and costs no copy) sleeps until its parent
# has exited, and the teardown happens at its own exit, in the background.
CDEF += r"""
#define VMM_TEARDOWN_CLONE_FLAGS ...
int vmm_hand_over_teardown(void);
"""
SOURCE += r"""
#include <sched.h>
#include <signal.h>
#define VMM_TEARDOWN_CLONE_FLAGS (CLONE_VM | CLONE_FS | CLONE_FILES)
static char vmm_holder_stack[8192] __attribute__((aligned(16)));

/* Runs on its own small stack in the parent's memory: raw system calls only,
   every signal blocked (inherited), so nothing but SIGKILL ever wakes it. */
static int vmm_teardown_holder(void *parent)
{
    syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (syscall(SYS_getppid) == (long)parent)  /* else the parent is gone already */
        for (;;)
            syscall(SYS_pause);
    syscall(SYS_exit, 0);
    return 0;
}

/* The child's pid, or -errno. The caller exits right after. */
static int vmm_hand_over_teardown(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int pid = clone(vmm_teardown_holder, vmm_holder_stack + sizeof vmm_holder_stack,
                    VMM_TEARDOWN_CLONE_FLAGS, (void *)(long)getpid());
    int err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return pid < 0 ? -err : pid;
}
"""
# ---- end teardown hand-over ----

# ---- the sandbox image cache's view of vmm's own files (vmm/sandbox/image_cache.py) ----
# Its key covers the size and modification time of every module a restore can
# run: ~100 stat calls, ~0.45 ms of each `vmm exec` here whoever makes them.
# `vmm exec` starts the walk on a thread of its own as it begins (this C has
# no GIL to wait for), and takes the result after its imports.
CDEF += r"""
long vmm_tree_stats(const char *root, const char *skip, char *out, long cap);
int vmm_tree_stats_start(const char *root, const char *skip, long cap);
long vmm_tree_stats_finish(char *out, long cap);
"""
SOURCE += r"""
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

struct vmm_tree_walk {
    const char *skip;           /* directory names not entered, each ended by '\n' */
    char **lines;
    long count, room;
    int failed;
};

static int vmm_tree_skipped(const char *skip, const char *name)
{
    size_t n = strlen(name);
    for (const char *at = skip, *end; (end = strchr(at, '\n')) != NULL; at = end + 1)
        if ((size_t)(end - at) == n && !memcmp(at, name, n))
            return 1;
    return 0;
}

static int vmm_tree_ends_with(const char *name, const char *suffix)
{
    size_t n = strlen(name), m = strlen(suffix);
    return n >= m && !strcmp(name + n - m, suffix);
}

static void vmm_tree_add(struct vmm_tree_walk *w, const char *path, const struct stat *st)
{
    if (w->count == w->room) {
        long room = w->room ? w->room * 2 : 256;
        char **lines = realloc(w->lines, room * sizeof *lines);
        if (!lines) { w->failed = 1; return; }
        w->lines = lines;
        w->room = room;
    }
    char *line = NULL;
    if (asprintf(&line, "%s\t%lld\t%lld\n", path, (long long)st->st_size,
                 (long long)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec) < 0) {
        w->failed = 1;
        return;
    }
    w->lines[w->count++] = line;
}

/* Files ending in .py or .so (symlinks followed); directories whose names
   hold no dot and are not skipped (symlinks not followed). */
static void vmm_tree_walk_dir(struct vmm_tree_walk *w, const char *path, int depth)
{
    DIR *dir = depth > 16 ? NULL : opendir(path);
    if (!dir) { w->failed = 1; return; }
    struct dirent *entry;
    while (!w->failed && (entry = readdir(dir)) != NULL) {
        const char *name = entry->d_name;
        char *child = NULL;
        struct stat st;
        if (!strcmp(name, ".") || !strcmp(name, ".."))
            continue;
        if (asprintf(&child, "%s/%s", path, name) < 0) { w->failed = 1; break; }
        if (vmm_tree_ends_with(name, ".py") || vmm_tree_ends_with(name, ".so")) {
            if (stat(child, &st) == 0)
                vmm_tree_add(w, child, &st);
            else
                w->failed = 1;
        } else if (!strchr(name, '.') && !vmm_tree_skipped(w->skip, name)
                   && lstat(child, &st) == 0 && S_ISDIR(st.st_mode)) {
            vmm_tree_walk_dir(w, child, depth + 1);
        }
        free(child);
    }
    closedir(dir);
}

static int vmm_tree_compare(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "path\tsize\tmtime_ns\n" for each file under root, in path order: the
   length written to out; -1 when the tree cannot be read whole, -2 when out
   is too small. */
static long vmm_tree_stats(const char *root, const char *skip, char *out, long cap)
{
    struct vmm_tree_walk w = { skip, NULL, 0, 0, 0 };
    long used = 0;
    vmm_tree_walk_dir(&w, root, 0);
    qsort(w.lines, w.count, sizeof *w.lines, vmm_tree_compare);
    for (long i = 0; i < w.count; i++) {
        long n = (long)strlen(w.lines[i]);
        if (used >= 0 && used + n <= cap) {
            memcpy(out + used, w.lines[i], n);
            used += n;
        } else {
            used = -2;
        }
        free(w.lines[i]);
    }
    free(w.lines);
    return w.failed ? -1 : used;
}

/* The same walk on a thread of its own (one at a time per process). */
static struct {
    pthread_t thread;
    int running;
    char *root, *skip, *out;
    long cap, length;
} vmm_tree_job;

static void *vmm_tree_job_main(void *unused)
{
    (void)unused;
    vmm_tree_job.length = vmm_tree_stats(vmm_tree_job.root, vmm_tree_job.skip, vmm_tree_job.out, vmm_tree_job.cap);
    return NULL;
}

/* 0, or -errno (then nothing runs: vmm_tree_stats_finish says -3). */
static int vmm_tree_stats_start(const char *root, const char *skip, long cap)
{
    if (vmm_tree_job.running || cap <= 0)
        return -EBUSY;
    vmm_tree_job.root = strdup(root);
    vmm_tree_job.skip = strdup(skip);
    vmm_tree_job.out = malloc(cap);
    vmm_tree_job.cap = cap;
    int err = ENOMEM;
    if (vmm_tree_job.root && vmm_tree_job.skip && vmm_tree_job.out
        && (err = pthread_create(&vmm_tree_job.thread, NULL, vmm_tree_job_main, NULL)) == 0) {
        vmm_tree_job.running = 1;
        return 0;
    }
    free(vmm_tree_job.root);
    free(vmm_tree_job.skip);
    free(vmm_tree_job.out);
    return -err;
}

/* Waits for the walk vmm_tree_stats_start began; its result copied to out
   (as vmm_tree_stats returns it), or -3 when none was started. */
static long vmm_tree_stats_finish(char *out, long cap)
{
    if (!vmm_tree_job.running)
        return -3;
    pthread_join(vmm_tree_job.thread, NULL);
    vmm_tree_job.running = 0;
    long length = vmm_tree_job.length;
    if (length > cap)
        length = -2;
    else if (length > 0)
        memcpy(out, vmm_tree_job.out, length);
    free(vmm_tree_job.root);
    free(vmm_tree_job.skip);
    free(vmm_tree_job.out);
    return length;
}
"""
# ---- end tree stats ----

# ---- KVM opened and a VM created ahead (vmm/kvm/api.py start_ahead) ----
# Opening /dev/kvm, asking for the supported CPUID (each CPUID instruction
# the host kernel runs for it is an exit to the outer hypervisor here) and
# KVM_CREATE_VM take ~0.5 ms. `vmm exec` starts them on a thread of their own
# as it begins and takes the descriptors after its imports.
CDEF += r"""
int vmm_kvm_ahead_start(const char *path);
int vmm_kvm_ahead_finish(int *kvm_fd, int *vm_fd, struct kvm_cpuid2 *cpuid);
"""
SOURCE += r"""
#include <fcntl.h>
#define VMM_AHEAD_CPUID_ENTRIES 512

static struct {
    pthread_t thread;
    int running;
    char *path;
    int kvm_fd, vm_fd;
    struct kvm_cpuid2 *cpuid;  /* nent 0: not asked (the caller asks itself) */
} vmm_kvm_ahead;

static void *vmm_kvm_ahead_main(void *unused)
{
    (void)unused;
    int kvm = open(vmm_kvm_ahead.path, O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        return NULL;  /* the caller opens it again, and reports why it cannot */
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        close(kvm);
        return NULL;
    }
    vmm_kvm_ahead.kvm_fd = kvm;
    vmm_kvm_ahead.cpuid->nent = VMM_AHEAD_CPUID_ENTRIES;
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, vmm_kvm_ahead.cpuid) < 0)
        vmm_kvm_ahead.cpuid->nent = 0;
    vmm_kvm_ahead.vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
    return NULL;
}

/* 0, or -errno (then nothing runs: vmm_kvm_ahead_finish says -3). Signals are
   blocked on the thread: the process's signals stay the main thread's. */
static int vmm_kvm_ahead_start(const char *path)
{
    if (vmm_kvm_ahead.running)
        return -EBUSY;
    vmm_kvm_ahead.path = strdup(path);
    vmm_kvm_ahead.cpuid = calloc(1, sizeof(struct kvm_cpuid2)
                                     + VMM_AHEAD_CPUID_ENTRIES * sizeof(struct kvm_cpuid_entry2));
    vmm_kvm_ahead.kvm_fd = vmm_kvm_ahead.vm_fd = -1;
    int err = ENOMEM;
    if (vmm_kvm_ahead.path && vmm_kvm_ahead.cpuid) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        err = pthread_create(&vmm_kvm_ahead.thread, NULL, vmm_kvm_ahead_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (err == 0) {
            vmm_kvm_ahead.running = 1;
            return 0;
        }
    }
    free(vmm_kvm_ahead.path);
    free(vmm_kvm_ahead.cpuid);
    return -err;
}

/* Waits for the thread; hands over the system and VM descriptors (-1 where
   not made) and copies the supported CPUID into cpuid, which has room for
   cpuid->nent entries (nent 0 when it was not asked, or does not fit).
   0, or -3 when nothing was started. */
static int vmm_kvm_ahead_finish(int *kvm_fd, int *vm_fd, struct kvm_cpuid2 *cpuid)
{
    if (!vmm_kvm_ahead.running)
        return -3;
    pthread_join(vmm_kvm_ahead.thread, NULL);
    vmm_kvm_ahead.running = 0;
    *kvm_fd = vmm_kvm_ahead.kvm_fd;
    *vm_fd = vmm_kvm_ahead.vm_fd;
    uint32_t n = vmm_kvm_ahead.cpuid->nent;
    cpuid->nent = n <= cpuid->nent ? n : 0;
    memcpy(cpuid->entries, vmm_kvm_ahead.cpuid->entries, cpuid->nent * sizeof(struct kvm_cpuid_entry2));
    free(vmm_kvm_ahead.cpuid);
    free(vmm_kvm_ahead.path);
    return 0;
}
"""
# ---- end KVM ahead ----

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("vmm.kvm._kvm_cffi", SOURCE)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)

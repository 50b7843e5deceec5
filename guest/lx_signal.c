/*
 * lx_signal.c - signals: handlers (shared by the process's threads), each
 * thread's mask, pending set and alternate stack (swapped in and out by
 * lx_thread.c, the running thread's live here), signals the program sends
 * itself, and CPU faults turned into signals.  A handler
 * runs on a struct rt_sigframe laid out as Linux's x86-64 one, and returns
 * through its sa_restorer to rt_sigreturn.  FPU state is not saved (the
 * guest kernel never touches it, so the program keeps its own).
 */
#include "lx.h"
#include "console.h"
#include "fault.h"
#include "lib.h"

#define NSIG 64
#define SIGILL 4
#define SIGTRAP 5
#define SIGABRT 6
#define SIGBUS 7
#define SIGFPE 8
#define SIGKILL 9
#define SIGSEGV 11
#define SIGPIPE 13
#define SIGCHLD 17
#define SIGCONT 18
#define SIGSTOP 19
#define SIGURG 23
#define SIGWINCH 28

#define SA_SIGINFO 4
#define SA_ONSTACK 0x08000000
#define SA_RESTORER 0x04000000
#define SA_NODEFER 0x40000000
#define SA_RESETHAND 0x80000000
#define SS_ONSTACK 1
#define SS_DISABLE 2

#define SIG_DFL 0
#define SIG_IGN 1

struct k_sigaction {
    u64 handler, flags, restorer, mask;
};

struct stack_t_ {
    u64 sp;
    s32 flags;
    s32 pad;
    u64 size;
};

struct sigcontext {
    u64 r8, r9, r10, r11, r12, r13, r14, r15;
    u64 rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags;
    u16 cs, gs, fs, ss;
    u64 err, trapno, oldmask, cr2, fpstate;
    u64 reserved1[8];
};

struct ucontext {
    u64 uc_flags, uc_link;
    struct stack_t_ uc_stack;
    struct sigcontext mc;
    u64 uc_sigmask;
};

struct siginfo {
    s32 signo, errno_, code, pad;
    u64 f0;                     /* si_addr, or si_pid and si_uid */
    u64 rest[14];
};

struct rt_sigframe {
    u64 pretcode;
    struct ucontext uc;
    struct siginfo info;
};

static struct k_sigaction actions[NSIG + 1];
static u64 blocked, pending;
static struct stack_t_ altstack = { 0, SS_DISABLE, 0, 0 };

static const char *const sig_names[32] = {
    "0", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS",
    "SIGFPE", "SIGKILL", "SIGUSR1", "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM",
    "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGURG",
    "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR", "SIGSYS",
};

/* strace's "--- SIGSEGV {...} ---" line. */
static void trace_signal(int sig, s32 code, u64 addr)
{
    if (!lx_opts.trace)
        return;
    const char *name = sig < 32 ? sig_names[sig] : "SIGRT";
    if (code > 0)
        LX_TRACE("--- %s {si_signo=%s, si_code=%d, si_addr=0x%lx} ---", name, name, code, addr);
    else
        LX_TRACE("--- %s {si_signo=%s, si_code=%d, si_pid=2, si_uid=0} ---", name, name, code);
    lx_trace_end();
}

static u64 bit(int sig)
{
    return 1ull << (sig - 1);
}

void lx_signal_init(void)
{
    memset(actions, 0, sizeof(actions));
    blocked = pending = 0;
    lx_thread_init();           /* the main thread's slot and its signal state */
}

/* The running thread's signal state, saved and restored at thread switches. */
void lx_signal_save(struct lx_sigstate *s)
{
    s->blocked = blocked;
    s->pending = pending;
    s->ss_sp = altstack.sp;
    s->ss_flags = altstack.flags;
    s->ss_size = altstack.size;
}

void lx_signal_load(const struct lx_sigstate *s)
{
    blocked = s->blocked;
    pending = s->pending;
    altstack = (struct stack_t_){ s->ss_sp, s->ss_flags, 0, s->ss_size };
}

static bool default_ignored(int sig)
{
    return sig == SIGCHLD || sig == SIGURG || sig == SIGWINCH || sig == SIGCONT ||
           (sig >= SIGSTOP && sig <= 22);
}

bool lx_signal_interrupts(int sig, u64 mask)
{
    if (sig < 1 || sig > NSIG || (mask & bit(sig)))
        return false;
    u64 h = actions[sig].handler;
    return h > SIG_IGN || (h == SIG_DFL && !default_ignored(sig));
}

static bool on_altstack(u64 sp)
{
    return !(altstack.flags & SS_DISABLE) && sp > altstack.sp && sp <= altstack.sp + altstack.size;
}

/* Build the frame and point r at the handler.  False: no room (dies). */
static bool setup_frame(int sig, struct k_sigaction *ka, struct lx_regs *r,
                        s32 code, u64 addr, u64 trapno, u64 err)
{
    u64 sp = r->rsp;
    if ((ka->flags & SA_ONSTACK) && !(altstack.flags & SS_DISABLE) && !on_altstack(sp))
        sp = altstack.sp + altstack.size;
    else
        sp -= 128;              /* the red zone */
    sp = ((sp - sizeof(struct rt_sigframe)) & ~15ull) - 8;
    if (!lx_user_ok(sp, sizeof(struct rt_sigframe)) || !(ka->flags & SA_RESTORER))
        return false;
    struct rt_sigframe *f = (struct rt_sigframe *)(uintptr_t)sp;
    memset(f, 0, sizeof(*f));
    f->pretcode = ka->restorer;
    f->uc.uc_stack.sp = altstack.sp;
    f->uc.uc_stack.flags = altstack.flags | (on_altstack(r->rsp) ? SS_ONSTACK : 0);
    f->uc.uc_stack.size = altstack.size;
    struct sigcontext *m = &f->uc.mc;
    m->r8 = r->r8; m->r9 = r->r9; m->r10 = r->r10; m->r11 = r->r11;
    m->r12 = r->r12; m->r13 = r->r13; m->r14 = r->r14; m->r15 = r->r15;
    m->rdi = r->rdi; m->rsi = r->rsi; m->rbp = r->rbp; m->rbx = r->rbx;
    m->rdx = r->rdx; m->rax = r->rax; m->rcx = r->rcx; m->rsp = r->rsp;
    m->rip = r->rip; m->eflags = r->rflags;
    m->cs = 0x23;
    m->ss = 0x1b;
    m->err = err;
    m->trapno = trapno;
    m->oldmask = blocked;
    m->cr2 = addr;
    f->uc.uc_sigmask = blocked;
    f->info.signo = sig;
    f->info.code = code;
    if (code > 0)               /* a fault: si_addr */
        f->info.f0 = addr;
    else
        f->info.f0 = LX_PID;    /* si_pid; si_uid 0 */

    blocked |= ka->mask;
    if (!(ka->flags & SA_NODEFER))
        blocked |= bit(sig);
    if (ka->flags & SA_RESETHAND)
        ka->handler = SIG_DFL;
    r->rsp = sp;
    r->rip = ka->handler;
    r->rdi = (u64)sig;
    r->rsi = (u64)(uintptr_t)&f->info;
    r->rdx = (u64)(uintptr_t)&f->uc;
    r->rax = 0;
    r->rflags &= ~0x500ull;     /* DF, TF */
    return true;
}

/* A fault: a handler if one can run, else the end. */
static NORETURN void force_signal(int sig, struct lx_regs *r, s32 code, u64 addr, u64 trapno, u64 err)
{
    struct k_sigaction *ka = &actions[sig];
    trace_signal(sig, code, addr);
    if (ka->handler > SIG_IGN && !(blocked & bit(sig)) &&
        setup_frame(sig, ka, r, code, addr, trapno, err))
        lx_resume(r);
    lx_exit_signal(sig, addr);
}

static int deliver(int sig, struct lx_regs *r)
{
    struct k_sigaction *ka = &actions[sig];
    trace_signal(sig, -6, 0);
    if (ka->handler == SIG_IGN)
        return 0;
    if (ka->handler == SIG_DFL) {
        if (default_ignored(sig))
            return 0;
        lx_exit_signal(sig, 0);
    }
    if (!setup_frame(sig, ka, r, -6 /* SI_TKILL */, 0, 0, 0))
        lx_exit_signal(SIGSEGV, 0);
    return 1;
}

int lx_raise(int sig, struct lx_regs *r, u64 addr)
{
    (void)addr;
    if (sig == SIGKILL || sig == SIGSTOP) {
        if (sig == SIGKILL)
            lx_exit_signal(sig, 0);
        return 0;
    }
    if (blocked & bit(sig)) {
        pending |= bit(sig);
        return 0;
    }
    return deliver(sig, r);
}

/* Deliver the lowest pending, unblocked signal (after a mask change, or
   when a thread is switched in). */
int lx_signal_deliver_pending(struct lx_regs *r)
{
    u64 ready = pending & ~blocked;
    if (!ready)
        return 0;
    int sig = __builtin_ctzll(ready) + 1;
    pending &= ~bit(sig);
    return deliver(sig, r);
}

static s64 do_sigaction(u64 sig, u64 uact, u64 uold, u64 size)
{
    if (size != 8)
        return -EINVAL;
    if (sig < 1 || sig > NSIG || ((sig == SIGKILL || sig == SIGSTOP) && uact))
        return -EINVAL;
    if ((uact && !lx_user_ok(uact, sizeof(struct k_sigaction))) ||
        (uold && !lx_user_ok(uold, sizeof(struct k_sigaction))))
        return -EFAULT;
    struct k_sigaction old = actions[sig];
    if (uact) {
        memcpy(&actions[sig], (void *)(uintptr_t)uact, sizeof(struct k_sigaction));
        actions[sig].mask &= ~(bit(SIGKILL) | bit(SIGSTOP));
        if (actions[sig].handler == SIG_IGN)
            pending &= ~bit((int)sig);
    }
    if (uold)
        memcpy((void *)(uintptr_t)uold, &old, sizeof(old));
    return 0;
}

static s64 do_sigprocmask(u64 how, u64 uset, u64 uold, u64 size)
{
    if (size != 8)
        return -EINVAL;
    if ((uset && !lx_user_ok(uset, 8)) || (uold && !lx_user_ok(uold, 8)))
        return -EFAULT;
    u64 old = blocked;
    if (uset) {
        u64 set = *(const u64 *)(uintptr_t)uset;
        switch (how) {
        case 0: blocked |= set; break;
        case 1: blocked &= ~set; break;
        case 2: blocked = set; break;
        default: return -EINVAL;
        }
        blocked &= ~(bit(SIGKILL) | bit(SIGSTOP));
    }
    if (uold)
        *(u64 *)(uintptr_t)uold = old;
    return 0;
}

static s64 do_sigaltstack(u64 uss, u64 uold, u64 rsp)
{
    if ((uss && !lx_user_ok(uss, sizeof(struct stack_t_))) ||
        (uold && !lx_user_ok(uold, sizeof(struct stack_t_))))
        return -EFAULT;
    struct stack_t_ old = altstack;
    if (on_altstack(rsp))
        old.flags |= SS_ONSTACK;
    if (uss) {
        if (on_altstack(rsp))
            return -EPERM;
        struct stack_t_ ss;
        memcpy(&ss, (void *)(uintptr_t)uss, sizeof(ss));
        if (ss.flags & ~(SS_DISABLE | (s32)0x80000000))
            return -EINVAL;
        if (ss.flags & SS_DISABLE) {
            altstack = (struct stack_t_){ 0, SS_DISABLE, 0, 0 };
        } else {
            if (ss.size < 2048)
                return -ENOMEM;
            altstack = (struct stack_t_){ ss.sp, 0, 0, ss.size };
        }
    }
    if (uold)
        memcpy((void *)(uintptr_t)uold, &old, sizeof(old));
    return 0;
}

static s64 do_sigreturn(struct lx_regs *r)
{
    u64 at = r->rsp;            /* the handler's ret popped pretcode */
    if (!lx_user_ok(at, sizeof(struct ucontext)))
        lx_exit_signal(SIGSEGV, 0);
    const struct ucontext *uc = (const void *)(uintptr_t)at;
    const struct sigcontext *m = &uc->mc;
    r->r8 = m->r8; r->r9 = m->r9; r->r10 = m->r10; r->r11 = m->r11;
    r->r12 = m->r12; r->r13 = m->r13; r->r14 = m->r14; r->r15 = m->r15;
    r->rdi = m->rdi; r->rsi = m->rsi; r->rbp = m->rbp; r->rbx = m->rbx;
    r->rdx = m->rdx; r->rax = m->rax; r->rcx = m->rcx; r->rsp = m->rsp;
    r->rip = m->rip;
    r->rflags = (m->eflags & 0x40dd5ull) | 0x2;
    blocked = uc->uc_sigmask & ~(bit(SIGKILL) | bit(SIGSTOP));
    return (s64)r->rax;
}

s64 lx_signal_syscall(u64 nr, const u64 *a, struct lx_regs *r, bool *handled, int *resume)
{
    *handled = true;
    switch (nr) {
    case 13: return do_sigaction(a[0], a[1], a[2], a[3]);
    case 14: {
        s64 ret = do_sigprocmask(a[0], a[1], a[2], a[3]);
        if (ret == 0 && (pending & ~blocked)) {
            r->rax = 0;
            *resume = lx_signal_deliver_pending(r);
        }
        return ret;
    }
    case 15:
        *resume = 1;
        return do_sigreturn(r);
    case 127:                                               /* rt_sigpending */
        if (!lx_user_ok(a[0], 8))
            return -EFAULT;
        *(u64 *)(uintptr_t)a[0] = pending;
        return 0;
    case 131: return do_sigaltstack(a[0], a[1], r->rsp);
    case 62: {                                              /* kill: the process */
        s64 target = (s64)a[0], sig = (s64)a[1];
        if (target != LX_PID && target != 0 && target != -1)
            return -ESRCH;
        if (sig < 0 || sig > NSIG)
            return -EINVAL;
        if (sig == 0)
            return 0;
        r->rax = 0;
        *resume = lx_raise((int)sig, r, 0);     /* the running thread takes it */
        return *resume ? (s64)r->rax : 0;
    }
    case 200:                                               /* tkill */
    case 234: {                                             /* tgkill */
        s64 tid = (s64)(nr == 234 ? a[1] : a[0]), sig = (s64)(nr == 234 ? a[2] : a[1]);
        if (nr == 234 && (s64)a[0] != LX_PID)
            return (s64)a[0] <= 0 ? -EINVAL : -ESRCH;
        if (tid <= 0)
            return -EINVAL;
        if (sig < 0 || sig > NSIG)
            return -EINVAL;
        if (tid > 0xffffffffll)
            return -ESRCH;
        return lx_thread_signal((u32)tid, (int)sig, r, resume);
    }
    default:
        *handled = false;
        return -ENOSYS;
    }
}

/* SIGPIPE after a write to a pipe nobody reads. */
int lx_raise_sigpipe(struct lx_regs *r);
int lx_raise_sigpipe(struct lx_regs *r)
{
    return lx_raise(SIGPIPE, r, 0);
}

/* From lx_entry.S: an exception.  The kernel's own faults are reported as
   before (fault_handler); the program's become signals. */
void lx_fault(struct exc_frame *f);
void lx_fault(struct exc_frame *f)
{
    extern char __image_start[], __image_end[];
    if (f->rip >= (u64)(uintptr_t)__image_start && f->rip < (u64)(uintptr_t)__image_end)
        fault_handler(f);
    static struct lx_regs r;
    r = (struct lx_regs){
        .r15 = f->r15, .r14 = f->r14, .r13 = f->r13, .r12 = f->r12, .r11 = f->r11,
        .r10 = f->r10, .r9 = f->r9, .r8 = f->r8, .rbp = f->rbp, .rdi = f->rdi,
        .rsi = f->rsi, .rdx = f->rdx, .rcx = f->rcx, .rbx = f->rbx, .rax = f->rax,
        .rip = f->rip, .rflags = f->rflags, .rsp = f->rsp,
    };
    switch (f->vector) {
    case 0:  force_signal(SIGFPE, &r, 1 /* FPE_INTDIV */, f->rip, 0, 0);
    case 16: case 19: force_signal(SIGFPE, &r, 0x80, f->rip, f->vector, 0);
    case 6:  force_signal(SIGILL, &r, 2 /* ILL_ILLOPN */, f->rip, 6, 0);
    case 1: case 3: force_signal(SIGTRAP, &r, 0x80, f->rip, f->vector, 0);
    case 14: {
        u64 cr2 = lx_ring0_read_cr2();
        if (!(f->error_code & 1) && lx_window_fault(cr2))
            lx_resume(&r);      /* first touch of a window page: backed, re-run */
        force_signal(SIGSEGV, &r, (f->error_code & 1) ? 2 : 1, cr2, 14, f->error_code);
    }
    case 12: case 17: force_signal(SIGBUS, &r, 0x80, 0, f->vector, f->error_code);
    default: force_signal(SIGSEGV, &r, 0x80 /* SI_KERNEL */, 0, f->vector, f->error_code);
    }
}

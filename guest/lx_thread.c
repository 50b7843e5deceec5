/*
 * lx_thread.c - threads of the one process: clone/clone3 with CLONE_VM |
 * CLONE_THREAD, thread exit, and a cooperative M:1 scheduler on the one vCPU.
 *
 * A thread switch happens only at a syscall boundary.  lx_entry.S has saved
 * the running thread's registers in a frame on the kernel stack; a switch
 * copies that frame into the thread's slot and the next thread's saved
 * context into the frame (plus its FS base and signal state), and the
 * syscall returns through lx_resume.  So no thread is ever suspended in the
 * middle of kernel code and the one kernel stack is never shared.
 *
 * Switch points: futex waits, sleeps, sched_yield, poll/select that would
 * wait, thread exit.  Nothing is preempted: a thread computing without
 * syscalls keeps the CPU (programs that synchronise through futexes, as
 * pthreads, Rust and Go do, are correct without preemption).  When no
 * thread can run, the vCPU idles (port 0xfc) until the earliest deadline;
 * when every thread waits forever the program is deadlocked, as it would
 * be on Linux, and the VMM's --timeout ends it.
 */
#include "lx.h"
#include "console.h"
#include "io.h"
#include "lib.h"


#define CLONE_VM             0x00000100ull
#define CLONE_FS             0x00000200ull
#define CLONE_FILES          0x00000400ull
#define CLONE_SIGHAND        0x00000800ull
#define CLONE_THREAD         0x00010000ull
#define CLONE_SYSVSEM        0x00040000ull
#define CLONE_SETTLS         0x00080000ull
#define CLONE_PARENT_SETTID  0x00100000ull
#define CLONE_CHILD_CLEARTID 0x00200000ull
#define CLONE_DETACHED       0x00400000ull
#define CLONE_UNTRACED       0x00800000ull
#define CLONE_CHILD_SETTID   0x01000000ull
#define CLONE_IO             0x80000000ull
/* Flags a thread may carry besides CLONE_VM|CLONE_THREAD|CLONE_SIGHAND
   (what glibc, musl and Go pass); the rest (namespaces, vfork, ptrace,
   pidfd...) are refused. */
#define THREAD_FLAGS (CLONE_VM | CLONE_THREAD | CLONE_SIGHAND | CLONE_FS | CLONE_FILES | \
                      CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID |              \
                      CLONE_CHILD_CLEARTID | CLONE_DETACHED | CLONE_UNTRACED |          \
                      CLONE_CHILD_SETTID | CLONE_IO)
#define MAX_TID 4194304u        /* pid_max's default ceiling */
#define RETRY_SLICE_US 1000     /* idle between re-runs of waiting polls */
#define TIME_SLICE_NS 10000000ull   /* a thread that never waits yields at a syscall after this */

struct lx_thread lx_threads[LX_MAX_THREADS];
static int cur;                 /* the running thread's slot */
static int live;                /* slots not T_FREE */
static bool multi;
static u32 next_tid;
static u64 hw_fs_base;          /* what MSR_FS_BASE holds */
static u64 resumes;             /* thread switches so far */
static u64 slice_start;         /* when the running thread was switched in */

/* Once per boot (lx_run): lx_threads is .bss, zero already. Zeroing it
   again would touch its five pages: ~8 shadow page walks on a software KVM,
   ~30 us of a warm run. */
void lx_thread_init(void)
{
    lx_threads[0].state = T_RUNNABLE;
    lx_threads[0].tid = LX_PID;
    cur = 0;
    live = 1;
    multi = false;
    next_tid = LX_PID + 1;
    hw_fs_base = 0;
    resumes = 1;
}

struct lx_thread *lx_thread_current(void)
{
    return &lx_threads[cur];
}

u32 lx_gettid(void)
{
    return lx_threads[cur].tid;
}

int lx_thread_count(void)
{
    return live;
}

bool lx_thread_multi(void)
{
    return multi;
}

/* The running thread's FS base as the CPU holds it: where boot.S enabled
   FSGSBASE a program may set it itself with wrfsbase, as on Linux, so the
   CPU, not the last arch_prctl, says what it is. */
u64 lx_thread_fs_base(void)
{
    u64 base;
    if (lx_get_fs_base(&base))
        lx_threads[cur].fs_base = hw_fs_base = base;
    return lx_threads[cur].fs_base;
}

void lx_thread_set_fs_base(u64 base)
{
    lx_threads[cur].fs_base = base;
    if (base != hw_fs_base) {
        lx_set_fs_base(base);
        hw_fs_base = base;
    }
}

static struct lx_thread *find_tid(u32 tid)
{
    for (int i = 0; i < LX_MAX_THREADS; i++)
        if (lx_threads[i].state != T_FREE && lx_threads[i].tid == tid)
            return &lx_threads[i];
    return NULL;
}

/* Tids count up as on Linux (the main thread's is the pid) and wrap. */
static u32 alloc_tid(void)
{
    for (;;) {
        u32 tid = next_tid++;
        if (next_tid >= MAX_TID)
            next_tid = LX_PID + 1;
        if (tid != LX_PID && !find_tid(tid))
            return tid;
    }
}

static s64 put_tid(u64 addr, u32 tid)
{
    if (!lx_user_ok(addr, 4) || (addr & 3))
        return -EFAULT;
    *(volatile u32 *)(uintptr_t)addr = tid;
    return 0;
}

static s64 do_clone(u64 flags, u64 newsp, u64 ptid, u64 ctid, u64 tls, struct lx_regs *r)
{
    if ((flags & (CLONE_VM | CLONE_THREAD)) != (CLONE_VM | CLONE_THREAD))
        return -ENOSYS;         /* a new process: there are none in the sandbox */
    /* The low byte (exit signal) means nothing for a thread, as on Linux. */
    if (!(flags & CLONE_SIGHAND) || (flags & ~(THREAD_FLAGS | 0xff)))
        return -EINVAL;         /* as Linux, or a flag threads here cannot have */
    if ((flags & CLONE_SETTLS) && tls >= (1ull << 47))
        return -EPERM;
    if ((flags & CLONE_PARENT_SETTID) && (!lx_user_ok(ptid, 4) || (ptid & 3)))
        return -EFAULT;
    if ((flags & CLONE_CHILD_SETTID) && (!lx_user_ok(ctid, 4) || (ctid & 3)))
        return -EFAULT;
    int slot = -1;
    for (int i = 0; i < LX_MAX_THREADS; i++)
        if (lx_threads[i].state == T_FREE) {
            slot = i;
            break;
        }
    if (slot < 0)
        return -EAGAIN;         /* the thread table is full (RLIMIT_NPROC-like) */

    struct lx_thread *t = &lx_threads[slot];
    lx_zero(t, sizeof(*t));
    t->tid = alloc_tid();
    /* The child resumes after the same syscall with the parent's registers
       (Go passes mp, gp and fn in r13, r9, r12), rax 0 and its own stack. */
    t->regs = *r;
    t->regs.rax = 0;
    if (newsp)
        t->regs.rsp = newsp;
    t->fs_base = (flags & CLONE_SETTLS) ? tls : lx_thread_fs_base();
    t->clear_child_tid = (flags & CLONE_CHILD_CLEARTID) ? ctid : 0;
    /* Signal mask inherited; nothing pending; no alternate stack (Linux
       clears it for CLONE_VM children). */
    struct lx_sigstate now;
    lx_signal_save(&now);
    t->sig.blocked = now.blocked;
    t->sig.ss_flags = 2;        /* SS_DISABLE */
    if (flags & CLONE_PARENT_SETTID)
        put_tid(ptid, t->tid);
    if (flags & CLONE_CHILD_SETTID)
        put_tid(ctid, t->tid);
    t->state = T_RUNNABLE;
    if (live++ == 1)            /* time slices count from the second thread on */
        slice_start = lx_monotonic_ns();
    multi = true;
    return t->tid;
}

/* struct clone_args (include/uapi/linux/sched.h), VER0 is 64 bytes. */
struct clone_args_ {
    u64 flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    u64 set_tid, set_tid_size, cgroup;
};

static s64 do_clone3(u64 uargs, u64 size, struct lx_regs *r)
{
    struct clone_args_ ca;
    if (size < 64 || size > 4096)
        return -EINVAL;
    if (!lx_user_ok(uargs, size))
        return -EFAULT;
    lx_zero(&ca, sizeof(ca));
    lx_copy(&ca, (const void *)(uintptr_t)uargs, size < sizeof(ca) ? size : sizeof(ca));
    if ((ca.flags & (CLONE_VM | CLONE_THREAD)) != (CLONE_VM | CLONE_THREAD))
        return -ENOSYS;
    if (ca.exit_signal || ca.set_tid || ca.set_tid_size || ca.cgroup || (ca.flags >> 32))
        return -EINVAL;
    if ((ca.stack == 0) != (ca.stack_size == 0))
        return -EINVAL;
    u64 sp = ca.stack ? ca.stack + ca.stack_size : 0;
    return do_clone(ca.flags, sp, ca.parent_tid, ca.child_tid, ca.tls, r);
}

/* exit(2): this thread only, unless it is the last. */
static s64 thread_exit(int status)
{
    if (live == 1)
        lx_exit_status(status);
    struct lx_thread *t = &lx_threads[cur];
    /* CLONE_CHILD_CLEARTID / set_tid_address: how pthread_join learns. */
    u64 ctid = t->clear_child_tid;
    if (ctid && !(ctid & 3) && lx_user_ok(ctid, 4)) {
        *(volatile u32 *)(uintptr_t)ctid = 0;
        lx_futex_wake(ctid, ~0u, 1);
    }
    if (lx_opts.trace) {
        LX_TRACE("[pid %u] +++ exited with %d +++", t->tid, status & 0xff);
        lx_trace_end();
    }
    t->state = T_FREE;
    live--;
    return LX_BLOCKED;
}

void lx_thread_wake(struct lx_thread *t, s64 ret)
{
    if (!t->retry)              /* a re-run syscall computes its own result */
        t->regs.rax = (u64)ret;
    t->state = T_RUNNABLE;
    t->deadline = 0;
    t->futex_addr = 0;
}

s64 lx_thread_block(enum lx_tstate state, u64 deadline, s64 on_timeout)
{
    struct lx_thread *t = &lx_threads[cur];
    t->state = state;
    t->deadline = deadline;
    t->on_timeout = on_timeout;
    return LX_BLOCKED;
}

s64 lx_thread_wait_retry(u64 deadline)
{
    struct lx_thread *t = &lx_threads[cur];
    lx_thread_block(T_RETRY, deadline, 0);
    t->retry = true;
    t->retry_deadline = deadline;
    return LX_BLOCKED;
}

u64 lx_thread_retry_deadline(u64 fresh)
{
    struct lx_thread *t = &lx_threads[cur];
    if (t->retrying)
        return t->retry_deadline;
    t->retry_deadline = fresh;
    return fresh;
}

void lx_thread_unblock_self(void)
{
    struct lx_thread *t = &lx_threads[cur];
    if (t->state > T_RUNNABLE) {
        t->state = T_RUNNABLE;
        t->retry = false;
        t->deadline = 0;
        t->futex_addr = 0;
    }
}

bool lx_thread_slice_over(void)
{
    if (live < 2 || lx_monotonic_ns() - slice_start < TIME_SLICE_NS)
        return false;
    for (int i = 1; i < LX_MAX_THREADS; i++) {
        enum lx_tstate s = lx_threads[(cur + i) % LX_MAX_THREADS].state;
        if (s == T_RUNNABLE || s == T_RETRY) {
            lx_threads[cur].blocked_nr = 0;     /* its call is complete (and traced) */
            return true;
        }
    }
    slice_start = lx_monotonic_ns();
    return false;
}

void lx_thread_syscall_enter(u64 nr)
{
    struct lx_thread *t = &lx_threads[cur];
    t->retrying = t->retry && t->blocked_nr == nr;
    t->retry = false;
    t->blocked_nr = nr;
    t->sleep_rem = 0;
}

/* Pass the expired deadlines; the earliest one left (0: none). */
static u64 expire_deadlines(void)
{
    u64 now = lx_monotonic_ns(), earliest = 0;
    for (int i = 0; i < LX_MAX_THREADS; i++) {
        struct lx_thread *t = &lx_threads[i];
        if (t->state <= T_RUNNABLE || !t->deadline)
            continue;
        if (now >= t->deadline)
            lx_thread_wake(t, t->on_timeout);
        else if (!earliest || t->deadline < earliest)
            earliest = t->deadline;
    }
    return earliest;
}

/* Round robin from the slot after the current one; the current thread
   itself comes last.  A waiting poll is re-run once another thread has run
   since it last looked (or after an idle slice). */
static int pick_next(void)
{
    for (;;) {
        u64 earliest = expire_deadlines();
        bool retries = false;
        for (int i = 1; i <= LX_MAX_THREADS; i++) {
            int j = (cur + i) % LX_MAX_THREADS;
            struct lx_thread *t = &lx_threads[j];
            if (t->state == T_RUNNABLE)
                return j;
            if (t->state == T_RETRY) {
                if (t->wait_seq < resumes) {
                    lx_thread_wake(t, 0);
                    return j;
                }
                retries = true;
            }
        }
        if (retries) {
            lx_idle_until(earliest, RETRY_SLICE_US);
            for (int i = 0; i < LX_MAX_THREADS; i++)
                if (lx_threads[i].state == T_RETRY)
                    lx_threads[i].wait_seq = 0;
        } else {
            /* Every thread waits: for a deadline, or forever (deadlock) */
            lx_idle_until(earliest, 1000000);
        }
    }
}

static const char *nr_name(u64 nr)
{
    switch (nr) {
    case 7: return "poll";
    case 23: return "select";
    case 24: return "sched_yield";
    case 35: return "nanosleep";
    case 202: return "futex";
    case 230: return "clock_nanosleep";
    case 270: return "pselect6";
    case 271: return "ppoll";
    default: return "syscall";
    }
}

int lx_thread_switch(struct lx_regs *r)
{
    struct lx_thread *t = &lx_threads[cur];
    if (t->state != T_FREE) {
        t->regs = *r;
        if (t->retry) {         /* back onto the `syscall` instruction */
            t->regs.rip -= 2;
            t->regs.rax = t->blocked_nr;
        }
        /* wait_seq doubles as "resumes when it started waiting" for polls;
           futex waiters got their FIFO number in lx_futex.c */
        if (t->state == T_RETRY)
            t->wait_seq = resumes;
        lx_signal_save(&t->sig);
        lx_thread_fs_base();    /* kept with the thread: it may have changed it itself */
    }
    int next = pick_next();
    struct lx_thread *n = &lx_threads[next];
    resumes++;
    if (lx_opts.trace && n->blocked_nr && !n->retry && !multi) {
        /* one thread: its wait was not traced yet, the line is whole */
        const struct lx_regs *g = &n->regs;
        u64 args[6] = { g->rdi, g->rsi, g->rdx, g->r10, g->r8, g->r9 };
        lx_trace_syscall(n->blocked_nr, args, (s64)g->rax);
    } else if (lx_opts.trace && n->blocked_nr && !n->retry) {
        s64 ret = (s64)n->regs.rax;
        LX_TRACE("[pid %u] <... %s resumed> = %ld", n->tid, nr_name(n->blocked_nr), ret);
        if (ret == -ETIMEDOUT)
            lx_trace_add(" ETIMEDOUT");
        else if (ret == -EINTR)
            lx_trace_add(" EINTR");
        lx_trace_end();
    }
    if (!n->retry)
        n->blocked_nr = 0;
    cur = next;
    slice_start = lx_monotonic_ns();
    *r = n->regs;
    if (n->fs_base != hw_fs_base) {
        lx_set_fs_base(n->fs_base);
        hw_fs_base = n->fs_base;
    }
    lx_signal_load(&n->sig);
    lx_signal_deliver_pending(r);
    return 1;
}

/* A signal for thread tid (tgkill/tkill). */
s64 lx_thread_signal(u32 tid, int sig, struct lx_regs *r, int *resume)
{
    if (tid == lx_threads[cur].tid) {
        if (sig == 0)
            return 0;
        r->rax = 0;
        *resume = lx_raise(sig, r, 0);
        return *resume ? (s64)r->rax : 0;
    }
    struct lx_thread *t = find_tid(tid);
    if (!t)
        return -ESRCH;
    if (sig == 0)
        return 0;
    if (sig == 9)               /* SIGKILL ends the whole process at once */
        lx_raise(sig, r, 0);
    t->sig.pending |= 1ull << (sig - 1);
    /* Delivered when the thread next runs; a wait it is in ends with EINTR
       when the signal would run a handler or end the process. */
    if (t->state > T_RUNNABLE && lx_signal_interrupts(sig, t->sig.blocked)) {
        if (t->retry) {         /* the poll is not re-run: it returns EINTR */
            t->retry = false;
            t->regs.rip += 2;
        }
        if (t->state == T_SLEEP && t->sleep_rem && lx_user_ok(t->sleep_rem, 16)) {
            u64 now = lx_monotonic_ns(), left = t->deadline > now ? t->deadline - now : 0;
            s64 *ts = (s64 *)(uintptr_t)t->sleep_rem;
            ts[0] = (s64)(left / 1000000000ull);
            ts[1] = (s64)(left % 1000000000ull);
        }
        lx_thread_wake(t, -EINTR);
    }
    return 0;
}

s64 lx_thread_syscall(u64 nr, const u64 *a, struct lx_regs *r, bool *handled)
{
    *handled = true;
    switch (nr) {
    case 56: return do_clone(a[0], a[1], a[2], a[3], a[4], r);             /* clone */
    case 435: return do_clone3(a[0], a[1], r);                             /* clone3 */
    case 60: return thread_exit((int)a[0]);                                /* exit */
    case 186: return lx_threads[cur].tid;                                  /* gettid */
    case 218:                                                              /* set_tid_address */
        lx_threads[cur].clear_child_tid = a[0];
        return lx_threads[cur].tid;
    case 24:                                                               /* sched_yield */
        for (int i = 1; i < LX_MAX_THREADS; i++)
            if (lx_threads[(cur + i) % LX_MAX_THREADS].state == T_RUNNABLE) {
                r->rax = 0;
                return LX_BLOCKED;   /* still runnable: the next one runs first */
            }
        return 0;
    case 202: return lx_futex(a);
    default:
        *handled = false;
        return -ENOSYS;
    }
}

/*
 * lx_futex.c - futex(2) for the threads of lx_thread.c: WAIT/WAKE and their
 * BITSET forms, REQUEUE/CMP_REQUEUE (glibc condition variables), WAKE_OP,
 * private or shared alike (one process), with relative (WAIT) or absolute
 * (WAIT_BITSET, on CLOCK_MONOTONIC or with FUTEX_CLOCK_REALTIME) timeouts.
 * PI futexes are -ENOSYS.
 *
 * A waiter is a thread slot in state T_FUTEX holding the address and its
 * bitset; waiters of an address wake in the order they started waiting.
 * Checking *uaddr and going to sleep cannot be interleaved with another
 * thread (one vCPU, switches only at syscall boundaries): no lost wake-ups.
 */
#include "lx.h"
#include "lib.h"

#define FUTEX_WAIT            0
#define FUTEX_WAKE            1
#define FUTEX_REQUEUE         3
#define FUTEX_CMP_REQUEUE     4
#define FUTEX_WAKE_OP         5
#define FUTEX_WAIT_BITSET     9
#define FUTEX_WAKE_BITSET     10
#define FUTEX_PRIVATE_FLAG    128
#define FUTEX_CLOCK_REALTIME  256

static u64 wait_seq;

static bool futex_word_ok(u64 uaddr)
{
    return lx_user_ok(uaddr, 4);
}

/* The oldest waiter on addr whose bitset meets `bitset`. */
static struct lx_thread *oldest_waiter(u64 addr, u32 bitset)
{
    struct lx_thread *best = NULL;
    for (int i = 0; i < LX_MAX_THREADS; i++) {
        struct lx_thread *t = &lx_threads[i];
        if (t->state == T_FUTEX && t->futex_addr == addr && (t->futex_bitset & bitset) &&
            (!best || t->wait_seq < best->wait_seq))
            best = t;
    }
    return best;
}

int lx_futex_wake(u64 addr, u32 bitset, int n)
{
    int woken = 0;
    if (n <= 0)                 /* Linux wakes one even when asked for none */
        n = 1;
    while (woken < n) {
        struct lx_thread *t = oldest_waiter(addr, bitset);
        if (!t)
            break;
        lx_thread_wake(t, 0);
        woken++;
    }
    return woken;
}

/* A timespec the program gave: ns, or -errno. */
static s64 read_timespec(u64 uts, u64 *ns)
{
    if (!lx_user_ok(uts, 16))
        return -EFAULT;
    const s64 *ts = (const s64 *)(uintptr_t)uts;
    s64 sec = ts[0], nsec = ts[1];
    if (sec < 0 || nsec < 0 || nsec >= 1000000000)
        return -EINVAL;
    if ((u64)sec > (1ull << 33))    /* centuries: as good as forever */
        sec = 1ll << 33;
    *ns = (u64)sec * 1000000000ull + (u64)nsec;
    return 0;
}

static s64 futex_wait(u64 uaddr, u32 val, u64 uts, u32 bitset, bool absolute, bool realtime)
{
    if (!bitset)
        return -EINVAL;
    u64 deadline = 0;
    if (uts) {
        u64 ns;
        s64 err = read_timespec(uts, &ns);
        if (err)
            return err;
        u64 now = lx_monotonic_ns();
        if (!absolute) {
            deadline = now + ns;
        } else if (realtime) {      /* CLOCK_REALTIME deadline on the monotonic clock */
            u64 real = lx_realtime_ns();
            deadline = ns > real ? now + (ns - real) : now;
        } else {
            deadline = ns;
        }
        if (!deadline)
            deadline = 1;           /* 0 would mean "no deadline" */
    }
    if (*(volatile u32 *)(uintptr_t)uaddr != val)
        return -EAGAIN;
    struct lx_thread *t = lx_thread_current();
    t->futex_addr = uaddr;
    t->futex_bitset = bitset;
    t->wait_seq = ++wait_seq;
    return lx_thread_block(T_FUTEX, deadline, -ETIMEDOUT);
}

static s64 futex_requeue(u64 uaddr, u64 uaddr2, int nr_wake, s64 nr_requeue, bool cmp, u32 val3)
{
    if (nr_requeue < 0)
        return -EINVAL;
    if (!futex_word_ok(uaddr2) || (uaddr2 & 3))
        return -EFAULT;
    if (cmp && *(volatile u32 *)(uintptr_t)uaddr != val3)
        return -EAGAIN;
    int done = lx_futex_wake(uaddr, ~0u, nr_wake);
    for (s64 moved = 0; moved < nr_requeue; moved++) {
        struct lx_thread *t = oldest_waiter(uaddr, ~0u);
        if (!t)
            break;
        t->futex_addr = uaddr2;     /* keeps its place in the FIFO order */
        done++;
    }
    return done;
}

static s32 sign_extend12(u32 v)
{
    return (s32)(v << 20) >> 20;
}

/* FUTEX_WAKE_OP: *uaddr2 = *uaddr2 OP oparg; wake on uaddr; and on uaddr2
   too when the old value compares true against cmparg. */
static s64 futex_wake_op(u64 uaddr, u64 uaddr2, int nr_wake, int nr_wake2, u32 enc)
{
    if (!futex_word_ok(uaddr2) || (uaddr2 & 3))
        return -EFAULT;
    u32 op = (enc >> 28) & 7, cmp = (enc >> 24) & 15;
    s32 oparg = sign_extend12((enc >> 12) & 0xfff), cmparg = sign_extend12(enc & 0xfff);
    if (enc & 0x80000000u) {        /* FUTEX_OP_OPARG_SHIFT */
        if (oparg < 0 || oparg > 31)
            return -EINVAL;
        oparg = (s32)(1u << oparg);
    }
    volatile u32 *p = (volatile u32 *)(uintptr_t)uaddr2;
    s32 old = (s32)*p;
    switch (op) {
    case 0: *p = (u32)oparg; break;
    case 1: *p = (u32)(old + oparg); break;
    case 2: *p = (u32)old | (u32)oparg; break;
    case 3: *p = (u32)old & ~(u32)oparg; break;
    case 4: *p = (u32)old ^ (u32)oparg; break;
    default: return -ENOSYS;
    }
    bool hit;
    switch (cmp) {
    case 0: hit = old == cmparg; break;
    case 1: hit = old != cmparg; break;
    case 2: hit = old < cmparg; break;
    case 3: hit = old <= cmparg; break;
    case 4: hit = old > cmparg; break;
    case 5: hit = old >= cmparg; break;
    default: return -ENOSYS;
    }
    int done = lx_futex_wake(uaddr, ~0u, nr_wake);
    if (hit)
        done += lx_futex_wake(uaddr2, ~0u, nr_wake2);
    return done;
}

/* futex(uaddr, op, val, timeout|val2, uaddr2, val3) */
s64 lx_futex(const u64 *a)
{
    u64 uaddr = a[0];
    u32 op = (u32)a[1], val = (u32)a[2], val3 = (u32)a[5];
    u32 cmd = op & ~(u32)(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    bool realtime = op & FUTEX_CLOCK_REALTIME;
    if (realtime && cmd != FUTEX_WAIT && cmd != FUTEX_WAIT_BITSET)
        return -ENOSYS;
    if (uaddr & 3)
        return -EINVAL;
    if (!futex_word_ok(uaddr))
        return -EFAULT;
    switch (cmd) {
    case FUTEX_WAIT: return futex_wait(uaddr, val, a[3], ~0u, false, false);
    case FUTEX_WAIT_BITSET: return futex_wait(uaddr, val, a[3], val3, true, realtime);
    case FUTEX_WAKE: return lx_futex_wake(uaddr, ~0u, (int)val);
    case FUTEX_WAKE_BITSET: return val3 ? lx_futex_wake(uaddr, val3, (int)val) : -EINVAL;
    case FUTEX_REQUEUE: return futex_requeue(uaddr, a[4], (int)val, (s64)(s32)a[3], false, 0);
    case FUTEX_CMP_REQUEUE: return futex_requeue(uaddr, a[4], (int)val, (s64)(s32)a[3], true, val3);
    case FUTEX_WAKE_OP: return futex_wake_op(uaddr, a[4], (int)val, (int)(s32)a[3], val3);
    default: return -ENOSYS;    /* PI futexes and the rest */
    }
}

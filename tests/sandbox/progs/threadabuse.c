/* threadabuse [MODE]: thread and futex syscalls with bad arguments, raw;
   each line is "what: result" (errno name or value).  MODE "badstack":
   a thread cloned onto a stack that is not there. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* linux/futex.h values (musl's headers do not carry the file) */
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#define FUTEX_REQUEUE 3
#define FUTEX_CMP_REQUEUE 4
#define FUTEX_LOCK_PI 6
#define FUTEX_WAIT_BITSET 9
#define FUTEX_WAIT_PRIVATE 128

static const char *name(long r)
{
    static char buf[32];
    if (r >= 0) {
        snprintf(buf, sizeof(buf), "%ld", r);
        return buf;
    }
    switch (-r) {
    case EINVAL: return "EINVAL";
    case EFAULT: return "EFAULT";
    case EAGAIN: return "EAGAIN";
    case ENOSYS: return "ENOSYS";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ESRCH: return "ESRCH";
    case EBADF: return "EBADF";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    default: snprintf(buf, sizeof(buf), "errno %ld", -r); return buf;
    }
}

static long raw(long nr, long a, long b, long c, long d, long e, long f)
{
    long r = syscall(nr, a, b, c, d, e, f);
    return r < 0 ? -errno : r;
}

#define SHOW(what, call) printf("%s: %s\n", what, name(call))

int main(int argc, char **argv)
{
    static uint32_t word = 5;
    long kernel = 0x100000;     /* the guest kernel's pages: not the program's */
    long thread = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD;
    if (argc > 1 && !strcmp(argv[1], "badstack")) {
        printf("cloning\n");
        fflush(stdout);
        /* the child may run first (as on Linux) and end the process */
        long r = raw(SYS_clone, thread, 0x10, 0, 0, 0, 0);
        if (r == 0)
            for (;;)
                ;               /* not reached: the child's first push faults */
        struct timespec ts = { 1, 0 };
        nanosleep(&ts, NULL);   /* the child runs now and faults */
        printf("not reached\n");
        return 0;
    }
    SHOW("clone thread without sighand", raw(SYS_clone, CLONE_VM | CLONE_THREAD, 0, 0, 0, 0, 0));
    SHOW("clone thread with newns", raw(SYS_clone, thread | CLONE_NEWNS, 0, 0, 0, 0, 0));
    SHOW("clone fork", raw(SYS_clone, SIGCHLD, 0, 0, 0, 0, 0));
    SHOW("clone vfork", raw(SYS_clone, CLONE_VM | CLONE_VFORK | SIGCHLD, 0, 0, 0, 0, 0));
    SHOW("clone parent_settid into kernel", raw(SYS_clone, thread | CLONE_PARENT_SETTID, 0x1000000, kernel, 0, 0, 0));
    SHOW("clone settls beyond user space", raw(SYS_clone, thread | CLONE_SETTLS, 0x1000000, 0, 0, 1L << 48, 0));
    SHOW("clone3 short", raw(435, (long)&word, 8, 0, 0, 0, 0));
    SHOW("clone3 into kernel", raw(435, kernel, 88, 0, 0, 0, 0));
    SHOW("futex null", raw(SYS_futex, 0, FUTEX_WAIT, 5, 0, 0, 0));
    SHOW("futex misaligned", raw(SYS_futex, (long)&word + 1, FUTEX_WAIT, 5, 0, 0, 0));
    SHOW("futex kernel", raw(SYS_futex, kernel, FUTEX_WAKE, 1, 0, 0, 0));
    SHOW("futex wait other value", raw(SYS_futex, (long)&word, FUTEX_WAIT_PRIVATE, 6, 0, 0, 0));
    struct timespec short_ts = { 0, 1000 }, bad_ts = { 0, 1000000000 };
    SHOW("futex wait timeout", raw(SYS_futex, (long)&word, FUTEX_WAIT_PRIVATE, 5, (long)&short_ts, 0, 0));
    SHOW("futex wait bad timespec", raw(SYS_futex, (long)&word, FUTEX_WAIT, 5, (long)&bad_ts, 0, 0));
    SHOW("futex wait timespec in kernel", raw(SYS_futex, (long)&word, FUTEX_WAIT, 5, kernel, 0, 0));
    struct timespec past = { 0, 1 };
    SHOW("futex wait_bitset past deadline", raw(SYS_futex, (long)&word, FUTEX_WAIT_BITSET, 5, (long)&past, 0, -1));
    SHOW("futex wait_bitset zero bitset", raw(SYS_futex, (long)&word, FUTEX_WAIT_BITSET, 5, 0, 0, 0));
    SHOW("futex wake nobody", raw(SYS_futex, (long)&word, FUTEX_WAKE, 100, 0, 0, 0));
    SHOW("futex cmp_requeue other value", raw(SYS_futex, (long)&word, FUTEX_CMP_REQUEUE, 1, 1, (long)&word + 4, 6));
    SHOW("futex requeue negative", raw(SYS_futex, (long)&word, FUTEX_REQUEUE, 1, -1, (long)&word + 4, 0));
    SHOW("futex requeue into kernel", raw(SYS_futex, (long)&word, FUTEX_CMP_REQUEUE, 1, 1, kernel, 5));
    SHOW("futex lock_pi", raw(SYS_futex, (long)&word, FUTEX_LOCK_PI, 0, 0, 0, 0));
    SHOW("futex unknown op", raw(SYS_futex, (long)&word, 99, 0, 0, 0, 0));
    SHOW("tgkill no such thread", raw(SYS_tgkill, getpid(), 99999, SIGUSR1, 0, 0, 0));
    SHOW("tgkill other process", raw(SYS_tgkill, 99999, getpid(), SIGUSR1, 0, 0, 0));
    SHOW("tkill bad signal", raw(SYS_tkill, gettid(), 1000, 0, 0, 0, 0));
    SHOW("tgkill signal 0 to self", raw(SYS_tgkill, getpid(), gettid(), 0, 0, 0, 0));
    int ep = epoll_create1(0);
    SHOW("epoll_ctl bad fd", raw(SYS_epoll_ctl, ep, EPOLL_CTL_ADD, 999, (long)&word, 0, 0));
    SHOW("epoll_ctl on itself", raw(SYS_epoll_ctl, ep, EPOLL_CTL_ADD, ep, (long)&word, 0, 0));
    SHOW("epoll_ctl event in kernel", raw(SYS_epoll_ctl, ep, EPOLL_CTL_ADD, 0, kernel, 0, 0));
    SHOW("epoll_ctl del missing", raw(SYS_epoll_ctl, ep, EPOLL_CTL_DEL, 1, 0, 0, 0));
    SHOW("epoll_wait zero events", raw(SYS_epoll_wait, ep, (long)&word, 0, 0, 0, 0));
    SHOW("epoll_wait events in kernel", raw(SYS_epoll_wait, ep, kernel, 4, 0, 0, 0));
    SHOW("epoll_wait not epoll", raw(SYS_epoll_wait, 1, (long)&word, 1, 0, 0, 0));
    SHOW("set_tid_address kernel", raw(SYS_set_tid_address, kernel, 0, 0, 0, 0, 0) == gettid());
    return 0;
}

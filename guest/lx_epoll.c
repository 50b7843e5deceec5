/*
 * lx_epoll.c - epoll over the process's own descriptors (pipes, stdin,
 * files): what Go's runtime needs for its timers and netpoll break pipe.
 *
 * An instance holds up to EP_MAX interests.  epoll_wait computes readiness
 * as poll does; EPOLLET reports only readiness that was not there at the
 * previous report (a rising edge), EPOLLONESHOT disarms after one report.
 * A wait with nothing ready waits among the other threads as poll does (the
 * call is re-run when they have run, or at its deadline).  A closed fd
 * drops out of the set (its description is remembered and compared).
 * Nested epoll instances are refused (EINVAL).
 */
#include "lx.h"
#include "lib.h"

#define EP_MAX 64
#define EP_INSTANCES 32

#define EPOLLIN      0x001u
#define EPOLLOUT     0x004u
#define EPOLLERR     0x008u
#define EPOLLHUP     0x010u
#define EPOLLNVAL    0x020u
#define EPOLLRDHUP   0x2000u
#define EPOLLONESHOT (1u << 30)
#define EPOLLET      (1u << 31)
#define EPOLL_CLOEXEC 0x80000

#define EPOLL_CTL_ADD 1
#define EPOLL_CTL_DEL 2
#define EPOLL_CTL_MOD 3

struct epoll_event_ {
    u32 events;
    u64 data;
} __attribute__((packed));

struct interest {
    bool used;
    s32 fd;
    const void *file;           /* the description when added */
    u32 events;
    u64 data;
    u32 last;                   /* readiness at the last report (EPOLLET) */
};

struct epoll {
    bool used;
    struct interest set[EP_MAX];
};

static struct epoll instances[EP_INSTANCES];

static s64 epoll_create(u64 flags)
{
    if (flags & ~(u64)EPOLL_CLOEXEC)
        return -EINVAL;
    for (int i = 0; i < EP_INSTANCES; i++)
        if (!instances[i].used) {
            struct epoll *ep = &instances[i];
            s64 fd = lx_fs_new_epoll(ep, flags & EPOLL_CLOEXEC);
            if (fd >= 0) {
                lx_zero(ep, sizeof(*ep));
                ep->used = true;
            }
            return fd;
        }
    return -EMFILE;
}

void lx_epoll_release(void *p)
{
    ((struct epoll *)p)->used = false;
}

static struct interest *find(struct epoll *ep, s32 fd, const void *file)
{
    for (int i = 0; i < EP_MAX; i++)
        if (ep->set[i].used && ep->set[i].fd == fd && ep->set[i].file == file)
            return &ep->set[i];
    return NULL;
}

static s64 epoll_ctl(s64 epfd, s64 op, s64 fd, u64 uev)
{
    struct epoll *ep = lx_fs_epoll(epfd);
    const void *file;
    if (!ep)
        return lx_fs_ready(epfd, &file) == 0x20 ? -EBADF : -EINVAL;
    struct epoll_event_ ev = { 0, 0 };
    if (op != EPOLL_CTL_DEL) {  /* Linux reads the event first */
        if (!lx_user_ok(uev, sizeof(ev)))
            return -EFAULT;
        lx_copy(&ev, (const void *)(uintptr_t)uev, sizeof(ev));
    }
    if (lx_fs_ready(fd, &file) == 0x20 || fd > 0x7fffffff)
        return -EBADF;
    if (fd == epfd || lx_fs_epoll(fd))
        return -EINVAL;
    struct interest *in = find(ep, (s32)fd, file);
    switch (op) {
    case EPOLL_CTL_ADD:
        if (in)
            return -EEXIST;
        for (int i = 0; i < EP_MAX; i++)
            if (!ep->set[i].used || lx_fs_ready(ep->set[i].fd, &file) == 0x20 ||
                file != ep->set[i].file) {       /* free, or its fd was closed */
                lx_fs_ready(fd, &file);
                ep->set[i] = (struct interest){ true, (s32)fd, file, ev.events, ev.data, 0 };
                return 0;
            }
        return -ENOSPC;         /* as max_user_watches would */
    case EPOLL_CTL_MOD:
        if (!in)
            return -ENOENT;
        in->events = ev.events;
        in->data = ev.data;
        in->last = 0;
        return 0;
    case EPOLL_CTL_DEL:
        if (!in)
            return -ENOENT;
        in->used = false;
        return 0;
    default:
        return -EINVAL;
    }
}

/* Fill up to max events; how many. */
static int collect(struct epoll *ep, struct epoll_event_ *out, int max, bool consume)
{
    int n = 0;
    for (int i = 0; i < EP_MAX && n < max; i++) {
        struct interest *in = &ep->set[i];
        const void *file;
        if (!in->used)
            continue;
        u32 ready = (u32)(u16)lx_fs_ready(in->fd, &file);
        if (ready == EPOLLNVAL || file != in->file) {
            in->used = false;   /* closed: Linux drops it with the description */
            continue;
        }
        ready &= in->events | EPOLLERR | EPOLLHUP;
        if (!(in->events & ~(EPOLLET | EPOLLONESHOT)) && (in->events & EPOLLONESHOT))
            ready = 0;          /* a fired one-shot, not re-armed yet */
        u32 report = (in->events & EPOLLET) ? ready & ~in->last : ready;
        if (consume)
            in->last = ready;
        if (!report)
            continue;
        if (out) {
            out[n].events = report;
            out[n].data = in->data;
        }
        if (consume && (in->events & EPOLLONESHOT))
            in->events &= EPOLLET | EPOLLONESHOT;
        n++;
    }
    return n;
}

bool lx_epoll_ready(void *p)
{
    return collect(p, NULL, 1, false) > 0;
}

static s64 epoll_wait(s64 epfd, u64 uevents, s64 max, s64 timeout_ms)
{
    struct epoll *ep = lx_fs_epoll(epfd);
    const void *file;
    if (!ep)
        return lx_fs_ready(epfd, &file) == 0x20 ? -EBADF : -EINVAL;
    if (max <= 0 || max > 0x10000)
        return -EINVAL;
    if (!lx_user_ok(uevents, (u64)max * sizeof(struct epoll_event_)))
        return -EFAULT;
    u64 fresh = timeout_ms > 0 ? lx_monotonic_ns() + (u64)timeout_ms * 1000000ull : 0;
    u64 deadline = lx_thread_retry_deadline(fresh);
    int n = collect(ep, (struct epoll_event_ *)(uintptr_t)uevents, (int)max, true);
    if (n || timeout_ms == 0 || (deadline && lx_monotonic_ns() >= deadline))
        return n;
    return lx_thread_wait_retry(deadline);
}

s64 lx_epoll_syscall(u64 nr, const u64 *a, bool *handled)
{
    *handled = true;
    switch (nr) {
    case 213: return (s64)a[0] <= 0 || (s32)a[0] <= 0 ? -EINVAL : epoll_create(0);   /* epoll_create */
    case 291: return epoll_create(a[0]);                                             /* epoll_create1 */
    case 233: return epoll_ctl((s64)(s32)a[0], (s64)(s32)a[1], (s64)(s32)a[2], a[3]); /* epoll_ctl */
    case 232:                                                                        /* epoll_wait */
    case 281:                                                                        /* epoll_pwait */
        return epoll_wait((s64)(s32)a[0], a[1], (s64)(s32)a[2], (s64)(s32)a[3]);
    default:
        *handled = false;
        return -ENOSYS;
    }
}

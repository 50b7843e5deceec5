/*
 * lx.h - the guest's Linux personality: runs one static x86-64 Linux
 * program from a bundle (a ustar PVH module), serving its syscalls.
 *
 * Files: lx_main.c (bundle, options, start, exit), lx_entry.S (syscall
 * entry, resume, exception stubs), lx_sys.c (dispatch, trace, misc calls),
 * lx_mem.c (pages, brk, mmap), lx_elf.c (loader, initial stack),
 * lx_vfs.c (file tree, /out archive), lx_fs.c (descriptors, file calls),
 * lx_signal.c (signals, faults),
 * lx_stdio.c (the stdio stream backend: COM1 today), lx_time.c (clocks,
 * random), lx_thread.c (threads: clone, exit, the cooperative scheduler),
 * lx_futex.c (futex).
 */
#ifndef GUEST_LX_H
#define GUEST_LX_H

#include "types.h"

typedef int32_t s32;
typedef int16_t s16;

/* Saved by lx_entry.S; lowest address first. */
struct lx_regs {
    u64 r15, r14, r13, r12, r11, r10, r9, r8;
    u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 rip, rflags, rsp;
};

/* Bulk copies and fills: rep movsb/stosb run natively in ring 3 and are
   far faster than lib.c's byte loops (program images, file data). */
static inline void lx_copy(void *dst, const void *src, u64 n)
{
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

static inline void lx_zero(void *dst, u64 n)
{
    __asm__ volatile("rep stosb" : "+D"(dst), "+c"(n) : "a"(0) : "memory");
}

/* ---- errno values (asm-generic/errno-base.h, errno.h) ---- */
#define EPERM 1
#define ENOENT 2
#define ESRCH 3
#define EINTR 4
#define EIO 5
#define ENOEXEC 8
#define EBADF 9
#define ECHILD 10
#define EAGAIN 11
#define ENOMEM 12
#define EACCES 13
#define EFAULT 14
#define EBUSY 16
#define EEXIST 17
#define EXDEV 18
#define ENODEV 19
#define ENOTDIR 20
#define EISDIR 21
#define EINVAL 22
#define ENFILE 23
#define EMFILE 24
#define ENOTTY 25
#define EFBIG 27
#define ENOSPC 28
#define ESPIPE 29
#define EROFS 30
#define EMLINK 31
#define EPIPE 32
#define ERANGE 34
#define ENAMETOOLONG 36
#define ENOSYS 38
#define ENOTEMPTY 39
#define ELOOP 40
#define ENODATA 61
#define EOVERFLOW 75
#define EOPNOTSUPP 95
#define ETIMEDOUT 110

/* A syscall handler's "this thread now waits": lx_syscall switches to
   another thread instead of returning (never seen by the program). */
#define LX_BLOCKED (-100000)

/* ---- lx_main.c ---- */
struct lx_opts {
    bool have_seed;
    u64 seed;
    u64 entropy;                /* fresh from the host each run: clones of one
                                   warm snapshot must not share random state */
    bool have_clock;
    u64 clock_ns;               /* deterministic clock start (unix ns) */
    bool have_now;
    u64 now_ns;                 /* wall clock at bundle time (unix ns) */
    bool trace;
    bool dumpout;               /* print /out as a base64 ustar at exit */
    bool noout;                 /* the host keeps no /out: send none (skips an 8 MiB buffer and a transfer) */
    bool drained;               /* the host serves every queue notified before the power-off: no waiting at exit */
    char cwd[256];
};
extern struct lx_opts lx_opts;
extern char lx_exec_path[256];

/* True when boot module 0 is a bundle; fills in the module's range. */
bool lx_bundle_present(void);
NORETURN void lx_run(void);
NORETURN void lx_exit_status(int status);
NORETURN void lx_exit_signal(int sig, u64 addr);
NORETURN void lx_cannot_execute(const char *why);

/* ---- lx_entry.S ---- */
NORETURN void lx_resume(struct lx_regs *r);
void lx_syscall_entry(void);
extern const u64 lx_exc_table[32];
extern u8 lx_ring0_stack_top[];
void lx_set_fs_base(u64 base);
bool lx_get_fs_base(u64 *base);     /* false: without FSGSBASE (only arch_prctl sets it) */
void lx_set_gs_base(u64 base);
void lx_ring0_flush_tlb(void);
u64 lx_ring0_read_cr2(void);
void lx_fs_late_init(void);
extern int lx_sigpipe_pending;
s64 sys_madvise_dontneed(u64 addr, u64 len);

/* ---- lx_sys.c ---- */
int lx_syscall(struct lx_regs *r);

/* ---- lx_mem.c ---- */
#define LX_PAGE 4096ull
#define LX_LOW_UNMAPPED 0x10000ull      /* nothing mapped below 64 KiB */
void lx_mem_init(u64 bundle_start, u64 bundle_end, u64 placed_lo, u64 placed_hi);
/* The host placed exactly [start, end) of the program (warm mode): adopt it. */
bool lx_adopt_placed(u64 start, u64 end);
/* A free, page-aligned run of `bytes` for the kernel (zeroed); 0 when none. */
void *lx_kpages(u64 bytes);
void lx_kpages_free(void *p, u64 bytes);
/* Small kernel objects (never freed; bounded by the program's limits). */
void *lx_kalloc(u64 bytes);
/* Claim [addr, addr+len) for the program: false if any page is taken. */
bool lx_claim_user(u64 addr, u64 len);
/* Find and claim a free run for the program (top-down below the stack); 0 when none. */
u64 lx_alloc_user(u64 len);
void lx_set_brk_base(u64 base);
bool lx_user_ok(u64 addr, u64 len);     /* readable/writable by the kernel */
s64 sys_brk(u64 addr);
s64 sys_mmap(u64 addr, u64 len, u64 prot, u64 flags, u64 fd, u64 off);
s64 sys_munmap(u64 addr, u64 len);
s64 sys_mremap(u64 old, u64 old_len, u64 new_len, u64 flags, u64 new_addr);
u64 lx_ram_top(void);

/* ---- lx_vmem.c: address space above the identity map (>= 4 GiB) ---- */
bool lx_window_addr(u64 addr, u64 len);
bool lx_window_wants(u64 addr, u64 len, u64 prot, u64 flags);
s64 lx_window_mmap(u64 addr, u64 len, u64 prot, u64 flags);
s64 lx_window_munmap(u64 addr, u64 len);
s64 lx_window_mprotect(u64 addr, u64 len, u64 prot);
s64 lx_window_dontneed(u64 addr, u64 len);
bool lx_window_user_ok(u64 addr, u64 len);     /* backs untouched pages */
bool lx_window_fault(u64 va);                   /* a #PF it resolved */

/* ---- lx_elf.c ---- */
/* Load the program, build its stack; fills r (rip, rsp).  Calls
   lx_cannot_execute on a bad image. */
void lx_load_program(const u8 *image, u64 size, const char *path,
                     const char *argv, u64 argv_len, const char *envp, u64 envp_len,
                     struct lx_regs *r);

/* ---- lx_fs.c ---- */
void lx_fs_init(const u8 *bundle, u64 size);
/* The regular file at path in the bundle tree (for exec); NULL when none. */
const u8 *lx_fs_file(const char *path, u64 *size);
s64 lx_fs_syscall(u64 nr, const u64 *a, bool *handled);
/* Serialise /out as a ustar archive into buf; returns its length, or -1 if
   it does not fit. */
s64 lx_out_tar(u8 *buf, u64 cap);

/*
 * ---- lx_stdio.c: the stream backend ----
 * Everything the program and the personality say to the host goes through
 * these, so moving from COM1 to virtio-console ports is a one-file change.
 */
void stream_init(void);
bool stream_has_ports(void);                    /* the four console ports are there */
/* Warm mode: "ready ROOM TOP" on the control port; then exactly len bytes
   from it (false at end of file or on an error). */
void stream_control_ready(u64 room, u64 top);
bool stream_control_read(void *buf, u64 len);
s64 stream_write(int fd, const void *buf, u64 len);
s64 stream_read(int fd, void *buf, u64 len);   /* 0 at EOF */
bool stream_poll(int fd);                       /* read would not block */
void stream_flush(void);
void stream_trace(const char *line, u64 len);   /* one trace line, no newline */
bool stream_wants_out(void);                    /* send /out at the end? */
void stream_out_archive(const u8 *tar, u64 len);
/* The outcome, said once; the caller powers off afterwards. */
void stream_outcome_status(int status);
void stream_outcome_signal(int sig, u64 addr);
void stream_outcome_cannot_execute(const char *why);

/* ---- lx_sys.c: the trace line being built ---- */
void lx_trace_add(const char *s);
void lx_trace_end(void);                        /* hand the line to stream_trace */
void lx_trace_syscall(u64 nr, const u64 *a, s64 ret);  /* "name(args) = ret" */
#define LX_TRACE(...)                                           \
    do {                                                        \
        char trace_tmp_[256];                                   \
        ksnprintf(trace_tmp_, sizeof(trace_tmp_), __VA_ARGS__); \
        lx_trace_add(trace_tmp_);                               \
    } while (0)

/* ---- lx_thread.c: threads, one vCPU, switched at syscall boundaries ---- */
#define LX_PID 2                /* the process; also the main thread's tid */
#define LX_MAX_THREADS 64

/* A thread's signal state (lx_signal.c swaps it in and out). */
struct lx_sigstate {
    u64 blocked, pending;
    u64 ss_sp;
    s32 ss_flags, ss_pad;
    u64 ss_size;
};

void lx_thread_init(void);
u32 lx_gettid(void);
int lx_thread_count(void);              /* live threads */
bool lx_thread_multi(void);             /* more than one thread ever */
s64 lx_thread_syscall(u64 nr, const u64 *a, struct lx_regs *r, bool *handled);
void lx_thread_syscall_enter(u64 nr);
/* Switch away from a thread that blocked (or exited): *r becomes the next
   thread's context.  Returns 1 (resume through lx_resume). */
int lx_thread_switch(struct lx_regs *r);
/* Block and re-run the same syscall when other threads have run or time
   passed (poll); deadline is kept across the re-runs. */
s64 lx_thread_wait_retry(u64 deadline);
/* The deadline a re-run syscall started with, or `fresh` on its first run. */
u64 lx_thread_retry_deadline(u64 fresh);
/* The call did not block after all: the thread keeps running. */
void lx_thread_unblock_self(void);
/* The running thread has had its time slice and another could run: the
   caller switches (after a completed syscall). */
bool lx_thread_slice_over(void);
u64 lx_thread_fs_base(void);
void lx_thread_set_fs_base(u64 base);
/* Wake a futex waiter set (lx_futex.c): up to n threads waiting on addr
   whose bitset meets `bitset`; returns how many. */
int lx_futex_wake(u64 addr, u32 bitset, int n);
/* Thread-directed signal from tgkill/tkill: ESRCH when no such thread. */
s64 lx_thread_signal(u32 tid, int sig, struct lx_regs *r, int *resume);

/* lx_epoll.c, on lx_fs.c's descriptors */
s64 lx_epoll_syscall(u64 nr, const u64 *a, bool *handled);
bool lx_epoll_ready(void *ep);
void lx_epoll_release(void *ep);
s16 lx_fs_ready(s64 fd, const void **file);
s64 lx_fs_new_epoll(void *priv, bool cloexec);
void *lx_fs_epoll(s64 fd);

/* lx_futex.c */
s64 lx_futex(const u64 *a);

/* lx_thread.c's view of a thread's wait, shared with lx_futex.c. */
enum lx_tstate { T_FREE, T_RUNNABLE, T_FUTEX, T_SLEEP, T_RETRY };
struct lx_thread {
    enum lx_tstate state;
    u32 tid;
    struct lx_regs regs;        /* saved context while not running */
    u64 fs_base;
    u64 clear_child_tid;
    struct lx_sigstate sig;
    u64 deadline;               /* monotonic ns; 0: none */
    s64 on_timeout;             /* rax when the deadline passes */
    u64 futex_addr;
    u32 futex_bitset;
    u64 wait_seq;               /* FIFO order among futex waiters */
    u64 blocked_nr;             /* the syscall it waits in (trace) */
    bool retry;                 /* re-run the syscall when resumed */
    bool retrying;              /* this syscall is such a re-run */
    u64 retry_deadline;
    u64 sleep_rem;              /* nanosleep's rem, written on EINTR */
};
extern struct lx_thread lx_threads[LX_MAX_THREADS];
/* Block the current thread in `state` until mono deadline (0: forever), a
   wake-up or a signal; on the deadline it returns `on_timeout`, on a signal
   -EINTR.  Returns LX_BLOCKED for the syscall handler to return. */
s64 lx_thread_block(enum lx_tstate state, u64 deadline, s64 on_timeout);
/* Wake thread t from its wait with rax = ret. */
void lx_thread_wake(struct lx_thread *t, s64 ret);
struct lx_thread *lx_thread_current(void);

/* ---- lx_time.c ---- */
void lx_time_init(void);
u64 lx_monotonic_ns(void);
u64 lx_realtime_ns(void);
void lx_clock_tick(void);       /* one syscall's worth of deterministic time */
void lx_sleep_ns(u64 ns);
/* Nothing to run until mono time `deadline` (0: forever; waits at most
   `max_us` then returns): idle, or jump a deterministic clock. */
void lx_idle_until(u64 deadline, u32 max_us);
void lx_random(void *buf, u64 len);
u64 lx_random_u64(void);

/* ---- lx_signal.c ---- */
void lx_signal_init(void);
s64 lx_signal_syscall(u64 nr, const u64 *a, struct lx_regs *r, bool *handled, int *resume);
/* Raise sig at the program now (kill to itself); returns 1 when r now holds
   a handler frame to resume. */
int lx_raise(int sig, struct lx_regs *r, u64 addr);
void lx_signal_save(struct lx_sigstate *s);
void lx_signal_load(const struct lx_sigstate *s);
/* Deliver the lowest pending unblocked signal to the thread in r: 1 when r
   now holds a handler frame. */
int lx_signal_deliver_pending(struct lx_regs *r);
/* Would sig, pending for a thread with mask `blocked`, run a handler or end
   the process (so it interrupts a wait)? */
bool lx_signal_interrupts(int sig, u64 blocked);

#endif

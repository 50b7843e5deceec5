/*
 * lx_sys.c - syscall dispatch, strace-style tracing, and the calls that
 * belong to no other area (identity, time, limits, arch_prctl).  Threads,
 * futex and the thread switch after a blocking call are lx_thread.c's.
 * Numbers are the x86-64 ones; anything unknown returns -ENOSYS.
 * Identity: the program is pid 2 (ppid 1), uid/gid 0.
 */
#include "lx.h"
#include "console.h"
#include "io.h"
#include "lib.h"


/*
 * Name and argument kinds for the trace: d signed, u unsigned, x hex,
 * s path string, f dirfd, o open flags, b buffer written by the program
 * (shown with the next argument as its length), p pointer.
 */
struct sc_info {
    const char *name;
    const char *args;
};

static const struct sc_info sc_table[] = {
    [0] = { "read", "dpu" }, [1] = { "write", "dbu" }, [2] = { "open", "sox" },
    [3] = { "close", "d" }, [4] = { "stat", "sp" }, [5] = { "fstat", "dp" },
    [6] = { "lstat", "sp" }, [7] = { "poll", "pud" }, [8] = { "lseek", "ddd" },
    [9] = { "mmap", "xuPMdx" }, [10] = { "mprotect", "xuP" }, [11] = { "munmap", "xu" },
    [12] = { "brk", "x" }, [13] = { "rt_sigaction", "dppu" }, [14] = { "rt_sigprocmask", "dppu" },
    [15] = { "rt_sigreturn", "" }, [16] = { "ioctl", "dxx" }, [17] = { "pread64", "dpud" },
    [18] = { "pwrite64", "dbud" }, [19] = { "readv", "dpu" }, [20] = { "writev", "dpu" },
    [21] = { "access", "sx" }, [22] = { "pipe", "p" }, [24] = { "sched_yield", "" },
    [25] = { "mremap", "xuuxx" }, [28] = { "madvise", "xud" }, [32] = { "dup", "d" },
    [33] = { "dup2", "dd" }, [35] = { "nanosleep", "pp" }, [39] = { "getpid", "" },
    [40] = { "sendfile", "ddpu" }, [56] = { "clone", "xxxxx" }, [57] = { "fork", "" },
    [58] = { "vfork", "" }, [59] = { "execve", "spp" }, [60] = { "exit", "d" },
    [61] = { "wait4", "dpxp" }, [62] = { "kill", "dd" }, [63] = { "uname", "p" },
    [72] = { "fcntl", "ddx" }, [74] = { "fsync", "d" }, [75] = { "fdatasync", "d" },
    [77] = { "ftruncate", "dd" }, [79] = { "getcwd", "pu" }, [80] = { "chdir", "s" },
    [81] = { "fchdir", "d" }, [82] = { "rename", "ss" }, [83] = { "mkdir", "sx" },
    [84] = { "rmdir", "s" }, [85] = { "creat", "sx" }, [87] = { "unlink", "s" },
    [89] = { "readlink", "spu" }, [90] = { "chmod", "sx" }, [95] = { "umask", "x" },
    [96] = { "gettimeofday", "pp" }, [97] = { "getrlimit", "dp" }, [98] = { "getrusage", "dp" },
    [99] = { "sysinfo", "p" }, [100] = { "times", "p" }, [102] = { "getuid", "" },
    [104] = { "getgid", "" }, [107] = { "geteuid", "" }, [108] = { "getegid", "" },
    [109] = { "setpgid", "dd" }, [110] = { "getppid", "" }, [111] = { "getpgrp", "" },
    [112] = { "setsid", "" }, [121] = { "getpgid", "d" }, [124] = { "getsid", "d" },
    [127] = { "rt_sigpending", "pu" }, [131] = { "sigaltstack", "pp" },
    [137] = { "statfs", "sp" }, [138] = { "fstatfs", "dp" },
    [157] = { "prctl", "dxxxx" }, [158] = { "arch_prctl", "xx" }, [160] = { "setrlimit", "dp" },
    [186] = { "gettid", "" }, [200] = { "tkill", "dd" }, [201] = { "time", "p" },
    [202] = { "futex", "pdxpxx" }, [203] = { "sched_setaffinity", "dup" },
    [204] = { "sched_getaffinity", "dup" }, [217] = { "getdents64", "dpu" },
    [218] = { "set_tid_address", "p" }, [228] = { "clock_gettime", "dp" },
    [229] = { "clock_getres", "dp" }, [230] = { "clock_nanosleep", "dxpp" },
    [231] = { "exit_group", "d" }, [234] = { "tgkill", "ddd" }, [257] = { "openat", "fsox" },
    [258] = { "mkdirat", "fsx" }, [260] = { "fchownat", "fsddx" }, [262] = { "newfstatat", "fspx" },
    [263] = { "unlinkat", "fsx" }, [264] = { "renameat", "fsfs" }, [267] = { "readlinkat", "fspu" },
    [268] = { "fchmodat", "fsx" }, [269] = { "faccessat", "fsx" }, [271] = { "ppoll", "pupp" },
    [273] = { "set_robust_list", "pu" }, [274] = { "get_robust_list", "dpp" },
    [280] = { "utimensat", "fspx" }, [292] = { "dup3", "ddx" }, [293] = { "pipe2", "px" },
    [295] = { "preadv", "dpud" }, [296] = { "pwritev", "dpud" }, [302] = { "prlimit64", "ddpp" },
    [316] = { "renameat2", "fsfsx" }, [318] = { "getrandom", "pux" }, [322] = { "execveat", "fsppx" },
    [332] = { "statx", "fsxxp" }, [334] = { "rseq", "puxx" }, [435] = { "clone3", "pu" },
    [439] = { "faccessat2", "fsxx" }, [23] = { "select", "dpppp" }, [270] = { "pselect6", "dppppp" },
    [76] = { "truncate", "sd" }, [88] = { "symlink", "ss" }, [266] = { "symlinkat", "sfs" },
    [86] = { "link", "ss" }, [265] = { "linkat", "fsfsx" }, [221] = { "fadvise64", "dddd" },
    [285] = { "fallocate", "dxdd" }, [162] = { "sync", "" }, [306] = { "syncfs", "d" },
    [37] = { "alarm", "u" }, [309] = { "getcpu", "ppp" }, [149] = { "mlock", "xu" },
    [150] = { "munlock", "xu" }, [151] = { "mlockall", "x" }, [152] = { "munlockall", "" },
    [140] = { "getpriority", "dd" }, [141] = { "setpriority", "ddd" }, [145] = { "sched_getscheduler", "d" },
    [142] = { "sched_setparam", "dp" }, [143] = { "sched_getparam", "dp" }, [144] = { "sched_setscheduler", "ddp" },
    [324] = { "membarrier", "dd" }, [213] = { "epoll_create", "d" }, [291] = { "epoll_create1", "x" },
    [232] = { "epoll_wait", "dpdd" }, [233] = { "epoll_ctl", "dddp" }, [281] = { "epoll_pwait", "dpddpu" }, [38] = { "setitimer", "dpp" }, [36] = { "getitimer", "dp" },
};

static const char *const errno_names[] = {
    [EPERM] = "EPERM", [ENOENT] = "ENOENT", [ESRCH] = "ESRCH", [EINTR] = "EINTR",
    [EIO] = "EIO", [ENOEXEC] = "ENOEXEC", [EBADF] = "EBADF", [ECHILD] = "ECHILD",
    [EAGAIN] = "EAGAIN", [ENOMEM] = "ENOMEM", [EACCES] = "EACCES", [EFAULT] = "EFAULT",
    [EBUSY] = "EBUSY", [EEXIST] = "EEXIST", [EXDEV] = "EXDEV", [ENODEV] = "ENODEV",
    [ENOTDIR] = "ENOTDIR", [EISDIR] = "EISDIR", [EINVAL] = "EINVAL", [ENFILE] = "ENFILE",
    [EMFILE] = "EMFILE", [ENOTTY] = "ENOTTY", [EFBIG] = "EFBIG", [ENOSPC] = "ENOSPC",
    [ESPIPE] = "ESPIPE", [EROFS] = "EROFS", [EMLINK] = "EMLINK", [EPIPE] = "EPIPE",
    [ERANGE] = "ERANGE", [ENAMETOOLONG] = "ENAMETOOLONG", [ENOSYS] = "ENOSYS",
    [ENOTEMPTY] = "ENOTEMPTY", [ELOOP] = "ELOOP", [ENODATA] = "ENODATA",
    [EOVERFLOW] = "EOVERFLOW", [EOPNOTSUPP] = "EOPNOTSUPP", [ETIMEDOUT] = "ETIMEDOUT",
};

/* The trace line being built: one line per syscall, handed to the stream
   backend whole (COM1 prints it, a control port would carry it). */
static char trace_line[512];
static u64 trace_len;

void lx_trace_add(const char *s)
{
    while (*s && trace_len < sizeof(trace_line) - 4)
        trace_line[trace_len++] = *s++;
    if (*s && trace_len == sizeof(trace_line) - 4) {
        memcpy(trace_line + trace_len, "...", 3);
        trace_len += 3;
    }
}

void lx_trace_end(void)
{
    stream_trace(trace_line, trace_len);
    trace_len = 0;
}

static void trace_string(const char *s, u64 max)
{
    lx_trace_add("\"");
    u64 i = 0;
    for (; i < max && s[i]; i++) {
        char c = s[i];
        if (c == '"' || c == '\\') {
            char esc[3] = { '\\', c, 0 };
            lx_trace_add(esc);
        } else if (c == '\n') {
            lx_trace_add("\\n");
        } else if (c == '\t') {
            lx_trace_add("\\t");
        } else if ((u8)c < 32 || (u8)c >= 127) {
            LX_TRACE("\\x%02x", (u8)c);
        } else {
            char one[2] = { c, 0 };
            lx_trace_add(one);
        }
    }
    lx_trace_add("\"");
    if (i == max && s[i])
        lx_trace_add("...");
}

static void trace_open_flags(u64 f)
{
    static const struct { u64 bit; const char *name; } names[] = {
        { 0x40, "O_CREAT" }, { 0x80, "O_EXCL" }, { 0x100, "O_NOCTTY" }, { 0x200, "O_TRUNC" },
        { 0x400, "O_APPEND" }, { 0x800, "O_NONBLOCK" }, { 0x10000, "O_DIRECTORY" },
        { 0x20000, "O_NOFOLLOW" }, { 0x80000, "O_CLOEXEC" }, { 0x200000, "O_PATH" },
    };
    static const char *const acc[] = { "O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE" };
    lx_trace_add(acc[f & 3]);
    f &= ~3ull;
    for (unsigned i = 0; i < ARRAY_SIZE(names); i++)
        if (f & names[i].bit) {
            LX_TRACE("|%s", names[i].name);
            f &= ~names[i].bit;
        }
    if (f)
        LX_TRACE("|0x%lx", f);
}

static void trace_bits(u64 v, const char *const *names, unsigned count, const char *zero)
{
    bool any = false;
    for (unsigned i = 0; i < count; i++)
        if ((v >> i) & 1 && names[i]) {
            LX_TRACE("%s%s", any ? "|" : "", names[i]);
            v &= ~(1ull << i);
            any = true;
        }
    if (v)
        LX_TRACE("%s0x%lx", any ? "|" : "", v);
    else if (!any)
        lx_trace_add(zero);
}

static void trace_call(u64 nr, const u64 *a)
{
    if (lx_thread_multi())      /* as strace -f shows threads */
        LX_TRACE("[pid %u] ", lx_gettid());
    const struct sc_info *si = nr < ARRAY_SIZE(sc_table) && sc_table[nr].name ? &sc_table[nr] : NULL;
    if (!si) {
        LX_TRACE("syscall_%lu(0x%lx, 0x%lx, 0x%lx)", nr, a[0], a[1], a[2]);
        return;
    }
    LX_TRACE("%s(", si->name);
    for (unsigned i = 0; si->args[i]; i++) {
        /* open/openat: the mode only matters with O_CREAT (as strace shows it) */
        if (i && si->args[i - 1] == 'o' && !(a[i - 1] & 0x40))
            break;
        if (i)
            lx_trace_add(", ");
        u64 v = a[i];
        switch (si->args[i]) {
        case 'd': LX_TRACE("%ld", (s64)(s32)v); break;
        case 'u': LX_TRACE("%lu", v); break;
        case 'x': LX_TRACE("0x%lx", v); break;
        case 'f':
            if ((s32)v == -100)
                lx_trace_add("AT_FDCWD");
            else
                LX_TRACE("%d", (s32)v);
            break;
        case 's':
            if (lx_user_ok(v, 65))
                trace_string((const char *)(uintptr_t)v, 64);
            else if (lx_user_ok(v, 1))  /* near the end of the program's memory */
                trace_string((const char *)(uintptr_t)v, 4096 - (v & 4095) - 1);
            else
                LX_TRACE("0x%lx", v);
            break;
        case 'b': {
            u64 len = a[i + 1] < 32 ? a[i + 1] : 32;
            if (lx_user_ok(v, len)) {
                u64 n = 0;
                const char *s = (const char *)(uintptr_t)v;
                lx_trace_add("\"");
                for (; n < len; n++) {
                    char c = s[n];
                    if (c == '\n')
                        lx_trace_add("\\n");
                    else if ((u8)c < 32 || (u8)c >= 127 || c == '"' || c == '\\')
                        LX_TRACE("\\x%02x", (u8)c);
                    else {
                        char one[2] = { c, 0 };
                        lx_trace_add(one);
                    }
                }
                lx_trace_add("\"");
                if (a[i + 1] > len)
                    lx_trace_add("...");
            } else {
                LX_TRACE("0x%lx", v);
            }
            break;
        }
        case 'o': trace_open_flags(v); break;
        case 'P': {
            static const char *const prot[] = { "PROT_READ", "PROT_WRITE", "PROT_EXEC" };
            trace_bits(v, prot, 3, "PROT_NONE");
            break;
        }
        case 'M': {
            static const char *const map[21] = {
                "MAP_SHARED", "MAP_PRIVATE", 0, 0, "MAP_FIXED", "MAP_ANONYMOUS", 0, 0,
                "MAP_GROWSDOWN", 0, 0, 0, 0, 0, "MAP_NORESERVE", "MAP_POPULATE", 0,
                "MAP_STACK", 0, 0, "MAP_FIXED_NOREPLACE",
            };
            trace_bits(v, map, 21, "0");
            break;
        }
        default:
            if (v)
                LX_TRACE("0x%lx", v);
            else
                lx_trace_add("NULL");
            break;
        }
    }
    lx_trace_add(")");
}

static void trace_result(u64 nr, s64 ret)
{
    if (ret < 0 && ret >= -4095) {
        u64 e = (u64)-ret;
        const char *name = e < ARRAY_SIZE(errno_names) && errno_names[e] ? errno_names[e] : "E?";
        LX_TRACE(" = %ld %s", ret, name);
        if (nr == 56 || nr == 57 || nr == 58 || nr == 59 || nr == 322 || nr == 435)
            lx_trace_add(" (no processes in the sandbox)");
        lx_trace_end();
    } else if (nr == 9 || nr == 12 || nr == 25) {
        LX_TRACE(" = 0x%lx", ret);
        lx_trace_end();
    } else {
        LX_TRACE(" = %ld", ret);
        lx_trace_end();
    }
}

/* ---- misc calls --------------------------------------------------------- */

static s64 put_user(u64 addr, const void *src, u64 len)
{
    if (!lx_user_ok(addr, len))
        return -EFAULT;
    memcpy((void *)(uintptr_t)addr, src, len);
    return 0;
}

struct timespec_ {
    s64 sec, nsec;
};

static s64 clock_value(u64 clk, u64 uts)
{
    u64 ns;
    switch (clk) {
    case 0: case 5: case 8: case 11: ns = lx_realtime_ns(); break;   /* REALTIME(_COARSE), BOOTTIME... */
    case 1: case 4: case 6: case 7: case 2: case 3: ns = lx_monotonic_ns(); break;
    default: return -EINVAL;
    }
    struct timespec_ ts = { (s64)(ns / 1000000000ull), (s64)(ns % 1000000000ull) };
    return uts ? put_user(uts, &ts, sizeof(ts)) : 0;
}

/* nanosleep, clock_nanosleep: the thread waits; others run meanwhile. */
static s64 do_sleep(u64 clk, u64 flags, u64 ureq, u64 urem)
{
    if (clk > 11 || clk == 3)   /* CLOCK_THREAD_CPUTIME_ID cannot be slept on */
        return -EINVAL;
    if (!lx_user_ok(ureq, 16))
        return -EFAULT;
    const struct timespec_ *t = (const void *)(uintptr_t)ureq;
    if (t->sec < 0 || t->nsec < 0 || t->nsec >= 1000000000)
        return -EINVAL;
    u64 sec = (u64)t->sec > (1ull << 33) ? 1ull << 33 : (u64)t->sec;
    u64 ns = sec * 1000000000ull + (u64)t->nsec;
    u64 now = lx_monotonic_ns(), deadline;
    if (flags & 1) {            /* TIMER_ABSTIME */
        u64 clock_now = (clk == 0 || clk == 5 || clk == 8 || clk == 11) ? lx_realtime_ns() : now;
        deadline = ns > clock_now ? now + (ns - clock_now) : now;
    } else {
        deadline = now + ns;
        lx_thread_current()->sleep_rem = urem;
    }
    if (deadline <= now)
        return 0;
    return lx_thread_block(T_SLEEP, deadline, 0);
}

static s64 do_uname(u64 ubuf)
{
    char u[6][65];
    memset(u, 0, sizeof(u));
    memcpy(u[0], "Linux", 5);
    memcpy(u[1], "vmm", 3);
    memcpy(u[2], "6.1.0-vmm", 9);
    memcpy(u[3], "#1 SMP vmm sandbox", 18);
    memcpy(u[4], "x86_64", 6);
    memcpy(u[5], "(none)", 6);
    return put_user(ubuf, u, sizeof(u));
}

static s64 do_rlimit(u64 res, u64 uold)
{
    u64 lim[2] = { ~0ull, ~0ull };
    if (res >= 16)
        return -EINVAL;
    if (res == 3)               /* RLIMIT_STACK */
        lim[0] = 8ull << 20;
    if (res == 7)               /* RLIMIT_NOFILE */
        lim[0] = lim[1] = 256;
    if (res == 4)               /* RLIMIT_CORE */
        lim[0] = 0;
    return uold ? put_user(uold, lim, sizeof(lim)) : 0;
}

static s64 do_sysinfo(u64 ubuf)
{
    u8 s[112];
    memset(s, 0, sizeof(s));
    s64 up = (s64)(lx_monotonic_ns() / 1000000000ull);
    u64 total = lx_ram_top(), free_ = total / 2;
    u16 procs = 1;
    u32 unit = 1;
    memcpy(s, &up, 8);
    memcpy(s + 32, &total, 8);
    memcpy(s + 40, &free_, 8);
    memcpy(s + 80, &procs, 2);
    memcpy(s + 104, &unit, 4);
    return put_user(ubuf, s, sizeof(s));
}

static s64 do_arch_prctl(u64 code, u64 addr)
{
    static u64 gs_base;
    switch (code) {
    case 0x1002:                /* ARCH_SET_FS: per thread */
        if (addr >= (1ull << 47))
            return -EPERM;
        lx_thread_set_fs_base(addr);
        return 0;
    case 0x1003: {                                          /* ARCH_GET_FS */
        u64 fs_base = lx_thread_fs_base();
        return put_user(addr, &fs_base, 8);
    }
    case 0x1001:                /* ARCH_SET_GS */
        if (addr >= (1ull << 47))
            return -EPERM;
        gs_base = addr;
        lx_set_gs_base(addr);
        return 0;
    case 0x1004: return put_user(addr, &gs_base, 8);        /* ARCH_GET_GS */
    default: return -EINVAL;
    }
}

static s64 misc_syscall(u64 nr, const u64 *a, struct lx_regs *r)
{
    switch (nr) {
    case 9: return sys_mmap(a[0], a[1], a[2], a[3], a[4], a[5]);
    case 10:                                                /* mprotect */
        if (!(a[0] & 4095) && a[1] && lx_window_addr(a[0], a[1]))
            return lx_window_mprotect(a[0], (a[1] + 4095) & ~4095ull, a[2]);
        return lx_user_ok(a[0], a[1]) && !(a[0] & 4095) ? 0 : (a[0] & 4095 ? -EINVAL : -ENOMEM);
    case 11: return sys_munmap(a[0], a[1]);
    case 12: return sys_brk(a[0]);
    case 25: return sys_mremap(a[0], a[1], a[2], a[3], a[4]);
    case 28: return a[2] == 4 ? sys_madvise_dontneed(a[0], a[1]) : 0;
    case 35: return do_sleep(1, 0, a[0], a[1]);             /* nanosleep */
    case 39: return LX_PID;                                 /* getpid */
    case 110: return 1;                                     /* getppid */
    case 111: return LX_PID;                                /* getpgrp */
    case 121: case 124: return LX_PID;                      /* getpgid, getsid */
    case 109: return 0;                                     /* setpgid */
    case 112: return -EPERM;                                /* setsid: already a leader */
    case 102: case 104: case 107: case 108: return 0;       /* uid, gid: root */
    case 105: case 106: case 113: case 114: case 117: case 119: return 0; /* set*id */
    case 118: case 120: {                                   /* getresuid/getresgid */
        u32 z = 0;
        for (int i = 0; i < 3; i++)
            if (put_user(a[i], &z, 4))
                return -EFAULT;
        return 0;
    }
    case 115: return 0;                                     /* getgroups: none */
    case 61: return -ECHILD;                                /* wait4 */
    case 63: return do_uname(a[0]);
    case 96: {                                              /* gettimeofday */
        if (a[0]) {
            u64 ns = lx_realtime_ns();
            s64 tv[2] = { (s64)(ns / 1000000000ull), (s64)(ns % 1000000000ull / 1000) };
            if (put_user(a[0], tv, sizeof(tv)))
                return -EFAULT;
        }
        return 0;
    }
    case 201: {                                             /* time */
        s64 t = (s64)(lx_realtime_ns() / 1000000000ull);
        if (a[0] && put_user(a[0], &t, 8))
            return -EFAULT;
        return t;
    }
    case 228: return clock_value(a[0], a[1]);
    case 229: {                                             /* clock_getres */
        struct timespec_ ts = { 0, 1 };
        if (a[0] > 11)
            return -EINVAL;
        return a[1] ? put_user(a[1], &ts, sizeof(ts)) : 0;
    }
    case 230: return do_sleep(a[0], a[1], a[2], a[3]);      /* clock_nanosleep */
    case 97: return do_rlimit(a[0], a[1]);                  /* getrlimit */
    case 160: return 0;                                     /* setrlimit */
    case 302: return do_rlimit(a[1], a[3]);                 /* prlimit64 */
    case 98: {                                              /* getrusage */
        u8 ru[144];
        memset(ru, 0, sizeof(ru));
        return put_user(a[1], ru, sizeof(ru));
    }
    case 100: {                                             /* times */
        s64 t[4] = { 0, 0, 0, 0 };
        if (a[0] && put_user(a[0], t, sizeof(t)))
            return -EFAULT;
        return (s64)(lx_monotonic_ns() / 10000000ull);
    }
    case 99: return do_sysinfo(a[0]);
    case 157:                                               /* prctl */
        if (a[0] == 15)                                     /* PR_SET_NAME */
            return 0;
        if (a[0] == 16)                                     /* PR_GET_NAME */
            return put_user(a[1], "prog\0\0\0\0\0\0\0\0\0\0\0", 16);
        return -EINVAL;
    case 158: return do_arch_prctl(a[0], a[1]);
    case 203: return 0;                                     /* sched_setaffinity */
    case 204: {                                             /* sched_getaffinity */
        u64 mask = 1;
        if (a[1] < 8)
            return -EINVAL;
        if (put_user(a[2], &mask, 8))
            return -EFAULT;
        return 8;
    }
    case 37: return 0;                                      /* alarm: none pending */
    case 149: case 150: case 151: case 152: return 0;       /* mlock, munlock, mlockall, munlockall */
    case 309:                                               /* getcpu */
        if (a[0] && put_user(a[0], "\0\0\0\0", 4))
            return -EFAULT;
        if (a[1] && put_user(a[1], "\0\0\0\0", 4))
            return -EFAULT;
        return 0;
    case 140: case 141: return 0;                           /* getpriority, setpriority */
    case 145: return 0;                                     /* sched_getscheduler: SCHED_OTHER */
    case 143: case 144: case 142: return 0;                 /* sched_getparam, setscheduler, setparam */
    case 273: return a[1] == 24 ? 0 : -EINVAL;              /* set_robust_list */
    case 318:                                               /* getrandom */
        if (a[1] && !lx_user_ok(a[0], a[1]))
            return -EFAULT;
        if (a[2] & ~7ull)
            return -EINVAL;
        lx_random((void *)(uintptr_t)a[0], a[1]);
        return (s64)a[1];
    default:
        (void)r;
        return -ENOSYS;
    }
}

/* A whole trace line for a call that waited, when no other thread's lines
   came between its start and its end (lx_thread.c). */
void lx_trace_syscall(u64 nr, const u64 *a, s64 ret)
{
    trace_call(nr, a);
    trace_result(nr, ret);
}

int lx_raise_sigpipe(struct lx_regs *r);

int lx_syscall(struct lx_regs *r)
{
    u64 nr = r->rax;
    u64 a[6] = { r->rdi, r->rsi, r->rdx, r->r10, r->r8, r->r9 };
    int resume = 0;
    bool handled;

    lx_clock_tick();
    lx_thread_syscall_enter(nr);
    if (nr == 60 || nr == 231) {
        if (lx_opts.trace) {
            trace_call(nr, a);
            lx_trace_add(" = ?");
            lx_trace_end();
        }
        if (nr == 231)
            lx_exit_status((int)a[0]);
    }
    s64 ret = lx_thread_syscall(nr, a, r, &handled);
    if (!handled)
        ret = lx_fs_syscall(nr, a, &handled);
    if (!handled)
        ret = lx_epoll_syscall(nr, a, &handled);
    if (!handled)
        ret = lx_signal_syscall(nr, a, r, &handled, &resume);
    if (!handled)
        ret = misc_syscall(nr, a, r);
    if (ret != LX_BLOCKED)      /* a wait may have begun in a call that completed after all */
        lx_thread_unblock_self();   /* (readv: a later segment would have waited) */
    if (ret == LX_BLOCKED) {    /* this thread waits (or exited): run another */
        if (lx_opts.trace && nr != 60 && lx_thread_multi()) {
            trace_call(nr, a);
            lx_trace_add(" <unfinished ...>");
            lx_trace_end();
        }
        return lx_thread_switch(r);
    }
    if (lx_opts.trace) {
        trace_call(nr, a);
        trace_result(nr, ret);
    }
    r->rax = (u64)ret;
    if (lx_sigpipe_pending) {
        lx_sigpipe_pending = 0;
        resume |= lx_raise_sigpipe(r);
    }
    if (lx_thread_slice_over())     /* fairness among threads that never wait */
        return lx_thread_switch(r);
    return resume;
}

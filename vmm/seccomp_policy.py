"""Which system calls each kind of vmm thread may make, once its filter is on.

Plain data, read by vmm/seccomp.py (which installs the filters). The lists
come from tracing the real workloads per thread (``strace -ff`` over `vmm run`
with disks and the console, `vmm exec` with stdin, /out and a timeout,
snapshots and `vmm restore`, `vmm serve`, `vmm bench`); each group says who
needs it. To extend a list: run the workload with ``VMM_SECCOMP=log`` (the
filters log instead of stopping the process; the kernel log names each call,
``audit: type=1326 ... syscall=N``) or under ``strace -ff``, and add the call to
the group that needs it.

A filter applies to the thread that installs it and to every thread that
thread creates later, and a child's own filter stacks on top (the effective
set is the intersection). So a kind that starts threads must allow what
those threads need: ``SPAWNS`` says which kinds each kind starts, and the
installer adds their lists (vmm/seccomp.py ``allowed``). vmm avoids most of
that by order: the main thread's filter goes on only after the vCPU and I/O
threads exist.
"""

from __future__ import annotations

# Every Python thread: the interpreter's allocator and the C library's thread
# start and end (a thread inherits its creator's filter before it can install
# its own, so its start-up calls are here too), locks, signals, the clock,
# one-line error reports on stderr.
PYTHON_RUNTIME = (
    "brk", "mmap", "munmap", "mprotect", "madvise", "mremap",
    "futex", "set_robust_list", "rseq", "gettid", "getpid", "sched_yield", "sched_getaffinity",
    "rt_sigprocmask", "rt_sigreturn", "rt_sigaction", "sigaltstack", "tgkill",
    "exit", "exit_group",
    "clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday",
    "getrandom", "write", "writev", "close", "fstat", "newfstatat", "lseek", "fcntl",
)

# The vCPU thread: KVM_RUN and what the device models do on its exits.
VCPU = (
    # eventfds: notifications, interrupts (irqfd), the machine's "finished" fd
    "read",
    # virtio-blk requests served on the vCPU thread (--no-ioeventfd, or a
    # queue the I/O thread is late for), the disks' flush and write-behind
    "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2", "fsync", "fdatasync",
    "sync_file_range",
    # virtio-blk's parallel large reads start worker threads (threads only: see clone in vmm/seccomp.py)
    "clone", "clone3",
    # output to a full pipe or terminal (the UART, `vmm exec`'s streams): console.write_all waits in select
    "poll", "ppoll", "select", "pselect6",
    # limited to IOCTLS["vcpu"] below (the exit device's idle request waits on
    # a condition: futex, above)
    "ioctl",
)

# The I/O thread (the event loop, vmm/event_loop.py): epoll, ioeventfds,
# console input, virtio-blk requests, timers; snapshots run here
# (run_exclusive), so their file and KVM calls are here too.
EVENTS = (
    "epoll_wait", "epoll_pwait", "epoll_ctl", "read", "readv", "eventfd2",
    "poll", "ppoll", "select", "pselect6",
    # virtio-blk requests and flushes, and its parallel read workers (threads only)
    "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2", "fsync", "fdatasync",
    "sync_file_range", "clone", "clone3",
    # snapshots: the state and memory files (vmm/snapshot/), the pages in RAM
    "openat", "ftruncate", "mincore", "rename", "renameat", "renameat2", "unlink", "unlinkat",
    "statx", "getdents64", "readlink",
    # limited to IOCTLS["events"] below: snapshots, interrupts, notifications
    "ioctl",
)

# The API thread (`vmm serve`): its own event loop, the Unix socket, and it
# builds, starts, snapshots and restores the VM on requests, so it also
# starts the vCPU and I/O threads (SPAWNS) and sets up KVM.
API = (
    "epoll_wait", "epoll_pwait", "epoll_ctl", "epoll_create1", "read", "readv", "eventfd2",
    "poll", "ppoll", "select", "pselect6",
    "accept4", "accept", "recvfrom", "recvmsg", "sendto", "sendmsg", "shutdown", "getsockopt", "setsockopt",
    "getsockname", "getpeername",
    # building a VM: files (kernel, disks, snapshot, metrics), KVM, guest RAM
    "openat", "open", "stat", "lstat", "access", "faccessat", "faccessat2", "statx", "getdents64", "readlink",
    "flock", "pread64", "pwrite64", "preadv", "pwritev", "ftruncate", "fsync", "fdatasync",
    "memfd_create", "mincore", "rename", "renameat", "renameat2", "unlink", "unlinkat", "getcwd",
    "ioctl", "sysinfo", "prlimit64", "getrusage", "uname", "clone", "clone3",
)

# The main thread once the VM runs (`vmm run`, `vmm restore`, `vmm exec`,
# `vmm linux`, `vmm serve` after InstanceStart), and the helper threads it
# starts then (the sandbox's stdin feeder, the teardown reaper, a Linux
# guest's syscall look-out): stdin to the guest, waiting for the outcome,
# signals (SIGTERM, snapshots on SIGUSR1/2), closing the VM (KVM fds, guest RAM).
MAIN = (
    "read", "readv", "select", "pselect6", "poll", "ppoll", "epoll_wait", "epoll_pwait", "epoll_ctl",
    "eventfd2",
    "ioctl",  # limited to IOCTLS["main"] below: the terminal, and a snapshot's reads
    # a snapshot from the console or a signal, the serial log, lazy imports
    "openat", "open", "stat", "lstat", "access", "faccessat", "faccessat2", "statx", "getdents64", "readlink",
    "pread64", "pwrite64", "preadv", "pwritev", "ftruncate", "fsync", "fdatasync", "mincore",
    "rename", "renameat", "renameat2", "unlink", "unlinkat", "getcwd", "flock",
    # `vmm exec`: the program's /out into --out-dir (tarfile sets owners when vmm runs as root)
    "mkdir", "mkdirat", "fchmod", "fchmodat", "chmod", "utimensat", "chown", "fchown", "lchown", "fchownat",
    "sysinfo", "prlimit64", "getrusage", "uname", "getuid", "geteuid", "getgid", "getegid",
    # helper threads (the sandbox's stdin feeder, the reaper): threads only, never a process
    "clone", "clone3",
    # the child that takes over the VM's kernel teardown as the process ends
    # (vmm/builder.py hand_over_teardown): it asks for SIGKILL when its parent
    # ends (prctl), checks that it has not already (getppid), and sleeps
    "getppid", "pause",
)

# Kinds whose thread may start that teardown child: a process, not a thread,
# so vmm/seccomp.py lets through that one clone (its exact flags) and the
# child's prctl(PR_SET_PDEATHSIG) only.
HANDS_OVER_TEARDOWN = ("main",)

KINDS = {"vcpu": VCPU, "events": EVENTS, "api": API, "main": MAIN}

# Which kinds a kind's thread may start after its filter is on: their calls
# are added to its own (an I/O thread starts no vCPU; the API thread builds
# whole VMs).
SPAWNS = {"vcpu": (), "events": (), "api": ("vcpu", "events"), "main": ()}

# Modules a kind's thread may import lazily after its filter is on, imported
# before it goes on: the vCPU thread may not open files. Virtio-blk starts
# read workers, write-behind reaches libc through ctypes. (Device models' log
# lines need no import there: vmm/log.py writes them as unconfigured logging
# would. The instruction fallback for emulation failures is loaded by
# vmm/vcpu.py for the guests that need it; the other kinds may open files and
# import as usual.)
PRELOAD: dict[str, tuple[str, ...]] = {}
NO_IMPORTS = ("vcpu",)  # kinds whose lazy log lines must not import logging
# ... and these where a VM has a disk (vmm/machine.py says so)
PRELOAD_WITH_DISKS = {"vcpu": ("concurrent.futures.thread", "ctypes")}
VIRTIO_BLOCK_ID = 2  # the virtio device ID of a disk

# A thread that starts threads which then install their own filter: the
# children set no_new_privs and load their filter under the parent's.
INSTALL_FILTER = ("prctl", "seccomp")

# ioctl requests per kind, by name: KVM's from <linux/kvm.h> (through the cffi
# module), the terminal's from Python's termios module. A kind missing here
# (the API thread, which builds whole VMs) may issue any ioctl.
TERMINAL_IOCTLS = ("TCGETS", "TCSETS", "TCSETSW", "TCSETSF", "TIOCGWINSZ")

# What a snapshot reads (vmm/snapshot/): it runs on the I/O thread, or on the
# caller's when the VM has no I/O thread running.
SNAPSHOT_IOCTLS = (
    "KVM_GET_REGS", "KVM_GET_SREGS", "KVM_GET_FPU", "KVM_GET_XSAVE", "KVM_GET_XCRS", "KVM_GET_LAPIC",
    "KVM_GET_MP_STATE", "KVM_GET_DEBUGREGS", "KVM_GET_VCPU_EVENTS", "KVM_GET_MSRS", "KVM_GET_MSR_INDEX_LIST",
    "KVM_GET_SUPPORTED_CPUID", "KVM_GET_TSC_KHZ", "KVM_GET_IRQCHIP", "KVM_GET_PIT2", "KVM_GET_CLOCK",
    "KVM_GET_DIRTY_LOG", "KVM_SET_USER_MEMORY_REGION", "KVM_CHECK_EXTENSION",
)

IOCTLS = {
    # KVM_RUN; registers for string port I/O, crash reports and the instruction
    # fallback of Linux guests; exceptions and the debug trap it injects;
    # interrupt lines raised by devices on this thread
    "vcpu": (
        "KVM_RUN", "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS",
        "KVM_GET_FPU", "KVM_SET_FPU", "KVM_GET_VCPU_EVENTS", "KVM_SET_VCPU_EVENTS",
        "KVM_SET_GUEST_DEBUG", "KVM_GET_MSRS", "KVM_SET_MSRS", "KVM_IRQ_LINE", "KVM_GET_LAPIC",
        "KVM_GET_XSAVE", "KVM_SET_XSAVE",  # the fallback's ldmxcsr (MXCSR lives in the XSAVE area)
    ),
    # queue notifications moving between ioeventfd and the exit path, interrupt
    # lines (timers, host input), snapshots, and open()'s isatty check
    "events": ("KVM_IOEVENTFD", "KVM_IRQFD", "KVM_IRQ_LINE", *SNAPSHOT_IOCTLS, *TERMINAL_IOCTLS),
    # the console's raw mode and window size; a snapshot when no I/O thread runs
    "main": (*TERMINAL_IOCTLS, *SNAPSHOT_IOCTLS),
}

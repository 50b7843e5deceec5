/*
 * vmm-floor: the smallest VMM that boots the bundled guest, for benchmarks.
 *
 * It boots the same PVH ELF as `vmm run` with the same guest physical layout
 * (start info 0x6000, memory map 0x7000, command line 0x20000), CPUID policy
 * and entry state, then runs a bare KVM_RUN loop with just enough devices for
 * the guest: COM1 on stdin/stdout, the exit device (power off 0xf4, fault
 * report 0xf8, idle 0xfc) and everything else ignored. Its timings are the
 * floor of what this KVM allows for exit-bound work.
 *
 *   vmm-floor [--mem MIB] [--cmdline STR] GUEST.elf
 *
 * Exit status: the guest's power-off status (0-127), 240 when the guest
 * crashed or did something the floor does not support, 2 for usage errors,
 * 242 when the host side failed. On exit it prints on stderr
 *   floor: exits N (io M, mmio K)
 *
 * C11, libc and <linux/kvm.h> only. No threads, no allocation in the loop.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/kvm.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Exit statuses, as vmm.errors */
#define EXIT_USAGE 2
#define EXIT_GUEST_CRASHED 240
#define EXIT_VMM_FAILURE 242

/* Guest physical layout, as vmm/x86/layout.py */
#define MIB (1ull << 20)
#define START_INFO_ADDR 0x6000ull
#define MEMMAP_ADDR 0x7000ull
#define CMDLINE_ADDR 0x20000ull
#define CMDLINE_MAX 0x10000ull /* including the NUL */
#define EBDA_START 0x9fc00ull
#define HIGH_MEMORY (1 * MIB)
#define MMIO_HOLE_START (3ull << 30)
#define MIN_MEMORY_MIB 2
#define TSS_ADDR 0xfffbd000ull /* as vmm/machine.py */

/* PVH */
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define HVM_START_MAGIC 0x336ec578u
#define E820_RAM 1
#define E820_RESERVED 2

/* CPUID policy, as vmm/x86/cpu.py */
#define HYPERVISOR_BASE 0x40000000u
#define HYPERVISOR_TIMING 0x40000010u
#define KVM_APIC_BUS_KHZ 1000000u
#define CPUID_MAX_ENTRIES 512

/* Ports */
#define COM1 0x3f8
#define UART_RBR 0
#define UART_IIR 2
#define UART_LCR 3
#define UART_LSR 5
#define LSR_DR 0x01
#define LSR_IDLE 0x60 /* THRE | TEMT */
#define LCR_DLAB 0x80
#define PORT_EXIT 0xf4
#define PORT_FAULT 0xf8
#define PORT_IDLE 0xfc
#define IDLE_MAX_US 1000000u
#define GUEST_STATUS_MAX 127

struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
    uint32_t memmap_entries, reserved;
};

struct hvm_memmap_table_entry {
    uint64_t addr, size;
    uint32_t type, reserved;
};

struct fault_record {
    uint64_t vector, error_code, rip, cs, rflags, rsp, ss;
};

static uint8_t *ram;
static uint64_t ram_size;

static uint64_t exits_total, exits_io, exits_mmio;

static char out_buf[4096];
static size_t out_len;
static unsigned char in_buf[4096];
static size_t in_pos, in_len;
static int in_eof;
static int stdin_flags = -1;

/* ---- leaving ------------------------------------------------------------ */

static void flush_out(void)
{
    size_t done = 0;

    while (done < out_len) {
        ssize_t n = write(STDOUT_FILENO, out_buf + done, out_len - done);
        if (n > 0) {
            done += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            /* stdout may share stdin's (non-blocking) open file description */
            struct pollfd p = { .fd = STDOUT_FILENO, .events = POLLOUT };
            poll(&p, 1, -1);
        } else {
            break; /* stdout gone: drop the output, keep the guest running */
        }
    }
    out_len = 0;
}

static _Noreturn void finish(int status)
{
    flush_out();
    if (stdin_flags >= 0)
        fcntl(STDIN_FILENO, F_SETFL, stdin_flags);
    fprintf(stderr, "floor: exits %" PRIu64 " (io %" PRIu64 ", mmio %" PRIu64 ")\n", exits_total,
            exits_io, exits_mmio);
    exit(status);
}

__attribute__((format(printf, 2, 3))) static _Noreturn void fail(int status, const char *fmt, ...)
{
    va_list ap;

    flush_out();
    fputs("floor: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    finish(status);
}

static _Noreturn void usage(void)
{
    fprintf(stderr, "usage: vmm-floor [--mem MIB] [--cmdline STR] GUEST.elf\n");
    exit(EXIT_USAGE);
}

static void xioctl(int fd, unsigned long request, void *arg, const char *name)
{
    if (ioctl(fd, request, arg) < 0)
        fail(EXIT_VMM_FAILURE, "%s: %s", name, strerror(errno));
}

/* ---- guest memory ------------------------------------------------------- */

static int ram_range_ok(uint64_t addr, uint64_t len)
{
    return addr <= ram_size && len <= ram_size - addr;
}

static uint8_t *guest_ptr(uint64_t addr, uint64_t len, const char *what)
{
    if (!ram_range_ok(addr, len))
        fail(EXIT_USAGE, "%s at 0x%" PRIx64 " (+0x%" PRIx64 ") lies outside guest RAM", what, addr, len);
    return ram + addr;
}

/* ---- ELF ---------------------------------------------------------------- */

static int range_in(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

static uint64_t pvh_entry_in_notes(const uint8_t *p, uint64_t size)
{
    uint64_t off = 0;

    while (off + sizeof(Elf64_Nhdr) <= size) {
        Elf64_Nhdr nh;
        memcpy(&nh, p + off, sizeof(nh));
        uint64_t name = off + sizeof(nh);
        uint64_t desc = name + (((uint64_t)nh.n_namesz + 3) & ~3ull);
        if (!range_in(name, nh.n_namesz, size) || !range_in(desc, nh.n_descsz, size))
            return 0;
        if (nh.n_namesz >= 3 && !memcmp(p + name, "Xen", 3) &&
            (nh.n_namesz == 3 || p[name + 3] == 0) && nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY &&
            (nh.n_descsz == 4 || nh.n_descsz == 8)) {
            uint64_t entry = 0;
            memcpy(&entry, p + desc, nh.n_descsz); /* little endian host */
            return entry;
        }
        off = desc + (((uint64_t)nh.n_descsz + 3) & ~3ull);
    }
    return 0;
}

/* Loads the PT_LOAD segments at p_paddr; returns the PVH entry. */
static uint64_t load_elf(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;

    if (fd < 0)
        fail(EXIT_USAGE, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < (off_t)sizeof(Elf64_Ehdr))
        fail(EXIT_USAGE, "%s: not an ELF file", path);
    uint64_t size = (uint64_t)st.st_size;
    const uint8_t *img = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (img == MAP_FAILED)
        fail(EXIT_USAGE, "%s: %s", path, strerror(errno));
    close(fd);

    Elf64_Ehdr eh;
    memcpy(&eh, img, sizeof(eh));
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG) || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64)
        fail(EXIT_USAGE, "%s: not an ELF64 x86-64 image", path);
    if (eh.e_phentsize != sizeof(Elf64_Phdr) ||
        !range_in(eh.e_phoff, (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr), size))
        fail(EXIT_USAGE, "%s: bad program header table", path);

    uint64_t entry = 0;
    int loads = 0;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, img + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
        if (ph.p_type == PT_LOAD) {
            if (ph.p_filesz > ph.p_memsz || !range_in(ph.p_offset, ph.p_filesz, size))
                fail(EXIT_USAGE, "%s: segment %u lies outside the file", path, i);
            if (ph.p_paddr < HIGH_MEMORY)
                fail(EXIT_USAGE, "%s: ELF segment at 0x%" PRIx64 " lies below 1 MiB", path, ph.p_paddr);
            if (!ram_range_ok(ph.p_paddr, ph.p_memsz))
                fail(EXIT_USAGE, "%s needs guest RAM up to 0x%" PRIx64 "; give the VM more memory (--mem)",
                     path, ph.p_paddr + ph.p_memsz);
            memcpy(ram + ph.p_paddr, img + ph.p_offset, ph.p_filesz);
            memset(ram + ph.p_paddr + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
            loads++;
        } else if (ph.p_type == PT_NOTE && !entry) {
            if (!range_in(ph.p_offset, ph.p_filesz, size))
                fail(EXIT_USAGE, "%s: note segment %u lies outside the file", path, i);
            entry = pvh_entry_in_notes(img + ph.p_offset, ph.p_filesz);
        }
    }
    if (!loads)
        fail(EXIT_USAGE, "%s: no loadable segments", path);
    if (!entry)
        fail(EXIT_USAGE, "%s: ELF has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)", path);
    if (!ram_range_ok(entry, 1))
        fail(EXIT_USAGE, "%s: PVH entry 0x%" PRIx64 " is outside guest RAM", path, entry);
    munmap((void *)img, size);
    return entry;
}

/* Start info, memory map and command line, as vmm/boot/loader.py. */
static void write_boot_info(const char *cmdline)
{
    size_t len = strlen(cmdline);
    if (len + 1 > CMDLINE_MAX)
        fail(EXIT_USAGE, "kernel command line too long (max %llu bytes)", CMDLINE_MAX - 1);
    memcpy(guest_ptr(CMDLINE_ADDR, len + 1, "command line"), cmdline, len + 1);

    struct hvm_memmap_table_entry map[] = {
        { 0, EBDA_START, E820_RAM, 0 },
        { EBDA_START, HIGH_MEMORY - EBDA_START, E820_RESERVED, 0 },
        { HIGH_MEMORY, ram_size - HIGH_MEMORY, E820_RAM, 0 },
    };
    memcpy(guest_ptr(MEMMAP_ADDR, sizeof(map), "memory map"), map, sizeof(map));

    struct hvm_start_info info = {
        .magic = HVM_START_MAGIC,
        .version = 1,
        .cmdline_paddr = CMDLINE_ADDR,
        .memmap_paddr = MEMMAP_ADDR,
        .memmap_entries = sizeof(map) / sizeof(map[0]),
    };
    memcpy(guest_ptr(START_INFO_ADDR, sizeof(info), "start info"), &info, sizeof(info));
}

/* ---- vCPU --------------------------------------------------------------- */

static void set_cpuid(int kvm, int vcpu)
{
    static struct {
        struct kvm_cpuid2 head;
        struct kvm_cpuid_entry2 entries[CPUID_MAX_ENTRIES];
    } cpuid;

    cpuid.head.nent = CPUID_MAX_ENTRIES - 1; /* room for 0x40000010 */
    xioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid, "KVM_GET_SUPPORTED_CPUID");
    int tsc_khz = ioctl(vcpu, KVM_GET_TSC_KHZ, 0);
    if (tsc_khz < 0)
        tsc_khz = 0;

    uint32_t n = 0;
    for (uint32_t i = 0; i < cpuid.head.nent; i++) {
        struct kvm_cpuid_entry2 e = cpuid.entries[i];
        if (e.function == 1) {
            e.ecx |= 1u << 31; /* hypervisor */
            e.ebx = (0u << 24) | (1u << 16) | (8u << 8) | (e.ebx & 0xff);
        } else if (e.function == 0xb || e.function == 0x1f) {
            e.edx = 0; /* x2APIC id */
        } else if (e.function == 0xa) {
            e.eax = e.ebx = e.ecx = e.edx = 0; /* no virtual PMU */
        } else if (e.function == HYPERVISOR_BASE) {
            if (e.eax < HYPERVISOR_TIMING)
                e.eax = HYPERVISOR_TIMING;
        } else if (e.function == HYPERVISOR_TIMING) {
            continue;
        }
        cpuid.entries[n++] = e;
    }
    if (tsc_khz) {
        struct kvm_cpuid_entry2 t = { .function = HYPERVISOR_TIMING, .eax = (uint32_t)tsc_khz,
                                      .ebx = KVM_APIC_BUS_KHZ };
        cpuid.entries[n++] = t;
    }
    cpuid.head.nent = n;
    xioctl(vcpu, KVM_SET_CPUID2, &cpuid, "KVM_SET_CPUID2");
}

static void flat_segment(struct kvm_segment *s, uint16_t selector, int code)
{
    *s = (struct kvm_segment){
        .base = 0, .limit = 0xffffffff, .selector = selector, .type = code ? 0xb : 0x3,
        .present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1, .avl = 0, .unusable = 0,
    };
}

/* As set_pvh_entry_state in vmm/x86/cpu.py. */
static void set_pvh_entry_state(int vcpu, uint64_t entry)
{
    struct kvm_sregs sregs;
    xioctl(vcpu, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
    flat_segment(&sregs.cs, 0x10, 1);
    flat_segment(&sregs.ds, 0x18, 0);
    flat_segment(&sregs.es, 0x18, 0);
    flat_segment(&sregs.fs, 0x18, 0);
    flat_segment(&sregs.gs, 0x18, 0);
    flat_segment(&sregs.ss, 0x18, 0);
    sregs.tr = (struct kvm_segment){ .base = 0, .limit = 0x67, .selector = 0x20, .type = 0xb, .present = 1 };
    sregs.cr0 = 0x11; /* PE | ET */
    sregs.cr3 = sregs.cr4 = sregs.efer = 0;
    xioctl(vcpu, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");

    struct kvm_regs regs;
    xioctl(vcpu, KVM_GET_REGS, &regs, "KVM_GET_REGS");
    memset(&regs, 0, sizeof(regs));
    regs.rip = entry;
    regs.rbx = START_INFO_ADDR;
    regs.rflags = 0x2;
    xioctl(vcpu, KVM_SET_REGS, &regs, "KVM_SET_REGS");
}

/* ---- devices ------------------------------------------------------------ */

static uint8_t uart_lcr;

static void out_byte(uint8_t c)
{
    out_buf[out_len++] = (char)c;
    if (c == '\n' || out_len == sizeof(out_buf))
        flush_out();
}

static void fill_input(void)
{
    if (in_eof || in_pos < in_len)
        return;
    ssize_t n = read(STDIN_FILENO, in_buf, sizeof(in_buf));
    in_pos = 0;
    in_len = n > 0 ? (size_t)n : 0;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        in_eof = 1;
}

static uint32_t uart_read(unsigned reg)
{
    switch (reg) {
    case UART_RBR:
        if (uart_lcr & LCR_DLAB)
            return 0;
        return in_pos < in_len ? in_buf[in_pos++] : 0;
    case UART_IIR:
        return 0xc1; /* FIFOs enabled, no interrupt pending */
    case UART_LCR:
        return uart_lcr;
    case UART_LSR:
        fill_input();
        return LSR_IDLE | (in_pos < in_len ? LSR_DR : 0);
    default:
        return 0;
    }
}

static void uart_write(unsigned reg, uint8_t value)
{
    if (reg == UART_RBR && !(uart_lcr & LCR_DLAB))
        out_byte(value);
    else if (reg == UART_LCR)
        uart_lcr = value;
}

static void idle(uint32_t us)
{
    if (us > IDLE_MAX_US)
        us = IDLE_MAX_US;
    flush_out();
    if (in_pos < in_len)
        return;
    struct pollfd p = { .fd = STDIN_FILENO, .events = POLLIN };
    struct timespec ts = { .tv_sec = us / 1000000u, .tv_nsec = (long)(us % 1000000u) * 1000 };
    ppoll(&p, in_eof ? 0 : 1, &ts, NULL);
}

static void guest_fault(uint32_t addr)
{
    struct fault_record r;

    if (!ram_range_ok(addr, sizeof(r)))
        fail(EXIT_GUEST_CRASHED, "guest fault report at 0x%" PRIx32 " lies outside guest RAM", addr);
    memcpy(&r, ram + addr, sizeof(r));
    fail(EXIT_GUEST_CRASHED, "guest fault: vector %" PRIu64 " at rip 0x%" PRIx64 ", error code 0x%" PRIx64
         ", rsp 0x%" PRIx64, r.vector, r.rip, r.error_code, r.rsp);
}

static void io_exit(struct kvm_run *run)
{
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    unsigned port = run->io.port, size = run->io.size;
    uint32_t value = 0;

    if (run->io.count != 1)
        fail(EXIT_GUEST_CRASHED, "string I/O (%u x %u bytes) at port 0x%x is not supported", run->io.count,
             size, port);
    if (size != 1 && size != 2 && size != 4)
        fail(EXIT_GUEST_CRASHED, "I/O of %u bytes at port 0x%x", size, port);

    if (run->io.direction == KVM_EXIT_IO_OUT) {
        memcpy(&value, data, size);
        if (port >= COM1 && port < COM1 + 8) {
            uart_write(port - COM1, (uint8_t)value);
        } else if (port == PORT_EXIT) {
            if (value > GUEST_STATUS_MAX)
                fail(EXIT_GUEST_CRASHED, "guest powered off with status %" PRIu32 ", outside 0-%d", value,
                     GUEST_STATUS_MAX);
            finish((int)value);
        } else if (port == PORT_FAULT && size == 4) {
            guest_fault(value);
        } else if (port == PORT_IDLE && size == 4) {
            idle(value);
        }
        /* 0x80 and everything else: ignored */
    } else {
        if (port >= COM1 && port < COM1 + 8)
            value = uart_read(port - COM1);
        else
            value = 0xffffffffu;
        memcpy(data, &value, size);
    }
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    uint64_t mem_mib = 128;
    const char *cmdline = "console=ttyS0", *elf = NULL;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--mem") && i + 1 < argc) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (errno || *end || end == argv[i] || v < MIN_MEMORY_MIB || v > MMIO_HOLE_START / MIB) {
                fprintf(stderr, "floor: --mem must be %d-%llu MiB\n", MIN_MEMORY_MIB, MMIO_HOLE_START / MIB);
                return EXIT_USAGE;
            }
            mem_mib = v;
        } else if (!strcmp(argv[i], "--cmdline") && i + 1 < argc) {
            cmdline = argv[++i];
        } else if (argv[i][0] == '-' || elf) {
            usage();
        } else {
            elf = argv[i];
        }
    }
    if (!elf)
        usage();

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0)
        fail(EXIT_USAGE, "/dev/kvm: %s", strerror(errno));
    if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
        fail(EXIT_VMM_FAILURE, "unexpected KVM API version");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0)
        fail(EXIT_VMM_FAILURE, "KVM_CREATE_VM: %s", strerror(errno));
    ram_size = mem_mib * MIB;
    ram = mmap(NULL, ram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED)
        fail(EXIT_USAGE, "cannot allocate %" PRIu64 " MiB of guest memory: %s", mem_mib, strerror(errno));
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = ram_size, .userspace_addr = (uintptr_t)ram,
    };
    xioctl(vm, KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");
    /* After the memory, as vmm does: a memory region set once the irqchip
       exists costs 6-8 ms here, before it 0.1 ms. */
    if (ioctl(vm, KVM_SET_TSS_ADDR, (unsigned long)TSS_ADDR) < 0)
        fail(EXIT_VMM_FAILURE, "KVM_SET_TSS_ADDR: %s", strerror(errno));
    if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
        fail(EXIT_VMM_FAILURE, "KVM_CREATE_IRQCHIP: %s", strerror(errno));

    uint64_t entry = load_elf(elf);
    write_boot_info(cmdline);

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0)
        fail(EXIT_VMM_FAILURE, "KVM_CREATE_VCPU: %s", strerror(errno));
    set_cpuid(kvm, vcpu);
    set_pvh_entry_state(vcpu, entry);
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (run_size < (int)sizeof(struct kvm_run))
        fail(EXIT_VMM_FAILURE, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
    struct kvm_run *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED)
        fail(EXIT_VMM_FAILURE, "mmap kvm_run: %s", strerror(errno));

    stdin_flags = fcntl(STDIN_FILENO, F_GETFL);
    if (stdin_flags >= 0 && fcntl(STDIN_FILENO, F_SETFL, stdin_flags | O_NONBLOCK) < 0)
        stdin_flags = -1;
    if (stdin_flags < 0)
        in_eof = 1; /* no usable stdin */

    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            fail(EXIT_VMM_FAILURE, "KVM_RUN: %s", strerror(errno));
        }
        exits_total++;
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            exits_io++;
            io_exit(run);
            break;
        case KVM_EXIT_MMIO:
            exits_mmio++;
            if (!run->mmio.is_write)
                memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
            break;
        case KVM_EXIT_SHUTDOWN:
            fail(EXIT_GUEST_CRASHED, "guest triple fault (KVM_EXIT_SHUTDOWN)");
        case KVM_EXIT_FAIL_ENTRY:
            fail(EXIT_GUEST_CRASHED, "vCPU failed to enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason 0x%llx)",
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        case KVM_EXIT_INTERNAL_ERROR:
            fail(EXIT_GUEST_CRASHED, "KVM internal error (KVM_EXIT_INTERNAL_ERROR, suberror %u)",
                 run->internal.suberror);
        default:
            fail(EXIT_GUEST_CRASHED, "unexpected vCPU exit %u", run->exit_reason);
        }
    }
}

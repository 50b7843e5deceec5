/* blk_shell.c - shell commands for virtio-blk disks and their tar archives. */
#include "blk_shell.h"
#include "alloc.h"
#include "console.h"
#include "guest.h"
#include "io.h"
#include "lib.h"
#include "tar.h"
#include "virtio_blk.h"

#define MIB                 ((u64)1 << 20)
#define TEXT_MAX            512         /* a shell line is at most 256 bytes */

#define BENCH_DEFAULT_MIB   64
#define BENCH_REQUEST_BYTES (1u << 20)
#define BENCH_IN_FLIGHT     8
#define BENCH_RANDOM_BYTES  4096
#define BENCH_RANDOM_COUNT  2000
#define BENCH_RANDOM_BATCH  64          /* blk_io per blk_run; one buffer each */

/* ---- arguments ---------------------------------------------------------- */

static bool disk_exists(const char *cmd, u64 n, unsigned *disk)
{
    unsigned count = blk_count();

    if (n < count) {
        *disk = (unsigned)n;
        return true;
    }
    if (!count)
        kprintf("%s: no virtio-blk disks\n", cmd);
    else
        kprintf("%s: no disk %lu (disks are 0-%u)\n", cmd, n, count - 1);
    return false;
}

/* "N" */
static bool disk_arg(const char *cmd, const char *arg, unsigned *disk)
{
    u64 n;

    if (!parse_dec_full(arg, &n)) {
        kprintf("%s: '%s' is not a disk number\n", cmd, arg);
        return false;
    }
    return disk_exists(cmd, n, disk);
}

/* "[N:]PATH": disk N (default 0) and the path after the colon. */
static bool disk_path_arg(const char *cmd, const char *arg, unsigned *disk, const char **path)
{
    const char *end;
    u64 n = 0;

    if (parse_dec(arg, &end, &n) && *end == ':') {
        *path = end + 1;
    } else {
        n = 0;
        *path = arg;
    }
    return disk_exists(cmd, n, disk);
}

/* argv[first..] joined by single spaces; returns the length (cut at room-1). */
static size_t join_words(char *buf, size_t room, int argc, char **argv, int first)
{
    size_t len = 0;

    for (int i = first; i < argc; i++) {
        if (i > first && len < room - 1)
            buf[len++] = ' ';
        for (const char *p = argv[i]; *p && len < room - 1; p++)
            buf[len++] = *p;
    }
    buf[len] = '\0';
    return len;
}

/* ---- disks, sync, rawwrite ---------------------------------------------- */

void cmd_disks(int argc, char **argv)
{
    (void)argc, (void)argv;
    if (!blk_count()) {
        console_puts("disks: no virtio-blk disks\n");
        return;
    }
    for (unsigned i = 0; i < blk_count(); i++) {
        const struct blk_info *info = blk_get_info(i);
        u64 cap = info->capacity;
        kprintf("disk %u: %lu sectors (", i, cap);
        if (cap % 2048 == 0)            /* 2048 sectors = 1 MiB */
            kprintf("%lu MiB", cap / 2048);
        else if (cap < 2048)
            kprintf("%lu.%lu KiB", cap / 2, cap % 2 * 5);
        else
            kprintf("%lu.%lu MiB", cap / 2048, cap % 2048 * 10 / 2048);
        kprintf("), id \"%s\", %s, virtio-mmio 0x%lx\n", info->id,
                info->read_only ? "ro" : "rw", info->mmio_base);
    }
}

void cmd_sync(int argc, char **argv)
{
    unsigned first = 0, last = blk_count();

    if (argc > 2) {
        console_puts("usage: sync [N]\n");
        return;
    }
    if (argc == 2) {
        if (!disk_arg("sync", argv[1], &first))
            return;
        last = first + 1;
    }
    for (unsigned i = first; i < last; i++) {
        int err = blk_flush(i);
        if (err)
            kprintf("sync: disk %u: %s\n", i, blk_strerror(err));
    }
}

/* One sector holding TEXT, straight to the device: no read-only check, so
   the device's own answer shows (a read-only disk must say IOERR). */
void cmd_rawwrite(int argc, char **argv)
{
    static u8 sector_buf[BLK_SECTOR_SIZE];
    unsigned disk;
    u64 sector;

    if (argc < 3) {
        console_puts("usage: rawwrite N SECTOR TEXT...\n");
        return;
    }
    if (!disk_arg("rawwrite", argv[1], &disk))
        return;
    if (!parse_uint_full(argv[2], &sector)) {
        console_puts("rawwrite: SECTOR must be a number\n");
        return;
    }
    memset(sector_buf, 0, sizeof(sector_buf));
    join_words((char *)sector_buf, sizeof(sector_buf), argc, argv, 3);
    struct blk_segment seg = { sector_buf, sizeof(sector_buf) };
    int err = blk_request(disk, VIRTIO_BLK_T_OUT, sector, &seg, 1, false, NULL);
    kprintf("rawwrite: disk %u sector %lu: %s\n", disk, sector, blk_strerror(err));
}

/* ---- tar: ls, cat, write ------------------------------------------------ */

static bool ls_visit(const struct tar_member *m, void *ctx)
{
    size_t len = strlen(m->name);
    bool add_slash = m->type == '5' && (!len || m->name[len - 1] != '/');

    (void)ctx;
    kprintf("%10lu %s%s", m->size, m->name, add_slash ? "/" : "");
    if (m->type == '2')
        kprintf(" -> %s", m->linkname);
    else if (m->type == '1')
        kprintf(" link to %s", m->linkname);
    console_putc('\n');
    return true;
}

void cmd_ls(int argc, char **argv)
{
    unsigned disk;
    struct tar_walk w;

    if (argc > 2) {
        console_puts("usage: ls [N]\n");
        return;
    }
    if (argc == 2 ? !disk_arg("ls", argv[1], &disk) : !disk_exists("ls", 0, &disk))
        return;
    int err = tar_walk(disk, ls_visit, NULL, &w);
    if (err == TAR_E_NO_ARCHIVE)
        kprintf("ls: disk %u holds no ustar archive\n", disk);
    else if (err == TAR_E_CORRUPT)
        kprintf("ls: disk %u: bad tar header at sector %lu, archive cut short\n",
                disk, w.end_sector);
    else if (err)
        kprintf("ls: disk %u: %s\n", disk, tar_strerror(err));
}

static void cat_sink(const u8 *data, size_t len, void *ctx)
{
    (void)ctx;
    console_write((const char *)data, len);     /* "\n" goes out as "\r\n" */
}

void cmd_cat(int argc, char **argv)
{
    static struct tar_member m;
    unsigned disk;
    const char *path;

    if (argc != 2) {
        console_puts("usage: cat [N:]PATH\n");
        return;
    }
    if (!disk_path_arg("cat", argv[1], &disk, &path))
        return;
    int err = tar_find(disk, path, &m);
    /* A hard link's data is stored with the member it links to. */
    if (!err && m.type == '1') {
        static char target[TAR_NAME_FIELD + 1];
        memcpy(target, m.linkname, sizeof(target));
        err = tar_find(disk, target, &m);
    }
    if (err == TAR_E_NO_ARCHIVE) {
        kprintf("cat: disk %u holds no ustar archive\n", disk);
        return;
    }
    if (err) {
        kprintf("cat: %s: %s\n", path, tar_strerror(err));
        return;
    }
    if (m.type == '5') {
        kprintf("cat: %s: is a directory\n", path);
        return;
    }
    if (m.type != '0' && m.type != '7') {
        kprintf("cat: %s: not a regular file (type '%c')\n", path, m.type);
        return;
    }
    err = tar_read_data(disk, &m, cat_sink, NULL);
    if (err) {
        if (!console_at_line_start())
            console_putc('\n');
        kprintf("cat: %s: %s\n", path, tar_strerror(err));
    }
}

void cmd_write(int argc, char **argv)
{
    static char text[TEXT_MAX];
    unsigned disk;
    const char *path;

    if (argc < 2) {
        console_puts("usage: write [N:]PATH TEXT...\n");
        return;
    }
    if (!disk_path_arg("write", argv[1], &disk, &path))
        return;
    size_t len = join_words(text, sizeof(text) - 1, argc, argv, 2);
    text[len++] = '\n';
    int err = tar_append(disk, path, text, len);
    switch (err) {
    case TAR_OK:
        break;
    case TAR_E_NAME:
        kprintf("write: %s: name must be 1 to %d bytes\n", path, TAR_NAME_FIELD);
        break;
    case TAR_E_READ_ONLY:
        kprintf("write: disk %u is read-only\n", disk);
        break;
    case TAR_E_FULL:
        kprintf("write: disk %u is full\n", disk);
        break;
    case TAR_E_NO_ARCHIVE:
        kprintf("write: disk %u holds no ustar archive (and is not empty)\n", disk);
        break;
    default:
        kprintf("write: disk %u: %s\n", disk, tar_strerror(err));
        break;
    }
}

/* ---- blkbench ----------------------------------------------------------- */

static u64 xorshift64(u64 *state)
{
    u64 x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static void print_size(u64 bytes)
{
    if (bytes % MIB)
        kprintf("%lu KiB", bytes >> 10);
    else
        kprintf("%lu MiB", bytes / MIB);
}

/* Elapsed time in microseconds, or 0 when the TSC frequency is unknown. */
static u64 elapsed_us(u64 cycles)
{
    if (!tsc_khz)
        return 0;
    u64 us = cycles * 1000 / tsc_khz;
    return us ? us : 1;
}

/* ", 812 ms" (one decimal below 10 ms) */
static void print_ms(u64 us)
{
    if (us < 10000)
        kprintf(", %lu.%lu ms", us / 1000, us % 1000 / 100);
    else
        kprintf(", %lu ms", us / 1000);
}

/* The driver's VM exits during a phase: notifies and idle waits. */
static void print_exits(const struct blk_stats *before, const struct blk_stats *after)
{
    kprintf(" (%lu notifies, %lu idle waits)\n", after->notifies - before->notifies,
            after->idle_waits - before->idle_waits);
}

/* "blkbench: read 64 MiB in 64 requests, 812 ms, 78.8 MiB/s (...)" */
static void report_throughput(const char *phase, const char *extra, u64 bytes, u64 requests,
                              u64 cycles, const struct blk_stats *before,
                              const struct blk_stats *after)
{
    u64 us = elapsed_us(cycles);

    kprintf("blkbench: %s ", phase);
    print_size(bytes);
    kprintf(" in %lu requests%s", requests, extra);
    if (us) {
        u64 tenths = bytes * 10 * 1000000 / us / MIB;   /* MiB/s x 10 */
        print_ms(us);
        kprintf(", %lu.%lu MiB/s", tenths / 10, tenths % 10);
    } else {
        kprintf(", %lu cycles (TSC frequency unknown)", cycles);
    }
    print_exits(before, after);
}

static bool bench_read(unsigned disk, u8 *buf, u64 span)
{
    const struct blk_stats *stats = blk_get_stats(disk);
    struct blk_stats before = *stats;
    u64 requests = 0;
    u64 t0 = rdtsc();
    int err = blk_transfer(disk, VIRTIO_BLK_T_IN, 0, buf, span, BENCH_REQUEST_BYTES,
                           BENCH_IN_FLIGHT, &requests);
    u64 cycles = rdtsc() - t0;

    if (err) {
        kprintf("blkbench: read failed: %s\n", blk_strerror(err));
        return false;
    }
    report_throughput("read", "", span, requests, cycles, &before, stats);
    return true;
}

/* Write back what bench_read read: the disk's contents do not change. */
static bool bench_write(unsigned disk, u8 *buf, u64 span)
{
    const struct blk_info *info = blk_get_info(disk);
    const struct blk_stats *stats = blk_get_stats(disk);
    struct blk_stats before = *stats;
    u64 requests = 0;

    if (info->read_only) {
        kprintf("blkbench: write skipped: disk %u is read-only\n", disk);
        return true;
    }
    u64 t0 = rdtsc();
    int err = blk_transfer(disk, VIRTIO_BLK_T_OUT, 0, buf, span, BENCH_REQUEST_BYTES,
                           BENCH_IN_FLIGHT, &requests);
    if (!err)
        err = blk_flush(disk);
    u64 cycles = rdtsc() - t0;

    if (err) {
        kprintf("blkbench: write failed: %s\n", blk_strerror(err));
        return false;
    }
    report_throughput("write", info->can_flush ? " + flush" : "", span, requests, cycles,
                      &before, stats);
    return true;
}

static bool bench_random_read(unsigned disk, u8 *buffers, u64 span)
{
    static struct blk_io ios[BENCH_RANDOM_BATCH];
    const struct blk_stats *stats = blk_get_stats(disk);
    struct blk_stats before = *stats;
    u64 blocks = span / BENCH_RANDOM_BYTES;
    u64 state = 0x2545f4914f6cdd1dull;  /* fixed seed: repeatable runs */
    u64 t0 = rdtsc();

    for (unsigned done = 0; done < BENCH_RANDOM_COUNT;) {
        unsigned n = BENCH_RANDOM_COUNT - done;
        if (n > BENCH_RANDOM_BATCH)
            n = BENCH_RANDOM_BATCH;
        for (unsigned i = 0; i < n; i++) {
            u64 block = xorshift64(&state) % blocks;
            ios[i] = (struct blk_io){
                .type = VIRTIO_BLK_T_IN,
                .sector = block * (BENCH_RANDOM_BYTES / BLK_SECTOR_SIZE),
                .buf = buffers + (u64)i * BENCH_RANDOM_BYTES,
                .len = BENCH_RANDOM_BYTES,
            };
        }
        int err = blk_run(disk, ios, n, BENCH_IN_FLIGHT);
        if (err) {
            kprintf("blkbench: randread failed: %s\n", blk_strerror(err));
            return false;
        }
        done += n;
    }
    u64 cycles = rdtsc() - t0;
    u64 us = elapsed_us(cycles);

    kprintf("blkbench: randread %u requests of %u KiB", BENCH_RANDOM_COUNT,
            BENCH_RANDOM_BYTES >> 10);
    if (us) {
        print_ms(us);
        kprintf(", %lu IOPS", (u64)BENCH_RANDOM_COUNT * 1000000 / us);
    } else {
        kprintf(", %lu cycles (TSC frequency unknown)", cycles);
    }
    print_exits(&before, stats);
    return true;
}

void cmd_blkbench(int argc, char **argv)
{
    unsigned disk = 0;
    u64 mib = BENCH_DEFAULT_MIB;

    if (argc > 3 || (argc == 3 && (!parse_dec_full(argv[2], &mib) || mib == 0))) {
        console_puts("usage: blkbench [N] [MIB]\n");
        return;
    }
    if (argc >= 2 ? !disk_arg("blkbench", argv[1], &disk) : !disk_exists("blkbench", 0, &disk))
        return;

    /* The span: MIB, but no more than the disk or the free RAM holds. */
    const struct blk_info *info = blk_get_info(disk);
    u64 random_bytes = (u64)BENCH_RANDOM_BATCH * BENCH_RANDOM_BYTES;
    u64 free_bytes = alloc_free_bytes();
    u64 asked = mib > (1ull << 20) ? 1ull << 40 : mib * MIB;
    u64 span = asked;
    if (span > info->capacity * BLK_SECTOR_SIZE)
        span = info->capacity * BLK_SECTOR_SIZE;
    u64 room = free_bytes > random_bytes ? free_bytes - random_bytes : 0;
    if (span > room)
        span = room;
    span -= span % (span >= MIB ? MIB : BENCH_RANDOM_BYTES);    /* readable figures */
    if (span == 0) {
        kprintf("blkbench: disk %u or free RAM too small for one %u KiB block\n", disk,
                BENCH_RANDOM_BYTES >> 10);
        return;
    }
    if (span != asked) {
        console_puts("blkbench: span capped to ");
        print_size(span);
        console_puts(" (disk size or free RAM)\n");
    }

    alloc_mark_t mark = alloc_mark();
    u8 *buf = alloc_pages(span);
    u8 *random_buffers = alloc_pages(random_bytes);
    if (buf && random_buffers && bench_read(disk, buf, span) && bench_write(disk, buf, span))
        bench_random_read(disk, random_buffers, span);
    alloc_release(mark);
}

/*
 * virtio_blk.c - polling virtio-blk driver over virtio-mmio version 2.
 *
 * Cost model (../shared/PLATFORM.md): every MMIO register access is a VM
 * exit of ~40 us, while guest memory accesses are free.  So registers are
 * touched only at probe time and for QueueNotify; requests, completions and
 * status bytes all travel through the rings in guest RAM.
 */
#include "virtio_blk.h"
#include "alloc.h"
#include "console.h"
#include "guest.h"
#include "io.h"
#include "lib.h"
#include "virtio_ring.h"

#define QUEUE_SIZE_LIMIT    128         /* ring entries we ask for */
#define SEGMENT_BYTES_LIMIT (64u << 10) /* a 1 MiB request has 16 segments */
#define MAX_SEGMENTS        32          /* data segments per indirect table */
#define MMIO_MIN_SIZE       (VIRTIO_MMIO_CONFIG + 0x18) /* through blk_size */
#define MAPPED_LIMIT        0x100000000ull  /* boot.S identity-maps 0..4 GiB */

#define IDLE_WAIT_US        100
/* An idle exit seldom ends before its slice (only host input cuts it short),
   so spinning that long first finds completions sooner and costs no exit. */
#define SPIN_US             IDLE_WAIT_US
#define SPIN_POLLS_NO_TSC   5000        /* the same, roughly, without a TSC rate */
#define CHECK_EVERY_IDLES   1000        /* then read Status and notify again */
#define TIMEOUT_MS          60000
#define TIMEOUT_CYCLES_NO_TSC (1ull << 37)  /* 45 s at 3 GHz */
#define RUN_CHUNK           64          /* blk_io per blk_run in blk_transfer */
#define STATUS_UNSET        0xff        /* not a status the device may write */

#define FEATURE(bit) (1ull << (bit))
/* VIRTIO_RING_F_EVENT_IDX: the device says, through avail_event, when it
   wants a QueueNotify; while it is still working on the ring (an I/O thread
   that has not caught up) we skip the notify, and its VM exit. */
#define WANTED_FEATURES (FEATURE(VIRTIO_F_VERSION_1) |              \
                         FEATURE(VIRTIO_RING_F_INDIRECT_DESC) |     \
                         FEATURE(VIRTIO_RING_F_EVENT_IDX) |         \
                         FEATURE(VIRTIO_BLK_F_SIZE_MAX) |           \
                         FEATURE(VIRTIO_BLK_F_SEG_MAX) |            \
                         FEATURE(VIRTIO_BLK_F_BLK_SIZE) |           \
                         FEATURE(VIRTIO_BLK_F_FLUSH) |              \
                         FEATURE(VIRTIO_BLK_F_RO))

/* Config space offsets (struct virtio_blk_config, 5.2.4) */
#define BLK_CONFIG_CAPACITY     0x00
#define BLK_CONFIG_SIZE_MAX     0x08
#define BLK_CONFIG_SEG_MAX      0x0c
#define BLK_CONFIG_BLK_SIZE     0x14

/*
 * Per-request memory, one per ring descriptor: the descriptor `head` of the
 * ring always points at slots[head].table.  Only table, header and status are
 * shared with the device.
 */
struct blk_slot {
    struct virtq_desc table[MAX_SEGMENTS + 2];  /* header, data..., status */
    struct virtio_blk_req_header header;
    u8 status;
    struct blk_io *io;          /* the request using this slot, NULL if free */
} __attribute__((aligned(16)));

struct blk_disk {
    struct blk_info info;
    struct blk_stats stats;
    u64 mmio;
    bool broken;                /* device failed: no more requests */
    struct virtq_desc *desc;
    struct virtq_avail *avail;
    volatile struct virtq_used *used;   /* written by the device */
    u16 next_avail;             /* our avail.idx */
    u16 next_used;              /* used.idx we have reaped up to */
    bool event_idx;             /* VIRTIO_RING_F_EVENT_IDX negotiated */
    bool interrupts;            /* used-buffer interrupts wanted (irqtest) */
    u16 kicked_avail;           /* avail.idx at the last notify decision */
    unsigned in_flight;
    struct blk_slot *slots;
    u16 *free_heads;            /* stack of free descriptors */
    unsigned free_count;
};

static struct blk_disk disks[BLK_MAX_DISKS];
static unsigned disk_count;

#define compiler_barrier() __asm__ volatile("" : : : "memory")

static inline void cpu_relax(void)
{
    __asm__ volatile("pause" : : : "memory");
}

static u32 reg_read(const struct blk_disk *d, u32 off)
{
    return virtio_mmio_read(d->mmio, off);
}

static void reg_write(const struct blk_disk *d, u32 off, u32 val)
{
    virtio_mmio_write(d->mmio, off, val);
}

static u64 addr_of(const volatile void *p)
{
    return (u64)(uintptr_t)p;   /* identity-mapped: virtual = physical */
}

const char *blk_strerror(int err)
{
    switch (err) {
    case BLK_OK:            return "ok";
    case BLK_E_IOERR:       return "I/O error (device status 1, IOERR)";
    case BLK_E_UNSUPP:      return "unsupported (device status 2, UNSUPP)";
    case BLK_E_STATUS:      return "bad or missing status byte";
    case BLK_E_SHORT:       return "short transfer (used length)";
    case BLK_E_RANGE:       return "beyond the end of the disk";
    case BLK_E_READ_ONLY:   return "disk is read-only";
    case BLK_E_INVALID:     return "invalid request";
    case BLK_E_TIMEOUT:     return "device timed out (disk disabled)";
    case BLK_E_DEVICE:      return "device failed (disk disabled)";
    default:                return "unknown error";
    }
}

/* ---- completion --------------------------------------------------------- */

static int request_result(const struct blk_io *io, u8 status, u32 used_len)
{
    if (used_len == 0)
        return BLK_E_STATUS;            /* not even the status byte written */
    switch (status) {
    case VIRTIO_BLK_S_OK:       break;
    case VIRTIO_BLK_S_IOERR:    return BLK_E_IOERR;
    case VIRTIO_BLK_S_UNSUPP:   return BLK_E_UNSUPP;
    default:                    return BLK_E_STATUS;
    }
    if (io->type == VIRTIO_BLK_T_IN && used_len < io->len + 1)
        return BLK_E_SHORT;
    return BLK_OK;
}

static void release_slot(struct blk_disk *d, u16 head, int result, u32 used_len)
{
    struct blk_slot *slot = &d->slots[head];

    slot->io->result = result;
    slot->io->used_len = used_len;
    slot->io = NULL;
    d->free_heads[d->free_count++] = head;
    d->in_flight--;
}

/*
 * The device broke the protocol or stopped answering.  Resetting it makes it
 * drop the rings and our buffers (4.2.3.1); every request still out fails.
 */
static void fail_disk(struct blk_disk *d, int err, const char *why)
{
    kprintf("virtio-blk at 0x%lx: %s; disk disabled\n", d->mmio, why);
    reg_write(d, VIRTIO_MMIO_STATUS, 0);
    d->broken = true;
    for (u16 head = 0; head < d->info.queue_size; head++)
        if (d->slots[head].io)
            release_slot(d, head, err, 0);
}

/* With EVENT_IDX the device interrupts when used.idx passes used_event
   (2.7.10). Not wanted: one behind what we reaped (the device's index is
   already past it, so never), refreshed at every reap. Wanted: the used
   index as we notify, so the device's next answers pass it; not moved while
   we reap, or a reap racing the device's check would cancel the interrupt. */
static void update_used_event(struct blk_disk *d)
{
    if (d->event_idx)
        *(volatile u16 *)&d->avail->ring[d->info.queue_size] =
            d->interrupts ? d->next_used : (u16)(d->next_used - 1);
}

/* Take every finished request off the used ring. */
static void reap(struct blk_disk *d)
{
    u16 size = d->info.queue_size;

    while (!d->broken) {
        u16 used_idx = d->used->idx;
        if (used_idx == d->next_used)
            return;
        if ((u16)(used_idx - d->next_used) > d->in_flight) {
            fail_disk(d, BLK_E_DEVICE, "used index ran ahead of our requests");
            return;
        }
        /* x86 keeps loads in order; this only stops gcc from reading the
           entry before the index that says it is there. */
        compiler_barrier();
        const volatile struct virtq_used_elem *e = &d->used->ring[d->next_used % size];
        u32 id = e->id, len = e->len;
        d->next_used++;
        if (id >= size || !d->slots[id].io) {
            fail_disk(d, BLK_E_DEVICE, "device returned a descriptor we did not give it");
            return;
        }
        u8 status = *(volatile u8 *)&d->slots[id].status;
        release_slot(d, (u16)id, request_result(d->slots[id].io, status, len), len);
        if (!d->interrupts)
            update_used_event(d);
    }
}

static u64 timeout_cycles(void)
{
    return tsc_khz ? (u64)TIMEOUT_MS * tsc_khz : TIMEOUT_CYCLES_NO_TSC;
}

/* Poll used.idx for a little while; true if the device returned something. */
static bool spin_for_used(const struct blk_disk *d)
{
    u64 start = rdtsc();
    u64 spin_cycles = (u64)SPIN_US * tsc_khz / 1000;

    for (unsigned i = 0;; i++) {
        if (d->used->idx != d->next_used)
            return true;
        if (tsc_khz ? rdtsc() - start >= spin_cycles : i >= SPIN_POLLS_NO_TSC)
            return false;
        cpu_relax();
    }
}

/* Wait until at least one request in flight completes (or the disk fails). */
static void wait_for_progress(struct blk_disk *d)
{
    unsigned before = d->in_flight;
    u64 start = rdtsc();
    unsigned idles = 0;

    for (;;) {
        reap(d);
        if (d->in_flight < before || d->broken)
            return;
        /* Asynchronous devices (QEMU, our ioeventfd thread) often answer
           within tens of microseconds: spin before paying for an idle exit. */
        if (spin_for_used(d))
            continue;
        idle_us(IDLE_WAIT_US);
        d->stats.idle_waits++;
        if (++idles % CHECK_EVERY_IDLES == 0) {
            if (reg_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
                fail_disk(d, BLK_E_DEVICE, "device needs reset");
                return;
            }
            /* A notification is never harmful: in case one was lost. */
            reg_write(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
            d->stats.notifies++;
        }
        if (rdtsc() - start > timeout_cycles()) {
            fail_disk(d, BLK_E_TIMEOUT, "no answer from the device");
            return;
        }
    }
}

/* ---- submission --------------------------------------------------------- */

/*
 * Put one request in the ring (no notification yet): an indirect table of
 * header (device-readable), the segments, and the status byte
 * (device-writable), hung off one free descriptor of the ring.
 */
static int submit(struct blk_disk *d, struct blk_io *io, const struct blk_segment *segs,
                  unsigned nsegs, bool device_writes)
{
    if (d->broken)
        return BLK_E_DEVICE;
    if (nsegs > d->info.max_segments || !d->free_count)
        return BLK_E_INVALID;

    u16 head = d->free_heads[--d->free_count];
    struct blk_slot *slot = &d->slots[head];
    struct virtq_desc *t = slot->table;
    u16 n = 0;
    u16 data_flags = VIRTQ_DESC_F_NEXT | (device_writes ? VIRTQ_DESC_F_WRITE : 0);

    slot->header.type = io->type;
    slot->header.reserved = 0;
    slot->header.sector = io->sector;
    slot->status = STATUS_UNSET;
    t[n] = (struct virtq_desc){ addr_of(&slot->header), sizeof(slot->header),
                                VIRTQ_DESC_F_NEXT, (u16)(n + 1) };
    n++;
    for (unsigned i = 0; i < nsegs; i++) {
        if (!segs[i].len)
            continue;
        t[n] = (struct virtq_desc){ addr_of(segs[i].addr), segs[i].len, data_flags,
                                    (u16)(n + 1) };
        n++;
    }
    t[n] = (struct virtq_desc){ addr_of(&slot->status), 1, VIRTQ_DESC_F_WRITE, 0 };
    n++;
    d->desc[head] = (struct virtq_desc){ addr_of(t), n * sizeof(*t),
                                         VIRTQ_DESC_F_INDIRECT, 0 };
    slot->io = io;
    io->result = BLK_E_STATUS;
    io->used_len = 0;
    d->in_flight++;

    /* Ring entry (and everything above) before the index that publishes it:
       x86 keeps stores in order, gcc is told by the barrier. */
    d->avail->ring[d->next_avail % d->info.queue_size] = head;
    compiler_barrier();
    d->next_avail++;
    *(volatile u16 *)&d->avail->idx = d->next_avail;
    d->stats.requests++;
    return BLK_OK;
}

/* One VM exit for everything submitted since the last one. */
static void notify(struct blk_disk *d)
{
    /* The device asks for notifications through avail_event (EVENT_IDX) or
       the NO_NOTIFY flag; either may be set while it is still walking the
       ring.  Our avail.idx store must be visible before we read them:
       store->load order is the one x86 does not keep, hence the fence. */
    if (d->interrupts)
        update_used_event(d);
    __asm__ volatile("mfence" : : : "memory");
    if (d->event_idx) {
        /* avail_event: the u16 after the used ring's entries */
        u16 old = d->kicked_avail;
        u16 event = *(volatile u16 *)(uintptr_t)(addr_of(d->used) + 4 + 8 * (u64)d->info.queue_size);
        d->kicked_avail = d->next_avail;
        /* vring_need_event: did this batch pass the index the device named? */
        if ((u16)(d->next_avail - event - 1) >= (u16)(d->next_avail - old)) {
            d->stats.skipped_notifies++;
            return;
        }
    } else if (d->used->flags & VIRTQ_USED_F_NO_NOTIFY) {
        return;
    }
    reg_write(d, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    d->stats.notifies++;
}

static bool device_writes_data(u32 type)
{
    return type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_GET_ID;
}

/* Check a blk_io and submit it, its buffer cut into segments. */
static int submit_io(struct blk_disk *d, struct blk_io *io)
{
    struct blk_segment segs[MAX_SEGMENTS];
    unsigned nsegs = 0;

    if (io->type == VIRTIO_BLK_T_IN || io->type == VIRTIO_BLK_T_OUT) {
        if (!io->len || io->len % BLK_SECTOR_SIZE || io->len > d->info.max_request_bytes)
            return BLK_E_INVALID;
        u64 count = io->len / BLK_SECTOR_SIZE;
        if (io->sector > d->info.capacity || count > d->info.capacity - io->sector)
            return BLK_E_RANGE;
    }
    u8 *p = io->buf;
    for (u32 left = io->len; left; nsegs++) {
        if (nsegs == d->info.max_segments)
            return BLK_E_INVALID;
        u32 len = left < d->info.segment_bytes ? left : d->info.segment_bytes;
        segs[nsegs] = (struct blk_segment){ p, len };
        p += len;
        left -= len;
    }
    return submit(d, io, segs, nsegs, device_writes_data(io->type));
}

static struct blk_disk *get_disk(unsigned disk)
{
    return disk < disk_count ? &disks[disk] : NULL;
}

static int run_on(struct blk_disk *d, struct blk_io *ios, unsigned count, unsigned in_flight)
{
    unsigned next = 0;

    if (in_flight == 0)
        in_flight = 1;
    if (in_flight > d->info.queue_size)
        in_flight = d->info.queue_size;
    while (next < count || d->in_flight) {
        bool added = false;
        /* Refill only once half the window is free: with an asynchronous
           device, topping up after every single completion would cost one
           notify (VM exit) per request. */
        bool refill = d->in_flight <= in_flight / 2;
        while (refill && next < count && d->in_flight < in_flight) {
            struct blk_io *io = &ios[next++];
            int err = submit_io(d, io);
            if (err)
                io->result = err;       /* never reached the device */
            else
                added = true;
        }
        if (added)
            notify(d);
        if (d->in_flight)
            wait_for_progress(d);
    }
    for (unsigned i = 0; i < count; i++)
        if (ios[i].result)
            return ios[i].result;
    return BLK_OK;
}

int blk_run(unsigned disk, struct blk_io *ios, unsigned count, unsigned in_flight)
{
    struct blk_disk *d = get_disk(disk);
    return d ? run_on(d, ios, count, in_flight) : BLK_E_INVALID;
}

int blk_transfer(unsigned disk, u32 type, u64 sector, void *buf, u64 bytes,
                 u32 request_bytes, unsigned in_flight, u64 *requests)
{
    struct blk_disk *d = get_disk(disk);
    struct blk_io ios[RUN_CHUNK];
    u8 *p = buf;

    if (!d || bytes % BLK_SECTOR_SIZE)
        return BLK_E_INVALID;
    if (request_bytes > d->info.max_request_bytes)
        request_bytes = d->info.max_request_bytes;
    request_bytes -= request_bytes % BLK_SECTOR_SIZE;
    if (!request_bytes)
        request_bytes = BLK_SECTOR_SIZE;
    while (bytes) {
        unsigned n = 0;
        for (; bytes && n < RUN_CHUNK; n++) {
            u32 len = bytes < request_bytes ? (u32)bytes : request_bytes;
            ios[n] = (struct blk_io){ .type = type, .sector = sector, .buf = p, .len = len };
            sector += len / BLK_SECTOR_SIZE;
            p += len;
            bytes -= len;
        }
        int err = run_on(d, ios, n, in_flight);
        if (requests)
            *requests += n;
        if (err)
            return err;
    }
    return BLK_OK;
}

static int check_range(const struct blk_disk *d, u64 sector, u64 nsectors)
{
    if (sector > d->info.capacity || nsectors > d->info.capacity - sector)
        return BLK_E_RANGE;
    return BLK_OK;
}

int blk_read(unsigned disk, u64 sector, void *buf, u64 nsectors)
{
    struct blk_disk *d = get_disk(disk);
    if (!d)
        return BLK_E_INVALID;
    int err = check_range(d, sector, nsectors);
    if (err)
        return err;
    return blk_transfer(disk, VIRTIO_BLK_T_IN, sector, buf, nsectors * BLK_SECTOR_SIZE,
                        d->info.max_request_bytes, BLK_DEFAULT_IN_FLIGHT, NULL);
}

int blk_write(unsigned disk, u64 sector, const void *buf, u64 nsectors)
{
    struct blk_disk *d = get_disk(disk);
    if (!d)
        return BLK_E_INVALID;
    if (d->info.read_only)
        return BLK_E_READ_ONLY;
    int err = check_range(d, sector, nsectors);
    if (err)
        return err;
    /* The device only reads the buffer: casting const away is safe. */
    return blk_transfer(disk, VIRTIO_BLK_T_OUT, sector, (void *)buf,
                        nsectors * BLK_SECTOR_SIZE, d->info.max_request_bytes,
                        BLK_DEFAULT_IN_FLIGHT, NULL);
}

int blk_flush(unsigned disk)
{
    struct blk_disk *d = get_disk(disk);
    if (!d)
        return BLK_E_INVALID;
    if (!d->info.can_flush)
        return BLK_OK;                  /* 5.2.6.2: write-through, nothing to do */
    struct blk_io io = { .type = VIRTIO_BLK_T_FLUSH };
    return run_on(d, &io, 1, 1);
}

static int request_on(struct blk_disk *d, u32 type, u64 sector, const struct blk_segment *segs,
                      unsigned nsegs, bool device_writes, u32 *used_len)
{
    struct blk_io io = { .type = type, .sector = sector };

    for (unsigned i = 0; i < nsegs; i++)
        io.len += segs[i].len;
    int err = submit(d, &io, segs, nsegs, device_writes);
    if (err)
        return err;
    notify(d);
    while (d->in_flight)
        wait_for_progress(d);
    if (used_len)
        *used_len = io.used_len;
    return io.result;
}

int blk_request(unsigned disk, u32 type, u64 sector, const struct blk_segment *segs,
                unsigned nsegs, bool device_writes, u32 *used_len)
{
    struct blk_disk *d = get_disk(disk);
    return d ? request_on(d, type, sector, segs, nsegs, device_writes, used_len)
             : BLK_E_INVALID;
}

unsigned blk_count(void)
{
    return disk_count;
}

const struct blk_info *blk_get_info(unsigned disk)
{
    struct blk_disk *d = get_disk(disk);
    return d ? &d->info : NULL;
}

const struct blk_stats *blk_get_stats(unsigned disk)
{
    struct blk_disk *d = get_disk(disk);
    return d ? &d->stats : NULL;
}

/* ---- probe (virtio 1.x 3.1.1) ------------------------------------------- */

static u64 read_device_features(const struct blk_disk *d)
{
    reg_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    u64 lo = reg_read(d, VIRTIO_MMIO_DEVICE_FEATURES);
    reg_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    u64 hi = reg_read(d, VIRTIO_MMIO_DEVICE_FEATURES);
    return hi << 32 | lo;
}

static void write_driver_features(const struct blk_disk *d, u64 features)
{
    reg_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    reg_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (u32)features);
    reg_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    reg_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (u32)(features >> 32));
}

static void write_address(const struct blk_disk *d, u32 low_reg, u64 addr)
{
    reg_write(d, low_reg, (u32)addr);
    reg_write(d, low_reg + 4, (u32)(addr >> 32));
}

/* Rings and per-request slots; returns false when memory runs out. */
static bool setup_queue_memory(struct blk_disk *d, u16 size)
{
    u8 *areas = alloc_zeroed_pages(virtq_area_bytes(size));
    d->slots = alloc_zeroed_pages(size * sizeof(struct blk_slot));
    d->free_heads = alloc_pages(size * sizeof(u16));
    if (!areas || !d->slots || !d->free_heads)
        return false;
    virtq_place_areas(areas, size, &d->desc, &d->avail, &d->used);
    d->free_count = 0;
    for (u16 head = size; head-- > 0;)
        d->free_heads[d->free_count++] = head;  /* pops 0, 1, 2, ... */
    d->avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;  /* we poll */
    return true;
}

/* Configuration fields, re-read if the device changed them meanwhile (4.2.2.2). */
static void read_config(struct blk_disk *d, u64 features, u32 *size_max, u32 *seg_max)
{
    u32 base = VIRTIO_MMIO_CONFIG;

    for (int tries = 0; tries < 8; tries++) {
        u32 generation = reg_read(d, VIRTIO_MMIO_CONFIG_GENERATION);
        u64 lo = reg_read(d, base + BLK_CONFIG_CAPACITY);
        u64 hi = reg_read(d, base + BLK_CONFIG_CAPACITY + 4);
        d->info.capacity = hi << 32 | lo;
        *size_max = features & FEATURE(VIRTIO_BLK_F_SIZE_MAX)
                        ? reg_read(d, base + BLK_CONFIG_SIZE_MAX) : 0;
        *seg_max = features & FEATURE(VIRTIO_BLK_F_SEG_MAX)
                       ? reg_read(d, base + BLK_CONFIG_SEG_MAX) : 0;
        d->info.blk_size = features & FEATURE(VIRTIO_BLK_F_BLK_SIZE)
                               ? reg_read(d, base + BLK_CONFIG_BLK_SIZE) : BLK_SECTOR_SIZE;
        if (reg_read(d, VIRTIO_MMIO_CONFIG_GENERATION) == generation)
            return;
    }
}

/* Request limits from size_max/seg_max, our table size and the queue size. */
static bool set_limits(struct blk_disk *d, u32 size_max, u32 seg_max)
{
    struct blk_info *info = &d->info;

    info->segment_bytes = SEGMENT_BYTES_LIMIT;
    if (size_max && size_max < info->segment_bytes)
        info->segment_bytes = size_max >= BLK_SECTOR_SIZE
                                  ? size_max - size_max % BLK_SECTOR_SIZE : size_max;
    info->max_segments = MAX_SEGMENTS;
    if (seg_max && seg_max < info->max_segments)
        info->max_segments = seg_max;
    /* 2.7.5.3.1: an indirect chain may not be longer than the queue. */
    if (info->max_segments > info->queue_size - 2u)
        info->max_segments = info->queue_size - 2u;
    u64 bytes = (u64)info->segment_bytes * info->max_segments;
    info->max_request_bytes = (u32)(bytes - bytes % BLK_SECTOR_SIZE);
    return info->max_request_bytes >= BLK_SECTOR_SIZE;
}

/* GET_ID: a NUL-padded string of up to 20 bytes; keep the printable part. */
static void read_id(struct blk_disk *d)
{
    static u8 id[BLK_ID_BYTES];
    struct blk_segment seg = { id, sizeof(id) };

    memset(id, 0, sizeof(id));
    d->info.id[0] = '\0';
    if (request_on(d, VIRTIO_BLK_T_GET_ID, 0, &seg, 1, true, NULL) != BLK_OK)
        return;
    size_t n = strnlen((const char *)id, sizeof(id));
    for (size_t i = 0; i < n; i++)
        d->info.id[i] = id[i] >= 0x20 && id[i] < 0x7f ? (char)id[i] : '?';
    d->info.id[n] = '\0';
}

static u16 queue_size_for(u32 max)
{
    u16 size = QUEUE_SIZE_LIMIT;
    while (size > max)
        size /= 2;              /* split queues want a power of two */
    return size;
}

/* Initialise one block device; on failure say why and mark it FAILED. */
static bool init_disk(struct blk_disk *d)
{
    const char *why;
    u32 status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

    reg_write(d, VIRTIO_MMIO_STATUS, 0);                        /* reset */
    if (reg_read(d, VIRTIO_MMIO_STATUS) != 0) {
        kprintf("virtio-blk at 0x%lx: reset did not complete\n", d->mmio);
        return false;
    }
    reg_write(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    reg_write(d, VIRTIO_MMIO_STATUS, status);

    u64 offered = read_device_features(d);
    u64 features = offered & WANTED_FEATURES;
    if (!(features & FEATURE(VIRTIO_F_VERSION_1))) {
        why = "VIRTIO_F_VERSION_1 not offered";
        goto fail;
    }
    if (!(features & FEATURE(VIRTIO_RING_F_INDIRECT_DESC))) {
        why = "VIRTIO_RING_F_INDIRECT_DESC not offered (this driver needs it)";
        goto fail;
    }
    write_driver_features(d, features);
    d->event_idx = features & FEATURE(VIRTIO_RING_F_EVENT_IDX);
    status |= VIRTIO_STATUS_FEATURES_OK;
    reg_write(d, VIRTIO_MMIO_STATUS, status);
    if (!(reg_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
        why = "device refused our features (FEATURES_OK clear)";
        goto fail;
    }

    reg_write(d, VIRTIO_MMIO_QUEUE_SEL, 0);
    if (reg_read(d, VIRTIO_MMIO_QUEUE_READY)) {
        why = "queue 0 already in use after reset";
        goto fail;
    }
    u32 max = reg_read(d, VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (max == 0) {
        why = "no queue 0 (QueueNumMax is 0)";
        goto fail;
    }
    d->info.queue_size = queue_size_for(max);
    if (!setup_queue_memory(d, d->info.queue_size)) {
        why = "out of memory for the queue";
        goto fail;
    }
    update_used_event(d);                       /* no interrupts: we poll */
    reg_write(d, VIRTIO_MMIO_QUEUE_NUM, d->info.queue_size);
    write_address(d, VIRTIO_MMIO_QUEUE_DESC_LOW, addr_of(d->desc));
    write_address(d, VIRTIO_MMIO_QUEUE_DRIVER_LOW, addr_of(d->avail));
    write_address(d, VIRTIO_MMIO_QUEUE_DEVICE_LOW, addr_of(d->used));
    reg_write(d, VIRTIO_MMIO_QUEUE_READY, 1);

    u32 size_max, seg_max;
    read_config(d, features, &size_max, &seg_max);
    if (!set_limits(d, size_max, seg_max)) {
        why = "size_max and seg_max allow less than one sector per request";
        goto fail;
    }
    d->info.read_only = features & FEATURE(VIRTIO_BLK_F_RO);
    d->info.can_flush = features & FEATURE(VIRTIO_BLK_F_FLUSH);

    status |= VIRTIO_STATUS_DRIVER_OK;
    reg_write(d, VIRTIO_MMIO_STATUS, status);
    if (reg_read(d, VIRTIO_MMIO_STATUS) &
        (VIRTIO_STATUS_DEVICE_NEEDS_RESET | VIRTIO_STATUS_FAILED)) {
        why = "device needs reset after DRIVER_OK";
        goto fail;
    }
    read_id(d);
    return !d->broken;

fail:
    kprintf("virtio-blk at 0x%lx: %s\n", d->mmio, why);
    reg_write(d, VIRTIO_MMIO_STATUS, status | VIRTIO_STATUS_FAILED);
    return false;
}

static void probe(const struct virtio_mmio_device *dev)
{
    u64 base = dev->base;

    if (base >= MAPPED_LIMIT || dev->size < MMIO_MIN_SIZE ||
        dev->size > MAPPED_LIMIT - base) {
        kprintf("virtio-mmio at 0x%lx size 0x%lx: outside the mapped 4 GiB or too small, skipped\n",
                base, dev->size);
        return;
    }
    u32 magic = virtio_mmio_read(base, VIRTIO_MMIO_MAGIC_VALUE);
    if (magic != VIRTIO_MMIO_MAGIC) {
        kprintf("virtio-mmio at 0x%lx: bad magic 0x%x, skipped\n", base, magic);
        return;
    }
    u32 version = virtio_mmio_read(base, VIRTIO_MMIO_VERSION);
    if (version != 2) {
        kprintf("virtio-mmio at 0x%lx: version %u%s not supported, skipped\n", base, version,
                version == 1 ? " (legacy)" : "");
        return;
    }
    /* DeviceID 0 is an empty slot (QEMU's microvm has many); others are not ours. */
    if (virtio_mmio_read(base, VIRTIO_MMIO_DEVICE_ID) != VIRTIO_ID_BLOCK)
        return;

    struct blk_disk *d = &disks[disk_count];
    memset(d, 0, sizeof(*d));
    d->mmio = base;
    d->info.mmio_base = base;
    if (init_disk(d))
        disk_count++;
}

void blk_init(void)
{
    for (unsigned i = 0; i < virtio_mmio_count && disk_count < BLK_MAX_DISKS; i++)
        probe(&virtio_mmio_devices[i]);
}

/* Used-buffer interrupts (irqtest): clear or set VIRTQ_AVAIL_F_NO_INTERRUPT. */
bool blk_set_interrupts(unsigned disk, bool enable)
{
    struct blk_disk *d = get_disk(disk);
    if (!d || d->broken)
        return false;
    *(volatile u16 *)&d->avail->flags = enable ? 0 : VIRTQ_AVAIL_F_NO_INTERRUPT;
    d->interrupts = enable;
    update_used_event(d);
    return true;
}

/*
 * virtio_blk.h - polling virtio-blk driver over virtio-mmio version 2
 * (virtio 1.x sections 4.2 and 5.2).
 *
 * Every request is one indirect descriptor table (header, data segments,
 * status byte) hung off one descriptor of the ring, so a request takes one
 * ring slot however many segments it has.  Several requests go out per
 * QueueNotify (one VM exit); completions are found by polling the used ring.
 * Buffers are passed by address: the kernel's address space is identity
 * mapped, so a pointer is the guest physical address the device needs.
 */
#ifndef GUEST_VIRTIO_BLK_H
#define GUEST_VIRTIO_BLK_H

#include "types.h"
#include "virtio_mmio.h"

#define BLK_SECTOR_SIZE     512
#define BLK_MAX_DISKS       VIRTIO_MMIO_MAX_DEVICES
#define BLK_ID_BYTES        20          /* VIRTIO_BLK_T_GET_ID answer */
#define BLK_DEFAULT_IN_FLIGHT 8

/* Feature bits (5.2.3) */
#define VIRTIO_BLK_F_SIZE_MAX   1       /* config.size_max: bytes per segment */
#define VIRTIO_BLK_F_SEG_MAX    2       /* config.seg_max: segments per request */
#define VIRTIO_BLK_F_RO         5
#define VIRTIO_BLK_F_BLK_SIZE   6
#define VIRTIO_BLK_F_FLUSH      9

/* Request types (5.2.6) */
#define VIRTIO_BLK_T_IN         0       /* read */
#define VIRTIO_BLK_T_OUT        1       /* write */
#define VIRTIO_BLK_T_FLUSH      4
#define VIRTIO_BLK_T_GET_ID     8

/* Status byte values */
#define VIRTIO_BLK_S_OK         0
#define VIRTIO_BLK_S_IOERR      1
#define VIRTIO_BLK_S_UNSUPP     2

/* The device-readable request header (struct virtio_blk_req, 5.2.6). */
struct virtio_blk_req_header {
    u32 type;
    u32 reserved;
    u64 sector;
};

/* Results: 0 or one of these (blk_strerror gives the text). */
enum {
    BLK_OK = 0,
    BLK_E_IOERR = -1,           /* device answered VIRTIO_BLK_S_IOERR */
    BLK_E_UNSUPP = -2,          /* device answered VIRTIO_BLK_S_UNSUPP */
    BLK_E_STATUS = -3,          /* no or an unknown status byte */
    BLK_E_SHORT = -4,           /* used length shorter than the data asked for */
    BLK_E_RANGE = -5,           /* beyond the end of the disk */
    BLK_E_READ_ONLY = -6,       /* the driver refuses writes to a read-only disk */
    BLK_E_INVALID = -7,         /* no such disk, or a malformed request */
    BLK_E_TIMEOUT = -8,         /* the device did not answer: disk disabled */
    BLK_E_DEVICE = -9,          /* the device failed (needs reset): disk disabled */
};
const char *blk_strerror(int err);

struct blk_info {
    u64 mmio_base;              /* virtio-mmio register page */
    u64 capacity;               /* in 512-byte sectors */
    bool read_only;             /* VIRTIO_BLK_F_RO */
    bool can_flush;             /* VIRTIO_BLK_F_FLUSH negotiated */
    u32 blk_size;               /* the device's block size (512 if not offered) */
    u32 segment_bytes;          /* largest data segment we build */
    u32 max_segments;           /* data segments per request */
    u32 max_request_bytes;      /* data bytes per request */
    u16 queue_size;
    char id[BLK_ID_BYTES + 1];  /* GET_ID, printable, "" if not supported */
};

/* Counters since boot: each notify and idle wait is one VM exit. */
struct blk_stats {
    u64 requests;
    u64 notifies;
    u64 idle_waits;
    u64 skipped_notifies;       /* EVENT_IDX: the device did not want them */
};

/* One data segment: identity-mapped address and length. */
struct blk_segment {
    void *addr;
    u32 len;
};

/* One request of a batch: a contiguous buffer, split into segments as needed. */
struct blk_io {
    u32 type;                   /* VIRTIO_BLK_T_* */
    u64 sector;
    void *buf;
    u32 len;                    /* bytes; whole sectors for IN/OUT */
    int result;                 /* out: BLK_OK or BLK_E_* */
    u32 used_len;               /* out: bytes the device reports written (incl. status) */
};

/* Probe every virtio-mmio device from the command line; print failures. */
void blk_init(void);
unsigned blk_count(void);
/* NULL if there is no such disk. */
const struct blk_info *blk_get_info(unsigned disk);
const struct blk_stats *blk_get_stats(unsigned disk);

/* Synchronous whole-sector I/O (split into requests, 8 in flight). */
int blk_read(unsigned disk, u64 sector, void *buf, u64 nsectors);
int blk_write(unsigned disk, u64 sector, const void *buf, u64 nsectors);
/* VIRTIO_BLK_T_FLUSH; a device without the FLUSH feature is write-through. */
int blk_flush(unsigned disk);

/*
 * Batches.  blk_run keeps up to `in_flight` of `ios` in flight, putting as
 * many as it can in the ring before each QueueNotify; it sets every io's
 * result and returns the first error (or BLK_OK).  blk_transfer moves
 * `bytes` (whole sectors) from/to `buf` in requests of `request_bytes`
 * (capped to what the device takes) and adds the request count to
 * *requests.  Neither checks the read-only flag: the device has the last word.
 */
int blk_run(unsigned disk, struct blk_io *ios, unsigned count, unsigned in_flight);
int blk_transfer(unsigned disk, u32 type, u64 sector, void *buf, u64 bytes,
                 u32 request_bytes, unsigned in_flight, u64 *requests);

/*
 * One request from an explicit segment list, run to completion: `device_writes`
 * says the segments are device-writable (IN, GET_ID) rather than readable.
 * *used_len (optional) receives the used length.  No read-only check.
 */
int blk_request(unsigned disk, u32 type, u64 sector, const struct blk_segment *segs,
                unsigned nsegs, bool device_writes, u32 *used_len);

/*
 * The driver polls and asks the device for no used-buffer interrupts
 * (VIRTQ_AVAIL_F_NO_INTERRUPT); irqtest turns them on for a while.
 * False if there is no such (working) disk.
 */
bool blk_set_interrupts(unsigned disk, bool enable);

#endif

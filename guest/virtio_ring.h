/*
 * virtio_ring.h - the split virtqueue (virtio 1.x section 2.7), driver view.
 *
 * All fields are little endian, like x86.  The driver owns the descriptor
 * table and the available ring; the device owns the used ring, so the driver
 * reads used-ring fields through volatile pointers (they change under it).
 */
#ifndef GUEST_VIRTIO_RING_H
#define GUEST_VIRTIO_RING_H

#include "types.h"

/* Feature bits of the ring layout (section 6) */
#define VIRTIO_RING_F_INDIRECT_DESC     28
#define VIRTIO_RING_F_EVENT_IDX         29

/* 2.7.5 The Virtqueue Descriptor Table */
#define VIRTQ_DESC_F_NEXT       1       /* the chain continues at .next */
#define VIRTQ_DESC_F_WRITE      2       /* device-writable (else device-readable) */
#define VIRTQ_DESC_F_INDIRECT   4       /* .addr/.len hold a table of descriptors */

struct virtq_desc {
    u64 addr;                   /* guest physical address */
    u32 len;
    u16 flags;
    u16 next;
};

/* 2.7.6 The Virtqueue Available Ring */
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1    /* we poll: no used-buffer notifications */

struct virtq_avail {
    u16 flags;
    u16 idx;                    /* where the driver puts the next entry (mod 2^16) */
    u16 ring[];                 /* queue-size entries, then u16 used_event */
};

/* 2.7.8 The Virtqueue Used Ring */
#define VIRTQ_USED_F_NO_NOTIFY  1       /* device: no need to notify me now */

struct virtq_used_elem {
    u32 id;                     /* head index of the returned chain */
    u32 len;                    /* bytes the device wrote into the chain */
};

struct virtq_used {
    u16 flags;
    u16 idx;                    /* where the device puts the next entry (mod 2^16) */
    struct virtq_used_elem ring[];  /* queue-size entries, then u16 avail_event */
};

/* Sizes of the three areas for a queue of `size` entries (2.7, table). */
static inline size_t virtq_desc_bytes(unsigned size)
{
    return 16 * (size_t)size;
}

static inline size_t virtq_avail_bytes(unsigned size)
{
    return 6 + 2 * (size_t)size;
}

static inline size_t virtq_used_bytes(unsigned size)
{
    return 6 + 8 * (size_t)size;
}

/*
 * The three areas laid out in one allocation, as a modern driver may
 * (2.7: desc 16-, avail 2-, used 4-byte aligned): the descriptor table,
 * the available ring, then the used ring on a cache line of its own (the
 * device writes it).  A queue of up to 128 entries fits one page, so a
 * fresh VM (each sandbox clone) takes one shadow-page fault for it, not
 * three.  Offsets from the start; virtq_area_bytes is the whole.
 */
static inline size_t virtq_avail_offset(unsigned size)
{
    return virtq_desc_bytes(size);
}

static inline size_t virtq_used_offset(unsigned size)
{
    return (virtq_avail_offset(size) + virtq_avail_bytes(size) + 63) & ~(size_t)63;
}

static inline size_t virtq_area_bytes(unsigned size)
{
    return virtq_used_offset(size) + virtq_used_bytes(size);
}

/* The three areas of a queue of `size` entries in `areas` (virtq_area_bytes of them). */
static inline void virtq_place_areas(u8 *areas, unsigned size, struct virtq_desc **desc,
                                     struct virtq_avail **avail, volatile struct virtq_used **used)
{
    *desc = (struct virtq_desc *)areas;
    *avail = (struct virtq_avail *)(areas + virtq_avail_offset(size));
    *used = (volatile struct virtq_used *)(areas + virtq_used_offset(size));
}

_Static_assert(sizeof(struct virtq_desc) == 16, "virtq_desc layout");
_Static_assert(sizeof(struct virtq_used_elem) == 8, "virtq_used_elem layout");

#endif

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

_Static_assert(sizeof(struct virtq_desc) == 16, "virtq_desc layout");
_Static_assert(sizeof(struct virtq_used_elem) == 8, "virtq_used_elem layout");

#endif

/*
 * virtio-blk fast path: the common request layout served in C (issue 15).
 *
 * Compiled into the cffi module (ffi_build.py appends this file). The
 * Python model (vmm/devices/virtio/queue.py, block.py) stays the reference:
 * this code serves only chains that are exactly
 *
 *     header (16 bytes, device-readable, NEXT)
 *     1..VF_MAX_SEGS data buffers (all device-writable for IN, all
 *         device-readable for OUT; non-empty; NEXT)
 *     status (1 byte, device-writable, no NEXT)
 *
 * direct or in one indirect table, every buffer inside one RAM region,
 * whole sectors inside the disk, and for which the Python model would do the
 * same single preadv/pwritev. Anything else (another flag bit, a loop, a
 * table entry out of range, FLUSH, GET_ID, a bad sector, an I/O error) ends
 * the run *before* that chain is consumed, and Python serves it with all its
 * checks and typed errors. So this file holds no error answers at all: it
 * either does what the model would do, or leaves the chain alone.
 *
 * Like pop_batch(), a run reads avail.idx once, resolves its chains, then
 * executes them in order and publishes used.idx once. Descriptors and
 * headers are copied out of guest RAM before use, so a guest rewriting them
 * concurrently cannot make us act on values we did not check.
 */
#include <string.h>
#include <sys/uio.h>

#define VF_F_NEXT       1
#define VF_F_WRITE      2
#define VF_F_INDIRECT   4
#define VF_BLK_T_IN     0
#define VF_BLK_T_OUT    1
#define VF_SECTOR       512u

struct vf_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct vf_request {
    uint16_t head;
    uint16_t nsegs;
    uint8_t write;              /* OUT (pwritev) rather than IN (preadv) */
    uint64_t offset;            /* bytes into the disk */
    uint32_t data_len;
    uint8_t *status;
    struct iovec iov[VF_MAX_SEGS];
};

/* Host address of [addr, addr+len) if it lies inside one RAM region. */
static uint8_t *vf_host(const struct vmm_vq *q, uint64_t addr, uint64_t len)
{
    for (uint32_t i = 0; i < q->nregions; i++) {
        const struct vmm_ram_region *r = &q->regions[i];
        if (addr >= r->gpa && addr - r->gpa <= r->size && len <= r->size - (addr - r->gpa))
            return r->host + (addr - r->gpa);
    }
    return NULL;
}

static void vf_read_desc(const uint8_t *table, uint32_t index, struct vf_desc *d)
{
    memcpy(d, table + 16 * (size_t)index, sizeof *d);   /* one snapshot of it */
}

/* Resolve the chain at `head` into `req`; 0 if it is not the common layout. */
static int vf_resolve(const struct vmm_vq *q, const uint8_t *ring_table, uint16_t head,
                      struct vf_request *req)
{
    const uint8_t *table = ring_table;
    uint32_t count = q->size;
    struct vf_desc d, bufs[VF_MAX_SEGS + 2];
    uint32_t n = 0;

    vf_read_desc(table, head, &d);
    if (d.flags & VF_F_INDIRECT) {
        /* The model's checks (2.7.5.3), and nothing unusual beside them. */
        if (!q->indirect || d.flags != VF_F_INDIRECT || d.len == 0 || d.len % 16)
            return 0;
        count = d.len / 16;
        if (count > q->max_chain_len)
            return 0;
        table = vf_host(q, d.addr, d.len);
        if (!table)
            return 0;
        vf_read_desc(table, 0, &d);
    }
    /* At most `count` visits (the model's loop bound) and max_chain_len buffers. */
    uint32_t limit = VF_MAX_SEGS + 2;
    if (limit > count)
        limit = count;
    if (limit > q->max_chain_len)
        limit = q->max_chain_len;
    for (;;) {
        if ((d.flags & VF_F_INDIRECT) || n == limit)
            return 0;
        bufs[n++] = d;
        if (!(d.flags & VF_F_NEXT))
            break;
        if (d.next >= count)
            return 0;
        vf_read_desc(table, d.next, &d);
    }
    if (n < 3 || bufs[0].flags != VF_F_NEXT || bufs[0].len != 16)
        return 0;
    if (bufs[n - 1].flags != VF_F_WRITE || bufs[n - 1].len != 1)
        return 0;
    const uint8_t *header = vf_host(q, bufs[0].addr, 16);
    req->status = vf_host(q, bufs[n - 1].addr, 1);
    if (!header || !req->status)
        return 0;
    uint32_t type;
    uint64_t sector;
    memcpy(&type, header, 4);
    memcpy(&sector, header + 8, 8);
    if (type == VF_BLK_T_IN)
        req->write = 0;
    else if (type == VF_BLK_T_OUT && !q->read_only)
        req->write = 1;
    else
        return 0;
    uint16_t data_flags = VF_F_NEXT | (req->write ? 0 : VF_F_WRITE);
    uint64_t total = 0;
    for (uint32_t i = 1; i < n - 1; i++) {
        if (bufs[i].flags != data_flags || bufs[i].len == 0)
            return 0;
        uint8_t *p = vf_host(q, bufs[i].addr, bufs[i].len);
        if (!p)
            return 0;
        req->iov[i - 1].iov_base = p;
        req->iov[i - 1].iov_len = bufs[i].len;
        total += bufs[i].len;
    }
    if (total > q->max_data_bytes || total % VF_SECTOR)
        return 0;
    if (sector > q->disk_bytes / VF_SECTOR || total > q->disk_bytes - sector * VF_SECTOR)
        return 0;
    req->head = head;
    req->nsegs = (uint16_t)(n - 2);
    req->offset = sector * VF_SECTOR;
    req->data_len = (uint32_t)total;
    return 1;
}

int vmm_blk_serve(struct vmm_vq *q)
{
    uint32_t size = q->size;
    if (size == 0 || size > 32768 || (size & (size - 1)))
        return -1;
    uint8_t *table = vf_host(q, q->desc_addr, 16 * (uint64_t)size);
    uint8_t *avail = vf_host(q, q->avail_addr, 4 + 2 * (uint64_t)size);
    uint8_t *used = vf_host(q, q->used_addr, 4 + 8 * (uint64_t)size);
    if (!table || !avail || !used)
        return -1;
    uint16_t avail_idx = __atomic_load_n((uint16_t *)(avail + 2), __ATOMIC_ACQUIRE);
    uint32_t pending = (uint16_t)(avail_idx - q->next_avail);
    if (pending > size)
        return 0;                       /* a broken ring: the model raises QueueError */
    if (pending > VF_BATCH)
        pending = VF_BATCH;

    struct vf_request reqs[VF_BATCH];
    uint32_t resolved = 0;
    for (; resolved < pending; resolved++) {
        uint16_t slot = (uint16_t)(q->next_avail + resolved) % size;
        uint16_t head;
        memcpy(&head, avail + 4 + 2 * (size_t)slot, 2);
        if (head >= size || !vf_resolve(q, table, head, &reqs[resolved]))
            break;
    }

    uint32_t served = 0;
    for (; served < resolved; served++) {
        struct vf_request *r = &reqs[served];
        ssize_t moved = r->write ? pwritev(q->fd, r->iov, r->nsegs, (off_t)r->offset)
                                 : preadv(q->fd, r->iov, r->nsegs, (off_t)r->offset);
        if (moved != (ssize_t)r->data_len)
            break;                      /* the model retries it, logs, answers IOERR */
        *(volatile uint8_t *)r->status = 0;     /* VIRTIO_BLK_S_OK */
        uint32_t used_len = (r->write ? 0 : r->data_len) + 1;
        uint8_t *elem = used + 4 + 8 * (size_t)((uint16_t)(q->next_used + served) % size);
        uint32_t id = r->head;
        memcpy(elem, &id, 4);
        memcpy(elem + 4, &used_len, 4);
        q->bytes += r->data_len;
    }
    if (served) {
        q->next_avail = (uint16_t)(q->next_avail + served);
        q->next_used = (uint16_t)(q->next_used + served);
        /* Elements and status bytes before the index that publishes them. */
        __atomic_store_n((uint16_t *)(used + 2), q->next_used, __ATOMIC_RELEASE);
        q->requests += served;
    }
    return (int)served;
}

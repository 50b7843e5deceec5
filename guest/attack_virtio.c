/*
 * attack_virtio.c - a hostile virtio driver, for the hostile-guest tests
 * (tests/integration/test_hostile_attacks.py; commands in guest/README.md):
 *
 *   vq DEV ATTACK         take over virtio-mmio device DEV (its index in the
 *                         command line's device list: a virtio-blk disk or a
 *                         virtio-console), set up a queue of our own, hand the
 *                         device one kind of malformed request, print the
 *                         device's answer, reset the device
 *   vqcycle DEV N [ATK]   N rounds of set-up, request, reset
 *   vqctl DEV             garbage on a console's control queue (MULTIPORT)
 *   cfgsweep DEV          every offset of the device's window at every size,
 *                         read, then written with garbage
 *
 * The guest's own driver for a device attacked is dead from then on.  The
 * queue: 16 entries, in pages of our own; every request uses the slots of
 * the descriptor table it needs.  A virtio-blk request is a read of sector 0
 * (header, a 512-byte buffer, a status byte the device must set); a
 * virtio-console one is bytes on port 0's transmit queue (queue 1).
 */
#include "attack.h"
#include "alloc.h"
#include "console.h"
#include "io.h"
#include "lib.h"
#include "start_info.h"
#include "virtio_mmio.h"
#include "virtio_ring.h"

#define VQ_SIZE         16
#define STATUS_UNSET    0xee            /* a status the device never writes */
#define WAIT_US         300000          /* for used entries that may never come */
#define BIG_REQUESTS    5               /* 3 descriptors each in the 16-entry queue */
#define BIG_BYTES       (1u << 20)
#define FAR_AWAY        0x7000000000ull /* far beyond any test VM's RAM */

struct vq_area {                        /* one 64 KiB block, page-aligned */
    struct virtq_desc desc[VQ_SIZE];            /* 0x0000 */
    u8 pad0[0x1000 - 16 * VQ_SIZE];
    struct virtq_avail avail;                   /* 0x1000 */
    u16 avail_ring[VQ_SIZE + 1];
    u8 pad1[0x1000 - 4 - 2 * (VQ_SIZE + 1)];
    struct virtq_used used;                     /* 0x2000 */
    struct virtq_used_elem used_ring[VQ_SIZE];
    u16 avail_event;
    u8 pad2[0x1000 - 4 - 8 * VQ_SIZE - 2];
    struct virtq_desc ind[256];                 /* 0x3000: indirect tables */
    u8 header[VQ_SIZE][16];                     /* 0x4000 */
    u8 status[VQ_SIZE];
    u8 pad3[0x1000 - 16 * VQ_SIZE - VQ_SIZE];
    u8 data[VQ_SIZE][512];                      /* 0x5000 */
};
_Static_assert(sizeof(struct vq_area) <= 0x10000, "vq_area fits its pages");

struct vq {
    u64 base;                           /* the device's registers */
    u32 device_id;                      /* 2 blk, 3 console */
    u16 queue;                          /* the queue we drive */
    u16 posted;                         /* avail.idx we published */
    struct vq_area *a;
};

static struct vq_area *area;

static u32 rd(const struct vq *q, u32 off) { return virtio_mmio_read(q->base, off); }
static void wr(const struct vq *q, u32 off, u32 v) { virtio_mmio_write(q->base, off, v); }
static u64 addr_of(const volatile void *p) { return (u64)(uintptr_t)p; }

static void write_address(const struct vq *q, u32 low_reg, u64 addr)
{
    wr(q, low_reg, (u32)addr);
    wr(q, low_reg + 4, (u32)(addr >> 32));
}

/* What the next bring-up writes instead of our rings' addresses and size
   (the ring attacks set it; 0 = ours). */
static struct {
    u64 desc, avail, used;
    u64 size;                           /* written as a u32: 1 << 32 writes 0 */
    bool set;
} ring_override;

/* Reset, negotiate VERSION_1 (+ INDIRECT_DESC when offered), one queue
   ready at our rings, DRIVER_OK.  False (with a message) if the device refuses. */
static bool vq_bring_up(struct vq *q)
{
    memset(q->a, 0, sizeof(*q->a));
    q->a->avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    q->posted = 0;
    wr(q, VIRTIO_MMIO_STATUS, 0);
    wr(q, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    wr(q, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    wr(q, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    u32 lo = rd(q, VIRTIO_MMIO_DEVICE_FEATURES);
    wr(q, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr(q, VIRTIO_MMIO_DRIVER_FEATURES, lo & (1u << VIRTIO_RING_F_INDIRECT_DESC));
    wr(q, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(q, VIRTIO_MMIO_DRIVER_FEATURES, 1u << (VIRTIO_F_VERSION_1 - 32));
    u32 st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
    wr(q, VIRTIO_MMIO_STATUS, st);
    if (!(rd(q, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
        console_puts("vq: device refused the features\n");
        return false;
    }
    wr(q, VIRTIO_MMIO_QUEUE_SEL, q->queue);
    if (rd(q, VIRTIO_MMIO_QUEUE_NUM_MAX) < VQ_SIZE) {
        console_puts("vq: queue too small\n");
        return false;
    }
    u32 size = VQ_SIZE;
    u64 desc = addr_of(q->a->desc), avail = addr_of(&q->a->avail), used = addr_of(&q->a->used);
    if (ring_override.set) {
        size = ring_override.size ? (u32)ring_override.size : size;
        desc = ring_override.desc ? ring_override.desc : desc;
        avail = ring_override.avail ? ring_override.avail : avail;
        used = ring_override.used ? ring_override.used : used;
        ring_override.set = false;
    }
    wr(q, VIRTIO_MMIO_QUEUE_NUM, size);
    write_address(q, VIRTIO_MMIO_QUEUE_DESC_LOW, desc);
    write_address(q, VIRTIO_MMIO_QUEUE_DRIVER_LOW, avail);
    write_address(q, VIRTIO_MMIO_QUEUE_DEVICE_LOW, used);
    wr(q, VIRTIO_MMIO_QUEUE_READY, 1);
    wr(q, VIRTIO_MMIO_STATUS, st | VIRTIO_STATUS_DRIVER_OK);
    return true;
}

static void set_desc(struct virtq_desc *d, u64 addr, u32 len, u16 flags, u16 next)
{
    d->addr = addr;
    d->len = len;
    d->flags = flags;
    d->next = next;
}

/* The three buffers of an ordinary request for slot `s` into d[0..2]
   (d[0] NEXT -> n1, d[1] NEXT -> n2, d[2] last).  blk: a read of sector 0;
   console: 3 bytes "hi\n" in three one-byte readable buffers. */
static void fill_request(struct vq *q, unsigned s, struct virtq_desc *d, u16 n1, u16 n2)
{
    struct vq_area *a = q->a;
    if (q->device_id == VIRTIO_ID_BLOCK) {
        memset(a->header[s], 0, 16);                    /* type 0 (IN), sector 0 */
        a->status[s] = STATUS_UNSET;
        set_desc(&d[0], addr_of(a->header[s]), 16, VIRTQ_DESC_F_NEXT, n1);
        set_desc(&d[1], addr_of(a->data[s]), 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, n2);
        set_desc(&d[2], addr_of(&a->status[s]), 1, VIRTQ_DESC_F_WRITE, 0);
    } else {
        memcpy(a->data[s], "hi\n", 3);
        set_desc(&d[0], addr_of(&a->data[s][0]), 1, VIRTQ_DESC_F_NEXT, n1);
        set_desc(&d[1], addr_of(&a->data[s][1]), 1, VIRTQ_DESC_F_NEXT, n2);
        set_desc(&d[2], addr_of(&a->data[s][2]), 1, 0, 0);
    }
}

static void post(struct vq *q, u16 head)
{
    q->a->avail_ring[q->posted % VQ_SIZE] = head;
    __asm__ volatile("" : : : "memory");
    q->posted++;
    q->a->avail.idx = q->posted;
}

static void kick(struct vq *q)
{
    __asm__ volatile("" : : : "memory");
    wr(q, VIRTIO_MMIO_QUEUE_NOTIFY, q->queue);
}

/* Wait until the device has used `want` entries, or WAIT_US passed. */
static u16 wait_used(struct vq *q, u16 want)
{
    volatile struct virtq_used *used = &q->a->used;
    for (u32 waited = 0; (u16)(used->idx) < want && waited < WAIT_US; waited += 1000)
        idle_us(1000);
    return used->idx;
}

static void report(struct vq *q, const char *attack, u16 want)
{
    u16 used = wait_used(q, want);
    u32 status = rd(q, VIRTIO_MMIO_STATUS);
    kprintf("vq %s: used %u", attack, used);
    if (used)
        kprintf(" len %u", q->a->used_ring[0].len);
    if (q->device_id == VIRTIO_ID_BLOCK)
        kprintf(" status %u", q->a->status[0]);
    kprintf(" device 0x%x\n", status);
}

/* ---- the attacks: each posts its chains (and may break the rules around them) */

/* d[n] = the request's three descriptors at 0, 1, 2, in order */
static void plain(struct vq *q) { fill_request(q, 0, q->a->desc, 1, 2); }

static void atk_good(struct vq *q) { plain(q); post(q, 0); }

static void atk_loop(struct vq *q)             /* 0 -> 1 -> 2 -> 0 -> ... */
{
    plain(q);
    q->a->desc[2].flags |= VIRTQ_DESC_F_NEXT;
    q->a->desc[2].next = 0;
    post(q, 0);
}

static void atk_selfloop(struct vq *q)         /* 2 -> 2 -> ... */
{
    plain(q);
    q->a->desc[2].flags |= VIRTQ_DESC_F_NEXT;
    q->a->desc[2].next = 2;
    post(q, 0);
}

static void atk_nextoob(struct vq *q)          /* next index past the table */
{
    plain(q);
    q->a->desc[1].next = 0xfff0;
    post(q, 0);
}

/* Head 0 is INDIRECT, pointing at the request laid out in the indirect table. */
static void indirect_request(struct vq *q, u32 entries)
{
    fill_request(q, 0, q->a->ind, 1, 2);
    set_desc(&q->a->desc[0], addr_of(q->a->ind), 16 * entries, VIRTQ_DESC_F_INDIRECT, 0);
}

static void atk_indgood(struct vq *q) { indirect_request(q, 3); post(q, 0); }

static void atk_indloop(struct vq *q)
{
    indirect_request(q, 3);
    q->a->ind[2].flags |= VIRTQ_DESC_F_NEXT;
    q->a->ind[2].next = 0;
    post(q, 0);
}

static void atk_indnested(struct vq *q)        /* an indirect table inside one */
{
    indirect_request(q, 3);
    set_desc(&q->a->ind[1], addr_of(q->a->ind), 48, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 2);
    post(q, 0);
}

static void atk_indnext(struct vq *q)          /* INDIRECT together with NEXT */
{
    indirect_request(q, 3);
    q->a->desc[0].flags |= VIRTQ_DESC_F_NEXT;
    q->a->desc[0].next = 0;
    post(q, 0);
}

static void atk_indlen(struct vq *q)           /* not a multiple of 16 */
{
    indirect_request(q, 3);
    q->a->desc[0].len = 40;
    post(q, 0);
}

static void atk_indhuge(struct vq *q)          /* 268 million entries */
{
    indirect_request(q, 3);
    q->a->desc[0].len = 0xfffffff0u;
    post(q, 0);
}

static void atk_indfar(struct vq *q)           /* the table beyond RAM */
{
    indirect_request(q, 3);
    q->a->desc[0].addr = FAR_AWAY;
    post(q, 0);
}

static void atk_indhole(struct vq *q)          /* the table on the device's own registers */
{
    indirect_request(q, 3);
    q->a->desc[0].addr = q->base;
    post(q, 0);
}

static void atk_indlong(struct vq *q)          /* 200 entries, a chain through all */
{
    struct virtq_desc *t = q->a->ind;
    fill_request(q, 0, t, 1, 199);
    for (u16 i = 1; i < 199; i++)
        set_desc(&t[i], t[1].addr, 1, t[1].flags, (u16)(i + 1));
    set_desc(&t[199], addr_of(&q->a->status[0]), 1, VIRTQ_DESC_F_WRITE, 0);
    if (q->device_id != VIRTIO_ID_BLOCK)
        t[199].flags = 0;
    set_desc(&q->a->desc[0], addr_of(t), 16 * 200, VIRTQ_DESC_F_INDIRECT, 0);
    post(q, 0);
}

static void atk_buffar(struct vq *q)           /* a buffer beyond RAM */
{
    plain(q);
    q->a->desc[1].addr = FAR_AWAY;
    post(q, 0);
}

static void atk_bufhole(struct vq *q)          /* a buffer on the device's registers */
{
    plain(q);
    q->a->desc[1].addr = q->base;
    post(q, 0);
}

static void atk_bufwrap(struct vq *q)          /* addr + len wraps past 2^64 */
{
    plain(q);
    q->a->desc[1].addr = 0xfffffffffffffe00ull;
    q->a->desc[1].len = 0x400;
    post(q, 0);
}

static void atk_bufhuge(struct vq *q)          /* 4 GiB - 1 from RAM */
{
    plain(q);
    q->a->desc[1].addr = 0x100000;
    q->a->desc[1].len = 0xffffffffu;
    post(q, 0);
}

static void atk_total4g(struct vq *q)          /* buffers adding up past 2^32 */
{
    plain(q);
    struct virtq_desc *d = q->a->desc;
    set_desc(&d[3], d[2].addr, d[2].len, d[2].flags, 0);
    d[1].len = 0x80000000u;
    d[1].addr = 0x100000;
    set_desc(&d[2], 0x100000, 0x80000000u, d[1].flags, 3);
    post(q, 0);
}

static void atk_badhead(struct vq *q) { plain(q); post(q, 300); }

static void atk_ahead(struct vq *q)            /* avail.idx 1000 ahead */
{
    plain(q);
    post(q, 0);
    q->posted = 1000;
    q->a->avail.idx = 1000;
}

/* Requests in flight (posted, not yet notified) while the driver moves the
   queue under them.  A register read after the write makes the coalesced
   set-up writes reach the device before the notify does. */
static void atk_resize(struct vq *q)
{
    atk_good(q);
    wr(q, VIRTIO_MMIO_QUEUE_NUM, 8);
    (void)rd(q, VIRTIO_MMIO_STATUS);
}

static void atk_move(struct vq *q)
{
    atk_good(q);
    write_address(q, VIRTIO_MMIO_QUEUE_DESC_LOW, FAR_AWAY);
    (void)rd(q, VIRTIO_MMIO_STATUS);
}

static void atk_unready(struct vq *q)          /* stop the queue, resize, restart */
{
    atk_good(q);
    wr(q, VIRTIO_MMIO_QUEUE_READY, 0);
    wr(q, VIRTIO_MMIO_QUEUE_NUM, 8);
    wr(q, VIRTIO_MMIO_QUEUE_READY, 1);
    (void)rd(q, VIRTIO_MMIO_STATUS);
}

static void atk_junknotify(struct vq *q)       /* notifies for queues that do not exist */
{
    static const u32 junk[] = { 0xffffffffu, 0x10000, 0xffff, 17, 2, 1 };
    for (unsigned i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
        wr(q, VIRTIO_MMIO_QUEUE_NOTIFY, junk[i]);
    atk_good(q);
}

/* Rings the device must refuse at QueueReady: set up again with one bad
   address or size, then the plain request (which nothing will answer). */
static void ring_attack(struct vq *q, u64 desc, u64 avail, u64 used, u64 size)
{
    ring_override.desc = desc;
    ring_override.avail = avail;
    ring_override.used = used;
    ring_override.size = size;
    ring_override.set = true;
    vq_bring_up(q);
    atk_good(q);
}

static void atk_ringfar(struct vq *q) { ring_attack(q, FAR_AWAY, 0, 0, 0); }
static void atk_ringhole(struct vq *q) { ring_attack(q, 0, q->base, 0, 0); }  /* avail on the registers */
static void atk_ringwrap(struct vq *q) { ring_attack(q, 0, 0, 0xfffffffffffffff0ull, 0); }
static void atk_ringodd(struct vq *q) { ring_attack(q, addr_of(q->a->desc) + 8, 0, 0, 0); }  /* not 16-aligned */
/* The end of the RAM entry (memory map) that holds `addr`. */
static u64 ram_end_of(u64 addr)
{
    for (u32 i = 0; i < boot_info.memmap_count; i++) {
        const struct hvm_memmap_table_entry *e = &boot_info.memmap[i];
        if (e->type == 1 && addr >= e->addr && addr - e->addr < e->size)
            return e->addr + e->size;
    }
    return 0;
}

static void atk_ringend(struct vq *q)          /* the used ring's last bytes past RAM's end */
{
    ring_attack(q, 0, 0, ram_end_of(addr_of(q->a)) - 8, 0);
}
static void atk_qsize0(struct vq *q) { ring_attack(q, 0, 0, 0, 1ull << 32); }
static void atk_qsizemax(struct vq *q) { ring_attack(q, 0, 0, 0, 0xffffffffu); }
static void atk_qsize3(struct vq *q) { ring_attack(q, 0, 0, 0, 3); }           /* not a power of two */
static void atk_qsizebig(struct vq *q) { ring_attack(q, 0, 0, 0, 32768); }     /* > QueueNumMax */

struct attack {
    const char *name;
    void (*post)(struct vq *q);
};

static const struct attack attacks[] = {
    { "good", atk_good }, { "loop", atk_loop }, { "selfloop", atk_selfloop },
    { "nextoob", atk_nextoob }, { "indgood", atk_indgood }, { "indloop", atk_indloop },
    { "indnested", atk_indnested }, { "indnext", atk_indnext }, { "indlen", atk_indlen },
    { "indhuge", atk_indhuge }, { "indfar", atk_indfar }, { "indhole", atk_indhole },
    { "indlong", atk_indlong }, { "buffar", atk_buffar }, { "bufhole", atk_bufhole },
    { "bufwrap", atk_bufwrap }, { "bufhuge", atk_bufhuge }, { "total4g", atk_total4g },
    { "badhead", atk_badhead }, { "ahead", atk_ahead }, { "resize", atk_resize },
    { "move", atk_move }, { "unready", atk_unready }, { "junknotify", atk_junknotify },
    { "ringfar", atk_ringfar }, { "ringhole", atk_ringhole }, { "ringwrap", atk_ringwrap },
    { "ringodd", atk_ringodd }, { "ringend", atk_ringend }, { "qsize0", atk_qsize0 },
    { "qsizemax", atk_qsizemax },
    { "qsize3", atk_qsize3 }, { "qsizebig", atk_qsizebig },
    { 0, 0 },
};  /* "good" first: vqcycle's default */

/* Five 1 MiB reads (blk; console: five 3-byte writes) posted and notified. */
static bool post_big_reads(struct vq *q, u8 *big)
{
    struct virtq_desc *d = q->a->desc;
    for (unsigned r = 0; r < BIG_REQUESTS && 3 * r + 2 < VQ_SIZE; r++) {
        u16 h = (u16)(3 * r);
        fill_request(q, r, &d[h], (u16)(h + 1), (u16)(h + 2));
        if (q->device_id == VIRTIO_ID_BLOCK) {
            d[h + 1].addr = addr_of(big + r * BIG_BYTES);
            d[h + 1].len = BIG_BYTES;
        }
        post(q, h);
    }
    kick(q);
    return true;
}

/* Device reset during I/O: the big reads notified, Status=0 written at once,
   then the device brought up again must serve a plain read. */
static void attack_reset(struct vq *q)
{
    alloc_mark_t mark = alloc_mark();
    u8 *big = alloc_pages(BIG_REQUESTS * BIG_BYTES);
    if (!big) {
        console_puts("vq reset: out of memory\n");
        return;
    }
    post_big_reads(q, big);
    wr(q, VIRTIO_MMIO_STATUS, 0);
    u32 after = rd(q, VIRTIO_MMIO_STATUS);
    alloc_release(mark);
    if (!vq_bring_up(q))
        return;
    atk_good(q);
    kick(q);
    kprintf("vq reset: status after reset 0x%x; then ", after);
    report(q, "good", 1);
}

/* Power off during I/O: the big reads notified, then the exit port at once
   (status 9), while the VMM may still be writing into guest RAM. */
static void attack_exitio(struct vq *q)
{
    u8 *big = alloc_pages(BIG_REQUESTS * BIG_BYTES);
    if (!big) {
        console_puts("vq exitio: out of memory\n");
        return;
    }
    post_big_reads(q, big);
    power_off(9);
    console_puts("vq exitio: still running\n");
}

static bool pick_device(const char *arg, struct vq *q)
{
    u64 n;
    if (!parse_uint_full(arg, &n) || n >= virtio_mmio_count) {
        kprintf("vq: no virtio-mmio device %s (%u on the command line)\n", arg, virtio_mmio_count);
        return false;
    }
    q->base = virtio_mmio_devices[n].base;
    if (rd(q, VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC || rd(q, VIRTIO_MMIO_VERSION) != 2) {
        console_puts("vq: not a virtio-mmio version 2 device\n");
        return false;
    }
    q->device_id = rd(q, VIRTIO_MMIO_DEVICE_ID);
    if (q->device_id != VIRTIO_ID_BLOCK && q->device_id != VIRTIO_ID_CONSOLE) {
        kprintf("vq: device id %u is neither a disk nor a console\n", q->device_id);
        return false;
    }
    q->queue = q->device_id == VIRTIO_ID_BLOCK ? 0 : 1;   /* console: port 0 transmit */
    if (!area)
        area = alloc_pages_high(sizeof(struct vq_area));
    q->a = area;
    if (!area) {
        console_puts("vq: out of memory\n");
        return false;
    }
    return true;
}

void cmd_vq(int argc, char **argv)
{
    struct vq q;

    if (argc != 3) {
        console_puts("usage: vq DEV ATTACK (attacks: reset exitio");
        for (const struct attack *a = attacks; a->name; a++)
            kprintf(" %s", a->name);
        console_puts(")\n");
        return;
    }
    if (!pick_device(argv[1], &q))
        return;
    const struct attack *a = attacks;
    while (a->name && strcmp(a->name, argv[2]))
        a++;
    bool reset = !strcmp(argv[2], "reset"), exitio = !strcmp(argv[2], "exitio");
    if (!a->name && !reset && !exitio) {
        kprintf("vq: no attack '%s'\n", argv[2]);
        return;
    }
    console_flush();
    if (!vq_bring_up(&q))
        return;
    if (reset) {
        attack_reset(&q);
    } else if (exitio) {
        attack_exitio(&q);
    } else {
        a->post(&q);
        kick(&q);
        report(&q, a->name, 1);
    }
    wr(&q, VIRTIO_MMIO_STATUS, 0);
}

/* ---- vqctl: the console's control queues (MULTIPORT), fed garbage ------- */

#define CTL_DEVICE_READY    0
#define CTL_PORT_READY      3
#define CTL_PORT_OPEN       6
#define CTL_RX_BUFFERS      8
#define CONSOLE_F_MULTIPORT 1

struct ctl_msg { u32 id; u16 event, value; };

static struct vq_area *area2;               /* the control receive queue's */

/* One more queue at `a`'s rings, before DRIVER_OK. */
static void queue_setup(struct vq *q, u16 index, struct vq_area *a)
{
    memset(a, 0, sizeof(*a));
    a->avail.flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    wr(q, VIRTIO_MMIO_QUEUE_SEL, index);
    wr(q, VIRTIO_MMIO_QUEUE_NUM, VQ_SIZE);
    write_address(q, VIRTIO_MMIO_QUEUE_DESC_LOW, addr_of(a->desc));
    write_address(q, VIRTIO_MMIO_QUEUE_DRIVER_LOW, addr_of(&a->avail));
    write_address(q, VIRTIO_MMIO_QUEUE_DEVICE_LOW, addr_of(&a->used));
    wr(q, VIRTIO_MMIO_QUEUE_READY, 1);
}

/* `vqctl DEV`: a console driver that negotiates MULTIPORT and sends, on the
   control transmit queue, DEVICE_READY twice, PORT_READY and PORT_OPEN for
   ports that do not exist, PORT_OPEN 7, an unknown event, a 4-byte message,
   one in a device-writable buffer and one split over 8 one-byte buffers
   (PORT_READY 0, which must count); then prints what came back on the
   control receive queue, as id:event:value (PORT_NAME's name after a '=').  */
void cmd_vqctl(int argc, char **argv)
{
    static const struct ctl_msg msgs[] = {
        { 0, CTL_DEVICE_READY, 1 }, { 0, CTL_DEVICE_READY, 1 },
        { 0xffffffffu, CTL_PORT_READY, 1 }, { 5000, CTL_PORT_OPEN, 1 },
        { 0, CTL_PORT_OPEN, 7 }, { 0, 0xffff, 0xffff },
    };
    struct vq q;

    if (argc != 2) {
        console_puts("usage: vqctl DEV\n");
        return;
    }
    if (!pick_device(argv[1], &q))
        return;
    if (q.device_id != VIRTIO_ID_CONSOLE) {
        console_puts("vqctl: not a console\n");
        return;
    }
    if (!area2)
        area2 = alloc_pages_high(sizeof(struct vq_area));
    if (!area2) {
        console_puts("vqctl: out of memory\n");
        return;
    }
    console_flush();
    wr(&q, VIRTIO_MMIO_STATUS, 0);
    wr(&q, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    wr(&q, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    if (!(rd(&q, VIRTIO_MMIO_DEVICE_FEATURES) & (1u << CONSOLE_F_MULTIPORT))) {
        console_puts("vqctl: no MULTIPORT\n");
        return;
    }
    wr(&q, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    wr(&q, VIRTIO_MMIO_DRIVER_FEATURES, 1u << CONSOLE_F_MULTIPORT);
    wr(&q, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    wr(&q, VIRTIO_MMIO_DRIVER_FEATURES, 1u << (VIRTIO_F_VERSION_1 - 32));
    u32 st = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK;
    wr(&q, VIRTIO_MMIO_STATUS, st);
    queue_setup(&q, 2, area2);                  /* control receive */
    queue_setup(&q, 3, area);                   /* control transmit */
    wr(&q, VIRTIO_MMIO_STATUS, st | VIRTIO_STATUS_DRIVER_OK);

    /* receive buffers first: 8 of 64 bytes */
    struct vq rx = q, tx = q;
    rx.a = area2, rx.queue = 2, rx.posted = 0;
    tx.a = area, tx.queue = 3, tx.posted = 0;
    for (u16 i = 0; i < CTL_RX_BUFFERS; i++) {
        set_desc(&area2->desc[i], addr_of(area2->data[i]), 64, VIRTQ_DESC_F_WRITE, 0);
        post(&rx, i);
    }
    kick(&rx);
    /* each message a chain of its own: descriptor i, buffer data[i] */
    u16 d = 0;
    for (unsigned i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++, d++) {
        memcpy(area->data[d], &msgs[i], sizeof(msgs[i]));
        set_desc(&area->desc[d], addr_of(area->data[d]), sizeof(msgs[i]), 0, 0);
        post(&tx, d);
        kick(&tx);
    }
    struct ctl_msg ready0 = { 0, CTL_PORT_READY, 1 };
    memcpy(area->data[d], &ready0, 4);          /* short: 4 bytes */
    set_desc(&area->desc[d], addr_of(area->data[d]), 4, 0, 0);
    post(&tx, d++);
    memcpy(area->data[d], &ready0, 8);          /* whole, but device-writable */
    set_desc(&area->desc[d], addr_of(area->data[d]), 8, VIRTQ_DESC_F_WRITE, 0);
    post(&tx, d++);
    memcpy(area->data[d], &ready0, 8);          /* split over 8 one-byte buffers */
    u16 head = d;
    for (u16 b = 0; b < 8; b++, d++)
        set_desc(&area->desc[d], addr_of(&area->data[head][b]), 1, b < 7 ? VIRTQ_DESC_F_NEXT : 0, (u16)(d + 1));
    post(&tx, head);
    kick(&tx);
    u16 sent = wait_used(&tx, tx.posted);
    kick(&rx);
    u16 got = wait_used(&rx, 3);
    kprintf("vqctl: %u of %u messages taken, %u received:", sent, tx.posted, got);
    for (u16 i = 0; i < got && i < CTL_RX_BUFFERS; i++) {
        const struct virtq_used_elem *e = &area2->used_ring[i];
        if (e->id >= CTL_RX_BUFFERS || e->len < 8) {
            kprintf(" ?(%u,%u)", e->id, e->len);
            continue;
        }
        struct ctl_msg m;
        memcpy(&m, area2->data[e->id], sizeof(m));
        kprintf(" %u:%u:%u", m.id, m.event, m.value);
        if (e->len > 8) {
            console_putc('=');
            for (u32 k = 8; k < e->len && k < 64; k++)
                console_putc((char)area2->data[e->id][k]);
        }
    }
    kprintf("; device 0x%x\n", rd(&q, VIRTIO_MMIO_STATUS));
    wr(&q, VIRTIO_MMIO_STATUS, 0);
}

/* `vqcycle DEV N [ATTACK]`: N rounds of bring-up, one request (plain, or
   ATTACK's), reset: whatever the VMM builds or logs per round must not pile up. */
void cmd_vqcycle(int argc, char **argv)
{
    struct vq q;
    u64 n, served = 0;
    const struct attack *a = attacks;           /* "good" */

    if (argc < 3 || argc > 4 || !parse_uint_full(argv[2], &n)) {
        console_puts("usage: vqcycle DEV N [ATTACK]\n");
        return;
    }
    if (argc == 4) {
        while (a->name && strcmp(a->name, argv[3]))
            a++;
        if (!a->name) {
            kprintf("vqcycle: no attack '%s'\n", argv[3]);
            return;
        }
    }
    if (!pick_device(argv[1], &q))
        return;
    for (u64 i = 0; i < n; i++) {
        if (!vq_bring_up(&q))
            return;
        a->post(&q);
        kick(&q);
        /* a request the device refuses outright gets no answer: do not wait for it */
        if (!(rd(&q, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET))
            served += wait_used(&q, 1) == 1;
        wr(&q, VIRTIO_MMIO_STATUS, 0);
    }
    kprintf("vqcycle: %lu rounds of %s, %lu requests answered\n", n, a->name, served);
}

/* 16 bytes in one access (SSE; boot.S enables it): KVM splits it into MMIO
   exits of 8.  xmm0 is saved by hand: the kernel is built without SSE. */
static void read16(u64 addr, u64 out[2])
{
    __asm__ volatile("subq $16, %%rsp\n\tmovdqu %%xmm0, (%%rsp)\n\t"
                     "movdqu (%1), %%xmm0\n\tmovdqu %%xmm0, (%0)\n\t"
                     "movdqu (%%rsp), %%xmm0\n\taddq $16, %%rsp"
                     : : "r"(out), "r"(addr) : "memory");
}

void cmd_cfgsweep(int argc, char **argv)
{
    struct vq q;
    u64 reads = 0, writes = 0, nonzero = 0;

    if (argc != 2) {
        console_puts("usage: cfgsweep DEV\n");
        return;
    }
    if (!pick_device(argv[1], &q))
        return;
    console_flush();
    const u32 end = 0x1000;            /* the device's window */
    for (u32 off = 0; off < end; off++) {
        volatile u8 *p = (volatile u8 *)(uintptr_t)(q.base + off);
        u64 v = *p;
        if (off + 2 <= end)
            v |= *(volatile u16 *)p;
        if (off + 4 <= end)
            v |= *(volatile u32 *)p;
        if (off + 8 <= end)
            v |= *(volatile u64 *)p;
        reads += 1 + (off + 2 <= end) + (off + 4 <= end) + (off + 8 <= end);
        nonzero += v != 0;
    }
    /* Oversized and page-crossing: 16-byte reads, and 8 bytes across the window's end. */
    u64 wide[2];
    for (u32 off = 0; off < 0x200; off += 8) {
        read16(q.base + off, wide);
        reads++;
    }
    (void)*(volatile u64 *)(uintptr_t)(q.base + 0xffc);
    reads++;
    /* Garbage into every register and config byte, at every size. */
    for (u32 off = 0; off < end; off++) {
        volatile u8 *p = (volatile u8 *)(uintptr_t)(q.base + off);
        *p = 0xa5;
        if (off + 2 <= end)
            *(volatile u16 *)p = 0xa5a5;
        if (off + 4 <= end)
            *(volatile u32 *)p = 0xffffffffu;
        if (off + 8 <= end)
            *(volatile u64 *)p = 0xa5a5a5a5a5a5a5a5ull;
        writes += 1 + (off + 2 <= end) + (off + 4 <= end) + (off + 8 <= end);
    }
    wr(&q, VIRTIO_MMIO_STATUS, 0);
    kprintf("cfgsweep: device %u: %lu reads (%lu offsets non-zero), %lu writes; after reset magic 0x%x status 0x%x\n",
            q.device_id, reads, nonzero, writes, rd(&q, VIRTIO_MMIO_MAGIC_VALUE), rd(&q, VIRTIO_MMIO_STATUS));
}

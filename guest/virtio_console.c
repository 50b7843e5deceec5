/*
 * virtio_console.c - polling virtio-console (MULTIPORT) driver, virtio-mmio v2.
 *
 * Queues (5.3.2): port 0 receive/transmit 0/1, control receive/transmit 2/3,
 * port N > 0 at 2N+2 / 2N+3.  Every queue gets VIRTQ_AVAIL_F_NO_INTERRUPT:
 * we poll the used rings, which live in guest RAM and cost nothing to read.
 * Register accesses (QueueNotify above all) are VM exits, so they are kept
 * to one per batch of buffers.
 *
 * Buffers are addressed by their identity-mapped pointers.  Every value the
 * device writes (used ids and lengths, control messages) is checked before
 * it is used.
 */
#include "virtio_console.h"
#include "alloc.h"
#include "console.h"
#include "guest.h"
#include "io.h"
#include "lib.h"
#include "virtio_mmio.h"
#include "virtio_ring.h"

#define QUEUE_SIZE_LIMIT    64
#define MMIO_MIN_SIZE       (VIRTIO_MMIO_CONFIG + 8)    /* through max_nr_ports */
#define MAPPED_LIMIT        0x100000000ull              /* boot.S maps 0..4 GiB */
#define CONFIG_MAX_NR_PORTS 4                           /* offset in the config */

#define CTRL_BUF_BYTES      128                         /* header + name */
#define CTRL_RX_BUFS        32
#define CTRL_TX_SLOTS       16
#define RX_BUF_BYTES        (64u << 10)
#define RX_BUFS             8
#define TX_SLOT_BYTES       (64u << 10)
#define TX_SLOTS            8
#define NO_BUFFER           0xffff

#define SPIN_US             50          /* poll this long before an idle exit */
#define SPIN_POLLS_NO_TSC   3000
#define IDLE_SHORT_US       100         /* idle slices while the wait is young */
#define IDLE_LONG_US        1000        /* then: host input may take its time */
#define IDLES_BEFORE_LONG   200
#define CHECK_EVERY_IDLES   500         /* then read Status for NEEDS_RESET */
#define HANDSHAKE_MS        2000        /* at most, for the device's answers */
#define HANDSHAKE_QUIET_MS  50          /* ports without names: give up waiting */
#define HANDSHAKE_NAMES_MS  30000       /* at most, when names are sure to come (a sandbox):
                                           a loaded host (100 sandboxes on 2 cores) can take
                                           longer than the quiet spell between two messages */
#define HANDSHAKE_CYCLES_NO_TSC (1ull << 32)

#define FEATURE(bit) (1ull << (bit))

#define compiler_barrier() __asm__ volatile("" : : : "memory")

struct vq {
    u16 index;                  /* queue number */
    u16 size;                   /* 0: not set up */
    struct virtq_desc *desc;
    struct virtq_avail *avail;
    volatile struct virtq_used *used;
    u16 next_avail;
    u16 next_used;
    u16 unnotified;             /* entries made available since the last notify */
    u16 free[QUEUE_SIZE_LIMIT]; /* stack of free descriptor ids (transmit queues) */
    u16 free_count;
};

struct port {
    bool added;                 /* DEVICE_ADD seen and buffers set up */
    bool named;
    bool open_known;            /* a PORT_OPEN from the device arrived */
    bool host_open;
    bool guest_open;
    char name[VCON_NAME_MAX + 1];
    struct vq rx, tx;
    u8 *rx_bufs;                /* rx.size' buffers of RX_BUF_BYTES, id = index */
    u16 rx_count;
    u16 cur_id;                 /* receive buffer being read, NO_BUFFER if none */
    u32 cur_off, cur_len;
    u8 *tx_bufs;                /* TX slots, id = index */
    u16 tx_count;
};

static struct {
    bool present;
    bool broken;
    bool multiport;
    u64 mmio;
    u32 nports;                 /* ports we set up queues for */
    struct vq ctrl_rx, ctrl_tx;
    u8 *ctrl_rx_bufs;
    struct virtio_console_control *ctrl_tx_msgs;
    u16 ctrl_tx_slots;          /* control messages in flight at most */
    struct port ports[VCON_MAX_PORTS];
    struct vcon_stats stats;
    u64 last_control_tsc;       /* when the last control message arrived */
} con;

/* ---- small helpers ------------------------------------------------------ */

static u32 reg_read(u32 off)
{
    return virtio_mmio_read(con.mmio, off);
}

static void reg_write(u32 off, u32 val)
{
    virtio_mmio_write(con.mmio, off, val);
}

static u64 addr_of(const volatile void *p)
{
    return (u64)(uintptr_t)p;   /* identity-mapped */
}

/* memcpy in words: lib.c's copies bytes, and these copies are the data path. */
static void copy(void *dst, const void *src, size_t n)
{
    u8 *d = dst;
    const u8 *s = src;
    if (((uintptr_t)d & 7) == ((uintptr_t)s & 7)) {
        while (n && ((uintptr_t)d & 7)) {
            *d++ = *s++;
            n--;
        }
        for (; n >= 8; n -= 8, d += 8, s += 8)
            *(u64 *)d = *(const u64 *)s;
    }
    while (n--)
        *d++ = *s++;
}

static void broken(const char *why)
{
    if (con.broken)
        return;
    kprintf("virtio-console at 0x%lx: %s; device disabled\n", con.mmio, why);
    con.broken = true;
    reg_write(VIRTIO_MMIO_STATUS, 0);   /* the device drops our rings and buffers */
}

static bool used_ready(const struct vq *q)
{
    return q->size && q->used->idx != q->next_used;
}

/* The next used entry, checked: false if none (or the device misbehaved). */
static bool vq_take_used(struct vq *q, u16 *id, u32 *len)
{
    if (!used_ready(q) || con.broken)
        return false;
    if ((u16)(q->used->idx - q->next_used) > q->size) {
        broken("used index ran ahead of the ring");
        return false;
    }
    compiler_barrier();         /* the entry after the index that published it */
    const volatile struct virtq_used_elem *e = &q->used->ring[q->next_used % q->size];
    u32 raw_id = e->id;
    *len = e->len;
    q->next_used++;
    if (raw_id >= q->size) {
        broken("device returned a descriptor id out of range");
        return false;
    }
    *id = (u16)raw_id;
    return true;
}

/* Make one single-buffer chain available (no notify yet). */
static void vq_add(struct vq *q, u16 id, const volatile void *buf, u32 len, u16 flags)
{
    q->desc[id] = (struct virtq_desc){ addr_of(buf), len, flags, 0 };
    q->avail->ring[q->next_avail % q->size] = id;
    compiler_barrier();         /* ring entry before the index (x86 keeps store order) */
    q->next_avail++;
    *(volatile u16 *)&q->avail->idx = q->next_avail;
    q->unnotified++;
}

/* One VM exit for everything made available since the last one. */
static void vq_notify(struct vq *q)
{
    if (!q->unnotified || con.broken)
        return;
    q->unnotified = 0;
    __asm__ volatile("mfence" : : : "memory");  /* avail.idx visible before the flag is read */
    if (q->used->flags & VIRTQ_USED_F_NO_NOTIFY)
        return;
    reg_write(VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
    con.stats.notifies++;
}

/* ---- waiting ------------------------------------------------------------ */

struct waiter {
    u32 idles;
};

/* Spin a little on q's used ring, then give the CPU to the VMM (no hlt at CPL3). */
static void wait_step(struct waiter *w, const struct vq *q)
{
    u64 start = rdtsc();
    u64 spin_cycles = (u64)SPIN_US * tsc_khz / 1000;

    for (unsigned i = 0;; i++) {
        if (used_ready(q))
            return;
        if (tsc_khz ? rdtsc() - start >= spin_cycles : i >= SPIN_POLLS_NO_TSC)
            break;
        __asm__ volatile("pause" : : : "memory");
    }
    idle_us(w->idles < IDLES_BEFORE_LONG ? IDLE_SHORT_US : IDLE_LONG_US);
    con.stats.idle_waits++;
    if (++w->idles % CHECK_EVERY_IDLES == 0 &&
        (reg_read(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET))
        broken("device needs reset");
}

/* ---- control queue ------------------------------------------------------ */

static void reap_control_tx(void)
{
    u16 id;
    u32 len;
    while (vq_take_used(&con.ctrl_tx, &id, &len)) {
        if (id >= con.ctrl_tx_slots || con.ctrl_tx.free_count >= con.ctrl_tx_slots) {
            broken("device returned a control slot we did not give it");
            return;
        }
        con.ctrl_tx.free[con.ctrl_tx.free_count++] = id;
    }
}

static void send_control(u32 id, u16 event, u16 value)
{
    struct waiter w = { 0 };

    if (!con.multiport)
        return;
    reap_control_tx();
    while (!con.ctrl_tx.free_count && !con.broken) {
        wait_step(&w, &con.ctrl_tx);
        reap_control_tx();
    }
    if (con.broken)
        return;
    u16 slot = con.ctrl_tx.free[--con.ctrl_tx.free_count];
    con.ctrl_tx_msgs[slot] = (struct virtio_console_control){ id, event, value };
    vq_add(&con.ctrl_tx, slot, &con.ctrl_tx_msgs[slot], sizeof(con.ctrl_tx_msgs[slot]), 0);
    vq_notify(&con.ctrl_tx);
}

static bool setup_port_buffers(struct port *p)
{
    p->rx_count = p->rx.size < RX_BUFS ? p->rx.size : RX_BUFS;
    p->tx_count = p->tx.size < TX_SLOTS ? p->tx.size : TX_SLOTS;
    p->rx_bufs = alloc_pages_high((size_t)p->rx_count * RX_BUF_BYTES);
    p->tx_bufs = alloc_pages_high((size_t)p->tx_count * TX_SLOT_BYTES);
    if (!p->rx_bufs || !p->tx_bufs)
        return false;
    for (u16 id = 0; id < p->rx_count; id++)
        vq_add(&p->rx, id, p->rx_bufs + (size_t)id * RX_BUF_BYTES, RX_BUF_BYTES, VIRTQ_DESC_F_WRITE);
    vq_notify(&p->rx);
    p->tx.free_count = 0;
    for (u16 id = p->tx_count; id-- > 0;)
        p->tx.free[p->tx.free_count++] = id;
    p->cur_id = NO_BUFFER;
    return true;
}

static void handle_control(const u8 *buf, u32 len)
{
    struct virtio_console_control m;

    if (len < sizeof(m))
        return;                 /* malformed: ignore */
    memcpy(&m, buf, sizeof(m));
    if (m.event == VIRTIO_CONSOLE_DEVICE_ADD) {
        struct port *p = m.id < con.nports ? &con.ports[m.id] : NULL;
        bool ok = p && (p->added || setup_port_buffers(p));
        if (ok)
            p->added = true;
        else
            kprintf("virtio-console: cannot set up port %u\n", m.id);
        send_control(m.id, VIRTIO_CONSOLE_PORT_READY, ok);
        return;
    }
    if (m.id >= con.nports || !con.ports[m.id].added)
        return;                 /* not a port we know: ignore */
    struct port *p = &con.ports[m.id];
    switch (m.event) {
    case VIRTIO_CONSOLE_DEVICE_REMOVE:
        p->added = false;
        break;
    case VIRTIO_CONSOLE_PORT_NAME: {
        u32 n = len - sizeof(m);
        if (n > VCON_NAME_MAX)
            n = VCON_NAME_MAX;
        memcpy(p->name, buf + sizeof(m), n);
        p->name[n] = '\0';
        p->named = true;
        break;
    }
    case VIRTIO_CONSOLE_PORT_OPEN:
        p->host_open = m.value != 0;
        p->open_known = true;
        break;
    case VIRTIO_CONSOLE_CONSOLE_PORT:
        /* 5.3.6.2.2: a console port must be answered with PORT_OPEN 1. */
        if (!p->guest_open) {
            p->guest_open = true;
            send_control(m.id, VIRTIO_CONSOLE_PORT_OPEN, 1);
        }
        break;
    default:
        break;                  /* RESIZE and unknown events */
    }
}

/* Handle every control message the device has sent; true if there was one. */
static bool poll_control(void)
{
    bool any = false;
    u16 id;
    u32 len;

    if (!con.multiport)
        return false;
    while (vq_take_used(&con.ctrl_rx, &id, &len)) {
        if (id >= CTRL_RX_BUFS)
            continue;           /* not one of ours: vq_take_used bounds it by the ring */
        u8 *buf = con.ctrl_rx_bufs + (size_t)id * CTRL_BUF_BYTES;
        handle_control(buf, len < CTRL_BUF_BYTES ? len : CTRL_BUF_BYTES);
        vq_add(&con.ctrl_rx, id, buf, CTRL_BUF_BYTES, VIRTQ_DESC_F_WRITE);
        any = true;
    }
    vq_notify(&con.ctrl_rx);
    reap_control_tx();
    if (any)
        con.last_control_tsc = rdtsc();
    return any;
}

/* ---- ports ---------------------------------------------------------------- */

static struct port *get_port(int port)
{
    if (!con.present || port < 0 || (u32)port >= con.nports || !con.ports[port].added)
        return NULL;
    return &con.ports[port];
}

/* First use: tell the host a program has the port open (it holds input till then). */
static void ensure_open(int id, struct port *p)
{
    if (!p->guest_open && con.multiport) {
        p->guest_open = true;
        send_control((u32)id, VIRTIO_CONSOLE_PORT_OPEN, 1);
    }
}

/* Copy what has arrived, up to len, without waiting; recycle emptied buffers. */
static size_t take_input(struct port *p, u8 *dst, size_t len)
{
    size_t done = 0;

    while (done < len && !con.broken) {
        if (p->cur_id == NO_BUFFER) {
            u16 id;
            u32 used_len;
            if (!vq_take_used(&p->rx, &id, &used_len))
                break;
            if (id >= p->rx_count) {
                broken("device returned a receive buffer we did not give it");
                break;
            }
            p->cur_id = id;
            p->cur_off = 0;
            p->cur_len = used_len < RX_BUF_BYTES ? used_len : RX_BUF_BYTES;
        }
        u8 *buf = p->rx_bufs + (size_t)p->cur_id * RX_BUF_BYTES;
        size_t n = p->cur_len - p->cur_off;
        if (n > len - done)
            n = len - done;
        copy(dst + done, buf + p->cur_off, n);
        done += n;
        p->cur_off += (u32)n;
        if (p->cur_off == p->cur_len) {
            vq_add(&p->rx, p->cur_id, buf, RX_BUF_BYTES, VIRTQ_DESC_F_WRITE);
            p->cur_id = NO_BUFFER;
        }
    }
    /* Hand buffers back in batches: a notify per buffer would be an exit per 64 KiB. */
    if (p->rx.unnotified >= (p->rx_count + 1) / 2)
        vq_notify(&p->rx);
    con.stats.bytes_in += done;
    return done;
}

static bool input_waiting(const struct port *p)
{
    return p->cur_id != NO_BUFFER || used_ready(&p->rx);
}

void vcon_open(int port)
{
    struct port *p = get_port(port);

    if (p)
        ensure_open(port, p);
}

long vcon_read(int port, void *buf, size_t len)
{
    struct port *p = get_port(port);
    struct waiter w = { 0 };

    if (!p)
        return con.present ? -VCON_EINVAL : -VCON_ENODEV;
    ensure_open(port, p);
    if (!len)
        return 0;
    for (;;) {
        if (con.broken)
            return -VCON_EIO;
        size_t n = take_input(p, buf, len);
        if (n)
            return (long)n;
        poll_control();
        /* PORT_OPEN 0 comes after the last data: look at the ring once more.
           A host end never reported open reads as closed, as in Linux. */
        if (con.multiport && !p->host_open)
            return (long)take_input(p, buf, len);
        vq_notify(&p->rx);      /* the device may be waiting for buffers */
        wait_step(&w, &p->rx);  /* EOF comes on the control queue: polled above */
    }
}

bool vcon_readable(int port)
{
    struct port *p = get_port(port);

    if (!p)
        return true;            /* a read would not wait: it fails */
    ensure_open(port, p);
    if (input_waiting(p))
        return true;
    poll_control();
    return input_waiting(p) || (con.multiport && !p->host_open) || con.broken;
}

static void reap_tx(struct port *p)
{
    u16 id;
    u32 len;
    while (vq_take_used(&p->tx, &id, &len)) {
        if (id >= p->tx_count || p->tx.free_count >= p->tx_count) {
            broken("device returned a transmit slot we did not give it");
            return;
        }
        p->tx.free[p->tx.free_count++] = id;
    }
}

long vcon_write(int port, const void *buf, size_t len)
{
    struct port *p = get_port(port);
    struct waiter w = { 0 };
    const u8 *src = buf;
    size_t left = len;

    if (!p)
        return con.present ? -VCON_EINVAL : -VCON_ENODEV;
    ensure_open(port, p);
    while (left) {
        if (con.broken)
            return -VCON_EIO;
        reap_tx(p);
        if (!p->tx.free_count) {
            vq_notify(&p->tx);  /* every slot is out: make sure the device knows */
            wait_step(&w, &p->tx);
            continue;
        }
        u16 id = p->tx.free[--p->tx.free_count];
        u8 *slot = p->tx_bufs + (size_t)id * TX_SLOT_BYTES;
        u32 n = left < TX_SLOT_BYTES ? (u32)left : TX_SLOT_BYTES;
        copy(slot, src, n);
        vq_add(&p->tx, id, slot, n, 0);
        src += n;
        left -= n;
    }
    vq_notify(&p->tx);
    con.stats.bytes_out += len;
    return con.broken ? -VCON_EIO : (long)len;
}

void vcon_flush(int port)
{
    struct port *p = get_port(port);
    struct waiter w = { 0 };

    if (!p)
        return;
    vq_notify(&p->tx);
    for (;;) {
        reap_tx(p);
        if (p->tx.free_count == p->tx_count || con.broken)
            return;
        wait_step(&w, &p->tx);
    }
}

void vcon_close(int port)
{
    struct port *p = get_port(port);

    if (!p)
        return;
    vcon_flush(port);
    if (p->guest_open && con.multiport) {
        p->guest_open = false;
        send_control((u32)port, VIRTIO_CONSOLE_PORT_OPEN, 0);
    }
}

int vcon_find_port(const char *name)
{
    if (!con.present)
        return -1;
    poll_control();             /* a late PORT_NAME */
    for (u32 i = 0; i < con.nports; i++)
        if (con.ports[i].added && con.ports[i].named && !strcmp(con.ports[i].name, name))
            return (int)i;
    return -1;
}

bool vcon_present(void)
{
    return con.present;
}

int vcon_port_count(void)
{
    int count = 0;

    if (con.present)
        poll_control();         /* open/close news since the last call */
    for (u32 i = 0; i < con.nports; i++)
        if (con.ports[i].added)
            count = (int)i + 1;
    return count;
}

bool vcon_port_info(int port, struct vcon_port_info *info)
{
    struct port *p = get_port(port);
    if (!p)
        return false;
    info->name = p->named ? p->name : "";
    info->host_open = p->host_open;
    info->guest_open = p->guest_open;
    return true;
}

const struct vcon_stats *vcon_get_stats(void)
{
    return &con.stats;
}

/* ---- probe and handshake (3.1.1, 5.3.5) ------------------------------------- */

static bool setup_queue(struct vq *q, u16 index)
{
    reg_write(VIRTIO_MMIO_QUEUE_SEL, index);
    /* QueueReady is not read back (4.2.3.2 step 2): start_device() has just
       reset the device, which clears it for every queue (4.2.2.1), and each
       register access is a VM exit of 30-40 us here, ten of them per sandbox. */
    u32 max = reg_read(VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (!max)
        return false;
    u16 size = QUEUE_SIZE_LIMIT;
    while (size > max)
        size /= 2;              /* a power of two */
    q->index = index;
    u8 *areas = alloc_zeroed_pages(virtq_area_bytes(size));
    if (!areas)
        return false;
    virtq_place_areas(areas, size, &q->desc, &q->avail, &q->used);
    q->avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;      /* we poll */
    reg_write(VIRTIO_MMIO_QUEUE_NUM, size);
    reg_write(VIRTIO_MMIO_QUEUE_DESC_LOW, (u32)addr_of(q->desc));
    reg_write(VIRTIO_MMIO_QUEUE_DESC_HIGH, (u32)(addr_of(q->desc) >> 32));
    reg_write(VIRTIO_MMIO_QUEUE_DRIVER_LOW, (u32)addr_of(q->avail));
    reg_write(VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (u32)(addr_of(q->avail) >> 32));
    reg_write(VIRTIO_MMIO_QUEUE_DEVICE_LOW, (u32)addr_of(q->used));
    reg_write(VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (u32)(addr_of(q->used) >> 32));
    reg_write(VIRTIO_MMIO_QUEUE_READY, 1);
    q->size = size;
    return true;
}

static u16 rx_index(u32 port)
{
    return port == 0 ? 0 : (u16)(2 * port + 2);
}

/* Every port added has its name (and, with need_open, its open state). */
static bool ports_known(bool need_open)
{
    bool any = false;
    for (u32 i = 0; i < con.nports; i++) {
        const struct port *p = &con.ports[i];
        if (!p->added)
            continue;
        any = true;
        if (!p->named || (need_open && !p->open_known))
            return false;
    }
    return any;
}

/* DEVICE_READY, then answer DEVICE_ADDs until every port has its name and
   open state (our VMM sends them at once), or the device goes quiet. */
static void handshake(bool await_names)
{
    u64 khz = tsc_khz;
    u64 limit = khz ? (await_names ? HANDSHAKE_NAMES_MS : HANDSHAKE_MS) * khz : HANDSHAKE_CYCLES_NO_TSC;
    u64 quiet = khz ? HANDSHAKE_QUIET_MS * khz : HANDSHAKE_CYCLES_NO_TSC / 40;
    u64 start = rdtsc();
    struct waiter w = { 0 };

    for (u16 id = 0; id < CTRL_RX_BUFS && id < con.ctrl_rx.size; id++)
        vq_add(&con.ctrl_rx, id, con.ctrl_rx_bufs + (size_t)id * CTRL_BUF_BYTES, CTRL_BUF_BYTES,
               VIRTQ_DESC_F_WRITE);
    vq_notify(&con.ctrl_rx);
    con.last_control_tsc = 0;
    send_control(0xffffffffu, VIRTIO_CONSOLE_DEVICE_READY, 1);
    while (!con.broken && !ports_known(true)) {
        u64 now = rdtsc();
        if (now - start > limit)
            break;
        /* A quiet spell ends the wait: ports came but names did not (a device
           without names), or, awaiting names, they came but some open state
           did not (QEMU never reports a host end that never opened). */
        if (con.last_control_tsc && now - con.last_control_tsc > quiet && vcon_port_count() &&
            (!await_names || ports_known(false)))
            break;
        if (!poll_control())
            wait_step(&w, &con.ctrl_rx);
    }
}

static bool start_device(void)
{
    u32 status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;
    const char *why;

    reg_write(VIRTIO_MMIO_STATUS, 0);
    reg_write(VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
    reg_write(VIRTIO_MMIO_STATUS, status);
    reg_write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    u64 offered = reg_read(VIRTIO_MMIO_DEVICE_FEATURES);
    reg_write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    offered |= (u64)reg_read(VIRTIO_MMIO_DEVICE_FEATURES) << 32;
    if (!(offered & FEATURE(VIRTIO_F_VERSION_1))) {
        why = "VIRTIO_F_VERSION_1 not offered";
        goto fail;
    }
    u64 features = offered & (FEATURE(VIRTIO_F_VERSION_1) | FEATURE(VIRTIO_CONSOLE_F_MULTIPORT));
    con.multiport = features & FEATURE(VIRTIO_CONSOLE_F_MULTIPORT);
    reg_write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    reg_write(VIRTIO_MMIO_DRIVER_FEATURES, (u32)features);
    reg_write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    reg_write(VIRTIO_MMIO_DRIVER_FEATURES, (u32)(features >> 32));
    status |= VIRTIO_STATUS_FEATURES_OK;
    reg_write(VIRTIO_MMIO_STATUS, status);
    if (!(reg_read(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
        why = "device refused our features";
        goto fail;
    }
    u32 max_ports = con.multiport ? reg_read(VIRTIO_MMIO_CONFIG + CONFIG_MAX_NR_PORTS) : 1;
    if (!max_ports) {
        why = "max_nr_ports is 0";
        goto fail;
    }
    con.nports = max_ports < VCON_MAX_PORTS ? max_ports : VCON_MAX_PORTS;
    /* Every queue before DRIVER_OK (virtio-mmio cannot enable one later). */
    for (u32 i = 0; i < con.nports; i++) {
        struct port *p = &con.ports[i];
        if (!setup_queue(&p->rx, rx_index(i)) || !setup_queue(&p->tx, (u16)(rx_index(i) + 1))) {
            why = "cannot set up a port's queues";
            goto fail;
        }
    }
    if (con.multiport) {
        if (!setup_queue(&con.ctrl_rx, 2) || !setup_queue(&con.ctrl_tx, 3)) {
            why = "cannot set up the control queues";
            goto fail;
        }
        con.ctrl_rx_bufs = alloc_zeroed_pages(CTRL_RX_BUFS * CTRL_BUF_BYTES);
        con.ctrl_tx_msgs = alloc_zeroed_pages(CTRL_TX_SLOTS * sizeof(*con.ctrl_tx_msgs));
        if (!con.ctrl_rx_bufs || !con.ctrl_tx_msgs) {
            why = "out of memory";
            goto fail;
        }
        u16 slots = con.ctrl_tx.size < CTRL_TX_SLOTS ? con.ctrl_tx.size : CTRL_TX_SLOTS;
        con.ctrl_tx_slots = slots;
        for (u16 id = slots; id-- > 0;)
            con.ctrl_tx.free[con.ctrl_tx.free_count++] = id;
    }
    status |= VIRTIO_STATUS_DRIVER_OK;
    reg_write(VIRTIO_MMIO_STATUS, status);
    if (reg_read(VIRTIO_MMIO_STATUS) & (VIRTIO_STATUS_DEVICE_NEEDS_RESET | VIRTIO_STATUS_FAILED)) {
        why = "device needs reset after DRIVER_OK";
        goto fail;
    }
    return true;

fail:
    kprintf("virtio-console at 0x%lx: %s\n", con.mmio, why);
    reg_write(VIRTIO_MMIO_STATUS, status | VIRTIO_STATUS_FAILED);
    return false;
}

bool vcon_init(bool await_names)
{
    for (unsigned i = 0; i < virtio_mmio_count; i++) {
        const struct virtio_mmio_device *dev = &virtio_mmio_devices[i];
        if (dev->base >= MAPPED_LIMIT || dev->size < MMIO_MIN_SIZE ||
            dev->size > MAPPED_LIMIT - dev->base)
            continue;           /* blk_init reports these */
        if (virtio_mmio_read(dev->base, VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC ||
            virtio_mmio_read(dev->base, VIRTIO_MMIO_VERSION) != 2 ||
            virtio_mmio_read(dev->base, VIRTIO_MMIO_DEVICE_ID) != VIRTIO_ID_CONSOLE)
            continue;
        memset(&con, 0, sizeof(con));
        con.mmio = dev->base;
        if (!start_device())
            return false;
        con.present = true;
        if (con.multiport) {
            handshake(await_names);
        } else {
            /* Port 0 alone, connected from the start (5.3.2). */
            struct port *p = &con.ports[0];
            if (!setup_port_buffers(p))
                return false;
            p->added = p->open_known = p->host_open = p->guest_open = true;
        }
        return !con.broken;
    }
    return false;
}

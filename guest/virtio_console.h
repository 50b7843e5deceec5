/*
 * virtio_console.h - polling virtio-console driver with
 * VIRTIO_CONSOLE_F_MULTIPORT (virtio 1.x section 5.3) over virtio-mmio v2.
 *
 * Named byte-stream ports to the host (the sandbox's stdin, stdout, stderr).
 * Every notify is a VM exit (~40 us here), so data moves in large buffers:
 * a write is copied into transmit slots and announced with one notify, and
 * receive buffers are handed back to the device in batches.
 *
 * A port is opened towards the host (PORT_OPEN 1) on its first use by any
 * call below; the host holds its input for a port until then.
 */
#ifndef GUEST_VIRTIO_CONSOLE_H
#define GUEST_VIRTIO_CONSOLE_H

#include "types.h"

#define VCON_MAX_PORTS      8           /* ports this driver sets up queues for */
#define VCON_NAME_MAX       120         /* bytes of a port name kept */

/* Feature bits (5.3.3) */
#define VIRTIO_CONSOLE_F_SIZE       0
#define VIRTIO_CONSOLE_F_MULTIPORT  1

/* Control events (5.3.6.2) */
#define VIRTIO_CONSOLE_DEVICE_READY 0
#define VIRTIO_CONSOLE_DEVICE_ADD   1
#define VIRTIO_CONSOLE_DEVICE_REMOVE 2
#define VIRTIO_CONSOLE_PORT_READY   3
#define VIRTIO_CONSOLE_CONSOLE_PORT 4
#define VIRTIO_CONSOLE_RESIZE       5
#define VIRTIO_CONSOLE_PORT_OPEN    6
#define VIRTIO_CONSOLE_PORT_NAME    7

struct virtio_console_control {
    u32 id;                     /* port number */
    u16 event;
    u16 value;
};

/* Errors, returned negated (Linux numbers). */
#define VCON_EIO    5           /* the device failed or broke the protocol */
#define VCON_ENODEV 19          /* no console device */
#define VCON_EINVAL 22          /* no such port */

/* Find the console among the virtio_mmio.device= entries, negotiate
   MULTIPORT and run the control handshake; false if there is none. */
/* await_names: the host will name its ports (a sandbox: stdin, stdout, ...),
   so wait for every name however slow the host is, not just a quiet spell. */
bool vcon_init(bool await_names);
/* Port id by name, or -1. */
int vcon_find_port(const char *name);
/* All of buf (one notify per batch of transmit slots); len or -errno. */
/* Tell the host the port is open (PORT_OPEN 1), as its first read or write would. */
void vcon_open(int port);
long vcon_write(int port, const void *buf, size_t len);
/* Waits for >= 1 byte; returns the count, 0 at EOF (host closed the port), or -errno. */
long vcon_read(int port, void *buf, size_t len);
/* Data waiting or EOF: a read would not wait (for poll()). */
bool vcon_readable(int port);
/* Wait until the host has taken everything written to the port. */
void vcon_flush(int port);
/* Flush, then tell the host the guest closed the port (PORT_OPEN 0). */
void vcon_close(int port);

/* For the shell: ports found, and counters (each notify and idle is an exit). */
struct vcon_port_info {
    const char *name;           /* "" if the device gave none */
    bool host_open;             /* the host's last PORT_OPEN */
    bool guest_open;
};
struct vcon_stats {
    u64 notifies;
    u64 idle_waits;
    u64 bytes_in;
    u64 bytes_out;
};
bool vcon_present(void);
int vcon_port_count(void);      /* ports the device added (ids 0..count-1 may have gaps) */
bool vcon_port_info(int port, struct vcon_port_info *info);
const struct vcon_stats *vcon_get_stats(void);

#endif

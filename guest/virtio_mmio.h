/*
 * virtio_mmio.h - virtio-mmio transport (virtio 1.x, section 4.2.2) and the
 * devices announced on the command line (virtio_mmio.device=...).
 */
#ifndef GUEST_VIRTIO_MMIO_H
#define GUEST_VIRTIO_MMIO_H

#include "types.h"

/* Register offsets; the spec's names in the comments. All registers are 32-bit. */
#define VIRTIO_MMIO_MAGIC_VALUE         0x000   /* MagicValue: "virt" */
#define VIRTIO_MMIO_VERSION             0x004   /* Version: 2 (1 = legacy) */
#define VIRTIO_MMIO_DEVICE_ID           0x008   /* DeviceID */
#define VIRTIO_MMIO_VENDOR_ID           0x00c   /* VendorID */
#define VIRTIO_MMIO_DEVICE_FEATURES     0x010   /* DeviceFeatures */
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014   /* DeviceFeaturesSel */
#define VIRTIO_MMIO_DRIVER_FEATURES     0x020   /* DriverFeatures */
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024   /* DriverFeaturesSel */
#define VIRTIO_MMIO_QUEUE_SEL           0x030   /* QueueSel */
#define VIRTIO_MMIO_QUEUE_NUM_MAX       0x034   /* QueueNumMax */
#define VIRTIO_MMIO_QUEUE_NUM           0x038   /* QueueNum */
#define VIRTIO_MMIO_QUEUE_READY         0x044   /* QueueReady */
#define VIRTIO_MMIO_QUEUE_NOTIFY        0x050   /* QueueNotify */
#define VIRTIO_MMIO_INTERRUPT_STATUS    0x060   /* InterruptStatus */
#define VIRTIO_MMIO_INTERRUPT_ACK       0x064   /* InterruptACK */
#define VIRTIO_MMIO_STATUS              0x070   /* Status */
#define VIRTIO_MMIO_QUEUE_DESC_LOW      0x080   /* QueueDescLow */
#define VIRTIO_MMIO_QUEUE_DESC_HIGH     0x084   /* QueueDescHigh */
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW    0x090   /* QueueDriverLow (avail ring) */
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH   0x094   /* QueueDriverHigh */
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW    0x0a0   /* QueueDeviceLow (used ring) */
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH   0x0a4   /* QueueDeviceHigh */
#define VIRTIO_MMIO_SHM_SEL             0x0ac   /* SHMSel */
#define VIRTIO_MMIO_SHM_LEN_LOW         0x0b0   /* SHMLenLow */
#define VIRTIO_MMIO_SHM_LEN_HIGH        0x0b4   /* SHMLenHigh */
#define VIRTIO_MMIO_SHM_BASE_LOW        0x0b8   /* SHMBaseLow */
#define VIRTIO_MMIO_SHM_BASE_HIGH       0x0bc   /* SHMBaseHigh */
#define VIRTIO_MMIO_QUEUE_RESET         0x0c0   /* QueueReset */
#define VIRTIO_MMIO_CONFIG_GENERATION   0x0fc   /* ConfigGeneration */
#define VIRTIO_MMIO_CONFIG              0x100   /* device-specific config */

/* Legacy (Version 1) only */
#define VIRTIO_MMIO_LEGACY_GUEST_PAGE_SIZE 0x028
#define VIRTIO_MMIO_LEGACY_QUEUE_ALIGN     0x03c
#define VIRTIO_MMIO_LEGACY_QUEUE_PFN       0x040

#define VIRTIO_MMIO_MAGIC               0x74726976u     /* "virt" LE */

/* InterruptStatus bits */
#define VIRTIO_MMIO_INT_VRING           (1u << 0)
#define VIRTIO_MMIO_INT_CONFIG          (1u << 1)

/* Device status bits (section 2.1) */
#define VIRTIO_STATUS_ACKNOWLEDGE       1u
#define VIRTIO_STATUS_DRIVER            2u
#define VIRTIO_STATUS_DRIVER_OK         4u
#define VIRTIO_STATUS_FEATURES_OK       8u
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 64u
#define VIRTIO_STATUS_FAILED            128u

/* Feature bits */
#define VIRTIO_F_VERSION_1              32

/* Device IDs (section 5) */
#define VIRTIO_ID_NET                   1
#define VIRTIO_ID_BLOCK                 2
#define VIRTIO_ID_CONSOLE               3
#define VIRTIO_ID_RNG                   4

/* Register access: MMIO pages are identity-mapped and user-accessible. */
static inline u32 virtio_mmio_read(u64 base, u32 off)
{
    return *(volatile u32 *)(uintptr_t)(base + off);
}

static inline void virtio_mmio_write(u64 base, u32 off, u32 val)
{
    *(volatile u32 *)(uintptr_t)(base + off) = val;
}

/* ---- devices from the command line ------------------------------------ */

/* As many as the VMM has device slots (vmm/x86/layout.py DEVICE_IRQS). */
#define VIRTIO_MMIO_MAX_DEVICES 17

struct virtio_mmio_device {
    u64 base;                   /* guest physical = virtual address */
    u64 size;                   /* bytes */
    u32 irq;
    s64 id;                     /* optional ":<id>" suffix, -1 if absent */
};

extern struct virtio_mmio_device virtio_mmio_devices[VIRTIO_MMIO_MAX_DEVICES];
extern unsigned virtio_mmio_count;
extern unsigned virtio_mmio_rejected;   /* malformed or beyond the table */

/*
 * Scan a command line for every "virtio_mmio.device=<size>@<addr>:<irq>[:<id>]"
 * (size: decimal or 0x-hex with optional K/M/G suffix; addr: 0x-hex or
 * decimal; irq, id: decimal) and fill the table.  Prints one warning line
 * per rejected parameter.
 */
void virtio_mmio_parse_cmdline(const char *cmdline);
/* Parse one parameter value (what follows "virtio_mmio.device="). */
bool virtio_mmio_parse_param(const char *s, size_t len, struct virtio_mmio_device *dev);

#endif

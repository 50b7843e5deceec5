/* virtio_mmio.c - virtio-mmio devices from the kernel command line. */
#include "virtio_mmio.h"
#include "console.h"
#include "lib.h"

struct virtio_mmio_device virtio_mmio_devices[VIRTIO_MMIO_MAX_DEVICES];
unsigned virtio_mmio_count;
unsigned virtio_mmio_rejected;

static const char param[] = "virtio_mmio.device=";

bool virtio_mmio_parse_param(const char *s, size_t len, struct virtio_mmio_device *dev)
{
    char tmp[64];
    const char *p;
    u64 size, base, irq, id;

    if (len >= sizeof(tmp))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';

    if (!parse_size(tmp, &p, &size) || size == 0 || *p++ != '@')
        return false;
    if (!parse_uint(p, &p, &base) || *p++ != ':')
        return false;
    if (!parse_dec(p, &p, &irq) || irq > UINT32_MAX)
        return false;
    dev->id = -1;
    if (*p == ':') {
        if (!parse_dec(p + 1, &p, &id) || id > INT32_MAX)
            return false;
        dev->id = (s64)id;
    }
    if (*p != '\0' || base + size < base)
        return false;
    dev->base = base;
    dev->size = size;
    dev->irq = (u32)irq;
    return true;
}

void virtio_mmio_parse_cmdline(const char *cmdline)
{
    const char *p = cmdline;

    while (*p) {
        while (is_space(*p))
            p++;
        const char *tok = p;
        while (*p && !is_space(*p))
            p++;
        size_t len = (size_t)(p - tok);
        size_t plen = sizeof(param) - 1;
        if (len < plen || memcmp(tok, param, plen) != 0)
            continue;

        struct virtio_mmio_device dev;
        if (!virtio_mmio_parse_param(tok + plen, len - plen, &dev)) {
            virtio_mmio_rejected++;
            kprintf("virtio-mmio: ignoring malformed '%.*s'\n", (int)len, tok);
        } else if (virtio_mmio_count == VIRTIO_MMIO_MAX_DEVICES) {
            virtio_mmio_rejected++;
            kprintf("virtio-mmio: more than %d devices, ignoring '%.*s'\n",
                    VIRTIO_MMIO_MAX_DEVICES, (int)len, tok);
        } else {
            virtio_mmio_devices[virtio_mmio_count++] = dev;
        }
    }
}

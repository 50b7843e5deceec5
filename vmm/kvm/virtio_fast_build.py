"""The virtio fast path's part of the cffi module (see virtio_fast.c).

Kept apart from ffi_build.py's KVM declarations so the two change
independently; ffi_build.py appends CDEF and SOURCE in one marked block.
"""

import os

# Shared by the declarations and the C source, so the two cannot disagree.
STRUCTS = """
struct vmm_ram_region {
    uint64_t gpa;
    uint64_t size;
    uint8_t *host;
};

/* One split queue of a virtio-blk device, as the Python model knows it. */
struct vmm_vq {
    const struct vmm_ram_region *regions;
    uint32_t nregions;
    uint32_t size;              /* queue size (validated by the model) */
    uint32_t max_chain_len;
    uint32_t max_data_bytes;    /* larger requests are left to the model */
    uint16_t next_avail;        /* in/out: the model's free-running indexes */
    uint16_t next_used;
    uint8_t indirect;           /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
    uint8_t read_only;
    int32_t fd;
    uint64_t desc_addr, avail_addr, used_addr;
    uint64_t disk_bytes;
    uint64_t requests, bytes;   /* counters: served here since activation */
};
"""

CDEF = STRUCTS + """
#define VF_MAX_SEGS ...
#define VF_BATCH ...
int vmm_blk_serve(struct vmm_vq *q);
"""

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "virtio_fast.c")) as _source:
    SOURCE = (
        "\n/* ---- virtio fast path (virtio_fast_build.py) ---- */\n"
        "#define VF_MAX_SEGS 16   /* data buffers per request served in C */\n"
        "#define VF_BATCH 64      /* chains per vmm_blk_serve() call */\n"
        + STRUCTS
        + _source.read()
    )

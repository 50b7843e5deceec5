/* alloc.c - bump allocator of page-aligned memory above the kernel image. */
#include "alloc.h"
#include "lib.h"
#include "start_info.h"

#define E820_RAM        1
#define MMIO_HOLE_START 0xc0000000ull   /* 3 GiB: RAM above is not ours to use */
#define MAPPED_LIMIT    0x100000000ull  /* boot.S identity-maps 0..4 GiB */

extern char __image_end[];      /* guest.ld: end of .bss, page-aligned */

static bool initialized;
static u64 next_free;           /* page-aligned */
static u64 limit;               /* first byte we may not hand out */

static u64 align_up(u64 v, u64 a)
{
    return (v + a - 1) & ~(a - 1);
}

/* Boot modules (an initrd) may sit above the image: stop below them. */
static void stay_below_modules(void)
{
    const struct hvm_start_info *si =
        (const void *)(uintptr_t)boot_info.start_info_pa;
    u64 list = si->modlist_paddr;
    u32 count = si->nr_modules;

    if (!count || !list || list >= MAPPED_LIMIT ||
        count > (MAPPED_LIMIT - list) / sizeof(struct hvm_modlist_entry))
        return;
    const struct hvm_modlist_entry *mods = (const void *)(uintptr_t)list;
    for (u32 i = 0; i < count; i++) {
        u64 start = mods[i].paddr & ~(u64)(PAGE_SIZE - 1);
        if (mods[i].size && start >= next_free && start < limit)
            limit = start;
    }
}

static void alloc_init(void)
{
    initialized = true;
    next_free = align_up((u64)(uintptr_t)__image_end, PAGE_SIZE);
    limit = next_free;          /* no memory map: nothing to hand out */

    /* The RAM entry that holds the image ends our heap. */
    for (u32 i = 0; i < boot_info.memmap_count; i++) {
        const struct hvm_memmap_table_entry *e = &boot_info.memmap[i];
        if (e->type != E820_RAM || e->addr > next_free ||
            e->addr + e->size <= next_free)
            continue;
        u64 top = e->addr + e->size;
        if (top > MMIO_HOLE_START)
            top = MMIO_HOLE_START;
        limit = top & ~(u64)(PAGE_SIZE - 1);
        break;
    }
    if (limit < next_free)
        limit = next_free;
    stay_below_modules();
}

void *alloc_pages(size_t bytes)
{
    if (!initialized)
        alloc_init();
    u64 size = align_up(bytes ? bytes : 1, PAGE_SIZE);
    if (size > limit - next_free)
        return NULL;
    void *p = (void *)(uintptr_t)next_free;
    next_free += size;
    return p;
}

void *alloc_pages_high(size_t bytes)
{
    if (!initialized)
        alloc_init();
    u64 size = align_up(bytes ? bytes : 1, PAGE_SIZE);
    if (size > limit - next_free)
        return NULL;
    limit -= size;              /* the bump allocator's top comes down */
    return (void *)(uintptr_t)limit;
}

u64 alloc_high_mark(void)
{
    if (!initialized)
        alloc_init();
    return limit;
}

void *alloc_zeroed_pages(size_t bytes)
{
    void *p = alloc_pages(bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

size_t alloc_free_bytes(void)
{
    if (!initialized)
        alloc_init();
    return (size_t)(limit - next_free);
}

alloc_mark_t alloc_mark(void)
{
    if (!initialized)
        alloc_init();
    return next_free;
}

void alloc_release(alloc_mark_t mark)
{
    if (mark >= (u64)(uintptr_t)__image_end && mark <= next_free)
        next_free = mark;
}

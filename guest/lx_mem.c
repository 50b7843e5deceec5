/*
 * lx_mem.c - the program's memory: one owner byte per 4 KiB page of RAM.
 *
 * The guest stays identity-mapped (2 MiB pages above 2 MiB), so a program
 * address is a physical address: ET_EXEC segments land where they are
 * linked (0x400000 for gcc, musl and busybox), brk grows up from the end of
 * the image, and mmap and the kernel's own buffers are carved top-down
 * below the stack, which sits just under the bundle at the top of RAM.
 * Nothing below 64 KiB is mapped (lx_main.c clears those PTEs).  With 2 MiB
 * pages mprotect and guard pages cannot be enforced: mprotect succeeds and
 * changes nothing; munmap frees the pages for reuse but they stay readable.
 */
#include "lx.h"
#include "alloc.h"
#include "lib.h"
#include "start_info.h"

#define PG_FREE     0
#define PG_KERNEL   1
#define PG_USER     2
#define PG_WINDOW   3           /* backs a page of lx_vmem.c's window */
#define PG_OWNER    3
#define PG_DIRTY    0x80        /* handed out before: zero it when reused */

#define STACK_SIZE  (8ull << 20)
#define GUARD_SIZE  (64ull << 10)       /* unmapped below the stack */
#define MMAP_GAP    (1ull << 20)        /* between the stack and mmaps */

#define MAP_SHARED          0x01
#define MAP_PRIVATE         0x02
#define MAP_FIXED           0x10
#define MAP_ANONYMOUS       0x20
#define MAP_FIXED_NOREPLACE 0x100000
#define MREMAP_MAYMOVE      1
#define MREMAP_FIXED        2

s64 lx_fs_mmap_read(int fd, void *dst, u64 len, u64 off);      /* lx_fs.c */

static u8 *pages;               /* owner byte per page */
static u64 npages;              /* pages below ram_top */
static u64 ram_top;
static u64 brk_base, brk_cur;
static u64 mmap_top;
static u64 stack_top;            /* top-down searches start below this */

u64 lx_ram_top(void)
{
    return ram_top;
}

static u64 page_up(u64 v)
{
    return (v + LX_PAGE - 1) & ~(LX_PAGE - 1);
}

static void set_owner(u64 first, u64 count, u8 owner)
{
    for (u64 i = first; i < first + count; i++)
        pages[i] = owner | PG_DIRTY;
}

/* Zero the pages of a run that held data before (fresh RAM is zero). */
static void zero_dirty(u64 first, u64 count)
{
    for (u64 i = first; i < first + count; i++)
        if (pages[i] & PG_DIRTY)
            lx_zero((void *)(uintptr_t)(i * LX_PAGE), LX_PAGE);
}

/*
 * Unmap [addr, addr+len) (page-aligned, above 2 MiB): the 2 MiB pages that
 * hold it are split into 4 KiB page tables first.  Only new mappings are
 * removed, so the caller's one TLB flush (lx_main.c) covers it.
 */
extern u64 pd[2048];            /* boot.S: 2 MiB pages for 0..4 GiB */
static void unmap_range(u64 addr, u64 len)
{
    for (u64 a = addr; a < addr + len; a += LX_PAGE) {
        u64 idx = a >> 21;
        if (idx == 0 || idx >= 2048)
            continue;
        if (pd[idx] & 0x80) {   /* PS: split */
            u64 *pt = lx_kpages(LX_PAGE);
            if (!pt)
                return;
            for (u64 i = 0; i < 512; i++)
                pt[i] = ((idx << 21) + i * LX_PAGE) | 7;
            pd[idx] = (u64)(uintptr_t)pt | 7;
        }
        u64 *pt = (u64 *)(uintptr_t)(pd[idx] & ~0xfffull);
        pt[(a >> 12) & 511] = 0;
    }
}

/*
 * Warm mode: the host may have written the program's segments into free RAM
 * already (vmm/sandbox/placement.py), where lx_load_program would copy them:
 * the guest then touches only the pages the program uses, not every page of
 * the image twice (~3.5 us a page here, 1.4 ms for a glibc hello).  The span
 * is held back from every allocation until lx_load_program adopts it (its
 * pages become the program's as they are) or gives it up (they are marked
 * dirty: they hold the host's bytes, not zeroes).
 */
static u64 placed_start, placed_end;

static void hold_placed(u64 lo, u64 hi)
{
    if (!hi || lo >= hi || ((lo | hi) & (LX_PAGE - 1)) || lo < LX_LOW_UNMAPPED || hi > ram_top)
        return;
    bool all_free = true;
    for (u64 i = lo / LX_PAGE; i < hi / LX_PAGE; i++)
        if ((pages[i] & PG_OWNER) != PG_FREE)
            all_free = false;
    for (u64 i = lo / LX_PAGE; i < hi / LX_PAGE; i++)
        if ((pages[i] & PG_OWNER) == PG_FREE)
            pages[i] = all_free ? PG_KERNEL : (PG_FREE | PG_DIRTY);
    if (all_free) {
        placed_start = lo;
        placed_end = hi;
    }
}

bool lx_adopt_placed(u64 start, u64 end)
{
    if (!placed_end)
        return false;
    bool match = start == placed_start && end == placed_end;
    for (u64 i = placed_start / LX_PAGE; i < placed_end / LX_PAGE; i++)
        pages[i] = match ? (PG_USER | PG_DIRTY) : (PG_FREE | PG_DIRTY);
    placed_start = placed_end = 0;
    return match;
}

void lx_mem_init(u64 bundle_start, u64 bundle_end, u64 placed_lo, u64 placed_hi)
{
    extern char __image_end[];
    u64 image_end = (u64)(uintptr_t)__image_end;

    ram_top = 0;
    for (u32 i = 0; i < boot_info.memmap_count; i++) {
        const struct hvm_memmap_table_entry *e = &boot_info.memmap[i];
        if (e->type == 1 && e->addr <= image_end && e->addr + e->size > image_end)
            ram_top = e->addr + e->size;
    }
    if (ram_top > 0xc0000000ull)
        ram_top = 0xc0000000ull;
    ram_top &= ~(LX_PAGE - 1);
    npages = ram_top / LX_PAGE;
    pages = alloc_zeroed_pages(npages);
    if (!pages)
        lx_cannot_execute("no memory for the page map");
    u64 kernel_end = page_up(alloc_mark());
    for (u64 i = 0; i < npages; i++)
        pages[i] = PG_FREE;
    set_owner(0, kernel_end / LX_PAGE, PG_KERNEL);
    u64 b0 = bundle_start / LX_PAGE, b1 = page_up(bundle_end) / LX_PAGE;
    if (b1 > npages)
        b1 = npages;
    if (b0 < b1)
        set_owner(b0, b1 - b0, PG_KERNEL);
    mmap_top = b0 * LX_PAGE;
    /* Device buffers taken from the top of RAM (alloc_pages_high) sit just
       under a boot-module bundle, or above a warm one (lx_main.c): the
       kernel's too, either way. */
    u64 high = alloc_high_mark() & ~(LX_PAGE - 1);
    if (b0 < b1 && high >= b1 * LX_PAGE && b1 < npages)
        set_owner(b1, npages - b1, PG_KERNEL);
    if (high < mmap_top && high >= kernel_end) {
        set_owner(high / LX_PAGE, (mmap_top - high) / LX_PAGE, PG_KERNEL);
        mmap_top = high;
    }
    /* The stack first, right under the bundle, before any kernel buffer. */
    u64 top = mmap_top - LX_PAGE;
    u64 bottom = top - STACK_SIZE;
    if (top > ram_top || bottom < kernel_end || !lx_claim_user(bottom, STACK_SIZE))
        lx_cannot_execute("not enough memory for the stack");
    stack_top = top;
    mmap_top = bottom - MMAP_GAP;
    set_owner((bottom - MMAP_GAP) / LX_PAGE, MMAP_GAP / LX_PAGE, PG_KERNEL);
    unmap_range(bottom - GUARD_SIZE, GUARD_SIZE);
    hold_placed(placed_lo, placed_hi);
}

/* Highest free run of `count` pages ending at or below `limit` (a page index). */
static u64 find_top_down(u64 count, u64 limit)
{
    u64 run = 0;
    for (u64 i = limit; i > 0; i--) {
        if ((pages[i - 1] & PG_OWNER) == PG_FREE) {
            if (++run == count)
                return i - 1;
        } else {
            run = 0;
        }
    }
    return 0;
}

void *lx_kpages(u64 bytes)
{
    u64 count = page_up(bytes ? bytes : 1) / LX_PAGE;
    u64 first = find_top_down(count, mmap_top / LX_PAGE);
    if (!first)
        return NULL;
    zero_dirty(first, count);
    set_owner(first, count, PG_KERNEL);
    return (void *)(uintptr_t)(first * LX_PAGE);
}

void lx_kpages_free(void *p, u64 bytes)
{
    u64 first = (u64)(uintptr_t)p / LX_PAGE, count = page_up(bytes) / LX_PAGE;
    if (first + count <= npages)
        set_owner(first, count, PG_FREE);
}

void *lx_kalloc(u64 bytes)
{
    static u8 *chunk;
    static u64 left;
    bytes = (bytes + 15) & ~15ull;
    if (bytes > 16384)
        return lx_kpages(bytes);
    if (bytes > left) {
        chunk = lx_kpages(65536);
        if (!chunk)
            return NULL;
        left = 65536;
    }
    void *p = chunk;
    chunk += bytes;
    left -= bytes;
    return p;
}

static bool range_in_ram(u64 addr, u64 len)
{
    return addr >= LX_LOW_UNMAPPED && addr < ram_top && len <= ram_top - addr;
}

bool lx_claim_user(u64 addr, u64 len)
{
    u64 start = addr & ~(LX_PAGE - 1);
    if (!range_in_ram(start, len + (addr - start)))
        return false;
    u64 first = start / LX_PAGE, count = page_up(addr + len) / LX_PAGE - first;
    for (u64 i = first; i < first + count; i++)
        if ((pages[i] & PG_OWNER) != PG_FREE)
            return false;
    zero_dirty(first, count);
    set_owner(first, count, PG_USER);
    return true;
}

u64 lx_alloc_user(u64 len)
{
    u64 count = page_up(len) / LX_PAGE;
    if (!count || count > npages)
        return 0;
    u64 first = find_top_down(count, mmap_top / LX_PAGE);
    if (!first || first * LX_PAGE < LX_LOW_UNMAPPED)
        return 0;
    zero_dirty(first, count);
    set_owner(first, count, PG_USER);
    return first * LX_PAGE;
}

void lx_set_brk_base(u64 base)
{
    brk_base = brk_cur = page_up(base);
}

/* The stack's top: STACK_SIZE just below the bundle, claimed at init. */
u64 lx_stack_alloc(void);
u64 lx_stack_alloc(void)
{
    return stack_top;
}

/* Only the program's own pages: a pointer into the kernel gets EFAULT. */
bool lx_user_ok(u64 addr, u64 len)
{
    if (addr >= (4ull << 30))
        return lx_window_user_ok(addr, len);
    if (!range_in_ram(addr, len ? len : 1))
        return false;
    u64 last = (addr + (len ? len : 1) - 1) / LX_PAGE;
    for (u64 i = addr / LX_PAGE; i <= last; i++)
        if ((pages[i] & PG_OWNER) != PG_USER)
            return false;
    return true;
}

s64 sys_brk(u64 addr)
{
    if (addr <= brk_base)
        return (s64)brk_cur;
    u64 want = page_up(addr), have = page_up(brk_cur);
    if (want > have) {
        if (want > mmap_top || !lx_claim_user(have, want - have))
            return (s64)brk_cur;
    } else if (want < have) {
        set_owner(want / LX_PAGE, (have - want) / LX_PAGE, PG_FREE);
    }
    brk_cur = addr;
    return (s64)brk_cur;
}

/* Pages of [addr, addr+len) may become the program's: none is the kernel's. */
static bool not_kernel(u64 addr, u64 len)
{
    if (!range_in_ram(addr, len))
        return false;
    for (u64 i = addr / LX_PAGE; i < (addr + len) / LX_PAGE; i++)
        if ((pages[i] & PG_OWNER) == PG_KERNEL || (pages[i] & PG_OWNER) == PG_WINDOW)
            return false;
    return true;
}

static bool any_user(u64 addr, u64 len)
{
    for (u64 i = addr / LX_PAGE; i < (addr + len) / LX_PAGE; i++)
        if ((pages[i] & PG_OWNER) == PG_USER)
            return true;
    return false;
}

s64 sys_mmap(u64 addr, u64 len, u64 prot, u64 flags, u64 fd, u64 off)
{

    if (!len || len > (1ull << 47) || (off & (LX_PAGE - 1)))
        return -EINVAL;
    u64 type = flags & 3;
    if (type != MAP_SHARED && type != MAP_PRIVATE && type != 3)
        return -EINVAL;
    if (len > ram_top && !lx_window_wants(addr, page_up(len), prot, flags))
        return -ENOMEM;
    len = page_up(len);
    u64 at;
    if (lx_window_wants(addr, len, prot, flags)) {
        s64 r = lx_window_mmap(addr, len, prot, flags);
        if (r < 0 || (flags & MAP_ANONYMOUS))
            return r;
        s64 n = lx_user_ok((u64)r, len) ? lx_fs_mmap_read((int)fd, (void *)(uintptr_t)r, len, off) : -ENOMEM;
        if (n < 0) {
            lx_window_munmap((u64)r, len);
            return n;
        }
        return r;
    }
    if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
        if (addr & (LX_PAGE - 1))
            return -EINVAL;
        if (!not_kernel(addr, len))
            return -ENOMEM;
        if ((flags & MAP_FIXED_NOREPLACE) && any_user(addr, len))
            return -EEXIST;
        set_owner(addr / LX_PAGE, len / LX_PAGE, PG_USER);
        lx_zero((void *)(uintptr_t)addr, len);
        at = addr;
    } else {
        at = lx_alloc_user(len);
        if (!at)
            return -ENOMEM;
    }
    if (!(flags & MAP_ANONYMOUS)) {
        s64 n = lx_fs_mmap_read((int)fd, (void *)(uintptr_t)at, len, off);
        if (n < 0) {
            set_owner(at / LX_PAGE, len / LX_PAGE, PG_FREE);
            return n;
        }
    }
    return (s64)at;
}

s64 sys_munmap(u64 addr, u64 len)
{
    if ((addr & (LX_PAGE - 1)) || !len)
        return -EINVAL;
    len = page_up(len);
    if (lx_window_addr(addr, len))
        return lx_window_munmap(addr, len);
    if (!range_in_ram(addr, len))
        return 0;
    for (u64 i = addr / LX_PAGE; i < (addr + len) / LX_PAGE; i++)
        if ((pages[i] & PG_OWNER) == PG_USER)
            pages[i] = PG_FREE | PG_DIRTY;
    return 0;
}

s64 sys_madvise_dontneed(u64 addr, u64 len);
s64 sys_madvise_dontneed(u64 addr, u64 len)
{
    len = page_up(len);
    if (!(addr & (LX_PAGE - 1)) && lx_window_addr(addr, len))
        return lx_window_dontneed(addr, len);
    if ((addr & (LX_PAGE - 1)) || !range_in_ram(addr, len))
        return -EINVAL;
    for (u64 i = addr / LX_PAGE; i < (addr + len) / LX_PAGE; i++)
        if ((pages[i] & PG_OWNER) == PG_USER)
            lx_zero((void *)(uintptr_t)(i * LX_PAGE), LX_PAGE);
    return 0;
}

s64 sys_mremap(u64 old, u64 old_len, u64 new_len, u64 flags, u64 new_addr)
{
    (void)new_addr;
    if ((old & (LX_PAGE - 1)) || !new_len || (flags & MREMAP_FIXED))
        return -EINVAL;
    old_len = page_up(old_len);
    new_len = page_up(new_len);
    if (!range_in_ram(old, old_len) || new_len > ram_top)
        return -EFAULT;
    if (new_len <= old_len) {
        if (new_len < old_len)
            sys_munmap(old + new_len, old_len - new_len);
        return (s64)old;
    }
    if (lx_claim_user(old + old_len, new_len - old_len))
        return (s64)old;
    if (!(flags & MREMAP_MAYMOVE))
        return -ENOMEM;
    u64 at = lx_alloc_user(new_len);
    if (!at)
        return -ENOMEM;
    lx_copy((void *)(uintptr_t)at, (const void *)(uintptr_t)old, old_len);
    sys_munmap(old, old_len);
    return (s64)at;
}

/* Guest RAM for one page of the window (lx_vmem.c): zeroed, owned by the
   window so that neither the kernel nor the identity map hands it out.
   The search resumes where the last one stopped (no quadratic rescans). */
u64 lx_window_page_alloc(void)
{
    static u64 rover;
    u64 top = mmap_top / LX_PAGE, low = LX_LOW_UNMAPPED / LX_PAGE;
    if (!rover || rover > top)
        rover = top;
    for (u64 pass = 0; pass < 2; pass++) {
        for (u64 i = rover; i > low; i--)
            if ((pages[i - 1] & PG_OWNER) == PG_FREE) {
                rover = i - 1;
                zero_dirty(i - 1, 1);
                set_owner(i - 1, 1, PG_WINDOW);
                return (i - 1) * LX_PAGE;
            }
        rover = top;
    }
    return 0;
}

void lx_window_page_free(u64 pa)
{
    u64 i = pa / LX_PAGE;
    if (i < npages && (pages[i] & PG_OWNER) == PG_WINDOW)
        pages[i] = PG_FREE | PG_DIRTY;
}

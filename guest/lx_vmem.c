/*
 * lx_vmem.c - the program's address space above the identity map (4 GiB up
 * to 128 TiB): big reservations and mappings at the addresses a program
 * asks for, backed by guest RAM only where it maps pages.
 *
 * Below 4 GiB a program address is a physical address (lx_mem.c), so every
 * mapping costs guest RAM even when never touched.  Runtimes reserve far
 * more address space than they use (Go: ~590 MiB of PROT_NONE page
 * summaries at start, then its heap at the hint 0xc000000000).  Here:
 * - mmap(PROT_NONE) of 1 MiB or more without MAP_FIXED, and any mmap whose
 *   hint lies at 4 GiB or above, get a range in this window (the hint when
 *   it is free);
 * - a range of the window is reserved (PROT_NONE) or accessible; a page of
 *   an accessible range gets a zeroed 4 KiB page of guest RAM (through
 *   4-level page tables) when first touched: by the program (the #PF is
 *   resolved in lx_fault and the instruction re-run) or by a syscall's
 *   buffer check (lx_user_ok), as Linux backs anonymous memory;
 * - mmap MAP_FIXED over it, munmap and madvise DONTNEED give the pages
 *   back (a later touch sees zeroes); a touch of a reserved page faults.
 * Bounded: at most MAX_RANGES reservations, pages and page tables come from
 * the same guest RAM as everything else (ENOMEM when it runs out); page
 * tables are kept once made (a reserve/release loop reuses its addresses).
 */
#include "lx.h"
#include "lib.h"

#define WINDOW_START (4ull << 30)
#define WINDOW_END   (1ull << 47)
#define WINDOW_TOP   0x7f0000000000ull     /* reservations are carved downwards from here */
#define CARVE_FLOOR  0x400000000000ull     /* ... and live above this (hints go lower) */
#define BIG_RESERVATION (1ull << 20)
#define MAX_RANGES 256
#define PTE_P 1ull
#define PTE_RW 2ull
#define PTE_US 4ull
#define PTE_PS 0x80ull
#define PTE_ADDR 0x000ffffffffff000ull

struct range {
    u64 start, end;             /* 0, 0: a free slot */
    bool access;                /* pages are backed on first touch */
};

#define LX_R0_MAGIC 0x4c58524f

static u64 lx_ring0_read_cr3(void)
{
    register u64 r10 __asm__("r10") = LX_R0_MAGIC;
    u64 rax;
    __asm__ volatile("int3" : "=a"(rax) : "D"(3), "r"(r10) : "memory");
    return rax;
}

static struct range ranges[MAX_RANGES];
static u64 carve_top = WINDOW_TOP;
static u64 *pml4;

/* lx_mem.c's page owners: window pages are neither the kernel's nor the
   identity-mapped program's. */
u64 lx_window_page_alloc(void);
void lx_window_page_free(u64 pa);

bool lx_window_addr(u64 addr, u64 len)
{
    return addr >= WINDOW_START && addr < WINDOW_END && len <= WINDOW_END - addr;
}

bool lx_window_wants(u64 addr, u64 len, u64 prot, u64 flags)
{
    if (flags & 0x10)           /* MAP_FIXED: where it says */
        return lx_window_addr(addr, len);
    if (addr && lx_window_addr(addr, len))
        return true;
    return prot == 0 && len >= BIG_RESERVATION && (flags & 0x20);
}

static u64 *table_of(u64 entry)
{
    return (u64 *)(uintptr_t)(entry & PTE_ADDR);
}

/* The PTE of va (4 KiB pages), creating tables on the way when `create`. */
static u64 *pte_of(u64 va, bool create)
{
    if (!pml4)
        pml4 = (u64 *)(uintptr_t)(lx_ring0_read_cr3() & PTE_ADDR);
    u64 *t = pml4;
    for (int shift = 39; shift > 12; shift -= 9) {
        u64 *e = &t[(va >> shift) & 511];
        if (!(*e & PTE_P)) {
            if (!create)
                return NULL;
            u64 *fresh = lx_kpages(LX_PAGE);
            if (!fresh)
                return NULL;
            *e = (u64)(uintptr_t)fresh | PTE_P | PTE_RW | PTE_US;
        } else if (*e & PTE_PS) {
            return NULL;        /* the identity map's big pages: not ours */
        }
        t = table_of(*e);
    }
    return &t[(va >> 12) & 511];
}

static bool overlaps(u64 start, u64 end)
{
    for (int i = 0; i < MAX_RANGES; i++)
        if (ranges[i].end && start < ranges[i].end && ranges[i].start < end)
            return true;
    return false;
}

static struct range *range_at(u64 va)
{
    for (int i = 0; i < MAX_RANGES; i++)
        if (ranges[i].end && ranges[i].start <= va && va < ranges[i].end)
            return &ranges[i];
    return NULL;
}

static bool add_range(u64 start, u64 end, bool access)
{
    for (int i = 0; i < MAX_RANGES; i++)
        if (!ranges[i].end) {
            ranges[i] = (struct range){ start, end, access };
            return true;
        }
    return false;
}

/* [start, end) is no longer reserved: trim or split the ranges it meets.
   False when a split found no free slot (the range then stays whole). */
static bool remove_range(u64 start, u64 end)
{
    bool ok = true;
    for (int i = 0; i < MAX_RANGES; i++) {
        struct range *r = &ranges[i];
        if (!r->end || end <= r->start || r->end <= start)
            continue;
        if (start <= r->start && end >= r->end) {
            *r = (struct range){ 0, 0, false };
        } else if (start <= r->start) {
            r->start = end;
        } else if (end >= r->end) {
            r->end = start;
        } else {                /* a hole in the middle: two ranges */
            u64 tail = r->end;
            r->end = start;
            if (!add_range(end, tail, r->access)) {
                r->end = tail;
                ok = false;
            }
        }
    }
    return ok;
}

static bool set_range(u64 start, u64 end, bool access)
{
    return remove_range(start, end) && add_range(start, end, access);
}

static bool reserved(u64 start, u64 end)
{
    for (u64 a = start; a < end;) {
        struct range *r = range_at(a);
        if (!r)
            return false;
        a = r->end;
    }
    return true;
}

static void unmap_pages(u64 start, u64 end)
{
    bool any = false;
    for (u64 va = start; va < end; va += LX_PAGE) {
        u64 *pte = pte_of(va, false);
        if (pte && (*pte & PTE_P)) {
            lx_window_page_free(*pte & PTE_ADDR);
            *pte = 0;
            any = true;
        }
    }
    if (any)
        lx_ring0_flush_tlb();
}

/* A zeroed page of guest RAM at va (in an accessible range). */
static bool back_page(u64 va)
{
    u64 *pte = pte_of(va, true);
    if (!pte)
        return false;
    if (*pte & PTE_P)
        return true;
    u64 pa = lx_window_page_alloc();
    if (!pa)
        return false;
    *pte = pa | PTE_P | PTE_RW | PTE_US;
    return true;
}

/* mmap in the window (lx_window_wants said so); len page-aligned. */
s64 lx_window_mmap(u64 addr, u64 len, u64 prot, u64 flags)
{
    u64 at;
    if (flags & (0x10 | 0x100000)) {           /* MAP_FIXED, MAP_FIXED_NOREPLACE */
        if (addr & (LX_PAGE - 1))
            return -EINVAL;
        if ((flags & 0x100000) && overlaps(addr, addr + len))
            return -EEXIST;
        at = addr;
        unmap_pages(at, at + len);  /* what was there goes: fresh zero pages */
        if (!set_range(at, at + len, prot != 0))
            return -ENOMEM;
        return (s64)at;
    }
    u64 hint = addr & ~(LX_PAGE - 1);
    if (hint && lx_window_addr(hint, len) && !overlaps(hint, hint + len)) {
        at = hint;
    } else {
        if (len > carve_top - CARVE_FLOOR)
            return -ENOMEM;
        at = (carve_top - len) & ~((2ull << 20) - 1);   /* 2 MiB aligned: fewer tables */
        if (at < CARVE_FLOOR || overlaps(at, at + len))
            return -ENOMEM;
        carve_top = at;
    }
    return add_range(at, at + len, prot != 0) ? (s64)at : -ENOMEM;
}

s64 lx_window_munmap(u64 addr, u64 len)
{
    unmap_pages(addr, addr + len);
    remove_range(addr, addr + len);
    /* Carve again from just below the lowest carved range left, so that a
       reserve/release loop reuses its addresses (and page tables). */
    carve_top = WINDOW_TOP;
    for (int i = 0; i < MAX_RANGES; i++)
        if (ranges[i].end && ranges[i].start >= CARVE_FLOOR && ranges[i].start < carve_top)
            carve_top = ranges[i].start;
    return 0;
}

/* mprotect: access makes reserved pages touchable; PROT_NONE leaves them
   (as below 4 GiB, taking access away is not enforced). */
s64 lx_window_mprotect(u64 addr, u64 len, u64 prot)
{
    if (!reserved(addr, addr + len))
        return -ENOMEM;
    if (prot && !set_range(addr, addr + len, true))
        return -ENOMEM;
    return 0;
}

s64 lx_window_dontneed(u64 addr, u64 len)
{
    unmap_pages(addr, addr + len);      /* the next touch gets a zero page */
    return 0;
}

/* A #PF at va: back it if it lies in an accessible range. */
bool lx_window_fault(u64 va)
{
    if (!lx_window_addr(va, 1))
        return false;
    struct range *r = range_at(va);
    return r && r->access && back_page(va & ~(LX_PAGE - 1));
}

/* Every page of [addr, addr+len) usable (lx_user_ok for the window). */
bool lx_window_user_ok(u64 addr, u64 len)
{
    if (!lx_window_addr(addr, len ? len : 1))
        return false;
    u64 last = (addr + (len ? len : 1) - 1) & ~(LX_PAGE - 1);
    for (u64 va = addr & ~(LX_PAGE - 1); va <= last; va += LX_PAGE) {
        u64 *pte = pte_of(va, false);
        if (pte && (*pte & PTE_P))
            continue;
        struct range *r = range_at(va);     /* not touched yet: back it now */
        if (!r || !r->access || !back_page(va))
            return false;
    }
    return true;
}

/*
 * alloc.h - a bump allocator of page-aligned guest memory.
 *
 * It hands out the RAM between the end of the kernel image and the top of
 * the RAM region holding the kernel (below 3 GiB, where the MMIO hole starts,
 * and below any boot module).  Memory is never freed one block at a time:
 * alloc_mark()/alloc_release() drop everything allocated since a mark, which
 * suits scratch buffers such as blkbench's.
 */
#ifndef GUEST_ALLOC_H
#define GUEST_ALLOC_H

#include "types.h"

#define PAGE_SIZE 4096u

/* `bytes` rounded up to whole pages, page-aligned; NULL when RAM runs out. */
void *alloc_pages(size_t bytes);
/* From the top of that RAM instead (long-lived device buffers: they stay out
   of the low addresses a Linux program is linked at). Not zeroed. */
void *alloc_pages_high(size_t bytes);
/* Lowest address alloc_pages_high has handed out (the top if none). */
u64 alloc_high_mark(void);
/* The same, zero-filled. */
void *alloc_zeroed_pages(size_t bytes);
/* Bytes still available to alloc_pages. */
size_t alloc_free_bytes(void);

typedef u64 alloc_mark_t;
alloc_mark_t alloc_mark(void);
/* Free everything allocated after `mark` was taken. */
void alloc_release(alloc_mark_t mark);

#endif

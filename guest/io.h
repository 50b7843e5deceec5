/* io.h - port I/O, TSC, CPUID and the VMM's ports (see README.md). */
#ifndef GUEST_IO_H
#define GUEST_IO_H

#include "types.h"

#define PORT_POST   0x80        /* null port: writes ignored */
#define PORT_EXIT   0xf4        /* power off, status 0-127 */
#define PORT_FAULT  0xf8        /* 32-bit address of a struct fault_record */
#define PORT_IDLE   0xfc        /* 32-bit: wait at most this many us */

#define EXIT_FAULT      125     /* status after a fault report */
#define EXIT_BAD_BOOT   124     /* status when start_info is unusable */

/* "memory" clobbers: data written before an exit is visible to the VMM. */
static inline void outb(u16 port, u8 v)
{
    __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void outl(u16 port, u32 v)
{
    __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

static inline u32 inl(u16 port)
{
    u32 v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d)
                     : "a"(leaf), "c"(sub));
}

/* Give the CPU back to the VMM for at most `us` microseconds (no hlt at CPL3). */
static inline void idle_us(u32 us)
{
    outl(PORT_IDLE, us);
}

/* Power off with `status` (8-bit write to the isa-debug-exit style port). */
static inline void power_off(u8 status)
{
    outb(PORT_EXIT, status);
}

#endif

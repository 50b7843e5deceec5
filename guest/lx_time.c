/*
 * lx_time.c - clocks and randomness for the program.
 *
 * Real mode: monotonic time from the TSC (rate from the hypervisor leaf,
 * else assumed 1 GHz), wall time = `now=` from the bundle (the host's clock
 * when it was built) plus monotonic time; random bytes from RDRAND when the
 * CPU has it, else from a TSC-seeded generator.
 * Deterministic mode (`clock=` / `seed=`): time starts at `clock=` and
 * advances 1 us per syscall (and by each sleep); random bytes come from a
 * splitmix64 generator seeded with `seed=`.
 */
#include "lx.h"
#include "guest.h"
#include "io.h"
#include "lib.h"

#define TICK_NS 1000            /* deterministic time per syscall */

static u64 tsc_start, tsc_per_us;
static u64 det_ns;              /* deterministic clock, since start */
static u64 rng_state;
static bool have_rdrand;

void lx_time_init(void)
{
    tsc_start = rdtsc();
    tsc_per_us = tsc_khz ? tsc_khz / 1000 : 1000;
    if (!tsc_per_us)
        tsc_per_us = 1;
    u32 a, b, c, d;
    cpuid(1, 0, &a, &b, &c, &d);
    have_rdrand = (c >> 30) & 1;
    /* Without a seed: the TSC and the host's per-run entropy (a warm clone's
       TSC follows the snapshot's, so it alone would repeat across clones). */
    rng_state = lx_opts.have_seed ? lx_opts.seed : rdtsc() ^ lx_opts.entropy ^ 0x9e3779b97f4a7c15ull;
}

u64 lx_monotonic_ns(void)
{
    if (lx_opts.have_clock || !tsc_per_us)     /* !tsc_per_us: before lx_time_init */
        return det_ns;
    return (rdtsc() - tsc_start) * 1000 / tsc_per_us;
}

u64 lx_realtime_ns(void)
{
    if (lx_opts.have_clock)
        return lx_opts.clock_ns + det_ns;
    return (lx_opts.have_now ? lx_opts.now_ns : 0) + lx_monotonic_ns();
}

void lx_clock_tick(void)
{
    det_ns += TICK_NS;
}

/* Nobody else runs in this VM: a sleep only has to move the clock, but a
   real-time program expects real time to pass, so wait (idle exits). */
void lx_sleep_ns(u64 ns)
{
    if (lx_opts.have_clock) {
        det_ns += ns;
        return;
    }
    u64 end = lx_monotonic_ns() + ns;
    for (;;) {
        u64 now = lx_monotonic_ns();
        if (now >= end)
            return;
        u64 us = (end - now) / 1000;
        idle_us(us > 1000000 ? 1000000 : (us ? (u32)us : 1));
    }
}

static u64 splitmix64(void)
{
    u64 z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

u64 lx_random_u64(void)
{
    if (!lx_opts.have_seed && have_rdrand) {
        u64 v;
        u8 ok;
        for (int i = 0; i < 10; i++) {
            __asm__ volatile("rdrand %0; setc %1" : "=r"(v), "=qm"(ok));
            if (ok)
                return v;
        }
    }
    return splitmix64();
}

void lx_random(void *buf, u64 len)
{
    u8 *p = buf;
    while (len) {
        u64 v = lx_random_u64();
        u64 n = len < 8 ? len : 8;
        memcpy(p, &v, n);
        p += n;
        len -= n;
    }
}

void lx_idle_until(u64 deadline, u32 max_us)
{
    u64 now = lx_monotonic_ns();
    if (deadline && deadline <= now)
        return;
    u64 wait_ns = (u64)max_us * 1000;
    if (deadline && deadline - now < wait_ns)
        wait_ns = deadline - now;
    if (lx_opts.have_clock && deadline) {
        det_ns += wait_ns;      /* deterministic: time jumps to the deadline */
        return;
    }
    /* Real time, or a deterministic program that waits for nothing but
       stdin or forever (deadlock: the VMM's --timeout ends it). */
    u64 us = wait_ns / 1000;
    idle_us(us ? (u32)us : 1);
}

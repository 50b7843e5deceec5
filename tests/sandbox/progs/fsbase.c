/* fsbase [threads]: a program that moves its own FS base with wrfsbase, as
   Linux allows where the CPU has FSGSBASE. arch_prctl(ARCH_GET_FS) must see
   the base it set, and thread switches must keep it. Between the two
   wrfsbase, no libc call: TLS (errno, the stack canary) is somewhere else. */
#define _GNU_SOURCE
#include <cpuid.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_GET_FS 0x1003  /* <asm/prctl.h>, which musl has not */

static long raw(long nr, long a, long b)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return r;
}

static unsigned long rdfs(void)
{
    unsigned long v;
    __asm__ volatile("rdfsbase %0" : "=r"(v));
    return v;
}

static void wrfs(unsigned long v)
{
    __asm__ volatile("wrfsbase %0" : : "r"(v) : "memory");
}

static volatile int done;

static void *yielder(void *arg)
{
    (void)arg;
    while (!done)
        syscall(SYS_sched_yield);
    return 0;
}

int main(int argc, char **argv)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & 1)) {
        puts("no fsgsbase");
        return 0;
    }
    int threads = argc > 1 && !strcmp(argv[1], "threads");
    pthread_t t;
    if (threads && pthread_create(&t, 0, yielder, 0))
        return 1;
    unsigned long orig = rdfs(), seen = 0, after;
    wrfs(orig + 4096);
    raw(SYS_arch_prctl, ARCH_GET_FS, (long)&seen);
    for (int i = 0; threads && i < 100; i++)
        raw(SYS_sched_yield, 0, 0);
    after = rdfs();
    wrfs(orig);
    if (threads) {
        done = 1;
        pthread_join(t, 0);
    }
    printf("get_fs %s, after switches %s\n", seen == orig + 4096 ? "ok" : "stale", after == orig + 4096 ? "ok" : "lost");
    return 0;
}

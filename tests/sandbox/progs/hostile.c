/* Misbehaviour the guest must survive: bad pointers, memory exhaustion, stray writes. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void on_overflow(int sig)
{
    static const char msg[] = "caught overflow on the alternate stack\n";
    write(1, msg, sizeof(msg) - 1);
    _exit(sig);
}

static int depth(int n)
{
    volatile char pad[4096];
    pad[0] = (char)n;
    return n ? depth(n - 1) + pad[0] : 0;
}

int main(int argc, char **argv)
{
    const char *how = argc > 1 ? argv[1] : "";
    if (!strcmp(how, "efault")) {
        long r1 = write(1, (void *)0x10, 5);
        int e1 = errno;
        long r2 = read(0, (void *)0x100000, 10);      /* the guest kernel's text */
        int e2 = errno;
        long r3 = write(1, (void *)0x7ffffffff000, 5);
        int e3 = errno;
        printf("%ld %d %ld %d %ld %d\n", r1, e1, r2, e2, r3, e3);
        return 0;
    }
    if (!strcmp(how, "oom")) {
        long mib = 0;
        while (malloc(1 << 20))
            mib++;
        void *big = mmap(NULL, 1L << 40, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        printf("oom after %s MiB, huge mmap %s\n", mib > 16 ? "many" : "few",
               big == MAP_FAILED && errno == ENOMEM ? "ENOMEM" : "mapped?");
        return 0;
    }
    if (!strcmp(how, "scribble")) {
        *(volatile char *)0x101000 = 0;     /* guest kernel text */
        return 0;
    }
    if (!strcmp(how, "fixed")) {
        void *p = mmap((void *)0x100000, 4096, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        printf("fixed over kernel: %s\n", p == MAP_FAILED ? strerror(errno) : "mapped");
        char *q = mmap((void *)0x40000000, 8192, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        printf("fixed high: %s\n", q == MAP_FAILED ? strerror(errno) : "mapped");
        return 0;
    }
    if (!strcmp(how, "altstack")) {
        static char alt[65536];
        stack_t ss = { .ss_sp = alt, .ss_size = sizeof(alt), .ss_flags = 0 };
        sigaltstack(&ss, NULL);
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_overflow;
        sa.sa_flags = SA_ONSTACK;
        sigaction(SIGSEGV, &sa, NULL);
        return depth(1 << 30);
    }
    if (!strcmp(how, "recurse"))
        return depth(1 << 30);
    return 1;
}

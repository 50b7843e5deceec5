/* Fault on purpose: argv[1] names how. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile int zero = 0;
static volatile sig_atomic_t got;

static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    printf("handler: signal %d addr %p\n", sig, si->si_addr);
    fflush(stdout);
    _exit(42);
}

static void on_usr1(int sig)
{
    got = sig;
}

int main(int argc, char **argv)
{
    const char *how = argc > 1 ? argv[1] : "";
    if (!strcmp(how, "null"))
        return *(volatile int *)0;
    if (!strcmp(how, "segv"))
        return *(volatile int *)0x1230;
    if (!strcmp(how, "ud"))
        __asm__ volatile("ud2");
    if (!strcmp(how, "de"))
        return 10 / zero;
    if (!strcmp(how, "hlt"))
        __asm__ volatile("hlt");
    if (!strcmp(how, "cli"))
        __asm__ volatile("cli");
    if (!strcmp(how, "int3"))
        __asm__ volatile("int3");
    if (!strcmp(how, "abort"))
        abort();
    if (!strcmp(how, "handler")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
        return *(volatile int *)0x2000;
    }
    if (!strcmp(how, "raise")) {
        signal(SIGUSR1, on_usr1);
        raise(SIGUSR1);
        printf("after raise: got %d\n", got);
        return 7;
    }
    printf("unknown: %s\n", how);
    return 1;
}

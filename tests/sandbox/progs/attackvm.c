/* Attack the sandbox's own guest kernel and devices (the VM is the boundary). */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static sigjmp_buf skip;

static void on_fault(int sig)
{
    (void)sig;
    siglongjmp(skip, 1);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv)
{
    const char *how = argc > 1 ? argv[1] : "";
    struct sigaction sa = { .sa_handler = on_fault, .sa_flags = SA_NODEFER };
    sigaction(SIGSEGV, &sa, 0);
    sigaction(SIGBUS, &sa, 0);
    printf("attacking: %s\n", how);
    fflush(stdout);
    if (!strcmp(how, "kernel")) {
        /* Garbage over every writable page of the guest kernel (1-16 MiB):
           its data, stacks, page tables, IDT, driver state. */
        for (volatile uintptr_t page = 0x100000; page < 0x1000000; page += 4096) {
            if (sigsetjmp(skip, 1))
                continue;           /* read-only or unmapped: next page */
            for (uintptr_t a = page; a < page + 4096; a += 8)
                *(volatile uint64_t *)a = next();
        }
    } else if (!strcmp(how, "ports")) {
        /* Every port, garbage out, and the virtio-mmio registers of every slot. */
        for (unsigned port = 0; port < 0x10000; port++) {
            if (sigsetjmp(skip, 1))
                continue;
            uint8_t v = (uint8_t)next();
            __asm__ volatile("outb %0, %w1" : : "a"(v), "Nd"((uint16_t)port));
        }
        for (uintptr_t base = 0xd0000000; base < 0xd0000000 + 17 * 4096; base += 4096)
            for (uintptr_t off = 0; off < 0x200; off += 4) {
                if (sigsetjmp(skip, 1))
                    continue;
                *(volatile uint32_t *)(base + off) = (uint32_t)next();
            }
    }
    puts("still running");
    return 0;
}

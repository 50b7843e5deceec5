/* bigmap [MODE]: address space above the identity map, as Go's runtime
   uses it: big PROT_NONE reservations, a hinted mapping at 0xc000000000,
   MAP_FIXED read-write pieces, first touch, syscalls on those pages,
   madvise(DONTNEED), munmap.  MODE "touchreserved": touch a reserved page. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    size_t big = 1ul << 30;     /* 1 GiB: more than the guest's RAM */
    char *res = mmap(NULL, big, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (res == MAP_FAILED) {
        perror("reserve");
        return 1;
    }
    if (argc > 1 && !strcmp(argv[1], "touchreserved")) {
        printf("touching\n");
        fflush(stdout);
        res[12345] = 1;
        printf("not reached\n");
        return 0;
    }
    char *hinted = mmap((void *)0xc000000000, 64 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("hint honoured: %d\n", hinted == (void *)0xc000000000);
    /* read-write pieces far apart inside the reservation */
    long sum = 0;
    for (int i = 0; i < 8; i++) {
        char *piece = res + (size_t)i * (128 << 20);
        if (mmap(piece, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, -1, 0) != piece) {
            perror("map piece");
            return 1;
        }
        sum += piece[4096] + piece[(1 << 20) - 1];     /* zero on first touch */
        memset(piece, 'a' + i, 1 << 20);
    }
    printf("fresh pieces sum %ld\n", sum);
    /* the kernel reads and writes such pages: write() and pipe read() */
    char *heap = mmap(hinted, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, -1, 0);
    memcpy(heap, "from the window\n", 16);
    write(1, heap, 16);
    int p[2];
    pipe(p);
    write(p[1], res + 3 * (128 << 20), 5);
    char *untouched = heap + (2 << 20) + 77;    /* not touched yet: read() backs it */
    long n = read(p[0], untouched, 5);
    printf("pipe into an untouched page: %ld %.5s\n", n, untouched);
    /* DONTNEED: zero again; MAP_FIXED over it: zero; munmap: gone */
    madvise(res, 1 << 20, MADV_DONTNEED);
    printf("after dontneed: %d\n", res[100]);
    mprotect(res + (64 << 20), 4096, PROT_READ | PROT_WRITE);
    res[(64 << 20) + 8] = 9;
    printf("mprotect made a reserved page usable: %d\n", res[(64 << 20) + 8]);
    munmap(res, big);
    munmap(hinted, 64 << 20);
    /* reserving and releasing many times does not run out */
    for (int i = 0; i < 2000; i++) {
        char *r = mmap(NULL, 64 << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (r == MAP_FAILED || mmap(r, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, -1, 0) != r) {
            printf("failed at %d\n", i);
            return 1;
        }
        r[0] = 1;
        munmap(r, 64 << 20);
    }
    printf("done\n");
    return 0;
}

/* brk, mmap (anonymous and file), mremap via realloc, munmap, madvise. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    const char *file = argc > 1 ? argv[1] : "/data/in.txt";
    char *a = malloc(1 << 20);
    memset(a, 'a', 1 << 20);
    char *b = realloc(a, 8 << 20);          /* mremap for a large block */
    printf("realloc kept data %d\n", b[(1 << 20) - 1] == 'a');
    free(b);

#ifdef __GLIBC__   /* musl's malloc puts a guard mapping at the break */
    void *brk0 = sbrk(0);
    char *grown = sbrk(1 << 16);
    grown[(1 << 16) - 1] = 1;
    printf("sbrk grew %d\n", (char *)sbrk(0) - (char *)brk0 == (1 << 16));
#endif

    char *m = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("anon zero %d\n", m[0] == 0 && m[3 * 4096 - 1] == 0);
    memset(m, 7, 3 * 4096);
    int ret = madvise(m, 4096, MADV_DONTNEED);
    printf("madvise %d zeroed %d\n", ret, m[0] == 0 && m[4096] == 7);
    char *r = mremap(m, 3 * 4096, 6 * 4096, MREMAP_MAYMOVE);
    printf("mremap kept %d\n", r != MAP_FAILED && r[4096] == 7);
    printf("mprotect %d\n", mprotect(r, 4096, PROT_READ));
    printf("munmap unaligned %d\n", munmap(r + 1, 4096));
    printf("munmap %d\n", munmap(r, 6 * 4096));

    int fd = open(file, O_RDONLY);
    char *f = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    printf("file map: %.5s\n", f == MAP_FAILED ? "FAIL!" : f);
    close(fd);
    printf("page size %ld\n", sysconf(_SC_PAGESIZE));
    return 0;
}

/* Anonymous memory reads as zeroes: map argv[1] MiB, report the first non-zero byte. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
    size_t len = (size_t)atoi(argc > 1 ? argv[1] : "16") << 20;
    unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        puts("mmap failed");
        return 2;
    }
    for (size_t i = 0; i < len; i++)
        if (m[i]) {
            printf("non-zero byte at %p\n", (void *)(m + i));
            return 1;
        }
    printf("all %zu bytes zero\n", len);
    return 0;
}

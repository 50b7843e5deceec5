/*
 * exec_prog.c - the program `vmm bench exec` runs on every contender (built
 * static, so native, bwrap, QEMU and vmm run the very same binary).
 *
 *   exec_prog hello            print a line and exit
 *   exec_prog sha256 MIB       SHA-256 over MIB MiB built in memory
 *   exec_prog getppid N        N getppid system calls
 *   exec_prog write MIB        MIB MiB to stdout in 64 KiB writes
 *   exec_prog read FILE        read FILE to its end in 64 KiB reads
 *
 * Each case but hello reports its own elapsed time on stderr
 * ("elapsed_ns N") from CLOCK_MONOTONIC, so a figure excludes start-up.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* SHA-256 (FIPS 180-4), written for this benchmark. */
static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

static int sha256(size_t mib)
{
    size_t len = mib << 20;     /* a multiple of 64: the padding block is separate */
    uint8_t *buf = malloc(len);
    if (!buf)
        return 1;
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 31 + (i >> 13));
    uint64_t start = now_ns();
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    for (size_t off = 0; off < len; off += 64)
        sha256_block(h, buf + off);
    uint8_t pad[64] = {0x80};
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        pad[63 - i] = (uint8_t)(bits >> (8 * i));
    sha256_block(h, pad);
    uint64_t elapsed = now_ns() - start;
    for (int i = 0; i < 8; i++)
        printf("%08x", h[i]);
    printf("\n");
    fprintf(stderr, "elapsed_ns %llu\n", (unsigned long long)elapsed);
    return 0;
}

static int getppids(long n)
{
    long sum = 0;
    uint64_t start = now_ns();
    for (long i = 0; i < n; i++)
        sum += syscall(SYS_getppid);
    uint64_t elapsed = now_ns() - start;
    printf("%ld calls\n", n);
    fprintf(stderr, "elapsed_ns %llu sum %ld\n", (unsigned long long)elapsed, sum);
    return 0;
}

static char chunk[1 << 16];

static int write_out(size_t mib)
{
    memset(chunk, 'x', sizeof(chunk));
    uint64_t start = now_ns();
    for (size_t left = mib << 20; left;) {
        ssize_t n = write(1, chunk, left < sizeof(chunk) ? left : sizeof(chunk));
        if (n <= 0)
            return 1;
        left -= (size_t)n;
    }
    fprintf(stderr, "elapsed_ns %llu\n", (unsigned long long)(now_ns() - start));
    return 0;
}

static int read_in(const char *path)
{
    uint64_t start = now_ns();
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    unsigned long long total = 0, sum = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0)
            return 1;
        if (n == 0)
            break;
        total += (size_t)n;
        for (ssize_t i = 0; i < n; i += 4096)
            sum += (unsigned char)chunk[i];
    }
    close(fd);
    printf("%llu bytes, sum %llu\n", total, sum);
    fprintf(stderr, "elapsed_ns %llu\n", (unsigned long long)(now_ns() - start));
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "hello")) {
        puts("hello, world");
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "sha256"))
        return sha256((size_t)atol(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "getppid"))
        return getppids(atol(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "write"))
        return write_out((size_t)atol(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "read"))
        return read_in(argv[2]);
    fprintf(stderr, "usage: exec_prog hello | sha256 MIB | getppid N | write MIB | read FILE\n");
    return 2;
}

/* Time and randomness: prints values (deterministic under clock= and seed=). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>

int main(void)
{
    struct timespec a, b, r;
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct timespec nap = { 0, 20 * 1000 * 1000 };
    nanosleep(&nap, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long slept = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
    printf("slept_ok %d\n", slept >= 20000000LL && slept < 5000000000LL);
    clock_gettime(CLOCK_REALTIME, &r);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    time_t t = time(NULL);
    printf("realtime %lld.%09ld\n", (long long)r.tv_sec, r.tv_nsec);
    printf("gettimeofday %lld time %lld\n", (long long)tv.tv_sec, (long long)t);
    unsigned char rnd[16];
    long n = getrandom(rnd, sizeof(rnd), 0);
    printf("getrandom %ld ", n);
    for (int i = 0; i < 16; i++)
        printf("%02x", rnd[i]);
    printf("\nrand %d\n", rand());
    unsigned char *heap = malloc(100000);
    printf("malloc %s\n", heap ? "ok" : "failed");
    return 0;
}

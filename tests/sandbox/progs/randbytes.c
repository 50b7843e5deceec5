/* The random bytes a program gets: AT_RANDOM, getrandom(), /dev/urandom, and the clock. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/auxv.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static void hex(const char *name, const unsigned char *p, int n)
{
    printf("%s ", name);
    for (int i = 0; i < n; i++)
        printf("%02x", p[i]);
    printf("\n");
}

int main(void)
{
    unsigned char buf[16];
    hex("at_random", (const unsigned char *)getauxval(AT_RANDOM), 16);
    if (getrandom(buf, sizeof(buf), 0) == sizeof(buf))
        hex("getrandom", buf, 16);
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0 && read(fd, buf, sizeof(buf)) == sizeof(buf))
        hex("urandom", buf, 16);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    printf("realtime %lld.%09ld\n", (long long)now.tv_sec, now.tv_nsec);
    return 0;
}

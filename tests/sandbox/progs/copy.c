/* Copy stdin to stdout byte for byte, in large reads; report the count on stderr. */
#include <stdio.h>
#include <unistd.h>

static char buf[1 << 16];

int main(void)
{
    long n, total = 0;
    while ((n = read(0, buf, sizeof(buf))) > 0) {
        for (long done = 0; done < n;) {
            long w = write(1, buf + done, n - done);
            if (w <= 0)
                return 2;
            done += w;
        }
        total += n;
    }
    fprintf(stderr, "copied %ld\n", total);
    return n < 0;
}

/* Copy standard input to standard output, upper-casing it. */
#include <ctype.h>
#include <unistd.h>

int main(void)
{
    char buf[512];
    long n, total = 0;
    while ((n = read(0, buf, sizeof(buf))) > 0) {
        for (long i = 0; i < n; i++)
            buf[i] = (char)toupper((unsigned char)buf[i]);
        write(1, buf, n);
        total += n;
    }
    char msg[64];
    int len = 0;
    long t = total;
    char digits[24];
    int d = 0;
    do { digits[d++] = '0' + t % 10; t /= 10; } while (t);
    const char *p = "total ";
    while (*p) msg[len++] = *p++;
    while (d) msg[len++] = digits[--d];
    msg[len++] = '\n';
    write(1, msg, len);
    return n < 0;
}

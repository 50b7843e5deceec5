/* Create, write, unlink, pipe and open in loops: must run in bounded memory. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    static char block[10000];
    memset(block, 'x', sizeof(block));
    for (int i = 0; i < 10000; i++) {
        int fd = open("/tmp/f", O_CREAT | O_WRONLY | O_TRUNC, 0644);
        if (fd < 0 || write(fd, block, sizeof(block)) != sizeof(block)) {
            printf("file round %d failed\n", i);
            return 1;
        }
        close(fd);
        unlink("/tmp/f");
    }
    for (int i = 0; i < 3000; i++) {
        int p[2];
        if (pipe(p)) {
            printf("pipe round %d failed\n", i);
            return 1;
        }
        close(p[0]);
        close(p[1]);
    }
    for (int i = 0; i < 100000; i++) {
        int fd = open("/etc/data", O_RDONLY);
        if (fd < 0) {
            printf("open round %d failed\n", i);
            return 1;
        }
        close(fd);
    }
    printf("churn ok\n");
    return 0;
}

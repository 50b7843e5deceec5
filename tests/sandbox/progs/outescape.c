/* /out entries that try to escape the host's output directory. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void)
{
    symlink("/etc/passwd", "/out/abs-link");
    symlink("../../escape", "/out/rel-link");
    mkdir("/out/sub", 0755);
    symlink("/", "/out/sub/root");
    link("/out/abs-link", "/out/hard");     /* EPERM in the sandbox: no hard links */
    FILE *f = fopen("/out/ok.txt", "w");
    fputs("fine\n", f);
    fclose(f);
    int fd = open("/out/big.bin", O_WRONLY | O_CREAT, 0644);
    static char block[1 << 16];
    memset(block, 'x', sizeof(block));
    for (int i = 0; i < 32; i++)            /* 2 MiB */
        write(fd, block, sizeof(block));
    close(fd);
    puts("done");
    return 0;
}

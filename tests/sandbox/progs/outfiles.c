/* Write files under /out: the host collects them. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void)
{
    FILE *f = fopen("/out/result.txt", "w");
    if (!f) {
        perror("/out/result.txt");
        return 1;
    }
    fprintf(f, "answer 42\n");
    fclose(f);
    mkdir("/out/logs", 0755);
    f = fopen("/out/logs/run.log", "w");
    for (int i = 0; i < 100; i++)
        fprintf(f, "line %d\n", i);
    fclose(f);
    printf("wrote /out\n");
    return 0;
}

/* Leave argv[1] MiB in /out/big.bin. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    static char block[1 << 20];
    memset(block, 'x', sizeof block);
    FILE *f = fopen("/out/big.bin", "w");
    if (!f)
        return 1;
    for (int i = 0; i < atoi(argc > 1 ? argv[1] : "1"); i++)
        fwrite(block, 1, sizeof block, f);
    return fclose(f) ? 1 : 0;
}

/* Print without end (or N lines). */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    long lines = argc > 1 ? atol(argv[1]) : -1;
    for (long i = 0; lines < 0 || i < lines; i++)
        printf("line %ld of a flood of output\n", i);
    return 0;
}

/* count_shell.c - `count N [MS]`: print 1..N, one a line, idling MS ms between.
 *
 * The snapshot tests' witness: a guest that is snapshotted mid-count and
 * restored elsewhere must go on with the next number, none repeated or lost.
 * The counter lives in guest RAM and registers only, so it survives exactly
 * what a snapshot carries. */
#include "count_shell.h"
#include "console.h"
#include "io.h"
#include "lib.h"

#define COUNT_DEFAULT_MS 10
#define COUNT_MAX_MS     10000

void cmd_count(int argc, char **argv)
{
    u64 n, ms = COUNT_DEFAULT_MS;

    if (argc < 2 || argc > 3 || !parse_dec_full(argv[1], &n) || (argc == 3 && !parse_dec_full(argv[2], &ms))
        || ms > COUNT_MAX_MS) {
        console_puts("usage: count N [MS]   (MS at most 10000)\n");
        return;
    }
    for (u64 i = 1; i <= n; i++) {
        kprintf("count %lu\n", i);
        console_flush();
        for (u64 left = ms; left; left--)
            idle_us(1000);      /* one exit per ms: a pause finds the vCPU quickly */
    }
    console_puts("count done\n");
}

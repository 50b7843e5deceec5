/* guest.h - kernel-wide globals. */
#ifndef GUEST_GUEST_H
#define GUEST_GUEST_H

#include "types.h"

extern u64 boot_tsc;            /* rdtsc at the start of kmain */
extern u32 tsc_khz;             /* 0 when unknown */

NORETURN void shell_run(void);

#endif

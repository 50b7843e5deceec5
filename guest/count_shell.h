/* count_shell.h - the `count` command (listed in shell.c). */
#ifndef GUEST_COUNT_SHELL_H
#define GUEST_COUNT_SHELL_H

void cmd_count(int argc, char **argv);

#endif

/* console_shell.h - shell commands for the virtio-console ports (listed in shell.c). */
#ifndef GUEST_CONSOLE_SHELL_H
#define GUEST_CONSOLE_SHELL_H

void cmd_ports(int argc, char **argv);
void cmd_pipe(int argc, char **argv);
void cmd_conwrite(int argc, char **argv);

#endif

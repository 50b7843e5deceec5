/* blk_shell.h - shell commands for virtio-blk disks (listed in shell.c). */
#ifndef GUEST_BLK_SHELL_H
#define GUEST_BLK_SHELL_H

void cmd_disks(int argc, char **argv);
void cmd_ls(int argc, char **argv);
void cmd_cat(int argc, char **argv);
void cmd_write(int argc, char **argv);
void cmd_sync(int argc, char **argv);
void cmd_rawwrite(int argc, char **argv);
void cmd_blkbench(int argc, char **argv);

#endif

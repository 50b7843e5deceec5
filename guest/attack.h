/* attack.h - shell commands that attack the VMM (listed in shell.c). */
#ifndef GUEST_ATTACK_H
#define GUEST_ATTACK_H

void cmd_mmiostorm(int argc, char **argv);
void cmd_piostorm(int argc, char **argv);
void cmd_faultrec(int argc, char **argv);
void cmd_iostorm(int argc, char **argv);
void cmd_cpuidsweep(int argc, char **argv);
void cmd_vq(int argc, char **argv);
void cmd_cfgsweep(int argc, char **argv);
void cmd_vqcycle(int argc, char **argv);
void cmd_vqctl(int argc, char **argv);

#endif

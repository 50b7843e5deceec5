/*
 * irq.h - the `irqtest` shell command: proves that device interrupts reach
 * the guest through the 8259 PICs (UART IRQ 4, each virtio-blk disk's IRQ).
 */
#ifndef GUEST_IRQ_H
#define GUEST_IRQ_H

void cmd_irqtest(int argc, char **argv);

#endif

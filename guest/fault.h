/* fault.h - CPU exceptions, handled at CPL3. */
#ifndef GUEST_FAULT_H
#define GUEST_FAULT_H

#include "types.h"

/* Written to memory; its address goes to port 0xf8 (see README.md). */
struct fault_record {
    u64 vector, error_code, rip, cs, rflags, rsp, ss;
};

/* Stack layout built by isr.S (lowest address first). */
struct exc_frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8;
    u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 vector, error_code;             /* pushed by the stub (or the CPU) */
    u64 rip, cs, rflags, rsp, ss;       /* pushed by the CPU */
};

/* Fill IDT gates 0-31 (runs at CPL3: the IDT lies in user-writable memory). */
void idt_init(void);
NORETURN void fault_handler(struct exc_frame *f);

#endif

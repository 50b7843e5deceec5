/*
 * isr.S - exception entry stubs for vectors 0-31 (ring-3 code).
 *
 * The IDT gates point at the DPL3 code segment, so the CPU delivers
 * exceptions at CPL3 on the current stack, natively.  Each stub pushes a
 * dummy error code where the CPU pushes none, then the vector number; the
 * common part saves the general registers and calls fault_handler(frame),
 * which does not return.
 */
/* bit v set: the CPU pushes an error code for vector v (8,10-14,17,21,29,30) */
#define ERRCODE_MASK 0x60227d00

        .text
        .irp    v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .balign 16
isr_\v:
        .if     ((ERRCODE_MASK >> \v) & 1) == 0
        pushq   $0
        .endif
        pushq   $\v
        jmp     isr_common
        .endr

isr_common:
        pushq   %rax
        pushq   %rbx
        pushq   %rcx
        pushq   %rdx
        pushq   %rsi
        pushq   %rdi
        pushq   %rbp
        pushq   %r8
        pushq   %r9
        pushq   %r10
        pushq   %r11
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
        cld
        movq    %rsp, %rdi              /* struct exc_frame * */
        andq    $-16, %rsp
        call    fault_handler
1:      jmp     1b

        .section .rodata
        .balign 8
        .globl  isr_table
isr_table:
        .irp    v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad   isr_\v
        .endr

#include "gdt.h"

/*
 * Interrupt stubs for vectors 0x20-0x2f (8259 IRQs 0-15 after irqtest's
 * remap), also ring-3 code behind DPL3 gates: the CPU stays at CPL3 and
 * pushes its frame on the current stack.  The stub saves the registers the
 * C ABI lets irq_dispatch(irq) clobber, calls it, and returns through
 * ring 0 (below).
 */
        .text
        .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
        .balign 16
irq_\n:
        pushq   $\n
        jmp     irq_common
        .endr

irq_common:
        pushq   %rax
        pushq   %rcx
        pushq   %rdx
        pushq   %rsi
        pushq   %rdi
        pushq   %r8
        pushq   %r9
        pushq   %r10
        pushq   %r11
        pushq   %rbp
        movq    80(%rsp), %rdi          /* the IRQ number pushed by the stub */
        movq    %rsp, %rbp
        andq    $-16, %rsp
        cld
        call    irq_dispatch
        movq    %rbp, %rsp
        popq    %rbp
        popq    %r11
        popq    %r10
        popq    %r9
        popq    %r8
        popq    %rdi
        popq    %rsi
        popq    %rdx
        popq    %rcx
        popq    %rax
        addq    $8, %rsp                /* the IRQ number */
        int3                            /* iretq, done in ring 0 (see below) */

/*
 * Why not iretq here: at CPL3 the CPU changes RFLAGS.IF only when IOPL=3,
 * and PVM runs ring 3 with IOPL=0 (../shared/PLATFORM.md), so a ring-3
 * iretq (or popfq) cannot give the interrupted code its IF=1 back, and
 * cli/sti #GP.  While irqtest runs, the #BP gate leads to ring 0 (stack from
 * TSS.RSP0), where irq_ring0_iret does the iretq with the frame at the
 * ring-3 RSP of the int3: the CPU's interrupt frame here, or one built by
 * irq_set_if.  Two ring-0 instructions: cheap even at ~1 us each.
 */
        .globl  irq_ring0_iret
irq_ring0_iret:
        movq    24(%rsp), %rsp          /* ring-3 RSP from the #BP frame */
        iretq

/* void irq_set_if(u64 if_bit): return to the caller with RFLAGS.IF set
   (if_bit = 0x200) or clear (0), through irq_ring0_iret. */
        .globl  irq_set_if
irq_set_if:
        movq    %rsp, %rax              /* -> return address */
        pushq   $SEL_UDATA              /* SS */
        leaq    8(%rax), %rcx
        pushq   %rcx                    /* RSP as after ret */
        pushfq
        andq    $~0x200, (%rsp)
        orq     %rdi, (%rsp)            /* RFLAGS */
        pushq   $SEL_UCODE              /* CS */
        pushq   (%rax)                  /* RIP: the return address */
        int3

        .section .rodata
        .balign 8
        .globl  irq_stub_table
irq_stub_table:
        .irp    n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
        .quad   irq_\n
        .endr

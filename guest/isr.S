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

/*
 * lx_entry.S - the Linux personality's ways in and out of the program.
 *
 * syscall: on this platform (PVM) `syscall` from ring 3 lands at LSTAR still
 * in ring 3; under QEMU TCG and on hardware it enters ring 0 (CS from STAR).
 * The stub works in both: it switches to the kernel stack at once (the
 * program's stack and red zone are never touched), saves a struct lx_regs,
 * calls lx_syscall(regs), and returns by `jmp *%rcx` in ring 3 or `sysretq`
 * in ring 0.  When lx_syscall returns nonzero (a signal frame was built or
 * rt_sigreturn ran) every register comes from the struct: lx_resume.
 *
 * Exceptions reach lx_exc_N through DPL3 gates at CPL3 on the program's own
 * stack; lx_exc_common saves an exc_frame and calls lx_fault on its own stack.
 *
 * int3 leads to lx_ring0_gate in ring 0 (TSS.RSP0 stack): the few ring-0-only
 * operations (wrmsr FS_BASE, reloading CR3 to flush the TLB, reading CR2), a
 * handful of emulated instructions each.  A program's own int3 (r10d != the
 * magic) is sent back to ring 3 as a #BP, so it gets its SIGTRAP.
 */
#define LX_R0_MAGIC 0x4c58524f          /* "LXRO" in %r10d */

        .text
        .globl  lx_syscall_entry
lx_syscall_entry:
        movq    %rsp, lx_user_rsp(%rip)
        movq    $lx_kstack_top, %rsp
        pushq   lx_user_rsp(%rip)       /* rsp */
        pushq   %r11                    /* rflags */
        pushq   %rcx                    /* rip */
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
        movw    %cs, %ax
        andl    $3, %eax
        movl    %eax, lx_entry_cpl(%rip)
        cld
        movq    %rsp, %rdi
        call    lx_syscall
        testl   %eax, %eax
        jnz     2f
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %r11
        popq    %r10
        popq    %r9
        popq    %r8
        popq    %rbp
        popq    %rdi
        popq    %rsi
        popq    %rdx
        popq    %rcx                    /* = rip, as syscall left it */
        popq    %rbx
        popq    %rax
        testl   $3, lx_entry_cpl(%rip)
        jz      1f
        movq    16(%rsp), %rsp
        jmp     *%rcx                   /* ring 3 (PVM): sysretq would fault */
1:      movq    16(%rsp), %rsp
        sysretq                         /* ring 0 (TCG, hardware): rcx, r11 */
2:      movq    %rsp, %rdi
        jmp     lx_resume

/* NORETURN void lx_resume(struct lx_regs *r): every register from *r. */
        .globl  lx_resume
lx_resume:
        movq    120(%rdi), %rax
        movq    %rax, lx_resume_rip(%rip)
        movw    %cs, %ax
        testb   $3, %al
        jz      3f
        movq    %rdi, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %r11
        popq    %r10
        popq    %r9
        popq    %r8
        popq    %rbp
        popq    %rdi
        popq    %rsi
        popq    %rdx
        popq    %rcx
        popq    %rbx
        popq    %rax
        addq    $8, %rsp                /* rip: jumped to from lx_resume_rip */
        popfq
        popq    %rsp
        jmp     *lx_resume_rip(%rip)
3:      movq    120(%rdi), %rax                 /* ring 0: iretq to ring 3 */
        movq    %rax, lx_iret_frame(%rip)
        movq    $0x23, lx_iret_frame+8(%rip)
        movq    128(%rdi), %rax
        movq    %rax, lx_iret_frame+16(%rip)
        movq    136(%rdi), %rax
        movq    %rax, lx_iret_frame+24(%rip)
        movq    $0x1b, lx_iret_frame+32(%rip)
        movq    %rdi, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %r11
        popq    %r10
        popq    %r9
        popq    %r8
        popq    %rbp
        popq    %rdi
        popq    %rsi
        popq    %rdx
        popq    %rcx
        popq    %rbx
        popq    %rax
        movq    $lx_iret_frame, %rsp
        iretq

/* Ring 0, through the #BP gate.  edi 0: wrmsr(ecx, edx:eax); 1: flush
   the TLB; 2: rax = CR2 (the faulting address of a #PF); 3: rax = CR3. */
        .globl  lx_ring0_gate
lx_ring0_gate:
        cmpl    $LX_R0_MAGIC, %r10d
        jne     3f
        cmpl    $1, %edi
        je      1f
        ja      2f
        wrmsr
        iretq
1:      movq    %cr3, %rax
        movq    %rax, %cr3
        iretq
2:      cmpl    $3, %edi
        je      5f
        movq    %cr2, %rax
        iretq
5:      movq    %cr3, %rax              /* 3: rax = CR3 (lx_vmem.c's tables) */
        iretq
3:      /* the program's own int3: back to ring 3 at lx_user_int3, which
           raises #BP there as the CPU would have (SIGTRAP) */
        pushq   %rax
        movq    8(%rsp), %rax           /* RIP after the int3 */
        movq    %rax, lx_int3_rip(%rip)
        movq    24(%rsp), %rax          /* RFLAGS */
        movq    %rax, lx_int3_rflags(%rip)
        movq    32(%rsp), %rax          /* RSP */
        movq    %rax, lx_int3_rsp(%rip)
        movq    $lx_user_int3, 8(%rsp)
        popq    %rax
        iretq

/* Ring 3: build the frame a CPL3 #BP delivery would have pushed. */
lx_user_int3:
        pushq   $0x1b                   /* SS */
        pushq   lx_int3_rsp(%rip)       /* RSP */
        pushq   lx_int3_rflags(%rip)    /* RFLAGS */
        pushq   $0x23                   /* CS */
        pushq   lx_int3_rip(%rip)       /* RIP */
        pushq   $0                      /* error code */
        pushq   $3                      /* vector */
        jmp     lx_exc_common

/* Exceptions raised by the program (or, by a bug, by the kernel). */
#define ERRCODE_MASK 0x60227d00
        .irp    v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .balign 16
lx_exc_\v:
        .if     ((ERRCODE_MASK >> \v) & 1) == 0
        pushq   $0
        .endif
        pushq   $\v
        jmp     lx_exc_common
        .endr

lx_exc_common:
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
        /* An IST delivery loads a null SS (RPL 3) on real CPUs and TCG; an
           iretq to ring 3 (the int3 gate) would #GP on it. */
        movl    $0x1b, %eax
        movl    %eax, %ss
        cld
        movq    %rsp, %rdi              /* struct exc_frame * */
        movq    $lx_fstack_top, %rsp
        call    lx_fault
1:      jmp     1b

        .section .rodata
        .balign 8
        .globl  lx_exc_table
lx_exc_table:
        .irp    v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad   lx_exc_\v
        .endr

        .bss
        .balign 16
        .globl  lx_user_rsp, lx_entry_cpl
lx_user_rsp:    .skip 8
lx_resume_rip:  .skip 8
lx_entry_cpl:   .skip 8
lx_iret_frame:  .skip 40
lx_int3_rip:    .skip 8
lx_int3_rflags: .skip 8
lx_int3_rsp:    .skip 8
        .balign 16
lx_kstack:      .skip 65536
lx_kstack_top:
        .globl  lx_ring0_stack_top
lx_ring0_stack: .skip 4096
lx_ring0_stack_top:
lx_fstack:      .skip 32768
lx_fstack_top:
        .globl  lx_ist_stack_top
lx_ist_stack:   .skip 16384     /* IST1: #PF and #DF even when the program's RSP is bad */
lx_ist_stack_top:

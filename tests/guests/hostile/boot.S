/* hostile: a Multiboot (v1) kernel that attacks the VMM from ring 0, where
 * rdmsr/wrmsr and IDT tricks are possible (the bundled guest lives in ring 3).
 * Its own GDT and IDT: #GP is counted and the faulting rdmsr/wrmsr (2 bytes)
 * skipped; any other exception reports its vector and powers off with 3. */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x3            /* page-aligned modules, memory info */

    .section .multiboot, "a"
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .text
    .globl _start
_start:
    mov $stack_top, %esp
    lgdt gdt_ptr
    ljmp $0x08, $1f
1:  mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    push %ebx               /* multiboot information */
    call kmain              /* never returns: it writes the exit port */
2:  hlt
    jmp 2b

/* #GP: count it and go on after the 2-byte rdmsr/wrmsr. Not by iret: KVM's
 * emulator, which runs all of ring 0 here, emulates iret in real mode only;
 * the frame is unwound by hand instead (same privilege: EIP, CS, EFLAGS). */
    .globl gp_handler
gp_handler:
    incl gp_count
    addl $4, %esp           /* the error code */
    push %eax
    mov 4(%esp), %eax       /* EIP */
    add $2, %eax
    mov %eax, resume_at
    mov 12(%esp), %eax      /* EFLAGS */
    mov %eax, resume_flags
    pop %eax
    addl $12, %esp
    pushl resume_flags
    popfl
    jmp *resume_at

/* Everything else: kmain's unexpected(vector). */
#define OTHER(n) .globl other_##n; other_##n: push $n; call unexpected
OTHER(0)
OTHER(6)
OTHER(8)
OTHER(14)
OTHER(255)

/* The second vCPU's start (SIPI vector 0x08: CS 0x0800, IP 0), copied to
 * 0x8000 by kmain: real mode, emulated, in a loop of port exits for as long
 * as the VM runs, counting rounds at 0x9000. Position-independent. */
    .globl ap_start, ap_end
    .code16
ap_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
1:  mov $0x3fd, %dx         /* COM1 LSR */
    inb %dx, %al
    outb %al, $0x80         /* POST: ignored */
    mov $0x1234, %dx        /* nobody */
    inw %dx, %ax
    outw %ax, %dx
    incl 0x9000
    jmp 1b
ap_end:
    .code32

/* Triple fault: an IDT of limit 0, then #UD: no gate for it, nor for the #DF. */
    .globl triple_fault
triple_fault:
    lidt empty_idt
    ud2

    .data
    .align 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: code, flat 4 GiB */
    .quad 0x00cf92000000ffff    /* 0x10: data, flat 4 GiB */
gdt_ptr:
    .word gdt_ptr - gdt - 1
    .long gdt
resume_at:
    .long 0
resume_flags:
    .long 0
empty_idt:
    .word 0
    .long 0

    .bss
    .align 16
    .space 8192
stack_top:

    .section .note.GNU-stack, "", @progbits

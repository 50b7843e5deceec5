/*
 * boot.S - PVH entry and the whole ring-0 part of the guest.
 *
 * Ring 0 is emulated at ~1 us per instruction on this platform (see
 * ../shared/PLATFORM.md), so this stub is straight-line code: no loops, all
 * tables static.  It enters long mode, loads GDT/IDT/TR and iretq's to ring 3,
 * where the C kernel (kmain) runs with IOPL=3 and IF=0.
 *
 * Ring-0 instruction count: 50 (14 in 32-bit mode, 36 in 64-bit mode),
 * numbered [n] below, plus the syscall MSRs [s1-s11] and the CPUID probes
 * [+1-+20] (TSC rate, FSGSBASE).  Keep it that way.
 */
#include "gdt.h"

/* ---- Xen PVH ELF note: XEN_ELFNOTE_PHYS32_ENTRY (type 18) ------------- */
        .section .note.Xen, "a", @note
        .balign 4
        .long   4                       /* namesz: "Xen\0" */
        .long   4                       /* descsz: 32-bit entry address */
        .long   18                      /* XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz  "Xen"
        .long   pvh_start32

/* ---- 32-bit entry: protected mode, paging off, %ebx = hvm_start_info -- */
        .section .text.boot, "ax"
        .code32
        .globl  pvh_start32
pvh_start32:
        movl    %cr4, %eax              /* [1] */
        orl     $0x620, %eax            /* [2] CR4.PAE|OSFXSR|OSXMMEXCPT (SSE for programs) */
        movl    %eax, %cr4              /* [3] */
        movl    $pml4, %eax             /* [4] */
        movl    %eax, %cr3              /* [5] */
        movl    $0xc0000080, %ecx       /* [6] IA32_EFER */
        rdmsr                           /* [7] */
        orl     $0x101, %eax            /* [8] EFER.LME|SCE (syscall for programs) */
        wrmsr                           /* [9] */
        movl    %cr0, %eax              /* [10] (PE already set) */
        orl     $0x80000000, %eax       /* [11] CR0.PG -> long mode active */
        movl    %eax, %cr0              /* [12] */
        lgdt    gdt_ptr                 /* [13] */
        ljmp    $SEL_KCODE, $long_mode  /* [14] */

        .code64
long_mode:
        movl    $SEL_KDATA, %eax        /* [15] */
        movl    %eax, %ss               /* [16] */
        movl    $SEL_UDATA, %eax        /* [17] user data: survives the iretq */
        movl    %eax, %ds               /* [18] */
        movl    %eax, %es               /* [19] */
        movl    %eax, %fs               /* [20] */
        movl    %eax, %gs               /* [21] */
        lidt    idt_ptr                 /* [22] IDT is all zero; ring 3 fills it */
        movl    $SEL_TSS, %eax          /* [23] */
        ltr     %ax                     /* [24] */
        /* syscall MSRs for the Linux personality (lx_entry.S) */
        movl    $0xc0000081, %ecx       /* [s1] STAR: kernel CS 0x08, sysret base 0x10 */
        xorl    %eax, %eax              /* [s2] */
        movl    $0x00100008, %edx       /* [s3] */
        wrmsr                           /* [s4] */
        movl    $0xc0000082, %ecx       /* [s5] LSTAR */
        movl    $lx_syscall_entry, %eax /* [s6] */
        xorl    %edx, %edx              /* [s7] */
        wrmsr                           /* [s8] */
        movl    $0xc0000084, %ecx       /* [s9] SFMASK: TF, IF, DF, AC */
        movl    $0x40700, %eax          /* [s10] */
        wrmsr                           /* [s11] */
        movl    $stack_top, %esp        /* [25] iretq frame on the user stack */
        pushq   $SEL_UDATA              /* [26] SS */
        pushq   $(stack_top - 8)        /* [27] RSP: as if kmain had been called */
        pushq   $0x3002                 /* [28] RFLAGS: IOPL=3, IF=0 */
        pushq   $SEL_UCODE              /* [29] CS */
        pushq   $kmain                  /* [30] RIP */
        movl    %ebx, %edi              /* [31] arg 1: start_info (zero-extended); CPUID clobbers %ebx */
        /* CPUID must run here: at CPL3 PVM executes it natively, so ring 3
           sees the host's hypervisor leaves, not the ones our VMM set. */
        movl    $0x40000000, %eax       /* [+1] hypervisor max leaf */
        cpuid                           /* [+2] */
        cmpl    $0x40000010, %eax       /* [+3] */
        jb      1f                      /* [+4] no timing leaf: TSC kHz stays 0 */
        movl    $0x40000010, %eax       /* [+5] EAX = TSC kHz */
        cpuid                           /* [+6] */
        movl    %eax, boot_tsc_khz      /* [+7] */
1:
        /* CR4.FSGSBASE where the CPU has it (CPUID.7.0:EBX bit 0): the Linux
           personality then sets a program's FS and GS bases with wrfsbase and
           wrgsbase, not by a trip through its emulated ring-0 gate. */
        xorl    %eax, %eax              /* [+8] */
        cpuid                           /* [+9] max basic leaf */
        cmpl    $7, %eax                /* [+10] */
        jb      2f                      /* [+11] */
        movl    $7, %eax                /* [+12] */
        xorl    %ecx, %ecx              /* [+13] */
        cpuid                           /* [+14] */
        testb   $1, %bl                 /* [+15] FSGSBASE */
        jz      2f                      /* [+16] */
        movq    %cr4, %rax              /* [+17] */
        btsq    $16, %rax               /* [+18] CR4.FSGSBASE */
        movq    %rax, %cr4              /* [+19] */
        movb    $1, boot_fsgsbase       /* [+20] */
2:

        iretq                           /* [32] -> ring 3, never returns */

/* ---- GDT (order also fits syscall/sysret: STAR[47:32]=0x08, [63:48]=0x10) */
        .data
        .balign 16
gdt:
        .quad   0                       /* 0x00 null */
        .quad   0x00af9a000000ffff      /* 0x08 ring-0 code, 64-bit */
        .quad   0x00cf92000000ffff      /* 0x10 ring-0 data */
        .quad   0x00cff2000000ffff      /* 0x18 ring-3 data */
        .quad   0x00affa000000ffff      /* 0x20 ring-3 code, 64-bit */
        /* 0x28 64-bit TSS descriptor; base split by the linker script */
        .word   tss_end - tss - 1       /* limit 15:0 */
        .word   __tss_base_15_0
        .byte   __tss_base_23_16
        .byte   0x89                    /* present, DPL0, available 64-bit TSS */
        .byte   0                       /* limit 19:16, flags */
        .byte   __tss_base_31_24
        .long   0                       /* base 63:32 (image is below 4 GiB) */
        .long   0
gdt_end:

        .balign 8
        .skip   6                       /* pad: 8-byte aligned base field */
gdt_ptr:
        .word   gdt_end - gdt - 1
        .quad   gdt                     /* lgdt in 32-bit mode reads 6 bytes */

        .balign 8
        .skip   6
        .globl  idt_ptr
idt_ptr:
        .word   IDT_ENTRIES * 16 - 1
        .quad   idt

        .balign 16
        .globl  tss
tss:                                    /* 64-bit TSS: no RSPn/ISTs needed */
        .fill   102, 1, 0               /* exceptions stay at CPL3 */
        .word   io_bitmap - tss         /* I/O permission bitmap base */
        /* An all-zero I/O bitmap grants ring 3 every port. IOPL=3 alone is
           not enough on PVM (see ../shared/PLATFORM.md): its iretq to ring 3
           drops IOPL, and ring-3 in/out are checked against this bitmap. */
io_bitmap:
        .fill   8192, 1, 0
        .byte   0xff                    /* the CPU reads one byte past the map */
tss_end:

/* ---- identity map 0..4 GiB: PML4 -> PDPT -> 4 PDs of 2 MiB pages ------ */
/* Every level: Present | RW | User; PS at the PD level.                   */
        .section .data.pagetables, "aw"
        .balign 4096
pml4:
        .quad   pdpt + 0x7
        .fill   511, 8, 0
pdpt:
        .quad   pd + 0x0007
        .quad   pd + 0x1007
        .quad   pd + 0x2007
        .quad   pd + 0x3007
        .fill   508, 8, 0
        .globl  pd
pd:
        .quad   pt_low + 0x7            /* 0-2 MiB in 4 KiB pages (pt_low) */
        .set    pde_addr, 0x200000
        .rept   2047
        .quad   pde_addr + 0x87         /* P | RW | US | PS */
        .set    pde_addr, pde_addr + 0x200000
        .endr

/* The low 2 MiB in 4 KiB pages, so the Linux personality can unmap the
   first 64 KiB (a program's NULL dereference must fault). */
        .balign 4096
        .globl  pt_low
pt_low:
        .set    pte_addr, 0
        .rept   512
        .quad   pte_addr + 0x7          /* P | RW | US */
        .set    pte_addr, pte_addr + 0x1000
        .endr

/* ---- zeroed by the loader --------------------------------------------- */
        .bss
        .balign 4
        .globl  boot_tsc_khz
boot_tsc_khz:                           /* CPUID 0x40000010 EAX, read in ring 0 */
        .skip   4
        .globl  boot_fsgsbase
boot_fsgsbase:                          /* 1: CR4.FSGSBASE set, wrfsbase and wrgsbase work */
        .skip   1
        .balign 4096
        .globl  idt
idt:
        .skip   IDT_ENTRIES * 16
        .balign 16
        .globl  stack_bottom, stack_top
stack_bottom:
        .skip   65536
stack_top:

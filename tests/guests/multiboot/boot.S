/* Multiboot (v1) header and entry: a 32-bit kernel loaded at 1 MiB.
 * Built twice (build.sh): as an ELF (header without address fields), and
 * with -DAOUT_KLUDGE as a flat binary whose header carries them (flag 16). */
#define MB_MAGIC 0x1BADB002
#define MB_PAGE_ALIGN (1 << 0)
#define MB_MEMORY_INFO (1 << 1)
#define MB_ADDRESSES (1 << 16)
#ifdef AOUT_KLUDGE
#define MB_FLAGS (MB_PAGE_ALIGN | MB_MEMORY_INFO | MB_ADDRESSES)
#else
#define MB_FLAGS (MB_PAGE_ALIGN | MB_MEMORY_INFO)
#endif

    .section .multiboot, "a"
    .align 4
multiboot_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
#ifdef AOUT_KLUDGE
    .long multiboot_header  /* header_addr */
    .long _load_start       /* load_addr */
    .long _load_end         /* load_end_addr */
    .long _bss_end          /* bss_end_addr */
    .long _start            /* entry_addr */
#endif

    .text
    .globl _start
_start:
    mov $stack_top, %esp
    pushfl                  /* EFLAGS as the loader left them */
    push %ebx               /* multiboot information */
    push %eax               /* loader magic */
    call kmain              /* never returns: it writes the exit port */
1:  hlt
    jmp 1b

    .bss
    .align 16
    .space 4096
stack_top:

    .section .note.GNU-stack, "", @progbits

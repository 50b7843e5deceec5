/* gdt.h - segment selectors shared by boot.S and C. */
#ifndef GUEST_GDT_H
#define GUEST_GDT_H

#define SEL_KCODE   0x08        /* ring-0 code, 64-bit */
#define SEL_KDATA   0x10        /* ring-0 data */
#define SEL_UDATA   0x1b        /* ring-3 data | RPL3 */
#define SEL_UCODE   0x23        /* ring-3 code, 64-bit | RPL3 */
#define SEL_TSS     0x28        /* 64-bit TSS (16-byte descriptor) */

#define IDT_ENTRIES 256         /* only 0-31 get gates (filled from ring 3) */

#endif

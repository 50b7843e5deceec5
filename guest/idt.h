/* idt.h - the IDT's 64-bit gate descriptors, shared by every file that fills one. */
#ifndef GUEST_IDT_H
#define GUEST_IDT_H

#include "gdt.h"
#include "types.h"

struct idt_gate {
    u16 offset_0_15;
    u16 selector;
    u8 ist;
    u8 type_attr;               /* P | DPL | type */
    u16 offset_16_31;
    u32 offset_32_63;
    u32 reserved;
} __attribute__((packed));

#define GATE_INTR_DPL3 0xee     /* present, DPL3, 64-bit interrupt gate */

extern struct idt_gate idt[IDT_ENTRIES];        /* boot.S, .bss */

/* A DPL3 interrupt gate to `off` in segment `sel`, on IST stack `ist` (0: none).
   DPL3 so that handlers may run at CPL3 and ring 3's int3 may use the gate. */
static inline struct idt_gate idt_gate(u64 off, u16 sel, u8 ist)
{
    return (struct idt_gate){
        .offset_0_15 = (u16)off,
        .selector = sel,
        .ist = ist,
        .type_attr = GATE_INTR_DPL3,
        .offset_16_31 = (u16)(off >> 16),
        .offset_32_63 = (u32)(off >> 32),
    };
}

#endif

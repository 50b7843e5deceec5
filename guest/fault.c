/* fault.c - IDT gates and the exception handler (both at CPL3). */
#include "fault.h"
#include "console.h"
#include "gdt.h"
#include "idt.h"
#include "io.h"



extern const u64 isr_table[32];                 /* isr.S */

void idt_init(void)
{
    for (unsigned v = 0; v < 32; v++) {
        idt[v] = idt_gate(isr_table[v], SEL_UCODE, 0);      /* handlers run at CPL3 */
    }
}

static const char *const mnemonics[32] = {
    "DE", "DB", "NMI", "BP", "OF", "BR", "UD", "NM",
    "DF", "CSO", "TS", "NP", "SS", "GP", "PF", "15",
    "MF", "AC", "MC", "XM", "VE", "CP", "22", "23",
    "24", "25", "26", "27", "HV", "VC", "SX", "31",
};

static struct fault_record record;
static int nesting;

void fault_handler(struct exc_frame *f)
{
    record = (struct fault_record){
        .vector = f->vector, .error_code = f->error_code, .rip = f->rip,
        .cs = f->cs, .rflags = f->rflags, .rsp = f->rsp, .ss = f->ss,
    };
    /* A fault while reporting a fault: skip the console, just report. */
    if (nesting++ == 0) {
        if (!console_at_line_start())
            console_putc('\n');
        kprintf("fault: vector %lu (#%s) rip 0x%lx error 0x%lx\n",
                f->vector, f->vector < 32 ? mnemonics[f->vector] : "?",
                f->rip, f->error_code);
        console_flush();
    }
    outl(PORT_FAULT, (u32)(uintptr_t)&record);
    power_off(EXIT_FAULT);
    for (;;)
        idle_us(1000000);
}

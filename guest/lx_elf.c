/* lx_elf.c - load a static ELF program and build its initial stack as Linux does. */
#include "lx.h"
#include "io.h"
#include "lib.h"

#define ET_EXEC 2
#define ET_DYN  3
#define EM_X86_64 62
#define PT_LOAD 1
#define PT_INTERP 3
#define PT_PHDR 6

#define AT_NULL 0
#define AT_PHDR 3
#define AT_PHENT 4
#define AT_PHNUM 5
#define AT_PAGESZ 6
#define AT_BASE 7
#define AT_FLAGS 8
#define AT_ENTRY 9
#define AT_UID 11
#define AT_EUID 12
#define AT_GID 13
#define AT_EGID 14
#define AT_PLATFORM 15
#define AT_HWCAP 16
#define AT_CLKTCK 17
#define AT_SECURE 23
#define AT_RANDOM 25
#define AT_HWCAP2 26
#define AT_EXECFN 31

#define STATIC_PIE_BASE 0x1000000ull    /* 16 MiB: first try for static-PIE */
#define MAX_STRINGS     (256u << 10)    /* argv + envp bytes */

struct elf64_ehdr {
    u8 e_ident[16];
    u16 e_type, e_machine;
    u32 e_version;
    u64 e_entry, e_phoff, e_shoff;
    u32 e_flags;
    u16 e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx;
};

struct elf64_phdr {
    u32 p_type, p_flags;
    u64 p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align;
};

u64 lx_stack_alloc(void);       /* lx_mem.c */

static const struct elf64_ehdr *check_header(const u8 *image, u64 size)
{
    const struct elf64_ehdr *eh = (const void *)image;
    if (size < sizeof(*eh) || memcmp(image, "\177ELF", 4) != 0)
        lx_cannot_execute("not ELF");
    if (eh->e_ident[4] != 2 || eh->e_ident[5] != 1 || eh->e_machine != EM_X86_64)
        lx_cannot_execute("not x86-64");
    if (eh->e_type != ET_EXEC && eh->e_type != ET_DYN)
        lx_cannot_execute("not an executable");
    if (eh->e_phentsize != sizeof(struct elf64_phdr) || !eh->e_phnum ||
        eh->e_phoff > size || (u64)eh->e_phnum * sizeof(struct elf64_phdr) > size - eh->e_phoff)
        lx_cannot_execute("bad program headers");
    return eh;
}

/* Push helpers: the stack grows down from *sp. */
static u64 push_bytes(u64 *sp, const void *p, u64 n)
{
    *sp -= n;
    memcpy((void *)(uintptr_t)*sp, p, n);
    return *sp;
}

void lx_load_program(const u8 *image, u64 size, const char *path,
                     const char *argv, u64 argv_len, const char *envp, u64 envp_len,
                     struct lx_regs *r)
{
    const struct elf64_ehdr *eh = check_header(image, size);
    const struct elf64_phdr *ph = (const void *)(image + eh->e_phoff);
    u64 lo = ~0ull, hi = 0, phdr_vaddr = 0;
    bool have_phdr = false;

    for (unsigned i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_INTERP)
            lx_cannot_execute("dynamic");
        if (ph[i].p_type == PT_PHDR) {
            phdr_vaddr = ph[i].p_vaddr;
            have_phdr = true;
        }
        if (ph[i].p_type != PT_LOAD || !ph[i].p_memsz)
            continue;
        if (ph[i].p_filesz > ph[i].p_memsz || ph[i].p_offset > size ||
            ph[i].p_filesz > size - ph[i].p_offset || ph[i].p_vaddr + ph[i].p_memsz < ph[i].p_vaddr)
            lx_cannot_execute("bad segment");
        if (ph[i].p_vaddr < lo)
            lo = ph[i].p_vaddr;
        if (ph[i].p_vaddr + ph[i].p_memsz > hi)
            hi = ph[i].p_vaddr + ph[i].p_memsz;
    }
    if (hi <= lo)
        lx_cannot_execute("no loadable segment");
    lo &= ~(LX_PAGE - 1);

    /* Claim the whole span; static-PIE gets a base of our choosing.  In
       warm mode the host may have written the segments there already
       (lx_mem.c, vmm/sandbox/placement.py: the same span and base). */
    if (eh->e_type == ET_DYN && (lo != 0 || hi > lx_ram_top()))
        lx_cannot_execute("bad static-PIE layout");
    u64 bias = eh->e_type == ET_DYN ? STATIC_PIE_BASE : 0;
    bool placed = hi <= lx_ram_top() && lx_adopt_placed(lo + bias, (hi + bias + LX_PAGE - 1) & ~(LX_PAGE - 1));
    if (placed) {
        /* the segments are in place, the rest of the span is fresh (zero) RAM */
    } else if (eh->e_type == ET_DYN) {
        if (!lx_claim_user(bias, hi)) {
            bias = lx_alloc_user(hi + (2ull << 20));
            if (!bias)
                lx_cannot_execute("out of memory");
            bias = (bias + (2ull << 20) - 1) & ~((2ull << 20) - 1);
        }
    } else if (!lx_claim_user(lo, hi - lo)) {
        lx_cannot_execute(hi > lx_ram_top() ? "segments lie outside RAM (give the VM more memory)"
                                            : "segments overlap the guest kernel or the stack (give the VM more memory)");
    }
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type != PT_LOAD || !ph[i].p_memsz)
            continue;
        if (!placed)
            lx_copy((u8 *)(uintptr_t)(ph[i].p_vaddr + bias), image + ph[i].p_offset, ph[i].p_filesz);
        /* the rest of the span was zeroed by the claim */
        if (!have_phdr && ph[i].p_offset == 0)
            phdr_vaddr = ph[i].p_vaddr + eh->e_phoff;
    }
    lx_set_brk_base(hi + bias);

    u64 top = lx_stack_alloc();
    if (!top)
        lx_cannot_execute("out of memory for the stack");
    if (argv_len + envp_len > MAX_STRINGS)
        lx_cannot_execute("argument list too long");

    /* Strings at the top: execfn, argv, envp, platform, random bytes. */
    u64 sp = top - 16;
    u64 execfn = push_bytes(&sp, path, strlen(path) + 1);
    u64 envp_at = push_bytes(&sp, envp, envp_len);
    u64 argv_at = push_bytes(&sp, argv, argv_len);
    u64 platform = push_bytes(&sp, "x86_64", 7);
    u8 rnd[16];
    lx_random(rnd, sizeof(rnd));
    sp &= ~15ull;
    u64 random = push_bytes(&sp, rnd, 16);

    u64 argc = 0, envc = 0;
    for (u64 i = 0; i < argv_len; i++)
        argc += argv[i] == 0;
    for (u64 i = 0; i < envp_len; i++)
        envc += envp[i] == 0;

    u32 a, b, c, d;
    cpuid(1, 0, &a, &b, &c, &d);
    /* In the order Linux's create_elf_tables() uses. */
    u64 aux[][2] = {
        { AT_HWCAP, d }, { AT_PAGESZ, LX_PAGE }, { AT_CLKTCK, 100 },
        { AT_PHDR, phdr_vaddr + bias }, { AT_PHENT, sizeof(struct elf64_phdr) },
        { AT_PHNUM, eh->e_phnum }, { AT_BASE, 0 }, { AT_FLAGS, 0 },
        { AT_ENTRY, eh->e_entry + bias }, { AT_UID, 0 }, { AT_EUID, 0 },
        { AT_GID, 0 }, { AT_EGID, 0 }, { AT_SECURE, 0 }, { AT_RANDOM, random },
        { AT_HWCAP2, 0 }, { AT_EXECFN, execfn }, { AT_PLATFORM, platform },
        { AT_NULL, 0 },
    };
    u64 words = 1 + argc + 1 + envc + 1 + 2 * ARRAY_SIZE(aux);
    sp -= words * 8;
    sp &= ~15ull;
    u64 *w = (u64 *)(uintptr_t)sp;
    *w++ = argc;
    for (u64 i = 0, start = 0; i < argv_len; i++)
        if (argv[i] == 0) {
            *w++ = argv_at + start;
            start = i + 1;
        }
    *w++ = 0;
    for (u64 i = 0, start = 0; i < envp_len; i++)
        if (envp[i] == 0) {
            *w++ = envp_at + start;
            start = i + 1;
        }
    *w++ = 0;
    memcpy(w, aux, sizeof(aux));

    r->rip = eh->e_entry + bias;
    r->rsp = sp;
    r->rflags = 0x202;
}

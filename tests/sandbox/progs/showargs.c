/* Print argc, argv, envp and the auxv entries Linux gives a static program. */
#include <elf.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern char **environ;
extern char _start[];

int main(int argc, char **argv, char **envp)
{
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]=%s\n", i, argv[i]);
    printf("argv[argc]=%p\n", (void *)argv[argc]);
    for (char **e = envp; *e; e++)
        printf("env=%s\n", *e);
    char **e = envp;
    while (*e)
        e++;
    Elf64_auxv_t *auxv = (Elf64_auxv_t *)(e + 1);
    int seen_null = 0;
    for (Elf64_auxv_t *a = auxv; ; a++) {
        uint64_t v = a->a_un.a_val;
        switch (a->a_type) {
        case AT_NULL: seen_null = 1; break;
        case AT_PHDR: printf("AT_PHDR %s\n", v && ((Elf64_Ehdr *)(v & ~0xfffUL))->e_ident[1] == 'E' ? "at headers" : "elsewhere"); break;
        case AT_PHENT: printf("AT_PHENT %lu\n", v); break;
        case AT_PHNUM: printf("AT_PHNUM %lu\n", v); break;
        case AT_PAGESZ: printf("AT_PAGESZ %lu\n", v); break;
        case AT_BASE: printf("AT_BASE %lu\n", v); break;
        case AT_ENTRY: printf("AT_ENTRY %s\n", v == (uint64_t)_start ? "_start" : "wrong"); break;
        case AT_UID: printf("AT_UID %lu\n", v); break;
        case AT_EUID: printf("AT_EUID %lu\n", v); break;
        case AT_GID: printf("AT_GID %lu\n", v); break;
        case AT_EGID: printf("AT_EGID %lu\n", v); break;
        case AT_SECURE: printf("AT_SECURE %lu\n", v); break;
        case AT_CLKTCK: printf("AT_CLKTCK %lu\n", v); break;
        case AT_PLATFORM: printf("AT_PLATFORM %s\n", (char *)v); break;
        case AT_RANDOM: printf("AT_RANDOM %s\n", v ? "16 bytes" : "missing"); break;
        case AT_EXECFN: {
            const char *s = (const char *)v, *slash = strrchr(s, '/');
            printf("AT_EXECFN %s\n", slash ? slash + 1 : s);
            break;
        }
        case AT_HWCAP: printf("AT_HWCAP present\n"); break;
        case AT_HWCAP2: printf("AT_HWCAP2 present\n"); break;
        default: break;     /* AT_SYSINFO_EHDR, AT_MINSIGSTKSZ...: Linux extras */
        }
        if (seen_null)
            break;
    }
    printf("environ==envp %d\n", environ == envp);
    printf("strings above vectors %d\n", (uintptr_t)argv[0] > (uintptr_t)auxv);
    return 0;
}

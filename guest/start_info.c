/* start_info.c - copy what we need out of the PVH hvm_start_info. */
#include "start_info.h"
#include "console.h"
#include "io.h"
#include "lib.h"

#define MAPPED_LIMIT 0x100000000ull     /* boot.S identity-maps 0..4 GiB */

struct boot_info boot_info;

static bool range_mapped(u64 pa, u64 len)
{
    return pa != 0 && pa < MAPPED_LIMIT && len <= MAPPED_LIMIT - pa;
}

static NORETURN void bad_boot(u64 pa, const char *why, u64 value)
{
    kprintf("start_info at 0x%lx: %s 0x%lx\n", pa, why, value);
    for (;;) {
        power_off(EXIT_BAD_BOOT);
        idle_us(1000000);
    }
}

void boot_info_init(u64 pa)
{
    struct boot_info *bi = &boot_info;

    bi->start_info_pa = pa;
    if (!range_mapped(pa, sizeof(struct hvm_start_info)))
        bad_boot(pa, "bad address", pa);
    const struct hvm_start_info *si = (const void *)(uintptr_t)pa;
    if (si->magic != HVM_START_MAGIC_VALUE)
        bad_boot(pa, "bad magic", si->magic);

    bi->version = si->version;
    bi->nr_modules = si->nr_modules;

    if (si->cmdline_paddr && range_mapped(si->cmdline_paddr, 1)) {
        const char *src = (const char *)(uintptr_t)si->cmdline_paddr;
        u64 room = MAPPED_LIMIT - si->cmdline_paddr;
        size_t max = room < BOOT_CMDLINE_MAX - 1 ? (size_t)room : BOOT_CMDLINE_MAX - 1;
        size_t n = strnlen(src, max);
        memcpy(bi->cmdline, src, n);
        bi->cmdline[n] = '\0';
        bi->cmdline_truncated = n == BOOT_CMDLINE_MAX - 1 && src[n] != '\0';
    }

    if (si->version >= 1 && si->memmap_entries) {
        u32 n = si->memmap_entries;
        bi->memmap_entries = n;
        if (n > BOOT_MEMMAP_MAX)
            n = BOOT_MEMMAP_MAX;
        u64 len = (u64)n * sizeof(struct hvm_memmap_table_entry);
        if (range_mapped(si->memmap_paddr, len)) {
            memcpy(bi->memmap, (const void *)(uintptr_t)si->memmap_paddr, len);
            bi->memmap_count = n;
        }
    }
}

const char *e820_type_name(u32 type)
{
    switch (type) {
    case 1: return "RAM";
    case 2: return "reserved";
    case 3: return "ACPI";
    case 4: return "ACPI NVS";
    case 5: return "unusable";
    case 7: return "persistent";
    default: return "unknown";
    }
}

/* start_info.h - Xen PVH hvm_start_info and what the guest keeps of it. */
#ifndef GUEST_START_INFO_H
#define GUEST_START_INFO_H

#include "types.h"

#define HVM_START_MAGIC_VALUE 0x336ec578

struct hvm_start_info {
    u32 magic;
    u32 version;
    u32 flags;
    u32 nr_modules;
    u64 modlist_paddr;
    u64 cmdline_paddr;
    u64 rsdp_paddr;
    /* version >= 1 */
    u64 memmap_paddr;
    u32 memmap_entries;
    u32 reserved;
};

/* One boot module; hvm_start_info.modlist_paddr points at an array of them. */
struct hvm_modlist_entry {
    u64 paddr;
    u64 size;
    u64 cmdline_paddr;
    u64 reserved;
};

struct hvm_memmap_table_entry {
    u64 addr;
    u64 size;
    u32 type;                   /* E820 types: 1 RAM, 2 reserved, ... */
    u32 reserved;
};

#define BOOT_CMDLINE_MAX 2048
#define BOOT_MEMMAP_MAX  64

/* Copied out of start_info at boot (the loader's copy may be reused). */
struct boot_info {
    u64 start_info_pa;
    u32 version;
    u32 nr_modules;
    char cmdline[BOOT_CMDLINE_MAX];
    bool cmdline_truncated;
    u32 memmap_entries;         /* as reported */
    u32 memmap_count;           /* kept in memmap[] */
    struct hvm_memmap_table_entry memmap[BOOT_MEMMAP_MAX];
};

extern struct boot_info boot_info;

/* Parse start_info at physical (= virtual) address pa; exits with 124 if bad. */
void boot_info_init(u64 pa);
const char *e820_type_name(u32 type);

#endif

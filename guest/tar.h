/*
 * tar.h - a POSIX ustar archive at sector 0 of a virtio-blk disk, read as a
 * simple file system: list members, read one, append one.
 *
 * Also understood when reading: GNU long names ('L') and the pax "path"
 * record ('x'), old-style directories (a regular file whose name ends in '/').
 */
#ifndef GUEST_TAR_H
#define GUEST_TAR_H

#include "types.h"

#define TAR_BLOCK       512
#define TAR_NAME_FIELD  100     /* longest name tar_append writes */
#define TAR_PATH_MAX    512     /* longest full name we keep (longer: cut) */

/* Results: 0, a BLK_E_* code from the disk, or one of these. */
enum {
    TAR_OK = 0,
    TAR_E_NO_ARCHIVE = -100,    /* sector 0 is all zero or not a tar header */
    TAR_E_CORRUPT = -101,       /* a bad header after the first one */
    TAR_E_NOT_FOUND = -102,
    TAR_E_NAME = -103,          /* empty, or longer than TAR_NAME_FIELD bytes */
    TAR_E_READ_ONLY = -104,
    TAR_E_FULL = -105,
    TAR_E_NO_DISK = -106,
    TAR_E_NO_MEMORY = -107,
};
const char *tar_strerror(int err);

struct tar_member {
    char name[TAR_PATH_MAX];    /* full name (prefix/name or long name) */
    char linkname[TAR_NAME_FIELD + 1];
    char type;                  /* typeflag; NUL read as '0', V7 dirs as '5' */
    u64 size;                   /* bytes of data */
    u64 header_sector;
    u64 data_sector;
};

/* How a walk ended. */
struct tar_walk {
    u64 members;                /* members visited */
    u64 end_sector;             /* end-of-archive block, bad header, or capacity */
    bool end_marker;            /* end_sector holds a zero block */
};

/* Return false to stop the walk. */
typedef bool (*tar_visit_fn)(const struct tar_member *m, void *ctx);
typedef void (*tar_data_fn)(const u8 *data, size_t len, void *ctx);

/*
 * Visit every member in archive order (visit may be NULL).  Returns TAR_OK
 * at the end-of-archive block (or the end of the disk), TAR_E_NO_ARCHIVE,
 * TAR_E_CORRUPT (w says where) or a disk error.  Each walk rereads the disk:
 * no stale data after a write or a change made by the host.
 */
int tar_walk(unsigned disk, tar_visit_fn visit, void *ctx, struct tar_walk *w);
/* The LAST member named `path` (a leading "./" and a trailing '/' ignored). */
int tar_find(unsigned disk, const char *path, struct tar_member *m);
/* Feed a member's data to `sink`, a sector or less at a time. */
int tar_read_data(unsigned disk, const struct tar_member *m, tar_data_fn sink, void *ctx);
/*
 * Append a regular file (mode 0644, owner root, mtime 0) at the end-of-archive
 * block, followed by a new end-of-archive marker (two zero blocks).  An
 * all-zero disk gets a new archive.  Not flushed: see blk_flush.
 */
int tar_append(unsigned disk, const char *path, const void *data, size_t len);

#endif

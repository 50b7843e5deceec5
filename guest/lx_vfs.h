/*
 * lx_vfs.h - the program's file tree (lx_vfs.c), shared with the descriptor
 * layer (lx_fs.c).  Nodes are directories, regular files, symlinks and three
 * character devices; a node's data is the bundle's (read-only, cap 0) or
 * kernel pages that grow by doubling (under /tmp and /out).
 */
#ifndef GUEST_LX_VFS_H
#define GUEST_LX_VFS_H

#include "lx.h"

enum { N_DIR, N_REG, N_LNK, N_NULL, N_ZERO, N_RANDOM };

#define NAME_MAX    255
#define PATH_MAX    4096

struct node {
    struct node *parent, *child, *next;
    char name[NAME_MAX + 1];
    u8 kind;
    bool writable;              /* under /tmp or /out */
    u32 perm;
    u64 ino, mtime_ns;
    u8 *data;                   /* bundle data (cap 0) or kernel pages */
    u64 size, cap;
    char *link;                 /* N_LNK target */
    u32 opens;                  /* open descriptions using it */
    bool gone;                  /* unlinked: freed at its last close */
    struct node *free_next;
};

extern struct node *vfs_root, *vfs_cwd;
extern u64 vfs_next_ino;

/* Build the tree from the bundle (control files under .vmm/ kept aside). */
void vfs_init(const u8 *bundle, u64 size);
struct node *vfs_new_node(struct node *dir, const char *name, u64 len, u8 kind, u32 perm);
struct node *vfs_child(struct node *dir, const char *name, u64 len);
void vfs_unlink(struct node *n);
/* Unlink, and free once nothing has it open (opens == 0). */
void vfs_remove(struct node *n);
void vfs_release(struct node *n);
/*
 * Walk `path` from `start`.  With want_parent, stop before the last component
 * and return it in last (the result is its directory).  Symlinks are followed
 * in the middle, and at the end when follow is set.  0 or -errno.
 */
int vfs_walk(struct node *start, const char *path, bool follow, bool want_parent,
             struct node **out, char *last);
bool vfs_grow(struct node *n, u64 need);
s64 vfs_read(struct node *n, u8 *buf, u64 len, u64 pos);
s64 vfs_write(struct node *n, const u8 *buf, u64 len, u64 pos);

#endif

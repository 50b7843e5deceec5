/*
 * lx_vfs.c - the program's file tree.
 *
 * The bundle's members form a read-only tree whose file data stays where the
 * bundle lies in RAM (no copies).  /tmp and /out are writable directories in
 * guest RAM.  /dev/null, /dev/zero, /dev/urandom and /proc/self/exe (a
 * symlink to the program) are made here.  Members under .vmm/ are the
 * bundle's control files: kept aside, not visible to the program.  Also
 * here: /out serialised as a ustar archive.
 */
#include "lx_vfs.h"
#include "lib.h"

#define MAX_LINKS   8

struct node *vfs_root, *vfs_cwd;
u64 vfs_next_ino = 1;

struct ctl_file {
    char name[16];
    const u8 *data;
    u64 size;
};
static struct ctl_file ctl[8];
static unsigned nctl;

/* Freed nodes are reused, so create/unlink loops run in bounded memory. */
static struct node *free_nodes;

/* ---- tree ------------------------------------------------------------ */

struct node *vfs_new_node(struct node *dir, const char *name, u64 len, u8 kind, u32 perm)
{
    struct node *n = free_nodes;
    if (n)
        free_nodes = n->free_next;
    else
        n = lx_kalloc(sizeof(*n));
    if (!n)
        return NULL;
    memset(n, 0, sizeof(*n));
    if (len > NAME_MAX)
        len = NAME_MAX;
    memcpy(n->name, name, len);
    n->kind = kind;
    n->perm = perm;
    n->ino = vfs_next_ino++;
    n->mtime_ns = lx_realtime_ns();
    n->parent = dir ? dir : n;
    if (dir) {                  /* appended: listings keep creation order */
        n->writable = dir->writable;
        struct node **pp = &dir->child;
        while (*pp)
            pp = &(*pp)->next;
        *pp = n;
    }
    return n;
}

struct node *vfs_child(struct node *dir, const char *name, u64 len)
{
    for (struct node *c = dir->child; c; c = c->next)
        if (strlen(c->name) == len && !memcmp(c->name, name, len))
            return c;
    return NULL;
}

void vfs_unlink(struct node *n)
{
    struct node **pp = &n->parent->child;
    while (*pp && *pp != n)
        pp = &(*pp)->next;
    if (*pp)
        *pp = n->next;
    n->next = NULL;
}

/* An unlinked node goes when nothing has it open any more. */
void vfs_release(struct node *n)
{
    if (!n->gone || n->opens)
        return;
    if (n->cap)
        lx_kpages_free(n->data, n->cap);
    n->data = NULL;
    n->cap = n->size = 0;
    n->free_next = free_nodes;
    free_nodes = n;
}

void vfs_remove(struct node *n)
{
    vfs_unlink(n);
    n->gone = true;
    vfs_release(n);
}

int vfs_walk(struct node *start, const char *path, bool follow, bool want_parent,
                struct node **out, char *last)
{
    char buf[PATH_MAX];
    int links = 0;
    u64 plen = strnlen(path, PATH_MAX);
    if (plen >= PATH_MAX)
        return -ENAMETOOLONG;
    memcpy(buf, path, plen + 1);
    struct node *cur = buf[0] == '/' ? vfs_root : start;
    char *p = buf;
restart:
    for (;;) {
        while (*p == '/')
            p++;
        if (!*p) {
            if (want_parent) {
                last[0] = '.';
                last[1] = 0;
            }
            *out = cur;
            return 0;
        }
        char *e = p;
        while (*e && *e != '/')
            e++;
        u64 len = (u64)(e - p);
        if (len > NAME_MAX)
            return -ENAMETOOLONG;
        char *q = e;
        while (*q == '/')
            q++;
        bool is_last = !*q;
        if (cur->kind != N_DIR)
            return -ENOTDIR;
        if (is_last && want_parent) {
            memcpy(last, p, len);
            last[len] = 0;
            *out = cur;
            return 0;
        }
        struct node *next;
        if (len == 1 && p[0] == '.')
            next = cur;
        else if (len == 2 && p[0] == '.' && p[1] == '.')
            next = cur->parent;
        else
            next = vfs_child(cur, p, len);
        if (!next)
            return -ENOENT;
        if (next->kind == N_LNK && (!is_last || follow)) {
            if (++links > MAX_LINKS)
                return -ELOOP;
            u64 tl = strlen(next->link), rl = strlen(q);
            if (tl + 1 + rl + 1 > PATH_MAX)
                return -ENAMETOOLONG;
            char tmp[PATH_MAX];
            memcpy(tmp, next->link, tl);
            tmp[tl] = '/';
            memcpy(tmp + tl + 1, q, rl + 1);
            memcpy(buf, tmp, tl + rl + 2);
            p = buf;
            if (buf[0] == '/')
                cur = vfs_root;
            goto restart;
        }
        cur = next;
        p = q;
    }
}

static struct node *vfs_ensure_dir(const char *path, u64 len)
{
    struct node *cur = vfs_root;
    u64 i = 0;
    while (i < len) {
        while (i < len && path[i] == '/')
            i++;
        u64 s = i;
        while (i < len && path[i] != '/')
            i++;
        if (i == s)
            break;
        if (i - s == 1 && path[s] == '.')
            continue;
        struct node *c = vfs_child(cur, path + s, i - s);
        if (!c)
            c = vfs_new_node(cur, path + s, i - s, N_DIR, 0755);
        if (!c || c->kind != N_DIR)
            return NULL;
        cur = c;
    }
    return cur;
}

static u64 octal(const char *s, unsigned n)
{
    u64 v = 0;
    for (unsigned i = 0; i < n && s[i]; i++) {
        if (s[i] == ' ')
            continue;
        if (s[i] < '0' || s[i] > '7')
            break;
        v = v * 8 + (u64)(s[i] - '0');
    }
    return v;
}

static void add_member(const char *hdr, const u8 *data, u64 size)
{
    char full[NAME_MAX * 2 + 2];
    u64 n = 0;
    u64 pl = strnlen(hdr + 345, 155);
    if (pl) {
        memcpy(full, hdr + 345, pl);
        full[pl] = '/';
        n = pl + 1;
    }
    u64 nl = strnlen(hdr, 100);
    memcpy(full + n, hdr, nl);
    n += nl;
    full[n] = 0;
    const char *name = full;
    while (*name == '/' || (name[0] == '.' && name[1] == '/'))
        name += name[0] == '.' ? 2 : 1;
    u64 len = strlen(name);
    while (len && name[len - 1] == '/')
        len--;
    if (!len)
        return;
    char type = hdr[156] ? hdr[156] : '0';
    if (len > 5 && !memcmp(name, ".vmm/", 5)) {
        if (nctl < ARRAY_SIZE(ctl) && len - 5 < sizeof(ctl[0].name)) {
            memcpy(ctl[nctl].name, name + 5, len - 5);
            ctl[nctl].data = data;
            ctl[nctl].size = size;
            nctl++;
        }
        return;
    }
    u64 slash = len;
    while (slash && name[slash - 1] != '/')
        slash--;
    struct node *dir = vfs_ensure_dir(name, slash);
    if (!dir)
        return;
    const char *base = name + slash;
    u64 blen = len - slash;
    struct node *old = vfs_child(dir, base, blen);
    u32 perm = (u32)octal(hdr + 100, 8) & 07777;
    if (type == '5') {
        struct node *d = old ? old : vfs_new_node(dir, base, blen, N_DIR, perm);
        if (d)
            d->perm = perm;
        return;
    }
    if (old && old->kind != N_DIR)
        vfs_remove(old);       /* the last member of a name wins */
    else if (old)
        return;
    struct node *f = NULL;
    if (type == '0' || type == '7') {
        f = vfs_new_node(dir, base, blen, N_REG, perm);
        if (f) {
            f->data = (u8 *)data;
            f->size = size;
        }
    } else if (type == '2') {
        f = vfs_new_node(dir, base, blen, N_LNK, 0777);
        if (f) {
            u64 ll = strnlen(hdr + 157, 100);
            f->link = lx_kalloc(ll + 1);
            if (f->link) {
                memcpy(f->link, hdr + 157, ll);
                f->link[ll] = 0;
            }
        }
    } else if (type == '1') {
        struct node *t;
        char target[101];
        u64 ll = strnlen(hdr + 157, 100);
        memcpy(target, hdr + 157, ll);
        target[ll] = 0;
        if (vfs_walk(vfs_root, target, true, false, &t, NULL) == 0 && t->kind == N_REG) {
            f = vfs_new_node(dir, base, blen, N_REG, perm);
            if (f) {
                f->data = t->data;
                f->size = t->size;
            }
        }
    }
    if (f)
        f->mtime_ns = octal(hdr + 136, 12) * 1000000000ull;
}

void vfs_init(const u8 *bundle, u64 size)
{
    vfs_root = vfs_new_node(NULL, "", 0, N_DIR, 0755);
    vfs_cwd = vfs_root;
    u64 off = 0;
    while (off + 512 <= size) {
        const char *h = (const char *)bundle + off;
        if (!h[0])
            break;
        u64 fsize = octal(h + 124, 12);
        u64 data_off = off + 512;
        if (fsize > size - data_off)
            break;
        add_member(h, bundle + data_off, fsize);
        off = data_off + ((fsize + 511) & ~511ull);
    }
    struct node *tmp = vfs_ensure_dir("tmp", 3), *out = vfs_ensure_dir("out", 3);
    if (tmp) {
        tmp->writable = true;
        tmp->perm = 01777;
    }
    if (out)
        out->writable = true;
    struct node *dev = vfs_ensure_dir("dev", 3);
    if (dev) {
        if (!vfs_child(dev, "null", 4))
            vfs_new_node(dev, "null", 4, N_NULL, 0666);
        if (!vfs_child(dev, "zero", 4))
            vfs_new_node(dev, "zero", 4, N_ZERO, 0666);
        if (!vfs_child(dev, "urandom", 7))
            vfs_new_node(dev, "urandom", 7, N_RANDOM, 0666);
        if (!vfs_child(dev, "random", 6))
            vfs_new_node(dev, "random", 6, N_RANDOM, 0666);
    }
}

/* Called once lx_exec_path and the options are known. */
void lx_fs_late_init(void);
void lx_fs_late_init(void)
{
    struct node *self = vfs_ensure_dir("proc/self", 9);
    if (self && !vfs_child(self, "exe", 3)) {
        struct node *l = vfs_new_node(self, "exe", 3, N_LNK, 0777);
        if (l)
            l->link = lx_exec_path;
    }
    struct node *c;
    if (vfs_walk(vfs_root, lx_opts.cwd, true, false, &c, NULL) == 0 && c->kind == N_DIR)
        vfs_cwd = c;
}

const u8 *lx_fs_file(const char *path, u64 *size)
{
    if (!strncmp(path, "/.vmm/", 6)) {
        for (unsigned i = 0; i < nctl; i++)
            if (!strcmp(ctl[i].name, path + 6)) {
                *size = ctl[i].size;
                return ctl[i].data;
            }
        return NULL;
    }
    struct node *n;
    if (vfs_walk(vfs_root, path, true, false, &n, NULL) != 0 || n->kind != N_REG)
        return NULL;
    *size = n->size;
    return n->data;
}

/* ---- file data -------------------------------------------------------- */

bool vfs_grow(struct node *n, u64 need)
{
    if (need <= n->cap)
        return true;
    u64 cap = n->cap ? n->cap * 2 : 4096;
    while (cap < need)
        cap *= 2;
    u8 *d = lx_kpages(cap);
    if (!d)
        return false;
    lx_copy(d, n->data, n->size);
    if (n->cap)
        lx_kpages_free(n->data, n->cap);
    n->data = d;
    n->cap = cap;
    return true;
}

s64 vfs_read(struct node *n, u8 *buf, u64 len, u64 pos)
{
    switch (n->kind) {
    case N_DIR:
        return -EISDIR;
    case N_NULL:
        return 0;
    case N_ZERO:
        memset(buf, 0, len);
        return (s64)len;
    case N_RANDOM:
        lx_random(buf, len);
        return (s64)len;
    default:
        break;
    }
    if (pos >= n->size)
        return 0;
    if (len > n->size - pos)
        len = n->size - pos;
    lx_copy(buf, n->data + pos, len);
    return (s64)len;
}

s64 vfs_write(struct node *n, const u8 *buf, u64 len, u64 pos)
{
    if (n->kind == N_NULL || n->kind == N_ZERO || n->kind == N_RANDOM)
        return (s64)len;
    if (n->kind != N_REG)
        return -EINVAL;
    if (!n->writable)
        return -EROFS;
    if (pos + len < pos || pos + len > (1ull << 32))
        return -EFBIG;
    if (pos + len > n->size) {
        if (!vfs_grow(n, pos + len))
            return -ENOSPC;
        if (pos > n->size)
            memset(n->data + n->size, 0, pos - n->size);
        n->size = pos + len;
    }
    lx_copy(n->data + pos, buf, len);
    n->mtime_ns = lx_realtime_ns();
    return (s64)len;
}

/* ---- /out as a ustar archive ------------------------------------------ */

struct tar_out {
    u8 *buf;
    u64 cap, len;
    bool overflow;
};

static void put_octal(char *field, u64 width, u64 v)
{
    field[width - 1] = 0;
    for (u64 i = width - 1; i > 0; i--) {
        field[i - 1] = (char)('0' + (v & 7));
        v >>= 3;
    }
}

static void tar_emit(struct tar_out *t, const char *name, const struct node *n)
{
    u64 size = n->kind == N_REG ? n->size : 0;
    u64 need = 512 + ((size + 511) & ~511ull);
    if (t->overflow || need > t->cap - t->len || strlen(name) > 255) {
        t->overflow = true;
        return;
    }
    char *h = (char *)t->buf + t->len;
    memset(h, 0, 512);
    u64 nl = strlen(name);
    if (nl <= 100) {
        memcpy(h, name, nl);
    } else {                    /* split at a '/' into prefix and name */
        u64 cut = nl - 100;
        while (cut < nl && name[cut] != '/')
            cut++;
        if (cut >= nl || cut > 155) {
            t->overflow = true;
            return;
        }
        memcpy(h + 345, name, cut);
        memcpy(h, name + cut + 1, nl - cut - 1);
    }
    put_octal(h + 100, 8, n->perm & 07777);
    put_octal(h + 108, 8, 0);
    put_octal(h + 116, 8, 0);
    put_octal(h + 124, 12, size);
    put_octal(h + 136, 12, n->mtime_ns / 1000000000ull);
    h[156] = n->kind == N_DIR ? '5' : n->kind == N_LNK ? '2' : '0';
    if (n->kind == N_LNK)
        memcpy(h + 157, n->link, strnlen(n->link, 100));
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    u32 sum = 0;
    for (int i = 0; i < 512; i++)
        sum += (u8)h[i];
    put_octal(h + 148, 7, sum);
    h[155] = ' ';
    t->len += 512;
    if (size) {
        lx_copy(t->buf + t->len, n->data, size);
        memset(t->buf + t->len + size, 0, ((size + 511) & ~511ull) - size);
        t->len += (size + 511) & ~511ull;
    }
}

static void tar_dir(struct tar_out *t, const struct node *dir, char *prefix, u64 plen, int depth)
{
    if (depth > 32)
        return;
    for (const struct node *c = dir->child; c; c = c->next) {
        u64 nl = strlen(c->name);
        if (plen + nl + 2 >= PATH_MAX)
            continue;
        memcpy(prefix + plen, c->name, nl);
        prefix[plen + nl] = 0;
        if (c->kind == N_DIR) {
            prefix[plen + nl] = '/';
            prefix[plen + nl + 1] = 0;
            tar_emit(t, prefix, c);
            tar_dir(t, c, prefix, plen + nl + 1, depth + 1);
        } else if (c->kind == N_REG || c->kind == N_LNK) {
            tar_emit(t, prefix, c);
        }
    }
}

s64 lx_out_tar(u8 *buf, u64 cap)
{
    struct tar_out t = { buf, cap, 0, false };
    struct node *out = vfs_child(vfs_root, "out", 3);
    char prefix[PATH_MAX];
    prefix[0] = 0;
    if (out && out->kind == N_DIR)
        tar_dir(&t, out, prefix, 0, 0);
    if (t.overflow || cap - t.len < 1024)
        return -1;
    memset(buf + t.len, 0, 1024);
    return (s64)(t.len + 1024);
}

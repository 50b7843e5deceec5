/*
 * lx_fs.c - file descriptors and the file syscalls, over the tree in
 * lx_vfs.c: open descriptions shared by dup, stdio streams (lx_stdio.c),
 * pipes within the process, stat/statx/getdents64, poll/select.
 */
#include "lx_vfs.h"
#include "lib.h"

enum { F_NODE, F_STDIN, F_STDOUT, F_STDERR, F_PIPE_R, F_PIPE_W, F_EPOLL };

#define MAX_FDS     256
#define PIPE_SIZE   65536

#define O_ACCMODE   3
#define O_WRONLY    1
#define O_RDWR      2
#define O_CREAT     0x40
#define O_EXCL      0x80
#define O_TRUNC     0x200
#define O_APPEND    0x400
#define O_NONBLOCK  0x800
#define O_DIRECTORY 0x10000
#define O_NOFOLLOW  0x20000
#define O_CLOEXEC   0x80000
#define O_PATH      0x200000
#define O_TMPFILE   0x400000

#define AT_FDCWD            (-100)
#define AT_SYMLINK_NOFOLLOW 0x100
#define AT_REMOVEDIR        0x200
#define AT_EMPTY_PATH       0x1000

#define S_IFIFO 0010000
#define S_IFCHR 0020000
#define S_IFDIR 0040000
#define S_IFREG 0100000
#define S_IFLNK 0120000

struct pipe {
    struct pipe *free_next;
    u8 *buf;
    u64 head, len;
    u32 readers, writers;
};

struct ofile {
    struct ofile *free_next;
    u8 kind;
    u32 refs;
    u32 flags;
    struct node *node;
    u64 pos;
    struct pipe *pipe;
    void *priv;                 /* F_EPOLL: its instance (lx_epoll.c) */
};

struct fd_slot {
    struct ofile *f;
    bool cloexec;
};

static struct fd_slot fds[MAX_FDS];
static u32 cur_umask = 022;

/* Freed descriptions and pipes are reused: open/close loops stay bounded. */
static struct ofile *free_ofiles;
static struct pipe *free_pipes;

static struct ofile *alloc_ofile(void)
{
    struct ofile *f = free_ofiles;
    if (f)
        free_ofiles = f->free_next;
    else
        f = lx_kalloc(sizeof(*f));
    if (f)
        memset(f, 0, sizeof(*f));
    return f;
}

static void std_fd(int fd, u8 kind, u32 flags)
{
    struct ofile *f = alloc_ofile();
    f->kind = kind;
    f->refs = 1;
    f->flags = flags;
    fds[fd].f = f;
}

void lx_fs_init(const u8 *bundle, u64 size)
{
    vfs_init(bundle, size);
    std_fd(0, F_STDIN, 0);
    std_fd(1, F_STDOUT, O_WRONLY);
    std_fd(2, F_STDERR, O_WRONLY);
}

/* ---- descriptors ----------------------------------------------------- */

static struct ofile *get_file(s64 fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return NULL;
    return fds[fd].f;
}

static int alloc_fd(int from)
{
    for (int i = from < 0 ? 0 : from; i < MAX_FDS; i++)
        if (!fds[i].f)
            return i;
    return -EMFILE;
}

static void put_file(struct ofile *f)
{
    if (--f->refs)
        return;
    struct pipe *p = f->pipe;
    if (p) {
        if (f->kind == F_PIPE_R)
            p->readers--;
        else
            p->writers--;
        if (!p->readers && !p->writers) {
            lx_kpages_free(p->buf, PIPE_SIZE);
            p->buf = NULL;
            p->free_next = free_pipes;
            free_pipes = p;
        }
    }
    if (f->kind == F_NODE && f->node) {
        f->node->opens--;
        vfs_release(f->node);
    }
    if (f->kind == F_EPOLL)
        lx_epoll_release(f->priv);
    f->free_next = free_ofiles;
    free_ofiles = f;
}

static s64 do_close(s64 fd)
{
    struct ofile *f = get_file(fd);
    if (!f)
        return -EBADF;
    fds[fd].f = NULL;
    fds[fd].cloexec = false;
    put_file(f);
    return 0;
}

static int start_dir(s64 dirfd, const char *path, struct node **start)
{
    if (path[0] == '/' || (int)dirfd == AT_FDCWD) {
        *start = vfs_cwd;
        return 0;
    }
    struct ofile *f = get_file((int)dirfd);
    if (!f)
        return -EBADF;
    if (f->kind != F_NODE || f->node->kind != N_DIR)
        return -ENOTDIR;
    *start = f->node;
    return 0;
}

static int user_path(u64 addr, char *buf)
{
    if (!lx_user_ok(addr, 1))
        return -EFAULT;
    const char *s = (const char *)(uintptr_t)addr;
    u64 room = lx_ram_top() - addr;
    u64 n = strnlen(s, room < PATH_MAX ? room : PATH_MAX);
    if (n >= PATH_MAX)
        return -ENAMETOOLONG;
    if (n == room)
        return -EFAULT;
    memcpy(buf, s, n + 1);
    return 0;
}

static int lookup(s64 dirfd, u64 upath, bool follow, struct node **out, u64 flags)
{
    char path[PATH_MAX];
    int err = user_path(upath, path);
    if (err)
        return err;
    if (!path[0]) {
        if (!(flags & AT_EMPTY_PATH))
            return -ENOENT;
        struct ofile *f = get_file(dirfd);
        if (!f)
            return -EBADF;
        if (f->kind != F_NODE)
            return -EINVAL;
        *out = f->node;
        return 0;
    }
    struct node *start;
    if ((err = start_dir(dirfd, path, &start)))
        return err;
    return vfs_walk(start, path, follow, false, out, NULL);
}

static int lookup_parent(s64 dirfd, u64 upath, struct node **dir, char *last)
{
    char path[PATH_MAX];
    int err = user_path(upath, path);
    if (err)
        return err;
    if (!path[0])
        return -ENOENT;
    struct node *start;
    if ((err = start_dir(dirfd, path, &start)))
        return err;
    return vfs_walk(start, path, true, true, dir, last);
}


static s64 pipe_read(struct pipe *p, u8 *buf, u64 len)
{
    if (!p->len)
        return p->writers ? -EAGAIN : 0;   /* one thread: waiting would hang */
    u64 n = 0;
    while (n < len && p->len) {
        buf[n++] = p->buf[p->head];
        p->head = (p->head + 1) % PIPE_SIZE;
        p->len--;
    }
    return (s64)n;
}

static s64 pipe_write(struct pipe *p, const u8 *buf, u64 len)
{
    if (!p->readers)
        return -EPIPE;          /* SIGPIPE is raised by the caller */
    if (p->len == PIPE_SIZE)
        return -EAGAIN;
    u64 n = 0;
    while (n < len && p->len < PIPE_SIZE) {
        p->buf[(p->head + p->len) % PIPE_SIZE] = buf[n++];
        p->len++;
    }
    return (s64)n;
}

static s64 file_read(struct ofile *f, u8 *buf, u64 len, s64 pos)
{
    if ((f->flags & O_ACCMODE) == O_WRONLY || (f->flags & O_PATH))
        return -EBADF;
    switch (f->kind) {
    case F_STDIN:
        if (pos >= 0)
            return -ESPIPE;
        if (len && lx_thread_count() > 1 && !(f->flags & O_NONBLOCK) && !stream_poll(0))
            return lx_thread_wait_retry(0);     /* let the other threads run meanwhile */
        return stream_read(0, buf, len);
    case F_PIPE_R:
        if (pos >= 0)
            return -ESPIPE;
        /* Another thread may write: wait for it (one thread alone would
           wait forever, so it gets EAGAIN as before) */
        if (len && !f->pipe->len && f->pipe->writers && lx_thread_count() > 1 && !(f->flags & O_NONBLOCK))
            return lx_thread_wait_retry(0);
        return pipe_read(f->pipe, buf, len);
    case F_NODE: {
        s64 n = vfs_read(f->node, buf, len, pos >= 0 ? (u64)pos : f->pos);
        if (n > 0 && pos < 0)
            f->pos += (u64)n;
        return n;
    }
    default:
        return -EBADF;
    }
}

int lx_sigpipe_pending;
static s64 file_write(struct ofile *f, const u8 *buf, u64 len, s64 pos)
{
    if ((f->flags & O_ACCMODE) == 0 || (f->flags & O_PATH))
        return -EBADF;
    switch (f->kind) {
    case F_STDOUT:
    case F_STDERR:
        return pos >= 0 ? -ESPIPE : stream_write(f->kind == F_STDOUT ? 1 : 2, buf, len);
    case F_PIPE_W: {
        if (pos >= 0)
            return -ESPIPE;
        if (len && f->pipe->len == PIPE_SIZE && f->pipe->readers && lx_thread_count() > 1 &&
            !(f->flags & O_NONBLOCK))
            return lx_thread_wait_retry(0);     /* full: a reader thread may drain it */
        s64 n = pipe_write(f->pipe, buf, len);
        if (n == -EPIPE)
            lx_sigpipe_pending = 1;
        return n;
    }
    case F_NODE: {
        u64 at = pos >= 0 ? (u64)pos : ((f->flags & O_APPEND) ? f->node->size : f->pos);
        s64 n = vfs_write(f->node, buf, len, at);
        if (n > 0 && pos < 0)
            f->pos = at + (u64)n;
        return n;
    }
    default:
        return -EBADF;
    }
}

struct iovec {
    u64 base, len;
};

static s64 rw_vec(s64 fd, u64 uiov, u64 cnt, s64 pos, bool write)
{
    struct ofile *f = get_file(fd);
    if (!f)
        return -EBADF;
    if (cnt > 1024 || !lx_user_ok(uiov, cnt * sizeof(struct iovec)))
        return cnt > 1024 ? -EINVAL : -EFAULT;
    const struct iovec *iov = (const void *)(uintptr_t)uiov;
    s64 total = 0;
    for (u64 i = 0; i < cnt; i++) {
        if (!iov[i].len)
            continue;
        if (!lx_user_ok(iov[i].base, iov[i].len))
            return total ? total : -EFAULT;
        u8 *b = (u8 *)(uintptr_t)iov[i].base;
        s64 n = write ? file_write(f, b, iov[i].len, pos) : file_read(f, b, iov[i].len, pos);
        if (n < 0)
            return total ? total : n;
        total += n;
        if (pos >= 0)
            pos += n;
        if ((u64)n < iov[i].len)
            break;
    }
    return total;
}

static s64 rw(s64 fd, u64 ubuf, u64 len, s64 pos, bool write)
{
    struct ofile *f = get_file(fd);
    if (!f)
        return -EBADF;
    if (len > (1ull << 31))
        len = 1ull << 31;
    if (len && !lx_user_ok(ubuf, len))
        return -EFAULT;
    u8 *b = (u8 *)(uintptr_t)ubuf;
    return write ? file_write(f, b, len, pos) : file_read(f, b, len, pos);
}

static s64 do_open(s64 dirfd, u64 upath, u64 flags, u64 mode)
{
    struct node *n;
    int err;
    if ((flags & O_TMPFILE) == O_TMPFILE)
        return -EOPNOTSUPP;
    if (flags & O_CREAT) {
        struct node *dir;
        char last[NAME_MAX + 1];
        if ((err = lookup_parent(dirfd, upath, &dir, last)))
            return err;
        u64 ll = strlen(last);
        n = vfs_child(dir, last, ll);
        if (n && n->kind == N_LNK && !(flags & (O_EXCL | O_NOFOLLOW))) {
            if ((err = lookup(dirfd, upath, true, &n, 0)) && err != -ENOENT)
                return err;
            if (err == -ENOENT)
                return -EROFS;  /* a dangling link: keep it simple */
        }
        if (n && (flags & O_EXCL))
            return -EEXIST;
        if (!n) {
            if (!dir->writable)
                return -EROFS;
            if (!strcmp(last, ".") || !strcmp(last, ".."))
                return -EISDIR;
            n = vfs_new_node(dir, last, ll, N_REG, (u32)mode & 07777 & ~cur_umask);
            if (!n)
                return -ENOSPC;
        }
    } else if ((err = lookup(dirfd, upath, !(flags & O_NOFOLLOW), &n, 0))) {
        return err;
    }
    if (n->kind == N_LNK && !(flags & O_PATH))
        return -ELOOP;
    if ((flags & O_DIRECTORY) && n->kind != N_DIR)
        return -ENOTDIR;
    u32 acc = flags & O_ACCMODE;
    if (n->kind == N_DIR && acc != 0)
        return -EISDIR;
    if (acc != 0 && n->kind == N_REG && !n->writable)
        return -EROFS;
    if ((flags & O_TRUNC) && n->kind == N_REG && acc != 0)
        n->size = 0;
    int fd = alloc_fd(0);
    if (fd < 0)
        return fd;
    struct ofile *f = alloc_ofile();
    if (!f)
        return -ENOMEM;
    f->kind = F_NODE;
    f->refs = 1;
    n->opens++;
    f->flags = (u32)flags & ~O_CLOEXEC & ~O_CREAT & ~O_EXCL & ~O_TRUNC;
    f->node = n;
    fds[fd].f = f;
    fds[fd].cloexec = flags & O_CLOEXEC;
    return fd;
}

static s64 do_lseek(s64 fd, s64 off, u64 whence)
{
    struct ofile *f = get_file(fd);
    if (!f)
        return -EBADF;
    if (f->kind != F_NODE)
        return -ESPIPE;
    s64 base;
    switch (whence) {
    case 0: base = 0; break;
    case 1: base = (s64)f->pos; break;
    case 2: base = (s64)f->node->size; break;
    default: return -EINVAL;
    }
    if (base + off < 0)
        return -EINVAL;
    f->pos = (u64)(base + off);
    return (s64)f->pos;
}

struct kstat {
    u64 st_dev, st_ino, st_nlink;
    u32 st_mode, st_uid, st_gid, pad0;
    u64 st_rdev;
    s64 st_size, st_blksize, st_blocks;
    s64 st_atime, st_atime_nsec, st_mtime, st_mtime_nsec, st_ctime, st_ctime_nsec;
    s64 reserved[3];
};

static u32 node_mode(const struct node *n)
{
    static const u32 type[] = { S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFCHR, S_IFCHR };
    return type[n->kind] | n->perm;
}

static void fill_stat(struct kstat *st, const struct node *n, const struct ofile *f)
{
    memset(st, 0, sizeof(*st));
    st->st_dev = 1;
    st->st_blksize = 4096;
    st->st_nlink = 1;
    if (!n) {                   /* stdio or a pipe */
        st->st_mode = S_IFIFO | 0600;
        st->st_ino = 0x100 + f->kind;
        st->st_dev = 2;
        return;
    }
    st->st_ino = n->ino;
    st->st_mode = node_mode(n);
    st->st_nlink = n->kind == N_DIR ? 2 : 1;
    st->st_size = n->kind == N_LNK ? (s64)strlen(n->link) : n->kind == N_DIR ? 4096 : (s64)n->size;
    st->st_blocks = (st->st_size + 4095) / 4096 * 8;  /* 4 KiB units, as tmpfs */
    if (n->kind == N_NULL) st->st_rdev = 0x103;
    if (n->kind == N_ZERO) st->st_rdev = 0x105;
    if (n->kind == N_RANDOM) st->st_rdev = 0x109;
    st->st_atime = st->st_mtime = st->st_ctime = (s64)(n->mtime_ns / 1000000000ull);
    st->st_atime_nsec = st->st_mtime_nsec = st->st_ctime_nsec = (s64)(n->mtime_ns % 1000000000ull);
}

static s64 stat_common(s64 dirfd, u64 upath, u64 ubuf, u64 flags, bool follow)
{
    if (!lx_user_ok(ubuf, sizeof(struct kstat)))
        return -EFAULT;
    struct node *n;
    int err = lookup(dirfd, upath, follow && !(flags & AT_SYMLINK_NOFOLLOW), &n, flags);
    if (err == -EINVAL && (flags & AT_EMPTY_PATH)) {        /* stdio, pipes */
        fill_stat((struct kstat *)(uintptr_t)ubuf, NULL, get_file(dirfd));
        return 0;
    }
    if (err)
        return err;
    fill_stat((struct kstat *)(uintptr_t)ubuf, n, NULL);
    return 0;
}

static s64 do_fstat(s64 fd, u64 ubuf)
{
    struct ofile *f = get_file(fd);
    if (!f)
        return -EBADF;
    if (!lx_user_ok(ubuf, sizeof(struct kstat)))
        return -EFAULT;
    fill_stat((struct kstat *)(uintptr_t)ubuf, f->kind == F_NODE ? f->node : NULL, f);
    return 0;
}

struct statx_ts {
    s64 sec;
    u32 nsec;
    s32 reserved;
};
struct statx {
    u32 mask, blksize;
    u64 attributes;
    u32 nlink, uid, gid;
    u16 mode, spare0;
    u64 ino, size, blocks, attributes_mask;
    struct statx_ts atime, btime, ctime, mtime;
    u32 rdev_major, rdev_minor, dev_major, dev_minor;
    u64 spare2[14];
};

static s64 do_statx(s64 dirfd, u64 upath, u64 flags, u64 mask, u64 ubuf)
{
    (void)mask;
    struct kstat st;
    if (!lx_user_ok(ubuf, sizeof(struct statx)))
        return -EFAULT;
    struct node *n;
    int err = lookup(dirfd, upath, !(flags & AT_SYMLINK_NOFOLLOW), &n, flags);
    if (err == -EINVAL && (flags & AT_EMPTY_PATH))
        fill_stat(&st, NULL, get_file(dirfd));
    else if (err)
        return err;
    else
        fill_stat(&st, n, NULL);
    struct statx *sx = (struct statx *)(uintptr_t)ubuf;
    memset(sx, 0, sizeof(*sx));
    sx->mask = 0x7ff;           /* STATX_BASIC_STATS */
    sx->blksize = (u32)st.st_blksize;
    sx->nlink = (u32)st.st_nlink;
    sx->mode = (u16)st.st_mode;
    sx->ino = st.st_ino;
    sx->size = (u64)st.st_size;
    sx->blocks = (u64)st.st_blocks;
    sx->atime.sec = sx->mtime.sec = sx->ctime.sec = st.st_mtime;
    sx->atime.nsec = sx->mtime.nsec = sx->ctime.nsec = (u32)st.st_mtime_nsec;
    sx->rdev_major = (u32)(st.st_rdev >> 8);
    sx->rdev_minor = (u32)(st.st_rdev & 0xff);
    sx->dev_major = 0;
    sx->dev_minor = (u32)st.st_dev;
    return 0;
}

static s64 do_getdents64(s64 fd, u64 ubuf, u64 len)
{
    struct ofile *f = get_file(fd);
    if (!f)
        return -EBADF;
    if (f->kind != F_NODE || f->node->kind != N_DIR)
        return -ENOTDIR;
    if (!lx_user_ok(ubuf, len))
        return -EFAULT;
    u8 *out = (u8 *)(uintptr_t)ubuf;
    u64 used = 0, idx = 0;
    struct node *dir = f->node, *c = dir->child;
    for (;; idx++) {
        const char *name;
        u64 ino;
        u8 type;
        if (idx == 0) {
            name = ".";
            ino = dir->ino;
            type = 4;
        } else if (idx == 1) {
            name = "..";
            ino = dir->parent->ino;
            type = 4;
        } else {
            if (idx > 2 && c)
                c = c->next;
            if (!c)
                break;
            name = c->name;
            ino = c->ino;
            static const u8 dt[] = { 4, 8, 10, 2, 2, 2 };
            type = dt[c->kind];
        }
        if (idx < f->pos)
            continue;
        u64 nl = strlen(name);
        u64 reclen = (19 + nl + 1 + 7) & ~7ull;
        if (used + reclen > len) {
            if (!used)
                return -EINVAL;
            break;
        }
        u8 *e = out + used;
        memset(e, 0, reclen);
        memcpy(e, &ino, 8);
        s64 off = (s64)idx + 1;
        memcpy(e + 8, &off, 8);
        u16 rl = (u16)reclen;
        memcpy(e + 16, &rl, 2);
        e[18] = type;
        memcpy(e + 19, name, nl);
        used += reclen;
        f->pos = idx + 1;
    }
    return (s64)used;
}

static s64 do_readlink(s64 dirfd, u64 upath, u64 ubuf, u64 len)
{
    struct node *n;
    int err = lookup(dirfd, upath, false, &n, 0);
    if (err)
        return err;
    if (n->kind != N_LNK)
        return -EINVAL;
    if (!lx_user_ok(ubuf, len))
        return -EFAULT;
    u64 l = strlen(n->link);
    if (l > len)
        l = len;
    memcpy((void *)(uintptr_t)ubuf, n->link, l);
    return (s64)l;
}

static void node_path(const struct node *n, char *buf, u64 cap)
{
    char tmp[PATH_MAX];
    u64 pos = PATH_MAX - 1;
    tmp[pos] = 0;
    while (n != vfs_root && pos > 1) {
        u64 l = strlen(n->name);
        if (l + 1 > pos)
            break;
        pos -= l;
        memcpy(tmp + pos, n->name, l);
        tmp[--pos] = '/';
        n = n->parent;
    }
    if (pos == PATH_MAX - 1)
        tmp[--pos] = '/';
    u64 l = PATH_MAX - 1 - pos;
    if (l + 1 > cap)
        l = cap - 1;
    memcpy(buf, tmp + pos, l);
    buf[l] = 0;
}

static s64 do_getcwd(u64 ubuf, u64 size)
{
    char path[PATH_MAX];
    node_path(vfs_cwd, path, sizeof(path));
    u64 l = strlen(path) + 1;
    if (l > size)
        return -ERANGE;
    if (!lx_user_ok(ubuf, l))
        return -EFAULT;
    memcpy((void *)(uintptr_t)ubuf, path, l);
    return (s64)l;
}

static s64 do_mkdir(s64 dirfd, u64 upath, u64 mode)
{
    struct node *dir;
    char last[NAME_MAX + 1];
    int err = lookup_parent(dirfd, upath, &dir, last);
    if (err)
        return err;
    u64 ll = strlen(last);
    if (vfs_child(dir, last, ll) || !strcmp(last, ".") || !strcmp(last, ".."))
        return -EEXIST;
    if (!dir->writable)
        return -EROFS;
    return vfs_new_node(dir, last, ll, N_DIR, (u32)mode & 07777 & ~cur_umask) ? 0 : -ENOSPC;
}

static s64 do_unlink(s64 dirfd, u64 upath, u64 flags)
{
    struct node *dir;
    char last[NAME_MAX + 1];
    int err = lookup_parent(dirfd, upath, &dir, last);
    if (err)
        return err;
    struct node *n = vfs_child(dir, last, strlen(last));
    if (!n)
        return (!strcmp(last, ".") || !strcmp(last, "..")) ? -EINVAL : -ENOENT;
    if (flags & AT_REMOVEDIR) {
        if (n->kind != N_DIR)
            return -ENOTDIR;
        if (n->child)
            return -ENOTEMPTY;
    } else if (n->kind == N_DIR) {
        return -EISDIR;
    }
    if (!dir->writable)
        return -EROFS;
    if (n == vfs_cwd)
        return -EBUSY;
    vfs_remove(n);
    return 0;
}

static s64 do_rename(s64 olddirfd, u64 oldpath, s64 newdirfd, u64 newpath)
{
    struct node *od, *nd;
    char ol[NAME_MAX + 1], nl[NAME_MAX + 1];
    int err = lookup_parent(olddirfd, oldpath, &od, ol);
    if (err)
        return err;
    if ((err = lookup_parent(newdirfd, newpath, &nd, nl)))
        return err;
    struct node *n = vfs_child(od, ol, strlen(ol));
    if (!n)
        return -ENOENT;
    if (!od->writable || !nd->writable)
        return -EROFS;
    for (struct node *p = nd; ; p = p->parent) {    /* not into itself */
        if (p == n)
            return -EINVAL;
        if (p == vfs_root)
            break;
    }
    struct node *victim = vfs_child(nd, nl, strlen(nl));
    if (victim == n)
        return 0;
    if (victim) {
        if (victim->kind == N_DIR && (n->kind != N_DIR || victim->child))
            return n->kind != N_DIR ? -EISDIR : -ENOTEMPTY;
        if (victim->kind != N_DIR && n->kind == N_DIR)
            return -ENOTDIR;
        vfs_remove(victim);
    }
    vfs_unlink(n);
    memset(n->name, 0, sizeof(n->name));
    memcpy(n->name, nl, strlen(nl));
    n->parent = nd;
    struct node **pp = &nd->child;
    while (*pp)
        pp = &(*pp)->next;
    *pp = n;
    return 0;
}

static s64 do_dup(s64 oldfd, s64 newfd, u64 flags, int mode)
{
    struct ofile *f = get_file(oldfd);
    if (!f)
        return -EBADF;
    if (mode == 0) {                            /* dup, F_DUPFD */
        int fd = alloc_fd((int)newfd);
        if (fd < 0)
            return newfd >= MAX_FDS ? -EINVAL : fd;
        newfd = fd;
    } else {                                    /* dup2, dup3 */
        if (newfd < 0 || newfd >= MAX_FDS)
            return -EBADF;
        if (newfd == oldfd)
            return mode == 3 ? -EINVAL : newfd;
        if (fds[newfd].f)
            do_close(newfd);
    }
    f->refs++;
    fds[newfd].f = f;
    fds[newfd].cloexec = flags & O_CLOEXEC;
    return newfd;
}

static s64 do_fcntl(s64 fd, u64 cmd, u64 arg)
{
    struct ofile *f = get_file(fd);
    if (!f)
        return -EBADF;
    switch (cmd) {
    case 0: return do_dup(fd, (s64)arg, 0, 0);              /* F_DUPFD */
    case 1030: return do_dup(fd, (s64)arg, O_CLOEXEC, 0);   /* F_DUPFD_CLOEXEC */
    case 1: return fds[fd].cloexec ? 1 : 0;                 /* F_GETFD */
    case 2: fds[fd].cloexec = arg & 1; return 0;            /* F_SETFD */
    case 3: return f->flags | (f->kind == F_STDOUT || f->kind == F_STDERR ? O_WRONLY : 0); /* F_GETFL */
    case 4:                                                 /* F_SETFL */
        f->flags = (f->flags & ~(u32)(O_APPEND | O_NONBLOCK)) | ((u32)arg & (O_APPEND | O_NONBLOCK));
        return 0;
    default:
        return -EINVAL;
    }
}

static s64 do_pipe(u64 ufds, u64 flags)
{
    if (!lx_user_ok(ufds, 8))
        return -EFAULT;
    int r = alloc_fd(0);
    if (r < 0)
        return r;
    fds[r].f = (void *)1;       /* hold the slot while finding the second */
    int w = alloc_fd(0);
    fds[r].f = NULL;
    if (w < 0)
        return w;
    struct pipe *p = free_pipes;
    if (p)
        free_pipes = p->free_next;
    else
        p = lx_kalloc(sizeof(*p));
    struct ofile *fr = alloc_ofile(), *fw = alloc_ofile();
    if (!p || !fr || !fw || !(p->buf = lx_kpages(PIPE_SIZE))) {
        if (fr) { fr->free_next = free_ofiles; free_ofiles = fr; }
        if (fw) { fw->free_next = free_ofiles; free_ofiles = fw; }
        if (p) { p->free_next = free_pipes; free_pipes = p; }
        return -ENFILE;
    }
    p->head = p->len = 0;
    p->readers = p->writers = 1;
    *fr = (struct ofile){ .kind = F_PIPE_R, .refs = 1, .flags = 0, .pipe = p };
    *fw = (struct ofile){ .kind = F_PIPE_W, .refs = 1, .flags = O_WRONLY, .pipe = p };
    fds[r] = (struct fd_slot){ fr, flags & O_CLOEXEC };
    fds[w] = (struct fd_slot){ fw, flags & O_CLOEXEC };
    int *u = (int *)(uintptr_t)ufds;
    u[0] = r;
    u[1] = w;
    return 0;
}

static s64 do_sendfile(s64 out, s64 in, u64 uoff, u64 count)
{
    struct ofile *fo = get_file(out), *fi = get_file(in);
    if (!fo || !fi)
        return -EBADF;
    if (uoff && !lx_user_ok(uoff, 8))
        return -EFAULT;
    s64 *offp = uoff ? (s64 *)(uintptr_t)uoff : NULL;
    static u8 chunk[16384];
    s64 total = 0;
    while ((u64)total < count) {
        u64 want = count - (u64)total < sizeof(chunk) ? count - (u64)total : sizeof(chunk);
        s64 n = file_read(fi, chunk, want, offp ? *offp : -1);
        if (n <= 0)
            return total ? total : n;
        if (offp)
            *offp += n;
        s64 w = file_write(fo, chunk, (u64)n, -1);
        if (w < 0)
            return total ? total : w;
        total += w;
        if (w < n)
            break;
    }
    return total;
}

struct pollfd {
    s32 fd;
    s16 events, revents;
};
#define POLLIN 1
#define POLLOUT 4
#define POLLHUP 0x10
#define POLLNVAL 0x20

/* What poll would say of an open file now. */
static s16 file_ready(struct ofile *f)
{
    switch (f->kind) {
    case F_STDIN: return stream_poll(0) ? POLLIN : 0;
    case F_PIPE_R: return f->pipe->len ? POLLIN : (f->pipe->writers ? 0 : POLLHUP);
    case F_PIPE_W: return f->pipe->readers ? (f->pipe->len < PIPE_SIZE ? POLLOUT : 0) : POLLHUP;
    case F_EPOLL: return lx_epoll_ready(f->priv) ? POLLIN : 0;
    default: return POLLIN | POLLOUT;
    }
}

/* For lx_epoll.c: the readiness of fd, and its description (to notice the
   fd being closed and reused). */
s16 lx_fs_ready(s64 fd, const void **file)
{
    struct ofile *f = get_file(fd);
    *file = f;
    return f ? file_ready(f) : POLLNVAL;
}

/* A new descriptor of a kind kept elsewhere (an epoll instance): its fd. */
s64 lx_fs_new_epoll(void *priv, bool cloexec)
{
    int fd = alloc_fd(0);
    if (fd < 0)
        return fd;
    struct ofile *f = alloc_ofile();
    if (!f)
        return -ENFILE;
    f->kind = F_EPOLL;
    f->refs = 1;
    f->flags = O_RDWR;
    f->priv = priv;
    fds[fd] = (struct fd_slot){ f, cloexec };
    return fd;
}

/* The epoll instance behind fd, or NULL. */
void *lx_fs_epoll(s64 fd)
{
    struct ofile *f = get_file(fd);
    return f && f->kind == F_EPOLL ? f->priv : NULL;
}

static s64 do_poll_k(struct pollfd *p, u64 n, s64 timeout_ms);
static s64 do_poll(u64 ufds, u64 n, s64 timeout_ms)
{
    if (n > MAX_FDS * 4 || !lx_user_ok(ufds, n * sizeof(struct pollfd)))
        return n > MAX_FDS * 4 ? -EINVAL : -EFAULT;
    return do_poll_k((struct pollfd *)(uintptr_t)ufds, n, timeout_ms);
}

static s64 do_poll_k(struct pollfd *p, u64 n, s64 timeout_ms)
{
    u64 deadline = lx_monotonic_ns() + (timeout_ms > 0 ? (u64)timeout_ms * 1000000ull : 0);
    for (;;) {
        s64 ready = 0;
        bool waits_stdin = false;
        for (u64 i = 0; i < n; i++) {
            p[i].revents = 0;
            if (p[i].fd < 0)
                continue;
            struct ofile *f = get_file(p[i].fd);
            s16 ev = f ? file_ready(f) : POLLNVAL;
            waits_stdin |= f && f->kind == F_STDIN;
            p[i].revents = ev & (p[i].events | POLLHUP | POLLNVAL);
            ready += p[i].revents != 0;
        }
        if (ready || timeout_ms == 0)
            return ready;
        if (lx_thread_count() > 1) {
            /* Other threads may make an fd ready: wait among them, looking
               again each time they have run (the deadline is kept). */
            u64 dl = lx_thread_retry_deadline(timeout_ms > 0 ? deadline : 0);
            if (dl && lx_monotonic_ns() >= dl)
                return 0;
            return lx_thread_wait_retry(dl);
        }
        if (!waits_stdin) {     /* nothing else can change: just let time pass */
            if (timeout_ms > 0)
                lx_sleep_ns((u64)timeout_ms * 1000000ull);
            return timeout_ms > 0 ? 0 : -EAGAIN;
        }
        if (timeout_ms > 0 && lx_monotonic_ns() >= deadline)
            return 0;
        lx_sleep_ns(1000000);
    }
}

/* For mmap of a file: copy its bytes at off into dst. */
s64 lx_fs_mmap_read(int fd, void *dst, u64 len, u64 off);
s64 lx_fs_mmap_read(int fd, void *dst, u64 len, u64 off)
{
    struct ofile *f = get_file(fd);
    if (!f)
        return -EBADF;
    if (f->kind != F_NODE || (f->node->kind != N_REG && f->node->kind != N_ZERO))
        return -ENODEV;
    if ((f->flags & O_ACCMODE) == O_WRONLY)
        return -EACCES;
    return vfs_read(f->node, dst, len, off);
}

static s64 do_ftruncate(s64 fd, s64 len)
{
    struct ofile *f = get_file(fd);
    if (!f)
        return -EBADF;
    if (f->kind != F_NODE || f->node->kind != N_REG || len < 0)
        return -EINVAL;
    struct node *n = f->node;
    if (!n->writable)
        return -EROFS;
    if ((u64)len > n->size) {
        if (!vfs_grow(n, (u64)len))
            return -ENOSPC;
        memset(n->data + n->size, 0, (u64)len - n->size);
    }
    n->size = (u64)len;
    return 0;
}

static s64 do_symlink(u64 utarget, s64 dirfd, u64 upath)
{
    char target[PATH_MAX];
    int err = user_path(utarget, target);
    if (err)
        return err;
    struct node *dir;
    char last[NAME_MAX + 1];
    if ((err = lookup_parent(dirfd, upath, &dir, last)))
        return err;
    u64 ll = strlen(last);
    if (vfs_child(dir, last, ll) || !strcmp(last, ".") || !strcmp(last, ".."))
        return -EEXIST;
    if (!dir->writable)
        return -EROFS;
    u64 tl = strlen(target);
    char *copy = lx_kalloc(tl + 1);
    struct node *n = copy ? vfs_new_node(dir, last, ll, N_LNK, 0777) : NULL;
    if (!n)
        return -ENOSPC;
    memcpy(copy, target, tl + 1);
    n->link = copy;
    return 0;
}

static s64 do_truncate(u64 upath, s64 len)
{
    struct node *n;
    int err = lookup(AT_FDCWD, upath, true, &n, 0);
    if (err)
        return err;
    if (n->kind == N_DIR)
        return -EISDIR;
    struct ofile tmp = { .kind = F_NODE, .refs = 1, .node = n };
    int fd = alloc_fd(0);
    if (fd < 0)
        return fd;
    fds[fd].f = &tmp;
    s64 r = do_ftruncate(fd, len);
    fds[fd].f = NULL;
    return r;
}

/* struct statfs: one tmpfs-like file system for everything. */
static s64 do_statfs(u64 ubuf)
{
    u64 st[15];
    if (!lx_user_ok(ubuf, sizeof(st)))
        return -EFAULT;
    memset(st, 0, sizeof(st));
    st[0] = 0x01021994;         /* f_type: TMPFS_MAGIC */
    st[1] = 4096;               /* f_bsize */
    st[2] = lx_ram_top() / 4096;        /* f_blocks */
    st[3] = st[4] = st[2] / 2;  /* f_bfree, f_bavail */
    st[5] = 65536;              /* f_files */
    st[6] = 65536 - vfs_next_ino;   /* f_ffree */
    st[8] = NAME_MAX;           /* f_namelen */
    st[9] = 4096;               /* f_frsize */
    memcpy((void *)(uintptr_t)ubuf, st, sizeof(st));
    return 0;
}

/* select/pselect6 on top of poll: fd_sets of up to MAX_FDS bits. */
static s64 do_select(u64 nfds, u64 urd, u64 uwr, u64 uex, s64 timeout_ms)
{
    if (nfds > MAX_FDS)
        return -EINVAL;
    u64 bytes = (nfds + 63) / 64 * 8;
    u64 *sets[3] = { (u64 *)(uintptr_t)urd, (u64 *)(uintptr_t)uwr, (u64 *)(uintptr_t)uex };
    for (int i = 0; i < 3; i++)
        if (sets[i] && bytes && !lx_user_ok((u64)(uintptr_t)sets[i], bytes))
            return -EFAULT;
    struct pollfd pf[MAX_FDS];
    u64 n = 0;
    for (u64 fd = 0; fd < nfds; fd++) {
        s16 ev = 0;
        if (sets[0] && (sets[0][fd / 64] >> (fd % 64) & 1)) ev |= POLLIN;
        if (sets[1] && (sets[1][fd / 64] >> (fd % 64) & 1)) ev |= POLLOUT;
        if (!ev)
            continue;
        if (!get_file((s64)fd))
            return -EBADF;
        pf[n].fd = (s32)fd;
        pf[n].events = ev;
        n++;
    }
    s64 r = do_poll_k(pf, n, timeout_ms);
    if (r < 0)
        return r;
    for (int i = 0; i < 3; i++)
        if (sets[i])
            memset(sets[i], 0, bytes);
    s64 count = 0;
    for (u64 i = 0; i < n; i++) {
        u64 fd = (u64)pf[i].fd;
        if (sets[0] && (pf[i].revents & (POLLIN | POLLHUP))) {
            sets[0][fd / 64] |= 1ull << (fd % 64);
            count++;
        }
        if (sets[1] && (pf[i].revents & POLLOUT)) {
            sets[1][fd / 64] |= 1ull << (fd % 64);
            count++;
        }
    }
    return count;
}

static s64 do_access(s64 dirfd, u64 upath, u64 mode, u64 flags)
{
    struct node *n;
    int err = lookup(dirfd, upath, !(flags & AT_SYMLINK_NOFOLLOW), &n, flags);
    if (err)
        return err;
    if ((mode & 2) && !n->writable && n->kind != N_NULL)
        return -EROFS;
    if ((mode & 1) && n->kind == N_REG && !(n->perm & 0111))
        return -EACCES;
    return 0;
}

static s64 do_chdir(struct node *n)
{
    if (n->kind != N_DIR)
        return -ENOTDIR;
    vfs_cwd = n;
    return 0;
}

/* x86-64 syscall numbers handled here. */
s64 lx_fs_syscall(u64 nr, const u64 *a, bool *handled)
{
    struct node *n;
    s64 err;
    *handled = true;
    switch (nr) {
    case 0: return rw((s64)a[0], a[1], a[2], -1, false);                  /* read */
    case 1: return rw((s64)a[0], a[1], a[2], -1, true);                   /* write */
    case 2: return do_open(AT_FDCWD, a[0], a[1], a[2]);                   /* open */
    case 3: return do_close((s64)a[0]);                                   /* close */
    case 4: return stat_common(AT_FDCWD, a[0], a[1], 0, true);            /* stat */
    case 5: return do_fstat((s64)a[0], a[1]);                             /* fstat */
    case 6: return stat_common(AT_FDCWD, a[0], a[1], 0, false);           /* lstat */
    case 7: return do_poll(a[0], a[1], (s32)a[2]);                        /* poll */
    case 8: return do_lseek((s64)a[0], (s64)a[1], a[2]);                  /* lseek */
    case 16:                                                              /* ioctl */
        return get_file((s64)a[0]) ? -ENOTTY : -EBADF;
    case 17: return (s64)a[3] < 0 ? -EINVAL : rw((s64)a[0], a[1], a[2], (s64)a[3], false); /* pread64 */
    case 18: return (s64)a[3] < 0 ? -EINVAL : rw((s64)a[0], a[1], a[2], (s64)a[3], true);  /* pwrite64 */
    case 19: return rw_vec((s64)a[0], a[1], a[2], -1, false);             /* readv */
    case 20: return rw_vec((s64)a[0], a[1], a[2], -1, true);              /* writev */
    case 21: return do_access(AT_FDCWD, a[0], a[1], 0);                   /* access */
    case 22: return do_pipe(a[0], 0);                                     /* pipe */
    case 32: return do_dup((s64)a[0], 0, 0, 0);                           /* dup */
    case 33: return do_dup((s64)a[0], (s64)a[1], 0, 2);                   /* dup2 */
    case 40: return do_sendfile((s64)a[0], (s64)a[1], a[2], a[3]);        /* sendfile */
    case 72: return do_fcntl((s64)a[0], a[1], a[2]);                      /* fcntl */
    case 74: case 75:                                                     /* fsync, fdatasync */
        return get_file((s64)a[0]) ? 0 : -EBADF;
    case 77: return do_ftruncate((s64)a[0], (s64)a[1]);                   /* ftruncate */
    case 79: return do_getcwd(a[0], a[1]);                                /* getcwd */
    case 80:                                                              /* chdir */
        if ((err = lookup(AT_FDCWD, a[0], true, &n, 0)))
            return err;
        return do_chdir(n);
    case 81: {                                                            /* fchdir */
        struct ofile *f = get_file((s64)a[0]);
        if (!f)
            return -EBADF;
        return f->kind == F_NODE ? do_chdir(f->node) : -ENOTDIR;
    }
    case 82: return do_rename(AT_FDCWD, a[0], AT_FDCWD, a[1]);            /* rename */
    case 83: return do_mkdir(AT_FDCWD, a[0], a[1]);                       /* mkdir */
    case 84: return do_unlink(AT_FDCWD, a[0], AT_REMOVEDIR);              /* rmdir */
    case 85: return do_open(AT_FDCWD, a[0], O_CREAT | O_WRONLY | O_TRUNC, a[1]); /* creat */
    case 87: return do_unlink(AT_FDCWD, a[0], 0);                         /* unlink */
    case 89: return do_readlink(AT_FDCWD, a[0], a[1], a[2]);              /* readlink */
    case 90: case 91: case 92: case 93: case 94:                          /* chmod... lchown */
        return 0;
    case 95: { u32 old = cur_umask; cur_umask = (u32)a[0] & 0777; return old; } /* umask */
    case 217: return do_getdents64((s64)a[0], a[1], a[2]);                /* getdents64 */
    case 23: {                                                            /* select */
        s64 ms = -1;
        if (a[4]) {
            if (!lx_user_ok(a[4], 16))
                return -EFAULT;
            const s64 *tv = (const s64 *)(uintptr_t)a[4];
            ms = tv[0] * 1000 + tv[1] / 1000;
        }
        return do_select(a[0], a[1], a[2], a[3], ms);
    }
    case 270: {                                                           /* pselect6 */
        s64 ms = -1;
        if (a[4]) {
            if (!lx_user_ok(a[4], 16))
                return -EFAULT;
            const s64 *ts = (const s64 *)(uintptr_t)a[4];
            ms = ts[0] * 1000 + ts[1] / 1000000;
        }
        return do_select(a[0], a[1], a[2], a[3], ms);
    }
    case 76: return do_truncate(a[0], (s64)a[1]);                         /* truncate */
    case 88: return do_symlink(a[0], AT_FDCWD, a[1]);                     /* symlink */
    case 266: return do_symlink(a[0], (s64)a[1], a[2]);                   /* symlinkat */
    case 86: case 265: return -EPERM;                                     /* link, linkat: no hard links */
    case 137: {                                                           /* statfs */
        if ((err = lookup(AT_FDCWD, a[0], true, &n, 0)))
            return err;
        return do_statfs(a[1]);
    }
    case 138: return get_file((s64)a[0]) ? do_statfs(a[1]) : -EBADF;      /* fstatfs */
    case 221: return get_file((s64)a[0]) ? 0 : -EBADF;                    /* fadvise64 */
    case 285: {                                                           /* fallocate */
        struct ofile *f = get_file((s64)a[0]);
        if (!f)
            return -EBADF;
        if (a[1] || f->kind != F_NODE)
            return -EOPNOTSUPP;
        if (f->node->size >= a[2] + a[3])
            return 0;
        return do_ftruncate((s64)a[0], (s64)(a[2] + a[3]));
    }
    case 162: case 306: return 0;                                         /* sync, syncfs */
    case 257: return do_open((s64)a[0], a[1], a[2], a[3]);                /* openat */
    case 258: return do_mkdir((s64)a[0], a[1], a[2]);                     /* mkdirat */
    case 262: return stat_common((s64)a[0], a[1], a[2], a[3], true);      /* newfstatat */
    case 263: return do_unlink((s64)a[0], a[1], a[2]);                    /* unlinkat */
    case 264: return do_rename((s64)a[0], a[1], (s64)a[2], a[3]);         /* renameat */
    case 267: return do_readlink((s64)a[0], a[1], a[2], a[3]);            /* readlinkat */
    case 268: case 260: case 280:                                         /* fchmodat, fchownat, utimensat */
        return 0;
    case 269: return do_access((s64)a[0], a[1], a[2], 0);                 /* faccessat */
    case 271: {                                                           /* ppoll */
        s64 ms = -1;
        if (a[2]) {
            if (!lx_user_ok(a[2], 16))
                return -EFAULT;
            const s64 *ts = (const s64 *)(uintptr_t)a[2];
            ms = ts[0] * 1000 + ts[1] / 1000000;
        }
        return do_poll(a[0], a[1], ms);
    }
    case 292: return do_dup((s64)a[0], (s64)a[1], a[2], 3);               /* dup3 */
    case 293: return do_pipe(a[0], a[1]);                                 /* pipe2 */
    case 295: return rw_vec((s64)a[0], a[1], a[2], (s64)a[3], false);     /* preadv */
    case 296: return rw_vec((s64)a[0], a[1], a[2], (s64)a[3], true);      /* pwritev */
    case 316: return a[4] ? -EINVAL : do_rename((s64)a[0], a[1], (s64)a[2], a[3]); /* renameat2 */
    case 332: return do_statx((s64)a[0], a[1], a[2], a[3], a[4]);         /* statx */
    case 439: return do_access((s64)a[0], a[1], a[2], a[3]);              /* faccessat2 */
    default:
        *handled = false;
        return -ENOSYS;
    }
}

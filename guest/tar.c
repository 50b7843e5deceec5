/* tar.c - a ustar archive on a virtio-blk disk (see tar.h). */
#include "tar.h"
#include "alloc.h"
#include "lib.h"
#include "virtio_blk.h"

/* POSIX.1-1988 ustar header block. */
struct ustar_header {
    char name[100];
    char mode[8];
    char uid[8];
    char gid[8];
    char size[12];
    char mtime[12];
    char chksum[8];
    char typeflag;
    char linkname[100];
    char magic[6];              /* "ustar\0" (GNU: "ustar " + version " \0") */
    char version[2];
    char uname[32];
    char gname[32];
    char devmajor[8];
    char devminor[8];
    char prefix[155];
    char pad[12];
};
_Static_assert(sizeof(struct ustar_header) == TAR_BLOCK, "ustar header is one block");

#define CHKSUM_OFFSET   148
#define CHKSUM_BYTES    8
#define PAX_MAX         1024    /* pax header data we look at */

/* ---- a 64 KiB read cache: one request instead of one per header -------- */

#define CACHE_SECTORS 128

static u8 cache_buf[CACHE_SECTORS * TAR_BLOCK] __attribute__((aligned(PAGE_SIZE)));
static struct {
    bool valid;
    unsigned disk;
    u64 first;                  /* sector in cache_buf[0] */
    u64 count;
} cache;

static void cache_invalidate(void)
{
    cache.valid = false;
}

/* One sector of the disk, or NULL with *err set. */
static const u8 *cache_sector(unsigned disk, u64 sector, int *err)
{
    if (!cache.valid || cache.disk != disk || sector < cache.first ||
        sector >= cache.first + cache.count) {
        const struct blk_info *info = blk_get_info(disk);
        u64 first = sector - sector % CACHE_SECTORS;
        if (!info || sector >= info->capacity) {
            *err = BLK_E_RANGE;
            return NULL;
        }
        u64 count = info->capacity - first;
        if (count > CACHE_SECTORS)
            count = CACHE_SECTORS;
        cache.valid = false;
        int e = blk_read(disk, first, cache_buf, count);
        if (e) {
            *err = e;
            return NULL;
        }
        cache.valid = true;
        cache.disk = disk;
        cache.first = first;
        cache.count = count;
    }
    return cache_buf + (sector - cache.first) * TAR_BLOCK;
}

/* Copy `len` bytes starting at `sector` into buf. */
static int read_bytes(unsigned disk, u64 sector, void *buf, size_t len)
{
    u8 *out = buf;
    int err = 0;

    while (len) {
        const u8 *p = cache_sector(disk, sector++, &err);
        if (!p)
            return err;
        size_t n = len < TAR_BLOCK ? len : TAR_BLOCK;
        memcpy(out, p, n);
        out += n;
        len -= n;
    }
    return TAR_OK;
}

/* ---- header fields ------------------------------------------------------ */

/* Octal number, as tar writes it: leading spaces, digits, then NUL/spaces. */
static bool parse_octal(const char *field, size_t width, u64 *val)
{
    size_t i = 0;
    u64 v = 0;

    while (i < width && field[i] == ' ')
        i++;
    for (; i < width && field[i] >= '0' && field[i] <= '7'; i++) {
        if (v >> 61)
            return false;
        v = v * 8 + (u64)(field[i] - '0');
    }
    for (; i < width && field[i]; i++)
        if (field[i] != ' ')
            return false;
    *val = v;
    return true;
}

/* A numeric field: octal, or GNU base-256 (first byte 0x80, big endian). */
static bool parse_number(const char *field, size_t width, u64 *val)
{
    if ((u8)field[0] != 0x80)
        return parse_octal(field, width, val);
    u64 v = 0;
    for (size_t i = 1; i < width; i++) {
        if (v >> 56)
            return false;
        v = v << 8 | (u8)field[i];
    }
    *val = v;
    return true;
}

/* Fill a field with width-1 octal digits and a NUL. */
static void put_octal(char *field, size_t width, u64 value)
{
    field[width - 1] = '\0';
    for (size_t i = width - 1; i-- > 0;) {
        field[i] = (char)('0' + (value & 7));
        value >>= 3;
    }
}

/* Sums of the header with the checksum field read as spaces; tar has used
   both unsigned and signed bytes, so readers accept either. */
static void header_sums(const u8 *block, u64 *unsigned_sum, s64 *signed_sum)
{
    u64 u = 0;
    s64 s = 0;

    for (size_t i = 0; i < TAR_BLOCK; i++) {
        u8 c = i >= CHKSUM_OFFSET && i < CHKSUM_OFFSET + CHKSUM_BYTES ? ' ' : block[i];
        u += c;
        s += (signed char)c;
    }
    *unsigned_sum = u;
    *signed_sum = s;
}

static bool checksum_ok(const struct ustar_header *h)
{
    u64 stored, u;
    s64 s;

    if (!parse_octal(h->chksum, sizeof(h->chksum), &stored))
        return false;
    header_sums((const u8 *)h, &u, &s);
    return stored == u || (s >= 0 && stored == (u64)s);
}

static bool all_zero(const u8 *block)
{
    for (size_t i = 0; i < TAR_BLOCK; i++)
        if (block[i])
            return false;
    return true;
}

/* Copy a fixed-width, maybe unterminated field as a C string. */
static size_t copy_field(char *dst, size_t room, const char *field, size_t width)
{
    size_t n = strnlen(field, width);
    if (n > room - 1)
        n = room - 1;
    memcpy(dst, field, n);
    dst[n] = '\0';
    return n;
}

/* The full name: prefix "/" name, when the header is POSIX ustar. */
static void header_name(const struct ustar_header *h, char *name)
{
    size_t n = 0;

    if (!memcmp(h->magic, "ustar\0", 6) && h->prefix[0]) {
        n = copy_field(name, TAR_PATH_MAX, h->prefix, sizeof(h->prefix));
        name[n++] = '/';
    }
    copy_field(name + n, TAR_PATH_MAX - n, h->name, sizeof(h->name));
}

/* The value of the "path" record in pax extended header data, if any. */
static bool pax_path(const char *data, size_t len, char *name)
{
    size_t pos = 0;

    /* Records are "<length> <key>=<value>\n", length counting everything. */
    while (pos < len) {
        u64 rec_len = 0;
        size_t p = pos;
        while (p < len && is_digit(data[p]) && rec_len <= len)
            rec_len = rec_len * 10 + (u64)(data[p++] - '0');
        if (p >= len || data[p] != ' ' || rec_len < p - pos + 2 || rec_len > len - pos)
            return false;
        const char *key = data + p + 1;
        size_t kv_len = pos + rec_len - 1 - (p + 1);     /* without the '\n' */
        if (kv_len > 5 && !memcmp(key, "path=", 5)) {
            size_t n = kv_len - 5;
            if (n > TAR_PATH_MAX - 1)
                n = TAR_PATH_MAX - 1;
            memcpy(name, key + 5, n);
            name[n] = '\0';
            return true;
        }
        pos += rec_len;
    }
    return false;
}

/* ---- walking the archive ------------------------------------------------ */

int tar_walk(unsigned disk, tar_visit_fn visit, void *ctx, struct tar_walk *w)
{
    const struct blk_info *info = blk_get_info(disk);
    static struct tar_member m;         /* 600 bytes: off the 64 KiB stack */
    static char long_name[TAR_PATH_MAX];
    static char pax[PAX_MAX];
    bool have_long_name = false;
    int err = 0;

    w->members = 0;
    w->end_sector = 0;
    w->end_marker = false;
    if (!info)
        return TAR_E_NO_DISK;
    cache_invalidate();

    for (u64 s = 0;; ) {
        w->end_sector = s;
        if (s >= info->capacity)
            return s ? TAR_OK : TAR_E_NO_ARCHIVE;  /* archive fills the disk */
        const u8 *block = cache_sector(disk, s, &err);
        if (!block)
            return err;
        if (all_zero(block)) {
            w->end_marker = true;
            return s ? TAR_OK : TAR_E_NO_ARCHIVE;
        }
        const struct ustar_header *h = (const void *)block;
        u64 size;
        if (!checksum_ok(h) || !parse_number(h->size, sizeof(h->size), &size))
            return s ? TAR_E_CORRUPT : TAR_E_NO_ARCHIVE;
        u64 data_blocks = size / TAR_BLOCK + (size % TAR_BLOCK != 0);
        if (data_blocks > info->capacity - s - 1)
            return TAR_E_CORRUPT;               /* data runs off the disk */
        char type = h->typeflag ? h->typeflag : '0';

        /* Metadata members describe the next member: remember, do not list. */
        if (type == 'L' || type == 'x') {
            size_t n = size < PAX_MAX ? (size_t)size : PAX_MAX;
            if ((err = read_bytes(disk, s + 1, pax, n)))
                return err;
            if (type == 'L') {
                size_t len = strnlen(pax, n < TAR_PATH_MAX ? n : TAR_PATH_MAX - 1);
                memcpy(long_name, pax, len);
                long_name[len] = '\0';
                have_long_name = true;
            } else if (pax_path(pax, n, long_name)) {
                have_long_name = true;
            }
            s += 1 + data_blocks;
            continue;
        }
        if (type == 'g' || type == 'K') {       /* global pax, GNU long link */
            s += 1 + data_blocks;
            continue;
        }

        if (have_long_name)
            memcpy(m.name, long_name, sizeof(m.name));
        else
            header_name(h, m.name);
        have_long_name = false;
        copy_field(m.linkname, sizeof(m.linkname), h->linkname, sizeof(h->linkname));
        size_t len = strlen(m.name);
        if (type == '0' && len && m.name[len - 1] == '/')
            type = '5';                         /* V7 directory */
        m.type = type;
        m.size = size;
        m.header_sector = s;
        m.data_sector = s + 1;
        w->members++;
        if (visit && !visit(&m, ctx))
            return TAR_OK;
        s += 1 + data_blocks;
    }
}

/* Names compare without a leading "./" (or "/") and trailing '/'. */
static const char *skip_dot_slash(const char *p)
{
    for (;;) {
        if (p[0] == '.' && p[1] == '/')
            p += 2;
        else if (p[0] == '/')
            p++;
        else
            return p;
    }
}

static bool same_name(const char *a, const char *b)
{
    a = skip_dot_slash(a);
    b = skip_dot_slash(b);
    size_t la = strlen(a), lb = strlen(b);
    while (la && a[la - 1] == '/')
        la--;
    while (lb && b[lb - 1] == '/')
        lb--;
    return la == lb && !memcmp(a, b, la);
}

struct find_ctx {
    const char *path;
    struct tar_member *found;
    bool any;
};

static bool find_visit(const struct tar_member *m, void *ctx)
{
    struct find_ctx *f = ctx;

    if (same_name(m->name, f->path)) {
        *f->found = *m;                 /* keep going: the last one wins */
        f->any = true;
    }
    return true;
}

int tar_find(unsigned disk, const char *path, struct tar_member *m)
{
    struct find_ctx f = { path, m, false };
    struct tar_walk w;

    int err = tar_walk(disk, find_visit, &f, &w);
    if (f.any)
        return TAR_OK;                  /* even if the archive is damaged later on */
    return err ? err : TAR_E_NOT_FOUND;
}

int tar_read_data(unsigned disk, const struct tar_member *m, tar_data_fn sink, void *ctx)
{
    u64 left = m->size;
    int err = 0;

    for (u64 s = m->data_sector; left; s++) {
        const u8 *p = cache_sector(disk, s, &err);
        if (!p)
            return err;
        size_t n = left < TAR_BLOCK ? (size_t)left : TAR_BLOCK;
        sink(p, n, ctx);
        left -= n;
    }
    return TAR_OK;
}

/* ---- appending ---------------------------------------------------------- */

static void fill_header(struct ustar_header *h, const char *path, u64 size)
{
    u64 sum;
    s64 unused;

    memset(h, 0, sizeof(*h));
    memcpy(h->name, path, strlen(path));        /* NUL-padded; 100 bytes: none */
    memcpy(h->mode, "0000644", 8);
    put_octal(h->uid, sizeof(h->uid), 0);
    put_octal(h->gid, sizeof(h->gid), 0);
    put_octal(h->size, sizeof(h->size), size);
    put_octal(h->mtime, sizeof(h->mtime), 0);   /* fixed: no wall clock here */
    h->typeflag = '0';
    memcpy(h->magic, "ustar", 6);               /* with its NUL */
    memcpy(h->version, "00", 2);
    memcpy(h->uname, "root", 5);
    memcpy(h->gname, "root", 5);
    put_octal(h->devmajor, sizeof(h->devmajor), 0);
    put_octal(h->devminor, sizeof(h->devminor), 0);
    header_sums((const u8 *)h, &sum, &unused);
    put_octal(h->chksum, 7, sum);               /* 6 digits, NUL, then a space */
    h->chksum[7] = ' ';
}

int tar_append(unsigned disk, const char *path, const void *data, size_t len)
{
    const struct blk_info *info = blk_get_info(disk);
    struct tar_walk w;
    size_t name_len = strlen(path);

    if (!info)
        return TAR_E_NO_DISK;
    if (!name_len || name_len > TAR_NAME_FIELD)
        return TAR_E_NAME;
    if (info->read_only)
        return TAR_E_READ_ONLY;
    int err = tar_walk(disk, NULL, NULL, &w);
    bool empty_disk = err == TAR_E_NO_ARCHIVE && w.end_marker;
    if (err && !empty_disk)
        return err;                     /* not ours to overwrite */
    if (!w.end_marker)
        return TAR_E_FULL;              /* the archive runs to the end of the disk */

    /* header, data padded to a block, two zero blocks (end of archive) */
    u64 blocks = 1 + (len + TAR_BLOCK - 1) / TAR_BLOCK + 2;
    if (blocks > info->capacity - w.end_sector)
        return TAR_E_FULL;
    alloc_mark_t mark = alloc_mark();
    u8 *buf = alloc_zeroed_pages(blocks * TAR_BLOCK);
    if (!buf)
        return TAR_E_NO_MEMORY;
    fill_header((struct ustar_header *)buf, path, len);
    memcpy(buf + TAR_BLOCK, data, len);
    err = blk_write(disk, w.end_sector, buf, blocks);
    alloc_release(mark);
    cache_invalidate();
    return err;
}

const char *tar_strerror(int err)
{
    switch (err) {
    case TAR_E_NO_ARCHIVE:  return "no ustar archive";
    case TAR_E_CORRUPT:     return "damaged archive (bad header)";
    case TAR_E_NOT_FOUND:   return "no such file";
    case TAR_E_NAME:        return "name must be 1 to 100 bytes";
    case TAR_E_READ_ONLY:   return "read-only";
    case TAR_E_FULL:        return "full";
    case TAR_E_NO_DISK:     return "no such disk";
    case TAR_E_NO_MEMORY:   return "out of memory";
    default:                return blk_strerror(err);
    }
}

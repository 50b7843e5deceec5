/* lib.c - memory/string helpers and number parsing. */
#include "lib.h"

/*
 * The build passes -fno-tree-loop-distribute-patterns so that gcc does not
 * turn these loops back into calls to themselves.
 */
void *memcpy(void *dst, const void *src, size_t n)
{
    u8 *d = dst;
    const u8 *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    u8 *d = dst;
    const u8 *s = src;
    if (d <= s || d >= s + n)
        return memcpy(dst, src, n);
    while (n--)
        d[n] = s[n];
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    u8 *d = dst;
    while (n--)
        *d++ = (u8)c;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const u8 *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x < *y ? -1 : 1;
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

size_t strnlen(const char *s, size_t max)
{
    size_t n = 0;
    while (n < max && s[n])
        n++;
    return n;
}

int strcmp(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return (u8)*a - (u8)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (; n; n--, a++, b++) {
        if (*a != *b)
            return (u8)*a - (u8)*b;
        if (!*a)
            break;
    }
    return 0;
}

static int digit_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return 99;
}

static bool parse_base(const char *s, const char **end, u64 *val, unsigned base)
{
    u64 v = 0;
    const char *p = s;
    int d;

    while ((d = digit_value(*p)) < (int)base) {
        if (v > (UINT64_MAX - (u64)d) / base)
            return false;                       /* overflow */
        v = v * base + (u64)d;
        p++;
    }
    if (p == s)
        return false;                           /* no digits */
    *val = v;
    if (end)
        *end = p;
    return true;
}

bool parse_uint(const char *s, const char **end, u64 *val)
{
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        return parse_base(s + 2, end, val, 16);
    return parse_base(s, end, val, 10);
}

bool parse_dec(const char *s, const char **end, u64 *val)
{
    return parse_base(s, end, val, 10);
}

bool parse_uint_full(const char *s, u64 *val)
{
    const char *end;
    return parse_uint(s, &end, val) && *end == '\0';
}

bool parse_dec_full(const char *s, u64 *val)
{
    const char *end;
    return parse_dec(s, &end, val) && *end == '\0';
}

bool parse_size(const char *s, const char **end, u64 *val)
{
    const char *p;
    u64 v;
    unsigned shift = 0;

    if (!parse_uint(s, &p, &v))
        return false;
    switch (*p) {
    case 'k': case 'K': shift = 10; p++; break;
    case 'm': case 'M': shift = 20; p++; break;
    case 'g': case 'G': shift = 30; p++; break;
    }
    if (shift && v > (UINT64_MAX >> shift))
        return false;
    *val = v << shift;
    if (end)
        *end = p;
    return true;
}

/* lib.h - a tiny libc subset. */
#ifndef GUEST_LIB_H
#define GUEST_LIB_H

#include "types.h"

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

static inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
static inline bool is_space(char c) { return c == ' ' || c == '\t'; }

/*
 * Number parsing.  parse_uint accepts "0x"/"0X" hex or decimal at s, stores
 * the value and the first unparsed character; it returns false when there is
 * no digit or the value does not fit in 64 bits.  parse_dec accepts decimal
 * only.  parse_uint_full/parse_dec_full also require the whole string.
 */
bool parse_uint(const char *s, const char **end, u64 *val);
bool parse_dec(const char *s, const char **end, u64 *val);
bool parse_uint_full(const char *s, u64 *val);
bool parse_dec_full(const char *s, u64 *val);
/* parse_uint plus an optional K/M/G suffix (either case), like Linux memparse */
bool parse_size(const char *s, const char **end, u64 *val);

#endif

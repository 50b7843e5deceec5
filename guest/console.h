/* console.h - COM1 16550A driver and buffered, printf-style output. */
#ifndef GUEST_CONSOLE_H
#define GUEST_CONSOLE_H

#include "types.h"

void uart_init(void);
/* One poll: a received byte (0-255), or -1 when LSR.DR is clear. */
int uart_getc(void);
void uart_write_raw(const char *p, size_t n); /* no newline translation */

/*
 * Output is buffered; "\n" goes out as "\r\n" and ends a burst (flush), so a
 * line costs one LSR read per 16 bytes plus one THR write per byte.
 */
void console_putc(char c);
void console_write(const char *s, size_t n);
void console_puts(const char *s);
/* Send what is buffered; returns true if anything was sent. */
bool console_flush(void);
/* True when the last byte queued or sent was a newline (or nothing yet). */
bool console_at_line_start(void);

/*
 * printf subset: %s %c %d %i %u %x %X %p %%, flags '-' and '0', width (also
 * '*'), precision for %s, length modifiers l, ll, z (h ignored).
 */
int kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int kvprintf(const char *fmt, va_list ap);
int ksnprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif

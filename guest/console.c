/* console.c - COM1 16550A driver (polling) and the formatter. */
#include "console.h"
#include "io.h"
#include "lib.h"

#define COM1        0x3f8
#define UART_RBR    0           /* receive buffer (read, DLAB=0) */
#define UART_THR    0           /* transmit holding (write, DLAB=0) */
#define UART_DLL    0           /* divisor low (DLAB=1) */
#define UART_IER    1
#define UART_DLM    1           /* divisor high (DLAB=1) */
#define UART_FCR    2
#define UART_LCR    3
#define UART_MCR    4
#define UART_LSR    5
#define LSR_DR      0x01
#define LSR_THRE    0x20
#define UART_FIFO   16

/*
 * Bytes that may still be written to THR without reading LSR: an LSR read
 * that shows THRE (FIFO empty) allows 16.  Every LSR read refreshes it, also
 * the ones made while polling for input, so echoes rarely need their own.
 */
static unsigned tx_credit;

static u8 uart_lsr(void)
{
    u8 lsr = inb(COM1 + UART_LSR);
    tx_credit = (lsr & LSR_THRE) ? UART_FIFO : 0;
    return lsr;
}

void uart_init(void)
{
    outb(COM1 + UART_IER, 0x00);        /* no interrupts: we poll */
    outb(COM1 + UART_LCR, 0x80);        /* DLAB */
    outb(COM1 + UART_DLL, 0x01);        /* 115200 baud */
    outb(COM1 + UART_DLM, 0x00);
    outb(COM1 + UART_LCR, 0x03);        /* 8N1 */
    outb(COM1 + UART_FCR, 0xc7);        /* FIFOs on and cleared, 14-byte trigger */
    outb(COM1 + UART_MCR, 0x0b);        /* DTR, RTS (host may send), OUT2 */
    tx_credit = 0;
}

int uart_getc(void)
{
    if (!(uart_lsr() & LSR_DR))
        return -1;
    return inb(COM1 + UART_RBR);
}

static void uart_tx(const char *p, size_t n)
{
    while (n) {
        if (!tx_credit && !(uart_lsr() & LSR_THRE)) {
            idle_us(50);                /* transmitter busy: do not spin */
            continue;
        }
        while (n && tx_credit) {
            outb(COM1 + UART_THR, (u8)*p++);
            n--;
            tx_credit--;
        }
    }
}

/* Bytes straight to the UART, after whatever the console has buffered. */
void uart_write_raw(const char *p, size_t n)
{
    console_flush();
    uart_tx(p, n);
}

/* ---- buffered console ------------------------------------------------- */

static char obuf[256];
static size_t olen;
static bool at_line_start = true;

bool console_flush(void)
{
    if (!olen)
        return false;
    uart_tx(obuf, olen);
    olen = 0;
    return true;
}

static void put_raw(char c)
{
    if (olen == sizeof(obuf))
        console_flush();
    obuf[olen++] = c;
}

void console_putc(char c)
{
    if (c == '\n') {
        put_raw('\r');
        put_raw('\n');
        at_line_start = true;
        console_flush();
        return;
    }
    put_raw(c);
    at_line_start = false;
}

void console_write(const char *s, size_t n)
{
    while (n--)
        console_putc(*s++);
}

void console_puts(const char *s)
{
    while (*s)
        console_putc(*s++);
}

bool console_at_line_start(void)
{
    return at_line_start;
}

/* ---- formatter -------------------------------------------------------- */

struct sink {
    void (*put)(struct sink *, char);
    char *buf;                  /* ksnprintf only */
    size_t size, pos;
    int count;
};

static void emit(struct sink *s, char c)
{
    s->put(s, c);
    s->count++;
}

static void emit_pad(struct sink *s, char c, int n)
{
    while (n-- > 0)
        emit(s, c);
}

static void fmt_num(struct sink *s, u64 v, bool neg, unsigned base, bool upper,
                    const char *prefix, int width, bool zero, bool left)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[24];
    int n = 0, plen = (int)strlen(prefix) + (neg ? 1 : 0);

    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);

    int pad = width - n - plen;
    if (!left && !zero)
        emit_pad(s, ' ', pad);
    if (neg)
        emit(s, '-');
    while (*prefix)
        emit(s, *prefix++);
    if (!left && zero)
        emit_pad(s, '0', pad);
    while (n)
        emit(s, tmp[--n]);
    if (left)
        emit_pad(s, ' ', pad);
}

static void format(struct sink *s, const char *fmt, va_list ap)
{
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            emit(s, *fmt);
            continue;
        }
        bool left = false, zero = false;
        int width = 0, prec = -1, lng = 0;

        for (;; fmt++) {
            if (fmt[1] == '-')
                left = true;
            else if (fmt[1] == '0')
                zero = true;
            else
                break;
        }
        fmt++;
        if (*fmt == '*') {
            width = va_arg(ap, int);
            if (width < 0) {
                left = true;
                width = -width;
            }
            fmt++;
        } else {
            while (is_digit(*fmt))
                width = width * 10 + (*fmt++ - '0');
        }
        if (*fmt == '.') {
            fmt++;
            prec = 0;
            if (*fmt == '*') {
                prec = va_arg(ap, int);
                fmt++;
            } else {
                while (is_digit(*fmt))
                    prec = prec * 10 + (*fmt++ - '0');
            }
        }
        for (;; fmt++) {
            if (*fmt == 'l' || *fmt == 'z')
                lng++;
            else if (*fmt != 'h')
                break;
        }

        switch (*fmt) {
        case 'd':
        case 'i': {
            s64 v = lng ? va_arg(ap, long) : va_arg(ap, int);
            u64 mag = v < 0 ? (u64)0 - (u64)v : (u64)v;
            fmt_num(s, mag, v < 0, 10, false, "", width, zero, left);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            u64 v = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);
            fmt_num(s, v, false, *fmt == 'u' ? 10 : 16, *fmt == 'X', "",
                    width, zero, left);
            break;
        }
        case 'p':
            fmt_num(s, (u64)(uintptr_t)va_arg(ap, void *), false, 16, false,
                    "0x", width, zero, left);
            break;
        case 'c': {
            char c = (char)va_arg(ap, int);
            if (!left)
                emit_pad(s, ' ', width - 1);
            emit(s, c);
            if (left)
                emit_pad(s, ' ', width - 1);
            break;
        }
        case 's': {
            const char *str = va_arg(ap, const char *);
            if (!str)
                str = "(null)";
            int len = (int)(prec >= 0 ? strnlen(str, (size_t)prec) : strlen(str));
            if (!left)
                emit_pad(s, ' ', width - len);
            for (int i = 0; i < len; i++)
                emit(s, str[i]);
            if (left)
                emit_pad(s, ' ', width - len);
            break;
        }
        case '%':
            emit(s, '%');
            break;
        case '\0':
            return;
        default:                        /* unknown: print it verbatim */
            emit(s, '%');
            emit(s, *fmt);
            break;
        }
    }
}

static void put_console(struct sink *s, char c)
{
    (void)s;
    console_putc(c);
}

int kvprintf(const char *fmt, va_list ap)
{
    struct sink s = { .put = put_console };
    format(&s, fmt, ap);
    return s.count;
}

int kprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = kvprintf(fmt, ap);
    va_end(ap);
    return n;
}

static void put_buf(struct sink *s, char c)
{
    if (s->pos + 1 < s->size)
        s->buf[s->pos++] = c;
}

int ksnprintf(char *buf, size_t size, const char *fmt, ...)
{
    struct sink s = { .put = put_buf, .buf = buf, .size = size };
    va_list ap;
    va_start(ap, fmt);
    format(&s, fmt, ap);
    va_end(ap);
    if (size)
        buf[s.pos] = '\0';
    return s.count;
}

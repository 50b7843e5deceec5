/*
 * lx_stdio.c - the program's stdin/stdout/stderr: the stream backend.
 *
 * This backend is COM1: stdout and stderr go to the UART byte for byte (no
 * newline translation), stdin comes from the UART until the host's input
 * ends, marked for now by Ctrl-D (0x04).  Trace lines, the /out archive
 * (base64, only with dumpout=1) and the outcome line go to the serial
 * console too, each on a line of its own.  The virtio-console backend
 * (ports stdin, stdout, stderr, vmm.control) replaces this one file.
 */
#include "lx.h"
#include "console.h"
#include "io.h"

#define CTRL_D 0x04

static bool stdin_eof;
static bool line_start = true;

void stream_init(void)
{
    stdin_eof = false;
    line_start = true;
}

s64 stream_write(int fd, const void *buf, u64 len)
{
    if (fd != 1 && fd != 2)
        return -EBADF;
    if (len) {
        console_flush();        /* console lines queued before stay in order */
        uart_write_raw(buf, len);
        line_start = ((const char *)buf)[len - 1] == '\n';
    }
    return (s64)len;
}

void stream_flush(void)
{
    console_flush();
}

static int pending = -1;        /* a byte seen by stream_poll */

bool stream_poll(int fd)
{
    if (fd != 0)
        return false;
    if (stdin_eof || pending >= 0)
        return true;
    pending = uart_getc();
    return pending >= 0;
}

s64 stream_read(int fd, void *buf, u64 len)
{
    if (fd != 0)
        return -EBADF;
    u8 *p = buf;
    u64 n = 0;
    if (stdin_eof || !len)
        return 0;
    /* Wait for the first byte, then take what has arrived. */
    while (n < len) {
        int c = pending;
        pending = -1;
        if (c < 0)
            c = uart_getc();
        if (c < 0) {
            if (n)
                break;
            idle_us(100000);    /* the VMM wakes us early when input arrives */
            continue;
        }
        if (c == CTRL_D) {
            stdin_eof = true;   /* sticky: later reads see EOF */
            break;
        }
        p[n++] = (u8)c;
        if (c == '\n')
            break;
    }
    return (s64)n;
}

/* Console lines must start on a line of their own, after program output. */
static void own_line(void)
{
    console_flush();
    if (!line_start) {
        console_putc('\n');
        line_start = true;
    }
}

void stream_trace(const char *line, u64 len)
{
    own_line();
    console_write(line, len);
    console_putc('\n');
}

bool stream_wants_out(void)
{
    return lx_opts.dumpout;
}

void stream_out_archive(const u8 *tar, u64 len)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    own_line();
    if (!len) {
        console_puts("vmm-out: too large\n");
        return;
    }
    console_puts("vmm-out: ");
    for (u64 i = 0; i < len; i += 3) {
        u32 v = (u32)tar[i] << 16;
        if (i + 1 < len) v |= (u32)tar[i + 1] << 8;
        if (i + 2 < len) v |= tar[i + 2];
        char q[4] = { b64[(v >> 18) & 63], b64[(v >> 12) & 63],
                      i + 1 < len ? b64[(v >> 6) & 63] : '=', i + 2 < len ? b64[v & 63] : '=' };
        console_write(q, 4);
    }
    console_putc('\n');
}

void stream_outcome_status(int status)
{
    own_line();
    kprintf("vmm-exit: status %d\n", status);
    console_flush();
}

void stream_outcome_signal(int sig, u64 addr)
{
    own_line();
    kprintf("vmm-exit: signal %d addr 0x%lx\n", sig, addr);
    console_flush();
}

void stream_outcome_cannot_execute(const char *why)
{
    own_line();
    kprintf("vmm-exit: cannot execute: %s\n", why);
    console_flush();
}

/*
 * lx_stdio.c - the program's stdin/stdout/stderr: the stream backend.
 *
 * This backend is COM1: stdout and stderr go to the UART byte for byte (no
 * newline translation), stdin comes from the UART until the host's input
 * ends, marked for now by Ctrl-D (0x04) on an empty read.  The virtio-console
 * backend replaces this one file.
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
        console_flush();        /* trace lines queued before stay in order */
        uart_write_raw(buf, len);
        line_start = ((const char *)buf)[len - 1] == '\n';
    }
    return (s64)len;
}

void stream_flush(void)
{
    console_flush();
}

bool stream_at_line_start(void)
{
    return line_start;
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

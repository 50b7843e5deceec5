/*
 * lx_stdio.c - the program's stdin/stdout/stderr: the stream backend.
 *
 * Two backends.  With a virtio-console whose ports are named "stdin",
 * "stdout", "stderr" and "vmm.control" (what `vmm exec` and vmm.sandbox.run
 * give), the streams are those ports, and trace lines, the /out archive and
 * the outcome go to the control port as lines (vmm/sandbox/control.py):
 * `trace TEXT`, `note TEXT`, `out SIZE` + SIZE bytes of ustar, then
 * `exit N`, `signal N ADDR` or `error 126 WHY`.  Without it (`vmm run
 * --initrd BUNDLE`), everything goes to COM1: stdout and stderr byte for
 * byte, stdin until the host's input ends, marked by Ctrl-D (0x04), and the
 * outcome as a `vmm-exit: ...` line.
 */
#include "lx.h"
#include "console.h"
#include "io.h"
#include "lib.h"
#include "virtio_console.h"

#define CTRL_D 0x04

static bool stdin_eof;
static bool line_start = true;

/* The virtio-console ports, when the host gave all four. */
static bool use_ports;
static int port_in, port_out, port_err, port_ctl;

void stream_init(void)
{
    stdin_eof = false;
    line_start = true;
    port_in = vcon_find_port("stdin");
    port_out = vcon_find_port("stdout");
    port_err = vcon_find_port("stderr");
    port_ctl = vcon_find_port("vmm.control");
    use_ports = vcon_present() && port_in >= 0 && port_out >= 0 && port_err >= 0 && port_ctl >= 0;
}

bool stream_has_ports(void)
{
    return use_ports;
}

void stream_control_ready(u64 room, u64 top)
{
    /* Every port open in the snapshot the host takes now: a run then sends
       no control message of its own (one VM exit less). */
    vcon_open(port_in);
    vcon_open(port_out);
    vcon_open(port_err);
    char line[64];
    int n = ksnprintf(line, sizeof(line), "ready %lu %lu\n", room, top);
    vcon_write(port_ctl, line, (size_t)n);
    vcon_flush(port_ctl);
}

bool stream_control_read(void *buf, u64 len)
{
    u8 *p = buf;
    while (len) {
        long r = vcon_read(port_ctl, p, (size_t)len);
        if (r <= 0)
            return false;
        p += r;
        len -= (u64)r;
    }
    return true;
}

/* A control line, sent with one notify; the host parses it, so it is cut at
   an embedded newline and at its MAX_LINE (4096 bytes). */
static void control_line(const char *word, const char *text, u64 len)
{
    static char line[4096];
    u64 n = (u64)ksnprintf(line, sizeof(line) - 1, "%s ", word);
    for (u64 i = 0; i < len && n < sizeof(line) - 1 && text[i] != '\n' && text[i] != '\r'; i++)
        line[n++] = text[i];
    line[n++] = '\n';
    vcon_write(port_ctl, line, (size_t)n);
}

static void control_printf_line(const char *word, const char *text)
{
    control_line(word, text, strlen(text));
}

s64 stream_write(int fd, const void *buf, u64 len)
{
    if (fd != 1 && fd != 2)
        return -EBADF;
    if (use_ports) {
        long r = vcon_write(fd == 1 ? port_out : port_err, buf, (size_t)len);
        return r < 0 ? -EIO : (s64)len;
    }
    if (len) {
        console_flush();        /* console lines queued before stay in order */
        uart_write_raw(buf, len);
        line_start = ((const char *)buf)[len - 1] == '\n';
    }
    return (s64)len;
}

/* Before the exit: a port's data sent. vcon_write has notified the device of
   all of it; a VMM that serves every notification before it acts on the
   power-off (vmm: the "drained" option) needs no more, others (QEMU, whose
   debug exit ends it at once) are waited for. */
static void flush_at_exit(int port)
{
    if (!lx_opts.drained)
        vcon_flush(port);
}

void stream_flush(void)
{
    console_flush();
    if (use_ports) {
        flush_at_exit(port_out);
        flush_at_exit(port_err);
    }
}

static int pending = -1;        /* a byte seen by stream_poll */

bool stream_poll(int fd)
{
    if (fd != 0)
        return false;
    if (use_ports)
        return vcon_readable(port_in);
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
    if (!len)
        return 0;
    if (use_ports) {
        long r = vcon_read(port_in, buf, (size_t)len);   /* 0 once the host closed stdin */
        return r < 0 ? -EIO : (s64)r;
    }
    if (stdin_eof)
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
    if (use_ports) {
        control_line("trace", line, len);
        return;
    }
    own_line();
    console_write(line, len);
    console_putc('\n');
}

bool stream_wants_out(void)
{
    return use_ports || lx_opts.dumpout;
}

void stream_out_archive(const u8 *tar, u64 len)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (use_ports) {
        char head[40];
        if (!len) {
            control_printf_line("note", "/out was too large to collect");
            return;
        }
        int n = ksnprintf(head, sizeof(head), "out %lu\n", len);
        vcon_write(port_ctl, head, (size_t)n);
        vcon_write(port_ctl, tar, (size_t)len);
        return;
    }
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

/* The outcome is the last thing the host hears: every port flushed after it. */
static void control_outcome(const char *line)
{
    stream_flush();
    vcon_write(port_ctl, line, strlen(line));
    flush_at_exit(port_ctl);
}

void stream_outcome_status(int status)
{
    if (use_ports) {
        char line[32];
        ksnprintf(line, sizeof(line), "exit %d\n", status);
        control_outcome(line);
        return;
    }
    own_line();
    kprintf("vmm-exit: status %d\n", status);
    console_flush();
}

void stream_outcome_signal(int sig, u64 addr)
{
    if (use_ports) {
        char line[64];
        ksnprintf(line, sizeof(line), "signal %d 0x%lx\n", sig, addr);
        control_outcome(line);
        return;
    }
    own_line();
    kprintf("vmm-exit: signal %d addr 0x%lx\n", sig, addr);
    console_flush();
}

void stream_outcome_cannot_execute(const char *why)
{
    if (use_ports) {
        stream_flush();
        control_printf_line("error 126", why);
        flush_at_exit(port_ctl);
        return;
    }
    own_line();
    kprintf("vmm-exit: cannot execute: %s\n", why);
    console_flush();
}

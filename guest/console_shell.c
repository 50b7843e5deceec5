/* console_shell.c - shell commands for the virtio-console ports. */
#include "console_shell.h"
#include "alloc.h"
#include "console.h"
#include "guest.h"
#include "io.h"
#include "lib.h"
#include "virtio_console.h"

#define PIPE_BUF_BYTES  (256u << 10)    /* several receive buffers per read */
#define TEXT_MAX        512

static bool have_console(const char *cmd)
{
    if (vcon_present())
        return true;
    kprintf("%s: no virtio console\n", cmd);
    return false;
}

static bool port_arg(const char *cmd, const char *name, int *port)
{
    *port = vcon_find_port(name);
    if (*port >= 0)
        return true;
    kprintf("%s: no port named '%s'\n", cmd, name);
    return false;
}

/* ports: one line per port the device added. */
void cmd_ports(int argc, char **argv)
{
    (void)argc, (void)argv;
    if (!have_console("ports"))
        return;
    for (int i = 0; i < vcon_port_count(); i++) {
        struct vcon_port_info info;
        if (vcon_port_info(i, &info))
            kprintf("port %d: %s (host %s, guest %s)\n", i, *info.name ? info.name : "-",
                    info.host_open ? "open" : "closed", info.guest_open ? "open" : "closed");
    }
}

/* pipe IN OUT: copy port IN to port OUT until EOF on IN, then close OUT. */
void cmd_pipe(int argc, char **argv)
{
    int in, out;

    if (argc != 3) {
        console_puts("usage: pipe IN OUT\n");
        return;
    }
    if (!have_console("pipe") || !port_arg("pipe", argv[1], &in) || !port_arg("pipe", argv[2], &out))
        return;
    alloc_mark_t mark = alloc_mark();
    u8 *buf = alloc_pages(PIPE_BUF_BYTES);
    if (!buf) {
        console_puts("pipe: out of memory\n");
        return;
    }
    struct vcon_stats before = *vcon_get_stats();
    u64 t0 = rdtsc(), total = 0;
    long err = 0;
    for (;;) {
        long n = vcon_read(in, buf, PIPE_BUF_BYTES);
        if (n <= 0) {
            err = n;
            break;
        }
        long w = vcon_write(out, buf, (size_t)n);
        if (w < 0) {
            err = w;
            break;
        }
        total += (u64)n;
    }
    vcon_close(out);            /* flush, then PORT_OPEN 0: the host sees the end */
    u64 cycles = rdtsc() - t0;
    const struct vcon_stats *after = vcon_get_stats();
    alloc_release(mark);
    if (err)
        kprintf("pipe: error %ld after %lu bytes\n", -err, total);
    kprintf("pipe: %lu bytes", total);
    if (tsc_khz)
        kprintf(" in %lu ms", cycles / tsc_khz);
    kprintf(" (%lu notifies, %lu idle waits)\n", after->notifies - before.notifies,
            after->idle_waits - before.idle_waits);
}

/* conwrite PORT TEXT...: the words joined by spaces plus "\n", flushed. */
void cmd_conwrite(int argc, char **argv)
{
    static char text[TEXT_MAX];
    size_t len = 0;
    int port;

    if (argc < 2) {
        console_puts("usage: conwrite PORT TEXT...\n");
        return;
    }
    if (!have_console("conwrite") || !port_arg("conwrite", argv[1], &port))
        return;
    for (int i = 2; i < argc; i++) {
        for (const char *p = argv[i]; *p && len < TEXT_MAX - 2; p++)
            text[len++] = *p;
        if (i + 1 < argc && len < TEXT_MAX - 2)
            text[len++] = ' ';
    }
    text[len++] = '\n';
    long w = vcon_write(port, text, len);
    vcon_flush(port);
    if (w < 0)
        kprintf("conwrite: error %ld\n", -w);
}

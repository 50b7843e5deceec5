/* vmm's init for Linux guests: PID 1 in the initramfs `vmm linux` builds.
 *
 * Mounts /proc, /sys and /dev (devtmpfs); loads the kernel modules in
 * /lib/modules (their modules.dep, dependencies first, by finit_module);
 * mounts the root disk given as vmm.root=DEV (ext4, then chroot); runs the
 * command from vmm.cmd= (base64 of its arguments, each NUL-terminated) on
 * the console; reports its exit status to the VMM through port 0xf4 (the
 * exit device: /dev/port, else ioperm + outb) and powers off. A status of
 * 126/127 means the command could not be run; a signal gives 128 + signal.
 * Built static (musl) by build_guest.sh.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_PORT 0xf4
#define MODULE_DIR "/lib/modules"
#define MAX_MODULES 256
#define MAX_ARGS 256

static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    (void)!write(2, "vmm-init: ", 10);
    (void)!write(2, line, n);
}

static void power_off(int status)
{
    unsigned char byte = status > 127 ? 127 : status;  /* the exit device takes 0-127 */
    sync();
    int fd = open("/dev/port", O_WRONLY);
    if (fd >= 0 && pwrite(fd, &byte, 1, EXIT_PORT) == 1) {
        close(fd);
    } else if (ioperm(EXIT_PORT, 1, 1) == 0) {
        outb(byte, EXIT_PORT);
    }
    reboot(RB_POWER_OFF);  /* not reached under vmm; elsewhere: ACPI off */
    for (;;)
        pause();
}

static void mount_one(const char *source, const char *target, const char *type)
{
    mkdir(target, 0755);
    if (mount(source, target, type, 0, NULL) < 0 && errno != EBUSY)
        say("mount %s on %s: %s", type, target, strerror(errno));
}

/* Read a whole (small) file, NUL-terminated; NULL on failure. */
static char *slurp(const char *path, size_t *size_out)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    size_t size = 0, cap = 4096;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf)
            break;
        ssize_t r = read(fd, buf + size, cap - size);
        if (r <= 0)
            break;
        size += r;
        if (size == cap) {
            cap *= 2;
            char *bigger = realloc(buf, cap + 1);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
        }
    }
    close(fd);
    if (buf) {
        buf[size] = 0;
        if (size_out)
            *size_out = size;
    }
    return buf;
}

/* ---- modules: modules.dep lines "path: dep dep ...", paths relative to MODULE_DIR ---- */
static char *mod_path[MAX_MODULES], *mod_deps[MAX_MODULES];
static int mod_state[MAX_MODULES];  /* 0 new, 1 loading, 2 done */
static int mod_count;

static int find_module(const char *path)
{
    for (int i = 0; i < mod_count; i++)
        if (strcmp(mod_path[i], path) == 0)
            return i;
    return -1;
}

static void load_module(int i)
{
    if (mod_state[i])
        return;  /* done, or a dependency cycle */
    mod_state[i] = 1;
    char deps[1024];
    snprintf(deps, sizeof deps, "%s", mod_deps[i]);
    for (char *save, *dep = strtok_r(deps, " \t", &save); dep; dep = strtok_r(NULL, " \t", &save)) {
        int j = find_module(dep);
        if (j >= 0)
            load_module(j);
    }
    char full[512];
    snprintf(full, sizeof full, "%s/%s", MODULE_DIR, mod_path[i]);
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) < 0) {
        if (errno != EEXIST)
            say("module %s: %s", mod_path[i], strerror(errno));
    }
    if (fd >= 0)
        close(fd);
    mod_state[i] = 2;
}

static void load_modules(void)
{
    char *dep = slurp(MODULE_DIR "/modules.dep", NULL);
    if (!dep)
        return;
    for (char *save, *line = strtok_r(dep, "\n", &save); line && mod_count < MAX_MODULES; line = strtok_r(NULL, "\n", &save)) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        *colon = 0;
        mod_path[mod_count] = line;
        mod_deps[mod_count] = colon + 1;
        mod_count++;
    }
    for (int i = 0; i < mod_count; i++)
        load_module(i);
}

/* ---- the kernel command line ---- */
static const char *cmdline_value(char *cmdline, const char *key)
{
    size_t klen = strlen(key);
    for (char *p = cmdline; (p = strstr(p, key)); p += klen)
        if ((p == cmdline || p[-1] == ' ') && p[klen] == '=')
            return p + klen + 1;
    return NULL;
}

static int b64_value(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decode base64 up to the first character outside the alphabet; returns the length. */
static size_t b64_decode(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (; *in; in++) {
        int v = b64_value((unsigned char)*in);
        if (v < 0)
            break;
        acc = (acc << 6) | v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n < cap)
                out[n++] = (acc >> bits) & 0xff;
        }
    }
    return n;
}

static int run_command(char **argv)
{
    pid_t pid = fork();
    if (pid < 0) {
        say("fork: %s", strerror(errno));
        return 126;
    }
    if (pid == 0) {
        execvp(argv[0], argv);
        say("cannot run %s: %s", argv[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    int status;
    for (;;) {
        pid_t done = wait(&status);  /* reaps orphans too, as PID 1 must */
        if (done == pid)
            break;
        if (done < 0 && errno != EINTR)
            return 126;
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
    mount_one("proc", "/proc", "proc");
    mount_one("sysfs", "/sys", "sysfs");
    mount_one("devtmpfs", "/dev", "devtmpfs");
    say("started");
    load_modules();

    char *cmdline = slurp("/proc/cmdline", NULL);
    if (!cmdline) {
        say("cannot read /proc/cmdline");
        power_off(126);
    }
    cmdline[strcspn(cmdline, "\n")] = 0;

    const char *root = cmdline_value(cmdline, "vmm.root");
    if (root) {
        char dev[128];
        snprintf(dev, sizeof dev, "%.*s", (int)strcspn(root, " "), root);
        mkdir("/newroot", 0755);
        if (mount(dev, "/newroot", "ext4", 0, NULL) < 0) {
            say("mount %s: %s", dev, strerror(errno));
            power_off(126);
        }
        if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0) {
            say("switch to %s: %s", dev, strerror(errno));
            power_off(126);
        }
        mount_one("proc", "/proc", "proc");
        mount_one("sysfs", "/sys", "sysfs");
        mount_one("devtmpfs", "/dev", "devtmpfs");
    }

    const char *encoded = cmdline_value(cmdline, "vmm.cmd");
    static char raw[8192];
    static char *args[MAX_ARGS + 1];
    int nargs = 0;
    if (encoded) {
        size_t n = b64_decode(encoded, raw, sizeof raw - 1);
        raw[n] = 0;
        for (size_t i = 0; i < n && nargs < MAX_ARGS; i += strlen(raw + i) + 1)
            args[nargs++] = raw + i;
    }
    if (nargs == 0) {
        static char *shell[] = {"/bin/sh", NULL};
        say("no vmm.cmd= on the command line: running /bin/sh");
        for (int i = 0; shell[i]; i++)
            args[nargs++] = shell[i];
    }
    args[nargs] = NULL;
    say("running %s", args[0]);
    int status = run_command(args);
    say("%s exited with status %d", args[0], status);
    power_off(status);
    return 0;
}

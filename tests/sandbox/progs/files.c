/* Files: read a bundled file, write and read back /tmp, list, stat, errors, /out. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <unistd.h>

static void show(const char *what, int r)
{
    printf("%s: %d %s\n", what, r, r < 0 ? strerror(errno) : "ok");
}

int main(int argc, char **argv)
{
    const char *in = argc > 1 ? argv[1] : "/data/in.txt";
    const char *tmp = argc > 2 ? argv[2] : "/tmp";
    char buf[256], path[256];
    FILE *f = fopen(in, "r");
    if (!f) {
        perror(in);
        return 1;
    }
    while (fgets(buf, sizeof(buf), f))
        printf("in: %s", buf);
    fclose(f);

    snprintf(path, sizeof(path), "%s/note.txt", tmp);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    show("create", fd < 0 ? -1 : 0);
    dprintf(fd, "first line\n");
    dprintf(fd, "second line\n");
    close(fd);
    struct stat st;
    show("stat", stat(path, &st));
    printf("size %lld regular %d\n", (long long)st.st_size, S_ISREG(st.st_mode));
    fd = open(path, O_RDONLY);
    int n = read(fd, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("readback: %s", buf);
    lseek(fd, 6, SEEK_SET);
    n = read(fd, buf, 4);
    buf[n > 0 ? n : 0] = 0;
    printf("at 6: %s\n", buf);
    close(fd);

    snprintf(path, sizeof(path), "%s/sub", tmp);
    show("mkdir", mkdir(path, 0755));
    snprintf(path, sizeof(path), "%s/sub/x", tmp);
    fd = open(path, O_CREAT | O_WRONLY, 0644);
    close(fd);
    char from[256];
    snprintf(from, sizeof(from), "%s/note.txt", tmp);
    snprintf(path, sizeof(path), "%s/renamed.txt", tmp);
    show("rename", rename(from, path));

    char link[256], target[256];
    snprintf(link, sizeof(link), "%s/link", tmp);
    show("symlink", symlink("renamed.txt", link));
    long ln = readlink(link, target, sizeof(target) - 1);
    target[ln > 0 ? ln : 0] = 0;
    printf("readlink: %s\n", target);
    show("truncate", truncate(link, 5));
    show("stat via link", stat(link, &st));
    printf("size %lld\n", (long long)st.st_size);
    show("lstat", lstat(link, &st));
    printf("is link %d\n", S_ISLNK(st.st_mode));

    DIR *d = opendir(tmp);
    char names[16][64];
    int count = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && count < 16)
        if (e->d_name[0] != '.')
            snprintf(names[count++], 64, "%s", e->d_name);
    if (d)
        closedir(d);
    /* sorted, so the order does not depend on the directory's */
    for (int i = 0; i < count; i++)
        for (int j = i + 1; j < count; j++)
            if (strcmp(names[i], names[j]) > 0) {
                char t[64];
                strcpy(t, names[i]);
                strcpy(names[i], names[j]);
                strcpy(names[j], t);
            }
    for (int i = 0; i < count; i++)
        printf("entry: %s\n", names[i]);

    snprintf(path, sizeof(path), "%s/sub", tmp);
    show("rmdir nonempty", rmdir(path));
    snprintf(path, sizeof(path), "%s/sub/x", tmp);
    show("unlink", unlink(path));
    snprintf(path, sizeof(path), "%s/sub", tmp);
    show("rmdir", rmdir(path));
    show("open missing", open("/no/such/file", O_RDONLY));
    show("stat missing", stat("/nope", &st));
    show("dup2", dup2(1, 9));
    write(9, "via dup2\n", 9);
    int p[2];
    show("pipe", pipe(p));
    write(p[1], "piped\n", 6);
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(p[0], &rd);
    struct timeval tv = { 0, 0 };
    printf("select: %d %d\n", select(p[0] + 1, &rd, NULL, NULL, &tv), FD_ISSET(p[0], &rd));
    fflush(stdout);
    n = read(p[0], buf, sizeof(buf));
    write(1, buf, n);
    char cwd[256];
    printf("cwd: %s\n", getcwd(cwd, sizeof(cwd)));
    return 0;
}

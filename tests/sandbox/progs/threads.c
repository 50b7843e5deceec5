/* threads MODE [ARGS]: pthreads in the sandbox (glibc and musl). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static long counter;
static long per_thread = 10000;

static void *count_up(void *arg)
{
    (void)arg;
    for (long i = 0; i < per_thread; i++) {
        pthread_mutex_lock(&lock);
        long v = counter;
        if ((i & 255) == 0)
            sched_yield();      /* a switch while holding the lock */
        counter = v + 1;
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static int counter_mode(int n)
{
    pthread_t t[64];
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, count_up, NULL))
            return 1;
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    printf("counter %ld\n", counter);
    return 0;
}

/* Two threads take turns through one condition variable. */
static int turn;
static void *pong(void *arg)
{
    long rounds = (long)arg;
    for (long i = 0; i < rounds; i++) {
        pthread_mutex_lock(&lock);
        while (turn != 1)
            pthread_cond_wait(&cond, &lock);
        printf("pong %ld\n", i);
        turn = 0;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static int pingpong_mode(long rounds)
{
    pthread_t t;
    pthread_create(&t, NULL, pong, (void *)rounds);
    for (long i = 0; i < rounds; i++) {
        pthread_mutex_lock(&lock);
        while (turn != 0)
            pthread_cond_wait(&cond, &lock);
        printf("ping %ld\n", i);
        turn = 1;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
    }
    pthread_join(t, NULL);
    printf("done\n");
    return 0;
}

static void *square(void *arg)
{
    long v = (long)arg;
    return (void *)(v * v);
}

static int join_mode(void)
{
    pthread_t t[8];
    for (long i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, square, (void *)(i + 1));
    for (int i = 7; i >= 0; i--) {
        void *ret;
        pthread_join(t[i], &ret);
        printf("%ld ", (long)ret);
    }
    printf("\n");
    return 0;
}

static __thread long tls_value = 7;
static __thread char tls_name[16];
static void *tls_worker(void *arg)
{
    long id = (long)arg;
    tls_value += id * 100;
    snprintf(tls_name, sizeof(tls_name), "t%ld", id);
    sched_yield();
    usleep(1000);
    char buf[64];
    snprintf(buf, sizeof(buf), "%s %ld %d\n", tls_name, tls_value, gettid() != getpid());
    return strdup(buf);
}

static int tls_mode(void)
{
    pthread_t t[4];
    for (long i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, tls_worker, (void *)(i + 1));
    for (int i = 0; i < 4; i++) {
        char *s;
        pthread_join(t[i], (void **)&s);
        fputs(s, stdout);
    }
    printf("main %ld %d\n", tls_value, gettid() == getpid());
    return 0;
}

static void *exit_worker(void *arg)
{
    (void)arg;
    usleep(1000);
    printf("thread exits\n");
    fflush(stdout);
    exit(42);
}

static int exit_mode(void)
{
    pthread_t t;
    pthread_create(&t, NULL, exit_worker, NULL);
    pthread_join(t, NULL);
    printf("not reached\n");
    return 0;
}

static void *lock_then_join_main(void *arg)
{
    pthread_mutex_lock(&lock);  /* main holds it and joins us: deadlock */
    (void)arg;
    return NULL;
}

static int deadlock_mode(void)
{
    pthread_t t;
    pthread_mutex_lock(&lock);
    pthread_create(&t, NULL, lock_then_join_main, NULL);
    printf("deadlocking\n");
    fflush(stdout);
    pthread_join(t, NULL);
    return 0;
}

static void *segv_worker(void *arg)
{
    (void)arg;
    *(volatile int *)0x1230 = 1;
    return NULL;
}

static int segv_mode(void)
{
    pthread_t t;
    pthread_create(&t, NULL, segv_worker, NULL);
    pthread_join(t, NULL);
    printf("not reached\n");
    return 0;
}

/* Threads that wait until released: how many can exist at once. */
static int released;
static void *wait_release(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    while (!released)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static int limit_mode(void)
{
    static pthread_t t[1000];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    int n = 0, err = 0;
    while (n < 1000 && !(err = pthread_create(&t[n], &attr, wait_release, NULL)))
        n++;
    printf("created %d, then %s\n", n, err == EAGAIN ? "EAGAIN" : strerror(err));
    pthread_mutex_lock(&lock);
    released = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    /* the slots are free again */
    n = 0;
    released = 0;
    printf("joined\n");
    return 0;
}

static void *nothing(void *arg)
{
    return arg;
}

static int churn_mode(long count)
{
    long sum = 0;
    for (long i = 0; i < count; i++) {
        pthread_t t;
        void *ret;
        if (pthread_create(&t, NULL, nothing, (void *)i)) {
            printf("create failed at %ld\n", i);
            return 1;
        }
        pthread_join(t, &ret);
        sum += (long)ret;
    }
    printf("churn %ld sum %ld\n", count, sum);
    return 0;
}

static long now_ms(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *sleeper(void *arg)
{
    usleep((long)arg * 1000);
    return NULL;
}

/* Four threads sleep 200 ms at once: the sleeps overlap. */
static int sleep_mode(void)
{
    long start = now_ms(CLOCK_MONOTONIC);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, sleeper, (void *)200L);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    printf("slept %ld ms\n", now_ms(CLOCK_MONOTONIC) - start);
    return 0;
}

static int timedwait_mode(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&lock);
    int err = pthread_cond_timedwait(&cond, &lock, &ts);
    pthread_mutex_unlock(&lock);
    printf("timedwait %s\n", err == ETIMEDOUT ? "ETIMEDOUT" : strerror(err));
    return 0;
}

static __thread volatile int got_signal;
static volatile int ready, signalled;
static void on_usr1(int sig)
{
    got_signal = sig;
}

static void *signal_target(void *arg)
{
    (void)arg;
    ready = 1;
    while (!got_signal)
        usleep(1000);   /* the signal ends a sleep early (EINTR) */
    signalled = 1;
    return (void *)(long)got_signal;
}

static int signal_mode(void)
{
    signal(SIGUSR1, on_usr1);
    pthread_t t;
    pthread_create(&t, NULL, signal_target, NULL);
    while (!ready)
        sched_yield();
    pthread_kill(t, SIGUSR1);
    void *ret;
    pthread_join(t, &ret);
    printf("thread got %ld, main got %d\n", (long)ret, got_signal);
    return 0;
}

/* A pipe between two threads, the reader in poll. */
static int pipefd[2];
static void *pipe_writer(void *arg)
{
    (void)arg;
    usleep(20000);
    write(pipefd[1], "through the pipe\n", 17);
    return NULL;
}

static int pipe_mode(void)
{
    pipe(pipefd);
    pthread_t t;
    pthread_create(&t, NULL, pipe_writer, NULL);
    struct pollfd p = { pipefd[0], POLLIN, 0 };
    int n = poll(&p, 1, 5000);
    char buf[64];
    ssize_t got = n == 1 ? read(pipefd[0], buf, sizeof(buf)) : 0;
    pthread_join(t, NULL);
    printf("poll %d, read %.*s", n, (int)got, buf);
    return 0;
}

/* A blocking read of a pipe that another thread fills in pieces. */
static void *piece_writer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        usleep(5000);
        char line[16];
        int n = snprintf(line, sizeof(line), "piece %d\n", i);
        write(pipefd[1], line, n);
    }
    close(pipefd[1]);
    return NULL;
}

static int pipeblock_mode(void)
{
    pipe(pipefd);
    pthread_t t;
    pthread_create(&t, NULL, piece_writer, NULL);
    char buf[256];
    size_t got = 0;
    ssize_t n;
    int reads = 0;
    while ((n = read(pipefd[0], buf + got, sizeof(buf) - got)) > 0) {
        got += (size_t)n;
        reads++;
    }
    pthread_join(t, NULL);
    printf("%.*s%s after %d reads\n", (int)got, buf, n == 0 ? "eof" : strerror(errno), reads);
    return 0;
}

/* The main thread spins on a syscall that never waits: the other thread
   still gets the CPU (its time slice ends at a syscall). */
static volatile int flag;
static void *set_flag(void *arg)
{
    (void)arg;
    flag = 1;
    return NULL;
}

static int spin_mode(void)
{
    pthread_t t;
    pthread_create(&t, NULL, set_flag, NULL);
    long spins = 0;
    while (!flag) {
        getppid();
        spins++;
    }
    pthread_join(t, NULL);
    printf("flag set after %s\n", spins ? "spinning" : "no spin");
    return 0;
}

/* Reading stdin while another thread works. */
static void *ticker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        usleep(2000);
        fprintf(stderr, "tick %d\n", i);
    }
    return NULL;
}

static int stdin_mode(void)
{
    pthread_t t;
    pthread_create(&t, NULL, ticker, NULL);
    char buf[4096];
    long total = 0;
    ssize_t n;
    while ((n = read(0, buf, sizeof(buf))) > 0)
        total += n;
    pthread_join(t, NULL);
    printf("stdin %ld bytes\n", total);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    long arg = argc > 2 ? atol(argv[2]) : 0;
    if (!strcmp(mode, "counter")) {
        if (argc > 3)
            per_thread = atol(argv[3]);
        return counter_mode((int)arg);
    }
    if (!strcmp(mode, "pingpong")) return pingpong_mode(arg);
    if (!strcmp(mode, "join")) return join_mode();
    if (!strcmp(mode, "tls")) return tls_mode();
    if (!strcmp(mode, "exit")) return exit_mode();
    if (!strcmp(mode, "deadlock")) return deadlock_mode();
    if (!strcmp(mode, "segv")) return segv_mode();
    if (!strcmp(mode, "limit")) return limit_mode();
    if (!strcmp(mode, "churn")) return churn_mode(arg);
    if (!strcmp(mode, "sleep")) return sleep_mode();
    if (!strcmp(mode, "timedwait")) return timedwait_mode();
    if (!strcmp(mode, "signal")) return signal_mode();
    if (!strcmp(mode, "pipe")) return pipe_mode();
    if (!strcmp(mode, "pipeblock")) return pipeblock_mode();
    if (!strcmp(mode, "spin")) return spin_mode();
    if (!strcmp(mode, "stdin")) return stdin_mode();
    fprintf(stderr, "unknown mode\n");
    return 2;
}

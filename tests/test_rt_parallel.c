/* test_rt_parallel.c -- the pool's range splitter (runtime/parallel.c,
 * cdl_parallel_ranges): the ranges cover [0, n) exactly once, start on multiples of
 * align, use the pool only from CDL_PAR_MIN elements of work and never take more
 * tasks than threads, for 1 to 5 threads; and cdl_parallel_for itself: many small jobs
 * back to back, and jobs far enough apart that the workers stop spinning and sleep,
 * run every task exactly once and return only when all have finished; and
 * cdl_parallel_slots gives each thread its own slot below the limit, and each thread its
 * own block of the tasks first; and the wait window
 * (cdl_parallel_set_wait, CDL_POOL_WAIT_US): workers stay awake for it after a job and
 * sleep after it, or after their first late yield; cdl_parallel_for_work keeps a job under
 * CDL_PAR_MIN elements on the calling thread. */
#include "test_rt_util.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct Seen {
    atomic_int *hits;     /* per index: how many ranges covered it */
    atomic_int calls;     /* ranges handed out (empty ones too) */
    int64_t align;
    atomic_int misaligned;
} Seen;

static void mark(void *ctx, int64_t i0, int64_t i1) {
    Seen *s = ctx;
    atomic_fetch_add(&s->calls, 1);
    if (i0 % s->align) atomic_fetch_add(&s->misaligned, 1);
    for (int64_t i = i0; i < i1; i++) atomic_fetch_add(&s->hits[i], 1);
}

/* Ranges of [0, n) with the given cost and align at the current thread count: returns
 * how many ranges were made, after checking coverage and alignment. */
static int ranges(int64_t n, int64_t cost, int64_t align) {
    Seen s = {.hits = calloc((size_t)n + 1, sizeof(atomic_int)), .align = align};
    atomic_init(&s.calls, 0);
    atomic_init(&s.misaligned, 0);
    cdl_parallel_ranges(n, cost, align, mark, &s);
    for (int64_t i = 0; i < n; i++) assert_int_equal(atomic_load(&s.hits[i]), 1);
    assert_int_equal(atomic_load(&s.misaligned), 0);
    free(s.hits);
    return atomic_load(&s.calls);
}

static void test_ranges(void **state) {
    (void)state;
    for (int t = 1; t <= 5; t++) {
        cdl_parallel_set_threads(t);
        assert_int_equal(ranges(CDL_PAR_MIN - 1, 1, 16), 1);          /* below the threshold: one range */
        assert_int_equal(ranges(300007, 1, 16), t < 4 ? t : 4);        /* 300007 / 2^16 = 4 tasks at most */
        assert_int_equal(ranges(64, 8192, 1), t);                     /* few indices, each costly */
        assert_int_equal(ranges(3, 1 << 20, 1), t < 3 ? t : 3);       /* never more tasks than indices */
        assert_int_equal(ranges(1000, 1000, 7), t);                   /* an odd alignment */
    }
    cdl_parallel_ranges(0, 1, 1, mark, NULL); /* nothing to do: fn is not called */
    cdl_parallel_set_threads(1);
}

typedef struct Job {
    atomic_int hits[64]; /* per task: how many times it ran */
    atomic_int finished; /* tasks that finished */
    int work;            /* pause loops per task (0: a tiny task) */
} Job;

static void job_task(void *ctx, int64_t i) {
    Job *j = ctx;
    volatile int sink = 0;
    for (int k = 0; k < j->work * (int)(i + 1); k++) sink += k;
    (void)sink;
    atomic_fetch_add(&j->hits[i], 1);
    atomic_fetch_add(&j->finished, 1);
}

/* n tasks: every one ran once, and all had finished when cdl_parallel_for returned. */
static void one_job(int64_t n, int work) {
    Job j = {.work = work};
    for (int i = 0; i < 64; i++) atomic_init(&j.hits[i], 0);
    atomic_init(&j.finished, 0);
    cdl_parallel_for(n, job_task, &j);
    assert_int_equal(atomic_load(&j.finished), n); /* read before anything else waits */
    for (int64_t i = 0; i < 64; i++) assert_int_equal(atomic_load(&j.hits[i]), i < n ? 1 : 0);
}

static void test_many_jobs(void **state) {
    (void)state;
    for (int t = 1; t <= 5; t++) {
        cdl_parallel_set_threads(t);
        assert_int_equal(cdl_parallel_threads(), t);
        for (int r = 0; r < 4000; r++) one_job(1 + r % 64, r % 3 == 0 ? 0 : r % 200); /* back to back */
        for (int r = 0; r < 12; r++) {                       /* the workers fall asleep in between */
            nanosleep(&(struct timespec){0, 2000000}, NULL); /* 2 ms, well over the spin */
            one_job(2 + r % 5, r % 2 ? 0 : 5000);
        }
    }
    cdl_parallel_set_threads(2);
    cdl_parallel_set_threads(2); /* the same count again: a no-op */
    one_job(7, 10);
    cdl_parallel_set_threads(1);
    one_job(7, 10); /* no workers: the caller runs everything */
}

/* cdl_parallel_slots: every task once, slots only below the limit, and one thread per
 * slot at a time (a slot's flag is never found raised by another task). */
typedef struct SlotJob {
    atomic_int hits[64], inside[8], clash, bad_slot;
} SlotJob;

static void slot_task(void *ctx, int64_t i, int slot) {
    SlotJob *j = ctx;
    if (slot < 0 || slot >= 2) {
        atomic_fetch_add(&j->bad_slot, 1);
        return;
    }
    if (atomic_fetch_add(&j->inside[slot], 1) != 0) atomic_fetch_add(&j->clash, 1);
    volatile int sink = 0;
    for (int k = 0; k < 300 * (int)(i % 5); k++) sink += k;
    (void)sink;
    atomic_fetch_sub(&j->inside[slot], 1);
    atomic_fetch_add(&j->hits[i], 1);
}

static void test_slots(void **state) {
    (void)state;
    for (int t = 1; t <= 5; t++) {
        cdl_parallel_set_threads(t);
        for (int r = 0; r < 2000; r++) {
            SlotJob j;
            memset(&j, 0, sizeof j);
            const int64_t n = 1 + r % 64;
            cdl_parallel_slots(n, 2, slot_task, &j);
            for (int64_t i = 0; i < 64; i++) assert_int_equal(atomic_load(&j.hits[i]), i < n ? 1 : 0);
            assert_int_equal(atomic_load(&j.clash), 0);
            assert_int_equal(atomic_load(&j.bad_slot), 0);
        }
    }
    cdl_parallel_set_threads(1);
}

/* Who runs which task: with 2 threads, the worker (slot 1) starts at the first task of
 * the second half, n / 2, and the caller (slot 0) at task 0 (runtime/parallel.c, "Who
 * runs which task").  Task 0, when the caller runs it, holds the caller until the
 * worker has run a task, so the worker always finds its own half untouched; a caller
 * descheduled before it took a task may find that the worker, done with its own half,
 * has taken task 0 and more of the caller's (then the caller's first task is any, or
 * none), so the caller's first task is 0 unless the worker ran task 0. */
typedef struct FirstJob {
    atomic_llong first[2]; /* each slot's first task, -1 before */
    atomic_int worker_ran, worker_took0;
} FirstJob;

static void first_task(void *ctx, int64_t i, int slot) {
    FirstJob *j = ctx;
    long long none = -1;
    atomic_compare_exchange_strong(&j->first[slot], &none, i);
    if (slot != 0) atomic_store(&j->worker_ran, 1);
    if (slot != 0 && i == 0) atomic_store(&j->worker_took0, 1);
    if (i == 0 && slot == 0)
        while (!atomic_load(&j->worker_ran)) sched_yield();
}

static void test_blocks(void **state) {
    (void)state;
    cdl_parallel_set_threads(2);
    for (int64_t n = 2; n <= 9; n++)
        for (int r = 0; r < 50; r++) {
            FirstJob j = {.first = {-1, -1}};
            cdl_parallel_slots(n, 2, first_task, &j);
            assert_int_equal(atomic_load(&j.first[1]), n / 2);
            assert_true(atomic_load(&j.first[0]) == 0 || atomic_load(&j.worker_took0));
        }
    cdl_parallel_set_threads(1);
}

/* Poll until `want` workers sleep, for up to ms milliseconds: 1 if they did. */
static int sleeping_within(int want, int ms) {
    for (int i = 0; i < ms; i++) {
        if (cdl_parallel_sleeping() == want) return 1;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return cdl_parallel_sleeping() == want;
}

static void test_wait_window(void **state) {
    (void)state;
    cdl_parallel_set_threads(3); /* two workers */
    const int64_t def = cdl_parallel_set_wait(500000000, 0); /* 500 ms, whatever the load */
    assert_int_equal(def, 7000); /* CDL_POOL_WAIT_US=7 (main) */
    for (int r = 0; r < 3; r++) {
        one_job(8, 100);
        nanosleep(&(struct timespec){0, 20000000}, NULL); /* 20 ms: inside the window */
        /* both awake (yielding) inside it: polled, since on a loaded machine a worker the
         * job woke may not have run yet (it counts as sleeping until it runs); a pool
         * without the window has them asleep again by now, for good */
        assert_true(sleeping_within(0, 400));
        assert_true(sleeping_within(2, 5000));            /* asleep once it has passed */
    }
    /* a 20 s window, but any yield counts as late (1 ns): they sleep after their first */
    assert_int_equal(cdl_parallel_set_wait(20000000000, 1), 500000000);
    for (int r = 0; r < 3; r++) {
        one_job(8, 100);
        assert_true(sleeping_within(2, 5000));
    }
    assert_int_equal(cdl_parallel_set_wait(0, 0), 20000000000);
    one_job(8, 100); /* wakes them */
    assert_true(sleeping_within(2, 5000)); /* window 0: asleep after the short spin */
    one_job(8, 100);
    assert_int_equal(cdl_parallel_set_wait(-5, 0), 0); /* negative means 0 */
    assert_int_equal(cdl_parallel_set_wait(5000, 20000), 0); /* the default */
    cdl_parallel_set_threads(1);
    assert_int_equal(cdl_parallel_sleeping(), 0); /* no workers */
}

/* CDL_POOL_WAIT_US is read once a process, so each value runs in a child (this program
 * with --env-child): the child's stderr, or "" when it wrote nothing. */
static void env_child(const char *value, char *err, size_t cap) {
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        setenv("CDL_POOL_WAIT_US", value, 1);
        execl("/proc/self/exe", "test_rt_parallel", "--env-child", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd[0], err + got, cap - 1 - got)) > 0) got += (size_t)r;
    err[got] = 0;
    close(fd[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* A value that is not a whole number of microseconds under 10 s is named on stderr
 * (and the window kept); a good one says nothing. */
/* cdl_parallel_for_work: a job under CDL_PAR_MIN elements of work runs every task on the
 * calling thread, in index order, even with a worker awake beside it (it would take
 * about half of these 64 tasks of ~0.1 ms each were the job posted); a larger one runs
 * every task once. */
typedef struct WorkJob {
    pthread_t caller;
    atomic_int hits[64], order_bad, foreign;
    atomic_llong next;
    volatile double sink;
} WorkJob;

static void work_task(void *ctx, int64_t i) {
    WorkJob *j = ctx;
    atomic_fetch_add(&j->hits[i], 1);
    if (!pthread_equal(pthread_self(), j->caller)) atomic_fetch_add(&j->foreign, 1);
    if (atomic_fetch_add(&j->next, 1) != i) atomic_fetch_add(&j->order_bad, 1);
    double x = 0;
    for (int k = 0; k < 100000; k++) x += (double)k * 1e-9;
    j->sink = x;
}

static void test_for_work(void **state) {
    (void)state;
    cdl_parallel_set_threads(2);
    int64_t old = cdl_parallel_set_wait(1000000000, 0); /* the worker stays awake */
    WorkJob j;
    memset(&j, 0, sizeof j);
    j.caller = pthread_self();
    cdl_parallel_for_work(64, CDL_PAR_MIN - 1, work_task, &j);
    for (int i = 0; i < 64; i++) assert_int_equal(atomic_load(&j.hits[i]), 1);
    assert_int_equal(atomic_load(&j.foreign), 0);
    assert_int_equal(atomic_load(&j.order_bad), 0);
    memset(&j, 0, sizeof j);
    j.caller = pthread_self();
    cdl_parallel_for_work(64, CDL_PAR_MIN, work_task, &j);
    for (int i = 0; i < 64; i++) assert_int_equal(atomic_load(&j.hits[i]), 1);
    cdl_parallel_set_wait(old, 20000);
    cdl_parallel_set_threads(1);
}

static void test_wait_env_bad(void **state) {
    (void)state;
    char err[1024];
    const char *bad[] = {"7us", "-5", "abc", " 7", "10000000"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        env_child(bad[i], err, sizeof err);
        char want[64];
        snprintf(want, sizeof want, "CDL_POOL_WAIT_US=%s:", bad[i]);
        assert_non_null(strstr(err, want));
        assert_non_null(strstr(err, "stays 5 us"));
    }
    env_child("200", err, sizeof err);
    assert_string_equal(err, "");
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--env-child")) { /* test_wait_env_bad's child */
        cdl_parallel_set_threads(2);
        cdl_parallel_set_threads(1);
        return 0;
    }
    setenv("CDL_POOL_WAIT_US", "7", 1); /* read when the pool first starts: test_wait_window */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_many_jobs),
        cmocka_unit_test(test_slots),
        cmocka_unit_test(test_blocks),
        cmocka_unit_test(test_wait_window),
        cmocka_unit_test(test_wait_env_bad),
        cmocka_unit_test(test_for_work),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* parallel.c -- the runtime's own worker pool, for kernels that OpenBLAS does not run
 * (the direct convolutions, pooling, large elementwise ops and reductions).  Contract:
 * cdl.h, cdl_parallel_for and cdl_parallel_ranges.
 *
 * The pool is created when the thread count is set (cdl_blas_set_threads) and lives
 * until the next change: threads - 1 workers, the calling thread being the last one.
 * Between jobs the workers sleep on a condition variable (no spinning: the machine
 * and its cores are shared with OpenBLAS's own threads and other processes).  A job is
 * n tasks handed out one by one through an atomic counter; which thread runs a task
 * does not matter, so a kernel whose tasks write disjoint outputs (or a per-task slot
 * of its scratch) gives the same bits for any thread count.  Nothing here allocates
 * after cdl_parallel_set_threads, so a training step stays allocation-free. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "cdl.h"

enum { POOL_MAX = 64 }; /* workers at most (threads beyond that are ignored) */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* a new job or quit (workers wait on it) */
    pthread_cond_t done; /* the last worker left the current job (the caller waits) */
    pthread_t tid[POOL_MAX];
    int nworkers;       /* changed only while holding busy */
    atomic_int threads; /* nworkers + 1, for cdl_parallel_threads */
    int quit;
    unsigned long gen; /* job number: a worker runs each job once */
    int active;        /* workers not yet finished with the current job */
    cdl_task_fn *fn;   /* the current job (fn, ctx, n are written and read under mu) */
    void *ctx;
    int64_t n;
    atomic_llong next;  /* next task index of the current job */
    atomic_flag busy;   /* a job is running: a nested or concurrent call runs serially */
} pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .busy = ATOMIC_FLAG_INIT,
    .threads = 1,
};

/* Take tasks of the current job until none is left. */
static void run_tasks(cdl_task_fn *fn, void *ctx, int64_t n) {
    for (;;) {
        int64_t i = atomic_fetch_add_explicit(&pool.next, 1, memory_order_relaxed);
        if (i >= n) return;
        fn(ctx, i);
    }
}

/* arg = the job number when the worker was made: a job posted before the worker first
 * takes the mutex must still count as new to it. */
static void *worker(void *arg) {
    unsigned long seen = (unsigned long)(uintptr_t)arg;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.gen == seen && !pool.quit) pthread_cond_wait(&pool.wake, &pool.mu);
        if (pool.quit) break;
        seen = pool.gen;
        cdl_task_fn *fn = pool.fn;
        void *ctx = pool.ctx;
        int64_t n = pool.n;
        pthread_mutex_unlock(&pool.mu);
        run_tasks(fn, ctx, n);
        pthread_mutex_lock(&pool.mu);
        if (--pool.active == 0) pthread_cond_signal(&pool.done);
    }
    pthread_mutex_unlock(&pool.mu);
    return NULL;
}

/* Stop and join every worker (none is inside a job: jobs end before their call returns). */
static void pool_stop(void) {
    pthread_mutex_lock(&pool.mu);
    pool.quit = 1;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < pool.nworkers; i++) pthread_join(pool.tid[i], NULL);
    pool.nworkers = 0;
    pool.quit = 0;
}

void cdl_parallel_set_threads(int n) {
    int want = n > 1 ? n - 1 : 0;
    if (want > POOL_MAX) want = POOL_MAX;
    while (atomic_flag_test_and_set(&pool.busy)) /* not while a job runs (jobs are short) */
        ;
    if (want == pool.nworkers) {
        atomic_flag_clear(&pool.busy);
        return;
    }
    pool_stop();
    for (int i = 0; i < want; i++) {
        void *gen = (void *)(uintptr_t)pool.gen; /* no job runs: gen is stable */
        if (pthread_create(&pool.tid[i], NULL, worker, gen) != 0) break; /* fewer workers */
        pool.nworkers++;
    }
    atomic_store(&pool.threads, pool.nworkers + 1);
    atomic_flag_clear(&pool.busy);
}

int cdl_parallel_threads(void) {
    return atomic_load(&pool.threads);
}

void cdl_parallel_for(int64_t n, cdl_task_fn *fn, void *ctx) {
    if (n <= 0) return;
    if (n == 1 || atomic_flag_test_and_set(&pool.busy)) { /* one task, or nested */
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    if (pool.nworkers == 0) {
        atomic_flag_clear(&pool.busy);
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&pool.mu);
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    atomic_store_explicit(&pool.next, 0, memory_order_relaxed);
    pool.active = pool.nworkers;
    pool.gen++;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    run_tasks(fn, ctx, n);
    pthread_mutex_lock(&pool.mu);
    while (pool.active > 0) pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
    atomic_flag_clear(&pool.busy);
}

/* cdl_parallel_ranges: task t of nt runs [cut(t), cut(t + 1)). */
typedef struct RangeJob {
    cdl_range_fn *fn;
    void *ctx;
    int64_t n, nt, align;
} RangeJob;

static int64_t range_cut(const RangeJob *J, int64_t t) {
    return t >= J->nt ? J->n : J->n * t / J->nt / J->align * J->align;
}

static void range_task(void *arg, int64_t t) {
    const RangeJob *J = arg;
    J->fn(J->ctx, range_cut(J, t), range_cut(J, t + 1));
}

void cdl_parallel_ranges(int64_t n, int64_t cost, int64_t align, cdl_range_fn *fn, void *ctx) {
    if (n <= 0) return;
    int64_t work = n * (cost > 1 ? cost : 1), nt = cdl_parallel_threads();
    if (nt > work / (CDL_PAR_MIN / 2)) nt = work / (CDL_PAR_MIN / 2);
    if (nt > n) nt = n;
    if (work < CDL_PAR_MIN || nt < 2) {
        fn(ctx, 0, n);
        return;
    }
    RangeJob J = {.fn = fn, .ctx = ctx, .n = n, .nt = nt, .align = align > 1 ? align : 1};
    cdl_parallel_for(nt, range_task, &J);
}

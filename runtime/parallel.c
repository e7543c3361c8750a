/* parallel.c -- the runtime's own worker pool, for kernels that OpenBLAS does not run
 * (the direct convolutions, pooling, large elementwise ops and reductions, the blocks of
 * large GEMMs).  Contract: cdl.h, cdl_parallel_for and cdl_parallel_ranges.
 *
 * The pool is created when the thread count is set (cdl_blas_set_threads) and lives
 * until the next change: threads - 1 workers, the calling thread being the last one.
 * A job is n tasks; which thread runs a task does not matter, so a kernel whose tasks
 * write disjoint outputs (or a per-task slot of its scratch) gives the same bits for
 * any thread count.
 *
 * Who runs which task.  The tasks are cut into one contiguous block per taking
 * thread, each with its own counter: thread s takes the tasks of block s one by one,
 * then those left in the other blocks (s + 1, s + 2, ... round).  The kernels cut a
 * batch the same way from one op to the next (the conv chunks, the ranges, the planes
 * of pooling), so an awake worker runs the same half of the batch in every op of a
 * step and finds it in its own cache; with one shared counter the halves went to
 * whichever thread came first, and a 2-thread LeNet step spent ~0.5 ms more in the
 * same tasks than at 1 thread, moving them between the cores' L2 caches
 * (docs/benchmarks.md, "LeNet at 2 threads (session 11, lenet7)").  A late or absent
 * thread's block is taken by the others, as before.
 *
 * Waiting.  Between jobs a thread stays awake for the pool's wait window and then
 * sleeps on a condition variable: for the first POOL_SPIN_NS it spins on `pause`, after
 * that (a window longer than POOL_SPIN_NS) on sched_yield, which on an idle core
 * returns at once (the thread sees a new job within a microsecond or two).  A yield
 * that returns late (over the busy threshold: another thread ran on the core) says the
 * machine is busy, and the thread sleeps at once.  Waking a sleeping thread costs
 * ~20-50 us on these VMs (the hypervisor's interrupt path), as long as a small job: a
 * step whose jobs come closer together than the window never pays it, and a thread
 * burns at most one window after the last job.  The default window is POOL_SPIN_NS,
 * pause only (the pool before the window existed): on the loaded machine a 200 us
 * yield window made small rows' 2-thread wall time worse (a yielding worker waits out
 * other threads' slices and misses jobs, where a woken sleeper is run at once), and
 * no idle machine was there to show its gain; cdl_parallel_set_wait or
 * CDL_POOL_WAIT_US set it (docs/benchmarks.md, "2 threads").  The caller, once no task
 * is left to take, waits the same way for the workers still inside the job, but spins
 * on pause for up to POOL_CALLER_SPIN_NS first: those workers are running tasks that
 * end soon (a job's tasks are short), and a caller that sleeps pays the VM's wake-up
 * path twice (the worker's signal, then its own wake-up, ~20-50 us) on the step's
 * critical path; on the quiet machine this took LeNet at 2 threads from 1.84-1.86 to
 * 1.40-1.57 ms a step, with less CPU time (2.5-2.8 against 3.1 ms: the futex and
 * wake-up path cost more than the spin), docs/benchmarks.md, "2 threads: the caller's
 * wait and OpenBLAS's lock".  A worker that is descheduled costs the caller at most
 * that spin before it sleeps as before.  Nothing else in cdl spins (the libraries run
 * single-threaded, blas.c).
 *
 * A job's life.  pool.state holds the job number (gen, bits 17 and up), a closed bit
 * and the count of workers inside the job (refs).  The caller writes the job, then
 * publishes gen + 1 with refs 0; a worker enters by raising refs while gen is still
 * the one it saw and the job is not closed, takes tasks, and leaves by lowering refs.
 * When every task has been taken the caller closes the job and waits for refs to reach
 * 0: every task taken has then finished, and a worker that wakes late finds the job
 * closed (or a newer one) and never touches it -- the caller never waits for a worker
 * that did not take part.  Nothing here allocates after cdl_parallel_set_threads, so a
 * training step stays allocation-free. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cdl.h"

enum { POOL_MAX = 64 }; /* workers at most (threads beyond that are ignored) */
#define POOL_SPIN_NS 5000  /* a waiting thread spins on pause this long (the default window), */
#define POOL_BUSY_NS 20000 /* then yields; a yield that took longer: the core is wanted, sleep */
#define POOL_CALLER_SPIN_NS 150000 /* the caller spins this long on workers inside its job */
#define ST_REFS ((uint64_t)0xffff)
#define ST_CLOSED ((uint64_t)1 << 16)
#define ST_GEN1 ((uint64_t)1 << 17)

static struct {
    pthread_mutex_t mu;  /* guards sleeping on the two condition variables only */
    pthread_cond_t wake; /* a new job or quit (sleeping workers wait on it) */
    pthread_cond_t done; /* refs reached 0 (a sleeping caller waits on it) */
    pthread_t tid[POOL_MAX];
    int nworkers;          /* changed only while holding busy */
    atomic_int threads;    /* nworkers + 1, for cdl_parallel_threads */
    atomic_int quit;
    atomic_int sleepers;   /* workers asleep (or about to be) on wake */
    atomic_int caller_waits; /* the caller is asleep (or about to be) on done */
    atomic_llong wait_ns;    /* the wait window (cdl_parallel_set_wait) */
    atomic_llong busy_ns;    /* a yield longer than this ends the wait (0: never) */
    _Alignas(64) _Atomic uint64_t state; /* gen | closed | refs (above) */
    cdl_slot_fn *fn;     /* the current job: written before its gen is published */
    void *ctx;
    int nblocks;  /* threads 0 .. nblocks - 1 take part (the caller is thread 0), each
                   * with its own block of the tasks */
    struct {
        _Alignas(64) atomic_llong next; /* next task index of this block */
        int64_t end;                    /* one past its last task */
    } block[POOL_MAX + 1];
    atomic_flag busy;    /* a job is running: a nested or concurrent call runs serially */
} pool = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
    .busy = ATOMIC_FLAG_INIT,
    .threads = 1,
    .wait_ns = POOL_SPIN_NS,
    .busy_ns = POOL_BUSY_NS,
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Wait up to the wait window while cond(arg) is false, spinning on pause for the first
 * POOL_SPIN_NS (at least `pause_ns`, which also stretches the window) and yielding the
 * core after that, until a yield returns late; returns cond's last value. */
static int spin_until(int (*cond)(uint64_t), uint64_t arg, int64_t pause_ns) {
    if (cond(arg)) return 1;
    int64_t wait = atomic_load_explicit(&pool.wait_ns, memory_order_relaxed);
    int64_t spin = wait < POOL_SPIN_NS ? wait : POOL_SPIN_NS;
    if (spin < pause_ns) spin = pause_ns;
    if (wait < spin) wait = spin;
    const int64_t t0 = now_ns();
    for (;;) {
        for (int i = 0; i < 64; i++) {
            cpu_relax();
            if (cond(arg)) return 1;
        }
        if (now_ns() - t0 > spin) break;
    }
    const int64_t busy = atomic_load_explicit(&pool.busy_ns, memory_order_relaxed);
    for (int64_t t = now_ns(); t - t0 <= wait;) {
        sched_yield();
        if (cond(arg)) return 1;
        const int64_t t1 = now_ns();
        if (busy > 0 && t1 - t > busy) break; /* another thread wanted the core */
        t = t1;
    }
    return cond(arg);
}

/* A job newer than gen `seen` has been published, or the pool quits.  (seq_cst loads,
 * plain moves on x86: the sleep handshakes below need them.) */
static int job_posted(uint64_t seen) {
    return atomic_load(&pool.state) / ST_GEN1 != seen || atomic_load(&pool.quit);
}

/* No worker is inside the current job. */
static int no_refs(uint64_t unused) {
    (void)unused;
    return (atomic_load(&pool.state) & ST_REFS) == 0;
}

/* Take tasks of the current job until none is left: those of block `slot` (this
 * thread's number) first, then the other blocks' in turn. */
static void run_tasks(cdl_slot_fn *fn, void *ctx, int slot) {
    const int nb = pool.nblocks;
    for (int k = 0; k < nb; k++) {
        const int b = (slot + k) % nb;
        for (;;) {
            int64_t i = atomic_fetch_add_explicit(&pool.block[b].next, 1, memory_order_relaxed);
            if (i >= pool.block[b].end) break;
            fn(ctx, i, slot);
        }
    }
}

/* Enter job gen `g` unless it is closed or already replaced: 1 if entered. */
static int enter_job(uint64_t g) {
    uint64_t s = atomic_load(&pool.state);
    while (s / ST_GEN1 == g && !(s & ST_CLOSED)) {
        if (atomic_compare_exchange_weak(&pool.state, &s, s + 1)) return 1;
    }
    return 0;
}

static void leave_job(void) {
    uint64_t s = atomic_fetch_sub(&pool.state, 1) - 1;
    if ((s & ST_REFS) == 0 && atomic_load(&pool.caller_waits)) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_signal(&pool.done);
        pthread_mutex_unlock(&pool.mu);
    }
}

/* The job number when worker i was made: a job posted before the worker first looks
 * must still count as new to it. */
static uint64_t worker_gen[POOL_MAX];

/* arg = the worker's index i: its slot is i + 1. */
static void *worker(void *arg) {
    const int slot = (int)(intptr_t)arg + 1;
    uint64_t seen = worker_gen[slot - 1];
    for (;;) {
        if (!spin_until(job_posted, seen, 0)) {
            pthread_mutex_lock(&pool.mu);
            atomic_fetch_add(&pool.sleepers, 1); /* seq_cst: see cdl_parallel_for */
            while (!job_posted(seen)) pthread_cond_wait(&pool.wake, &pool.mu);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.mu);
        }
        if (atomic_load(&pool.quit)) break;
        seen = atomic_load(&pool.state) / ST_GEN1;
        if (!enter_job(seen)) continue; /* closed before this worker came: nothing to do */
        if (slot < pool.nblocks) run_tasks(pool.fn, pool.ctx, slot);
        leave_job();
    }
    return NULL;
}

/* Stop and join every worker (none is inside a job: jobs end before their call returns). */
static void pool_stop(void) {
    pthread_mutex_lock(&pool.mu);
    atomic_store(&pool.quit, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < pool.nworkers; i++) pthread_join(pool.tid[i], NULL);
    pool.nworkers = 0;
    atomic_store(&pool.quit, 0);
}

/* CDL_POOL_WAIT_US (whole microseconds, under 10 s) sets the wait window the first
 * time the thread count is set; anything else in it is reported once on stderr and
 * the window left as it is. */
static void wait_from_env(void) {
    static int done;
    if (done) return;
    done = 1;
    const char *e = getenv("CDL_POOL_WAIT_US");
    if (!e || !*e) return;
    char *end;
    long long us = strtoll(e, &end, 10);
    if (*end == 0 && us >= 0 && us < 10000000 && *e >= '0' && *e <= '9')
        atomic_store(&pool.wait_ns, us * 1000);
    else
        fprintf(stderr, "cdl: CDL_POOL_WAIT_US=%s: not a whole number of microseconds from 0 to 9999999; "
                        "the pool's wait window stays %lld us\n", e, (long long)atomic_load(&pool.wait_ns) / 1000);
}

void cdl_parallel_set_threads(int n) {
    int want = n > 1 ? n - 1 : 0;
    if (want > POOL_MAX) want = POOL_MAX;
    while (atomic_flag_test_and_set(&pool.busy)) /* not while a job runs (jobs are short) */
        ;
    wait_from_env();
    if (want == pool.nworkers) {
        atomic_flag_clear(&pool.busy);
        return;
    }
    pool_stop();
    for (int i = 0; i < want; i++) {
        worker_gen[i] = atomic_load(&pool.state) / ST_GEN1; /* no job runs: stable */
        if (pthread_create(&pool.tid[i], NULL, worker, (void *)(intptr_t)i) != 0) break; /* fewer workers */
        pool.nworkers++;
    }
    atomic_store(&pool.threads, pool.nworkers + 1);
    atomic_flag_clear(&pool.busy);
}

int cdl_parallel_threads(void) {
    return atomic_load(&pool.threads);
}

int64_t cdl_parallel_set_wait(int64_t ns, int64_t busy_ns) {
    atomic_store(&pool.busy_ns, busy_ns > 0 ? busy_ns : 0);
    return atomic_exchange(&pool.wait_ns, ns > 0 ? ns : 0);
}

int cdl_parallel_sleeping(void) {
    return atomic_load(&pool.sleepers);
}

/* Publish job (fn, ctx, n), run its tasks beside the workers, close it and wait for
 * the workers inside.  The sleepers / caller_waits handshakes are Dekker pairs of
 * seq_cst operations: either the sleeper sees the new state before it waits, or the
 * waker sees the sleeper's count and signals under the mutex. */
static void pool_run(cdl_slot_fn *fn, void *ctx, int64_t n, int slots) {
    pool.fn = fn;
    pool.ctx = ctx;
    pool.nblocks = slots < pool.nworkers + 1 ? slots : pool.nworkers + 1;
    for (int b = 0; b < pool.nblocks; b++) {
        atomic_store_explicit(&pool.block[b].next, n * b / pool.nblocks, memory_order_relaxed);
        pool.block[b].end = n * (b + 1) / pool.nblocks;
    }
    uint64_t g = atomic_load(&pool.state) / ST_GEN1 + 1;
    atomic_store(&pool.state, g * ST_GEN1); /* open, no refs; releases the job's fields */
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_broadcast(&pool.wake);
        pthread_mutex_unlock(&pool.mu);
    }
    run_tasks(fn, ctx, 0);
    atomic_fetch_or(&pool.state, ST_CLOSED); /* every task is taken: no newcomers */
    if (!spin_until(no_refs, 0, POOL_CALLER_SPIN_NS)) {
        pthread_mutex_lock(&pool.mu);
        atomic_store(&pool.caller_waits, 1);
        while (!no_refs(0)) pthread_cond_wait(&pool.done, &pool.mu);
        atomic_store(&pool.caller_waits, 0);
        pthread_mutex_unlock(&pool.mu);
    }
}

void cdl_parallel_slots(int64_t n, int slots, cdl_slot_fn *fn, void *ctx) {
    if (n <= 0) return;
    if (n == 1 || slots < 2 || atomic_flag_test_and_set(&pool.busy)) { /* one task or thread, or nested */
        for (int64_t i = 0; i < n; i++) fn(ctx, i, 0);
        return;
    }
    if (pool.nworkers == 0) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i, 0);
    } else {
        pool_run(fn, ctx, n, slots);
    }
    atomic_flag_clear(&pool.busy);
}

/* cdl_parallel_for: a slot job whose tasks ignore the slot. */
typedef struct ForJob {
    cdl_task_fn *fn;
    void *ctx;
} ForJob;

static void for_task(void *arg, int64_t i, int slot) {
    (void)slot;
    const ForJob *J = arg;
    J->fn(J->ctx, i);
}

void cdl_parallel_for(int64_t n, cdl_task_fn *fn, void *ctx) {
    ForJob J = {fn, ctx};
    cdl_parallel_slots(n, POOL_MAX + 1, for_task, &J);
}

void cdl_parallel_for_work(int64_t n, int64_t work, cdl_task_fn *fn, void *ctx) {
    if (work < CDL_PAR_MIN) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    cdl_parallel_for(n, fn, ctx);
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

/* progress.c -- the trainer's clock and progress bar.
 *
 * On a terminal (isatty(stderr)) and without --quiet, one line on stderr, redrawn at
 * most ten times a second: epoch, a bar, examples done, samples/s, the running loss
 * and the ETA of the whole run.  Anywhere else it prints nothing (logs get the plain
 * per-epoch lines the trainer prints).
 */
#include "trainer_int.h"

#include <math.h>
#include <time.h>
#include <unistd.h>

double tr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double tr_thread_cpu(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return NAN;
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void tr_fmt_time(char *buf, size_t n, double s) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

void tr_progress_begin(tr_progress *p, int quiet, int epoch, int epochs, int64_t total,
                       int64_t left_after) {
    p->on = !quiet && isatty(2);
    p->epoch = epoch;
    p->epochs = epochs;
    p->total = total;
    p->done = 0;
    p->left_after = left_after;
    p->t0 = tr_now();
    p->last = 0;
}

void tr_progress_update(tr_progress *p, int64_t done, double loss) {
    p->done = done;
    if (!p->on) return;
    double now = tr_now();
    if (now - p->last < 0.1 && done < p->total) return;
    p->last = now;
    double el = now - p->t0, rate = el > 0 ? (double)done / el : 0;
    char eta[32];
    tr_fmt_time(eta, sizeof eta, rate > 0 ? (double)(p->total - done + p->left_after) / rate : -1);
    enum { W = 24 };
    char bar[W + 1];
    int fill = p->total > 0 ? (int)((double)done / (double)p->total * W) : 0;
    for (int i = 0; i < W; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
    bar[W] = 0;
    fprintf(stderr, "\r\033[Kepoch %d/%d [%s] %lld/%lld  %.0f samples/s  loss %.4f  ETA %s",
            p->epoch, p->epochs, bar, (long long)done, (long long)p->total, rate, loss, eta);
    fflush(stderr);
}

void tr_progress_end(tr_progress *p) {
    if (!p->on) return;
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
}

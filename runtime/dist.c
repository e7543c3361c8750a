/* dist.c -- many processes: data-parallel training over MPI (issue 16).
 *
 * A program is one rank of a job when mpirun (or another MPI launcher) started it:
 * cdl_dist_init sees the launcher's environment (Open MPI's OMPI_COMM_WORLD_SIZE,
 * MPICH's PMI_SIZE, PMIx's PMIX_RANK) and calls MPI_Init_thread.  Started any other
 * way it is a job of one process and never touches MPI, so a runtime built with MPI
 * costs nothing outside mpirun (no singleton MPI_Init, which would start a daemon).
 *
 * The runtime is built with MPI when the Makefile finds mpicc: this file is then
 * compiled with -DCDL_MPI, and the build makes the MPI plugin libcdlrt_mpi.so
 * (dist_mpi.c; dist_int.h) that cdl_dist_init dlopens under a launcher only, so that
 * programs linked with the runtime do not load libmpi at start (dist_load says where
 * the plugin is looked for).  Without MPI, every function here serves a job of one
 * process, and cdl_dist_init refuses to run as one of several (each copy would train
 * alone and they would all write the same checkpoint).
 *
 * What the trainer does with these (docs/trainer.md, "Many processes, many machines"):
 * every rank computes the gradient of its shard of each global batch, the gradient
 * slab is summed (cdl_dist_sum), the optimizer step runs identically everywhere.  All
 * collectives are called by every rank at the same points, in the same order, from
 * the trainer's thread only (MPI_THREAD_FUNNELED: the loader's workers never call MPI).
 *
 * Failures never hang the job.  A failure every rank learns of through cdl_dist_agree
 * (a bad batch, a failed save) ends every rank with the failing rank's message and
 * MPI_Finalize; any other failure (a rank that returns an error while the others wait
 * in a collective) ends with MPI_Abort, which takes the whole job down; a rank that
 * dies is noticed by mpirun, which ends the others and names the rank.
 */
#include "cdl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef CDL_MPI
#include <dlfcn.h>

#include "dist_int.h"
#endif

#define DIST_MSG 512                    /* bytes of a failure message sent between ranks */
#define DIST_CHUNK ((int64_t)1 << 28)   /* elements per MPI call (counts are int) */

static struct {
    int init;                           /* cdl_dist_init ran */
    int mpi;                            /* MPI_Init is ours: finalize or abort at the end */
    int rank, size;
    int agreed;                         /* every rank knows of the last failure */
    cdl_dist_stats st;
} D = {0, 0, 0, 1, 0, {0, 0, 0, 0, 0}};

static double dist_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cdl_dist_mpi(void) {
#ifdef CDL_MPI
    return 1;
#else
    return 0;
#endif
}

/* The job size an MPI launcher announces in the environment: > 0 when started by
 * one (0 when its size is not announced: PMIx alone), -1 when not. */
static int dist_launched(void) {
    static const char *size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof size_vars / sizeof size_vars[0]; i++) {
        const char *v = getenv(size_vars[i]);
        int64_t n;
        if (v && cdl_parse_i64(v, 1, 1 << 30, &n) == 0) return (int)n;
    }
    return getenv("PMIX_RANK") || getenv("PMI_RANK") ? 0 : -1;
}

#ifdef CDL_MPI
#ifndef CDL_MPI_PLUGIN_BUILT
#define CDL_MPI_PLUGIN_BUILT ""
#endif
#ifndef CDL_MPI_PLUGIN_INSTALLED
#define CDL_MPI_PLUGIN_INSTALLED ""
#endif
static const dist_mpi_ops *mpi;         /* the plugin's operations, once loaded */

/* Load the MPI plugin (dist_int.h): from $CDL_MPI_PLUGIN when set (that file only),
 * else the first of the build directory's copy (CDL_MPI_PLUGIN_BUILT), the installed
 * one (CDL_MPI_PLUGIN_INSTALLED) and DIST_PLUGIN_FILE on the dynamic linker's path
 * that loads.  It stays loaded.  0, or -1 and a message naming what was tried and
 * why each failed (launched: the job size the launcher announced, for the message). */
static int dist_load(int launched) {
    if (mpi) return 0;
    const char *env = getenv("CDL_MPI_PLUGIN");
    const char *paths[] = {CDL_MPI_PLUGIN_BUILT, CDL_MPI_PLUGIN_INSTALLED, DIST_PLUGIN_FILE};
    int n = 3;
    if (env && *env) {
        paths[0] = env;
        n = 1;
    }
    char why[3 * DIST_MSG] = "";
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        if (!*paths[i]) continue;
        void *h = dlopen(paths[i], RTLD_NOW | RTLD_GLOBAL);
        void *entry = h ? dlsym(h, DIST_PLUGIN_ENTRY) : NULL;
        const dist_mpi_ops *ops = entry ? ((dist_plugin_entry)entry)() : NULL;
        if (ops && ops->version == DIST_PLUGIN_VERSION) {
            mpi = ops;
            return 0;
        }
        const char *err = !h ? dlerror() : !entry ? "no " DIST_PLUGIN_ENTRY " in it" : "from another version of the runtime";
        if (at < sizeof why)
            at += (size_t)snprintf(why + at, sizeof why - at, "%s%s: %s", at ? "; " : "", paths[i], err ? err : "?");
        if (h && !ops) dlclose(h);
    }
    char many[32] = "several";
    if (launched > 0) snprintf(many, sizeof many, "%d", launched);
    return cdl_fail("started by an MPI launcher (mpirun) as one of %s processes, but the runtime's MPI plugin "
                    "could not be loaded (%s); set CDL_MPI_PLUGIN to its path (" DIST_PLUGIN_FILE
                    ", built next to libcdlrt.a and installed beside it), or run the program without mpirun",
                    many, why);
}
#endif

int cdl_dist_init(void) {
    if (D.init) return 0;
    int launched = dist_launched();
    D.init = 1;
    D.rank = 0;
    D.size = 1;
    if (launched < 0) return 0;
#ifdef CDL_MPI
    if (dist_load(launched) < 0) return -1;
    char msg[DIST_MSG] = "";
    int rank = 0, size = 1;
    if (mpi->init(&rank, &size, &D.mpi, msg, (int)sizeof msg) < 0) return cdl_fail("%s", msg);
    D.rank = rank;
    D.size = size;
    return 0;
#else
    if (launched == 1) return 0;        /* mpirun -np 1: one process is one process */
    char many[32] = "several";
    if (launched > 1) snprintf(many, sizeof many, "%d", launched);
    return cdl_fail("started by an MPI launcher (mpirun) as one of %s processes, but this program's runtime "
                    "was built without MPI (mpicc was not found when libcdlrt was built), so each copy would "
                    "train alone; install Open MPI (openmpi-bin, libopenmpi-dev), rebuild the runtime and the "
                    "program, or run it without mpirun", many);
#endif
}

int cdl_dist_rank(void) { return D.rank; }
int cdl_dist_size(void) { return D.size; }

int cdl_dist_agree(int failed, int *sig, double *sum, int n) {
    if (n < 0 || n > CDL_DIST_AGREE_MAX || (n > 0 && !sum))
        return cdl_fail("cdl_dist_agree: %d sums (at most %d)", n, CDL_DIST_AGREE_MAX);
    D.agreed = 0;
    if (D.size == 1) {
        if (failed) D.agreed = 1;
        return failed ? -1 : 0;
    }
#ifdef CDL_MPI
    double t0 = dist_now();
    double buf[CDL_DIST_AGREE_MAX + 2];
    buf[0] = failed ? 1 : 0;
    buf[1] = sig && *sig ? 1 : 0;
    for (int i = 0; i < n; i++) buf[2 + i] = sum[i];
    mpi->allreduce(buf, n + 2, DIST_DOUBLE, DIST_SUM);
    for (int i = 0; i < n; i++) sum[i] = buf[2 + i];
    if (buf[1] > 0 && sig) {            /* rare: which signal (the largest number) */
        int s = *sig;
        mpi->allreduce(&s, 1, DIST_INT, DIST_MAX);
        *sig = s;
        D.agreed = 1;                   /* every rank stops */
    }
    int rc = 0;
    if (buf[0] > 0) {                   /* rare: the lowest failing rank tells why */
        int who = failed ? D.rank : D.size;
        mpi->allreduce(&who, 1, DIST_INT, DIST_MIN);
        char msg[DIST_MSG];
        snprintf(msg, sizeof msg, "%s", cdl_last_error());
        mpi->bcast(msg, (int)sizeof msg, DIST_BYTE, who);
        msg[sizeof msg - 1] = 0;
        if (who == 0) cdl_fail("%s", msg);
        else cdl_fail("rank %d: %s", who, msg);
        D.agreed = 1;
        rc = -1;
    }
    D.st.agree_seconds += dist_now() - t0;
    D.st.agree_calls++;
    return rc;
#else
    (void)sig;
    return failed ? -1 : 0;
#endif
}

int cdl_dist_sum(void *buf, int64_t n, int real_size) {
    if (real_size != 4 && real_size != 8) return cdl_fail("cdl_dist_sum: real_size %d", real_size);
    if (D.size == 1 || n <= 0) return 0;
#ifdef CDL_MPI
    double t0 = dist_now();
    for (int64_t at = 0; at < n; at += DIST_CHUNK) {
        int64_t k = n - at < DIST_CHUNK ? n - at : DIST_CHUNK;
        mpi->allreduce((char *)buf + at * real_size, (int)k, real_size == 8 ? DIST_DOUBLE : DIST_FLOAT, DIST_SUM);
    }
    D.st.sum_seconds += dist_now() - t0;
    D.st.sum_bytes += (uint64_t)n * (uint64_t)real_size;
    D.st.sum_calls++;
#else
    (void)buf;
#endif
    return 0;
}

int cdl_dist_bcast(void *buf, size_t bytes) {
    if (D.size == 1 || bytes == 0) return 0;
#ifdef CDL_MPI
    for (size_t at = 0; at < bytes; at += (size_t)DIST_CHUNK) {
        size_t k = bytes - at < (size_t)DIST_CHUNK ? bytes - at : (size_t)DIST_CHUNK;
        mpi->bcast((char *)buf + at, (int)k, DIST_BYTE, 0);
    }
#else
    (void)buf;
#endif
    return 0;
}

/* FNV-1a over the bytes, 64 bits. */
static uint64_t dist_hash(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

int cdl_dist_same(const void *buf, size_t bytes, const char *what) {
    if (D.size == 1) return 0;
#ifdef CDL_MPI
    uint64_t h = dist_hash(buf, bytes), hv[2] = {h, ~h};
    mpi->allreduce(hv, 2, DIST_U64, DIST_MAX);
    if (hv[0] != ~hv[1]) {              /* max != min */
        D.agreed = 1;                   /* every rank sees it */
        return cdl_fail("%s differ between the ranks (rank %d's hash %016llx; the highest %016llx, the lowest "
                        "%016llx)", what, D.rank, (unsigned long long)h, (unsigned long long)hv[0],
                        (unsigned long long)~hv[1]);
    }
#else
    (void)buf;
    (void)bytes;
    (void)what;
    (void)dist_hash;
#endif
    return 0;
}

/* ---------------------------------------------------------------- nets */

int cdl_dist_sync_net(cdl_net *net, cdl_optim *opt) {
    if (D.size == 1) return 0;
    const cdl_model *m = net->model;
    size_t rs = (size_t)m->real_size;
    uint64_t head[3] = {net->step, net->seed, opt ? opt->t : 0};
    cdl_dist_bcast(head, sizeof head);
    net->step = head[0];
    net->seed = head[1];
    cdl_dist_bcast(net->param, m->param_count * rs);
    if (opt) {
        opt->t = head[2];
        for (int k = 0; k < opt->n_slots; k++) cdl_dist_bcast(opt->slot[k], m->train_count * rs);
    }
    return 0;
}

int cdl_dist_mean_state(cdl_net *net) {
    const cdl_model *m = net->model;
    int64_t n = (int64_t)(m->param_count - m->train_count);
    if (D.size == 1 || n == 0) return 0;
    size_t rs = (size_t)m->real_size;
    void *st = (char *)net->param + m->train_count * rs;
    if (cdl_dist_sum(st, n, m->real_size) < 0) return -1;
    double k = 1.0 / D.size;
    if (rs == 8)
        for (int64_t i = 0; i < n; i++) ((double *)st)[i] *= k;
    else
        for (int64_t i = 0; i < n; i++) ((float *)st)[i] = (float)(((float *)st)[i] * k);
    return 0;
}

void cdl_dist_get_stats(cdl_dist_stats *s) { *s = D.st; }

int cdl_dist_agreed(void) { return D.size == 1 || D.agreed; }

int cdl_dist_finish(int status) {
#ifdef CDL_MPI
    if (D.mpi) {
        D.mpi = 0;
        fflush(stdout);
        fflush(stderr);
        if (status != 0 && !D.agreed && D.size > 1) mpi->abort(status);
        mpi->finalize();
    }
#endif
    D.init = 0;
    D.rank = 0;
    D.size = 1;
    return status;
}

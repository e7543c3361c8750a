/* dist_int.h -- the interface between dist.c and its MPI plugin (dist_mpi.c).
 *
 * Only a program started by an MPI launcher needs MPI, so the runtime does not link
 * libmpi: the build makes a small shared library next to libcdlrt.a,
 * libcdlrt_mpi.so (runtime/dist_mpi.c, compiled with mpicc's flags and linked with
 * libmpi), and cdl_dist_init dlopens it only under a launcher.  A program started
 * otherwise never maps libmpi (loading it and its dependencies cost ~5 ms of start-up
 * and 1.3 MB of RSS in every run).  The plugin's one exported symbol,
 * DIST_PLUGIN_ENTRY, returns its table of operations; the table's version must be
 * DIST_PLUGIN_VERSION (a plugin from another build of the runtime is refused).
 * The operations are thin wrappers of MPI calls on MPI_COMM_WORLD; the types and
 * reductions are named by the enums below, so dist.c needs no <mpi.h>.
 */
#ifndef CDL_DIST_INT_H
#define CDL_DIST_INT_H

#define DIST_PLUGIN_VERSION 1
#define DIST_PLUGIN_ENTRY "cdl_dist_mpi_plugin"
#define DIST_PLUGIN_FILE "libcdlrt_mpi.so"

typedef enum { DIST_DOUBLE, DIST_FLOAT, DIST_INT, DIST_U64, DIST_BYTE } dist_type;
typedef enum { DIST_SUM, DIST_MAX, DIST_MIN } dist_op;

typedef struct dist_mpi_ops {
    int version;                        /* DIST_PLUGIN_VERSION */
    /* MPI_Init_thread (MPI_THREAD_FUNNELED) unless MPI is initialized already (*ours:
     * 1 when this call initialized it), then this rank and the job's size.  0, or -1
     * with a message in msg (bytes cap). */
    int (*init)(int *rank, int *size, int *ours, char *msg, int cap);
    /* In place over every rank: n elements of type t reduced with op. */
    void (*allreduce)(void *buf, int n, dist_type t, dist_op op);
    /* n elements of type t from rank root to every rank. */
    void (*bcast)(void *buf, int n, dist_type t, int root);
    void (*abort)(int status);          /* MPI_Abort: ends every rank */
    void (*finalize)(void);             /* MPI_Finalize */
} dist_mpi_ops;

/* The plugin's entry (DIST_PLUGIN_ENTRY): its table, never NULL. */
typedef const dist_mpi_ops *(*dist_plugin_entry)(void);

#endif

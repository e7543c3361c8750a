/* dist_mpi.c -- the MPI plugin of dist.c: libcdlrt_mpi.so, the only file that includes
 * <mpi.h> or links libmpi (dist_int.h says why and how it is loaded).  Built by the
 * Makefile with mpicc's flags where mpicc is found; not part of libcdlrt.a. */
#include <mpi.h>
#include <stdio.h>

#include "dist_int.h"

static MPI_Datatype mpi_type(dist_type t) {
    switch (t) {
    case DIST_DOUBLE: return MPI_DOUBLE;
    case DIST_FLOAT: return MPI_FLOAT;
    case DIST_INT: return MPI_INT;
    case DIST_U64: return MPI_UINT64_T;
    case DIST_BYTE: break;
    }
    return MPI_BYTE;
}

static MPI_Op mpi_op(dist_op op) {
    return op == DIST_MAX ? MPI_MAX : op == DIST_MIN ? MPI_MIN : MPI_SUM;
}

static int plugin_init(int *rank, int *size, int *ours, char *msg, int cap) {
    int on = 0, provided = 0;
    *ours = 0;
    MPI_Initialized(&on);
    if (!on) {
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
            snprintf(msg, (size_t)cap, "MPI_Init_thread failed");
            return -1;
        }
        *ours = 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, size);
    return 0;
}

static void plugin_allreduce(void *buf, int n, dist_type t, dist_op op) {
    MPI_Allreduce(MPI_IN_PLACE, buf, n, mpi_type(t), mpi_op(op), MPI_COMM_WORLD);
}

static void plugin_bcast(void *buf, int n, dist_type t, int root) {
    MPI_Bcast(buf, n, mpi_type(t), root, MPI_COMM_WORLD);
}

static void plugin_abort(int status) {
    MPI_Abort(MPI_COMM_WORLD, status);
}

static void plugin_finalize(void) {
    MPI_Finalize();
}

static const dist_mpi_ops plugin_ops = {
    .version = DIST_PLUGIN_VERSION,
    .init = plugin_init,
    .allreduce = plugin_allreduce,
    .bcast = plugin_bcast,
    .abort = plugin_abort,
    .finalize = plugin_finalize,
};

/* DIST_PLUGIN_ENTRY (dlsym'ed by dist.c). */
const dist_mpi_ops *cdl_dist_mpi_plugin(void);
const dist_mpi_ops *cdl_dist_mpi_plugin(void) {
    return &plugin_ops;
}

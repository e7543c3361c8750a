/* dist_lazy.c -- driver for tests/sh/mpi_lazy.sh: joins the job (cdl_dist_init), sums
 * rank + 1 over the ranks (cdl_dist_sum) and prints
 *     rank R size S libmpi L sum X
 * where L is 1 when a libmpi is mapped into this process (/proc/self/maps), 0 if not:
 * a program started without mpirun must not load MPI (runtime/dist_int.h).  A failed
 * cdl_dist_init prints its message to stderr and exits 1. */
#include <stdio.h>

#include "cdl.h"
#include "mapped.h"

int main(void) {
    if (cdl_dist_init() < 0) {
        fprintf(stderr, "dist_lazy: %s\n", cdl_last_error());
        return cdl_dist_finish(1);
    }
    double x = cdl_dist_rank() + 1;
    if (cdl_dist_sum(&x, 1, 8) < 0) {
        fprintf(stderr, "dist_lazy: %s\n", cdl_last_error());
        return cdl_dist_finish(1);
    }
    printf("rank %d size %d libmpi %d sum %g\n", cdl_dist_rank(), cdl_dist_size(), lib_mapped("libmpi"), x);
    return cdl_dist_finish(0);
}

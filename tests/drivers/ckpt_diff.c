/* ckpt_diff.c -- driver for tests/sh/mpi_*.sh: links with a generated model, loads two
 * checkpoints of it and compares their parameters and state buffers tensor by tensor.
 *
 *   ckpt_diff A B TOL
 *
 * For each tensor: max |a - b| / max |a| (the difference relative to the tensor's
 * scale).  Prints the worst tensor and whether the slabs are bitwise equal; exits 0
 * when the worst relative difference is <= TOL (TOL 0: the bytes must be equal), 1
 * when it is larger, 2 when a file does not load. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdl.h"

extern const cdl_model MODEL;

static double elem(const cdl_model *m, const void *slab, size_t i) {
    return m->real_size == 8 ? ((const double *)slab)[i] : ((const float *)slab)[i];
}

int main(int argc, char **argv) {
    if (argc != 4) return fprintf(stderr, "usage: ckpt_diff A B TOL\n"), 2;
    const cdl_model *m = &MODEL;
    cdl_net *a = cdl_net_new(m), *b = cdl_net_new(m);
    if (!a || !b) return fprintf(stderr, "ckpt_diff: %s\n", cdl_last_error()), 2;
    for (int k = 0; k < 2; k++)
        if (cdl_ckpt_load(argv[1 + k], k ? b : a, NULL, NULL) < 0)
            return fprintf(stderr, "ckpt_diff: %s\n", cdl_last_error()), 2;
    double tol = atof(argv[3]), worst = 0;
    const char *wname = "-";
    for (int p = 0; p < m->n_params; p++) {
        const cdl_tensor *t = &m->params[p];
        int64_t n = cdl_tensor_numel(t, m->batch);
        double dmax = 0, amax = 0;
        for (int64_t i = 0; i < n; i++) {
            double x = elem(m, a->param, t->offset + (size_t)i), y = elem(m, b->param, t->offset + (size_t)i);
            if (fabs(x - y) > dmax || isnan(x - y)) dmax = isnan(x - y) ? INFINITY : fabs(x - y);
            if (fabs(x) > amax) amax = fabs(x);
        }
        double rel = dmax == 0 ? 0 : amax > 0 ? dmax / amax : INFINITY;
        if (rel > worst || (rel == worst && p == 0)) worst = rel, wname = t->name;
    }
    int same = memcmp(a->param, b->param, m->param_count * (size_t)m->real_size) == 0;
    printf("%s: worst relative difference %.3g (%s)\n", same ? "bitwise equal" : "not bitwise equal", worst, wname);
    cdl_net_free(a);
    cdl_net_free(b);
    return tol == 0 ? !same : worst > tol;
}

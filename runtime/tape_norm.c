/* tape_norm.c -- tape ops over kernels_norm.c: layer, RMS and group normalisation
 * (instance norm is group norm with groups = channels).  Same pattern as tape_ops.c:
 * the public cdl_t_<op> checks shapes, records and runs the forward kernel; the static
 * bwd_norm is the backward rule of compiler/ops_norm.c with the same kernels, adding
 * the gradients in the same order (x, weight, bias).
 */
#include "tape_int.h"

enum { NORM_LAYER, NORM_RMS, NORM_GROUP };

/* The record's geometry: a = rows (layer, RMS) or images, b = the normalised width or
 * channels, hw = the plane size (group). */
typedef struct NormGeo { int64_t a, b, hw; } NormGeo;

static NormGeo norm_geo(int kind, const cdl_t *x) {
    if (kind == NORM_GROUP) return (NormGeo){x->dims[0], x->dims[1], tape_prod(x->dims, 2, x->rank)};
    return (NormGeo){tape_prod(x->dims, 0, x->rank - 1), x->dims[x->rank - 1], 1};
}

/* dx, dweight and dbias in one kernel call: each straight into its gradient (or a
 * temporary added in after); dx into a throw-away temporary when x needs none, and no
 * dweight / dbias when those need none (the kernels take NULL). */
static void bwd_norm(cdl_tape *tp, cdl_t *y) {
    int kind = (int)y->ia[2], nin = 1;
    cdl_t *x = y->in[0], *w = y->ia[0] & 1 ? y->in[nin++] : NULL, *b = y->ia[0] & 2 ? y->in[nin] : NULL;
    cdl_t *p[3] = {x, w, b};
    void *d[3] = {NULL, NULL, NULL};
    int acc[3] = {0, 0, 0}, need[3];
    for (int i = 0; i < 3; i++) {
        need[i] = p[i] && tape_need(tp, p[i]);
        if (need[i]) d[i] = tape_gdst(tp, p[i], &acc[i]);
        else if (i == 0) d[i] = tape_rtemp(tp, x->numel);
        if ((need[i] || i == 0) && !d[i]) return;
    }
    NormGeo g = norm_geo(kind, x);
    const void *wd = w ? w->data : NULL;
    if (kind == NORM_LAYER) TK(tp, layer_norm_bwd, g.a, g.b, y->grad, x->data, wd, y->aux, d[0], d[1], d[2]);
    else if (kind == NORM_RMS) TK(tp, rms_norm_bwd, g.a, g.b, y->grad, x->data, wd, y->aux, d[0], d[1]);
    else TK(tp, group_norm_bwd, g.a, g.b, g.hw, y->ia[1], y->grad, x->data, wd, y->aux, d[0], d[1], d[2]);
    for (int i = 0; i < 3; i++)
        if (need[i]) tape_gfin(tp, p[i], d[i], acc[i]);
}

/* Check and record one normalisation: x, then the affine inputs present; width is the
 * size they must have.  Returns the record with its statistics allocated, or NULL. */
static cdl_t *norm_rec(cdl_tape *tp, const char *op, int kind, cdl_t *x, cdl_t *w, cdl_t *b, int64_t groups,
                       double eps) {
    cdl_t *in[3] = {x, NULL, NULL};
    int nin = 1;
    if (w) in[nin++] = w;
    if (b) in[nin++] = b;
    if (!tape_need_real(tp, op, in, nin)) return NULL;
    if (x->rank < (kind == NORM_GROUP ? 2 : 1)) return tape_err(tp, op, "input %s has too few axes", DSTR(x));
    NormGeo g = norm_geo(kind, x);
    for (int k = 1; k < nin; k++)
        if (in[k]->rank != 1 || in[k]->dims[0] != g.b)
            return tape_err(tp, op, "weight and bias must be [%lld] for input %s, got %s", (long long)g.b, DSTR(x),
                            DSTR(in[k]));
    if (kind == NORM_GROUP && (groups <= 0 || g.b % groups != 0))
        return tape_err(tp, op, "%lld groups do not divide the channels of %s", (long long)groups, DSTR(x));
    if (!(eps > 0)) return tape_err(tp, op, "eps must be positive, got %g", eps);
    cdl_t *y = tape_rec(tp, op, tp->real, x->rank, x->dims, 1, nin, in);
    if (!y) return NULL;
    int64_t stats = kind == NORM_GROUP ? g.a * groups : g.a;
    y->aux = tape_alloc(tp, (size_t)(kind == NORM_RMS ? stats : 2 * stats) * (size_t)tp->rs);
    if (!y->aux) return NULL;
    y->ia[0] = (w ? 1 : 0) | (b ? 2 : 0);
    y->ia[1] = groups;
    y->ia[2] = kind;
    y->fa[0] = eps;
    y->bwd = bwd_norm;
    return y;
}

cdl_t *cdl_t_layer_norm(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b, double eps) {
    cdl_t *y = norm_rec(tp, "layer_norm", NORM_LAYER, x, w, b, 1, eps);
    if (!y) return NULL;
    NormGeo g = norm_geo(NORM_LAYER, x);
    TK(tp, layer_norm, g.a, g.b, eps, x->data, w ? w->data : NULL, b ? b->data : NULL, y->data, y->aux);
    return y;
}

cdl_t *cdl_t_rms_norm(cdl_tape *tp, cdl_t *x, cdl_t *w, double eps) {
    cdl_t *y = norm_rec(tp, "rms_norm", NORM_RMS, x, w, NULL, 1, eps);
    if (!y) return NULL;
    NormGeo g = norm_geo(NORM_RMS, x);
    TK(tp, rms_norm, g.a, g.b, eps, x->data, w ? w->data : NULL, y->data, y->aux);
    return y;
}

cdl_t *cdl_t_group_norm(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b, int64_t groups, double eps) {
    cdl_t *y = norm_rec(tp, "group_norm", NORM_GROUP, x, w, b, groups, eps);
    if (!y) return NULL;
    NormGeo g = norm_geo(NORM_GROUP, x);
    TK(tp, group_norm, g.a, g.b, g.hw, groups, eps, x->data, w ? w->data : NULL, b ? b->data : NULL, y->data, y->aux);
    return y;
}

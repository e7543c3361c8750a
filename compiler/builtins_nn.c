/* builtins_nn.c -- the constructors of the built-ins of issue 13 (attention,
 * normalisation layers, the general convolution family, selection and axis
 * reductions); their rows are in builtins.c's table, with the same conventions: the
 * bound arguments arrive in signature order, layers make PyTorch-named parameters under
 * an instance name, user errors are reported at loc and give V_ERR. */
#include "cdlc.h"
#include "cdl.h" /* CDL_INIT_* */

#include <string.h>

/* attention(q, k, v, causal=false, scale=0): F.scaled_dot_product_attention; scale 0
 * means 1 / sqrt(d). */
Value bn_attention(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int in[3] = {el_real_node(e, a[0], b->name, "q", loc), el_real_node(e, a[1], b->name, "k", loc),
                 el_real_node(e, a[2], b->name, "v", loc)};
    bool causal;
    double scale;
    if (in[0] < 0 || in[1] < 0 || in[2] < 0 || !el_bool(e, a[3], b->name, "causal", loc, &causal) ||
        !el_num(e, a[4], b->name, "scale", loc, &scale))
        return el_err();
    if (scale < 0) {
        error_at(loc, "attention: scale must be positive (0: 1/sqrt(d)), got %g", scale);
        return el_err();
    }
    Attrs at = {.i = {causal}, .f = {scale}};
    return el_tensor(e, el_add(e, OP_ATTENTION, loc, 3, in, &at, NULL, DT_REAL));
}

/* ------------------------------------------------------------------ normalisation */

/* layer_norm(x, eps, affine, bias) [ln], rms_norm(x, eps?, affine) [rms],
 * group_norm(x, groups, eps, affine) [gn], instance_norm(x, eps, affine) [inorm]:
 * torch.nn.LayerNorm(n) over the last axis, RMSNorm(n) (eps absent: the machine
 * epsilon), GroupNorm(groups, C) and InstanceNorm (affine off by default, no running
 * statistics) over [N, C, ...].  Parameters weight = 1 and bias = 0 of the normalised
 * width or the channels, named as PyTorch names them. */
Value bn_norm(Elab *e, const Builtin *b, Loc loc, Value *a) {
    bool group = b->op == OP_GROUP_NORM, inst_norm = group && strcmp(b->name, "instance_norm") == 0;
    int k = group && !inst_norm ? 2 : 1;     /* eps is argument k */
    int x = el_real_node(e, a[0], b->name, "x", loc);
    int64_t groups = 0;
    double eps = -1;
    bool affine, bias = b->op != OP_RMS_NORM;
    if (x < 0 || (k == 2 && !el_int(e, a[1], b->name, "groups", loc, &groups)) ||
        (a[k].k != V_NONE && !el_num(e, a[k], b->name, "eps", loc, &eps)) ||
        !el_bool(e, a[k + 1], b->name, "affine", loc, &affine) ||
        (b->op == OP_LAYER_NORM && !el_bool(e, a[k + 2], b->name, "bias", loc, &bias)))
        return el_err();
    const Shape *xs = &el_n(e, x)->shape;
    int lo = inst_norm ? 3 : group ? 2 : 1;
    if (xs->rank < lo) {
        error_at(loc, "%s: expected %s, got %s", b->name, lo == 3 ? "an input [N, C, L, ...]" : lo == 2 ? "an input [N, C, ...]" : "an input with an axis",
                 shape_str(xs));
        return el_err();
    }
    if (a[k].k != V_NONE && !(eps > 0)) {
        error_at(loc, "%s: eps must be positive, got %g", b->name, eps);
        return el_err();
    }
    if (group && !inst_norm && (groups <= 0 || xs->d[1] % groups != 0)) {
        error_at(loc, "%s: groups must be positive and divide the %lld channels of %s, got %lld", b->name,
                 (long long)xs->d[1], shape_str(xs), (long long)groups);
        return el_err();
    }
    int64_t w = group ? xs->d[1] : xs->d[xs->rank - 1];
    int in[3] = {x}, nin = 1;
    Attrs at = {.i = {0, inst_norm ? w : groups}, .f = {eps}};
    if (affine) {
        const char *inst = el_instance(e, b->base, a[b->op == OP_LAYER_NORM ? k + 3 : k + 2], loc);
        if (!inst) return el_err();
        Shape s = {.rank = 1, .d = {w}};
        in[nin++] = el_param(e, inst, "weight", s, CDL_INIT_ONES, 0, 0, w, w, false, loc);
        if (bias) in[nin++] = el_param(e, inst, "bias", s, CDL_INIT_ZEROS, 0, 0, w, w, false, loc);
        if (in[1] < 0 || in[nin - 1] < 0) return el_err();
        at.i[0] = bias ? 3 : 1;
    }
    return el_tensor(e, el_add(e, b->op, loc, nin, in, &at, NULL, DT_REAL));
}

/* builtins_sel.c -- the constructors of the mask and selection built-ins (issue 13
 * items 6 and 7): where, masked_fill, tril/triu, one_hot, argmax/argmin, var/std,
 * logsumexp, stack and the casts float()/int().  Their rows are in builtins.c's table,
 * with its conventions: the bound arguments arrive in signature order, user errors are
 * reported at loc and give V_ERR.  The comparison operators (< <= > >= == !=) are
 * el_arith's (elab_core.c). */
#include "cdlc.h"

#include <string.h>

/* where(cond, a, b): torch.where; a and b may be numbers (scalar constants); cond is
 * true where it is not 0 (an i32 cond is converted: a bool tensor of torch). */
Value bs_where(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int in[3] = {el_mask_operand(e, a[0], b->name, "cond", loc), el_operand(e, a[1], b->name, "a", loc),
                 el_operand(e, a[2], b->name, "b", loc)};
    if (in[0] < 0 || in[1] < 0 || in[2] < 0) return el_err();
    return el_tensor(e, el_add(e, OP_WHERE, loc, 3, in, NULL, NULL, DT_REAL));
}

/* masked_fill(x, mask, value): Tensor.masked_fill, i.e. where(mask, value, x); the
 * mask (f32 or i32: true where not 0) broadcasts to x's shape (the result has x's). */
Value bs_masked_fill(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc), m = el_mask_operand(e, a[1], b->name, "mask", loc);
    if (x < 0 || m < 0) return el_err();
    const Shape *xs = &el_n(e, x)->shape, *ms = &el_n(e, m)->shape;
    Shape out;
    if (!shape_broadcast(xs, ms, &out) || !shape_eq(&out, xs)) {
        error_at(loc, "masked_fill: the mask %s does not broadcast to x %s", shape_str(ms), shape_str(xs));
        return el_err();
    }
    int v = el_operand(e, a[2], b->name, "value", loc);
    if (v < 0) return el_err();
    int in[3] = {m, v, x};
    return el_tensor(e, el_add(e, OP_WHERE, loc, 3, in, NULL, NULL, DT_REAL));
}

/* tril(x, k=0), triu(x, k=0): torch.tril / torch.triu over the last two axes. */
Value bs_tril(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int64_t k;
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0 || !el_int(e, a[1], b->name, "k", loc, &k)) return el_err();
    if (el_n(e, x)->shape.rank < 2) {
        error_at(loc, "%s: expected a tensor with at least 2 axes, got %s", b->name, shape_str(&el_n(e, x)->shape));
        return el_err();
    }
    Attrs at = {.i = {k, b->name[3] == 'u'}};
    return el_tensor(e, el_add(e, OP_TRIL, loc, 1, &x, &at, NULL, DT_REAL));
}

/* one_hot(ids, n): F.one_hot(ids, n).float(), i32 ids -> f32[..., n]. */
Value bs_one_hot(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int64_t n;
    int ids = el_node(e, a[0], b->name, "ids", loc);
    if (ids < 0 || !el_int(e, a[1], b->name, "n", loc, &n)) return el_err();
    if (el_n(e, ids)->dtype != DT_I32) {
        error_at(loc, "one_hot: argument 'ids' must be i32 class indices, got f32%s (int(x) converts)",
                 shape_str(&el_n(e, ids)->shape));
        return el_err();
    }
    if (n <= 0) {
        error_at(loc, "one_hot: n must be positive, got %lld", (long long)n);
        return el_err();
    }
    Attrs at = {.i = {n}};
    return el_tensor(e, el_add(e, OP_ONE_HOT, loc, 1, &ids, &at, NULL, DT_REAL));
}

/* argmax(x, axis?, keepdim=false), argmin: torch.argmax / argmin, i32, no gradient;
 * without an axis, the position in the flattened x. */
Value bs_argmax(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc);
    bool keep;
    int64_t ax = -1;
    if (x < 0 || !el_bool(e, a[2], b->name, "keepdim", loc, &keep)) return el_err();
    int r = el_n(e, x)->shape.rank;
    if (r == 0) {
        error_at(loc, "%s: x is a scalar: there is no axis to search", b->name);
        return el_err();
    }
    if (a[1].k != V_NONE) {
        if (!el_int(e, a[1], b->name, "axis", loc, &ax)) return el_err();
        int64_t k = ax < 0 ? ax + r : ax;
        if (k < 0 || k >= r) {
            error_at(loc, "%s: axis %lld is out of range for a tensor of rank %d", b->name, (long long)ax, r);
            return el_err();
        }
        ax = k;
    }
    Attrs at = {.i = {ax, keep, b->name[3] == 'i'}};
    return el_tensor(e, el_add(e, OP_ARGMAX, loc, 1, &x, &at, NULL, DT_I32));
}

/* var(x, axis?, keepdim=false, *, unbiased=true, correction?), std: torch.var / std;
 * correction (N - correction in the denominator) is 1 by default, 0 with
 * unbiased=false, or the number given. */
Value bs_moments(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc);
    int64_t mask;
    bool keep, unbiased;
    double corr;
    if (x < 0 || !el_bool(e, a[2], b->name, "keepdim", loc, &keep) || !el_bool(e, a[3], b->name, "unbiased", loc, &unbiased))
        return el_err();
    corr = unbiased ? 1 : 0;
    if (a[4].k != V_NONE && !el_num(e, a[4], b->name, "correction", loc, &corr)) return el_err();
    if (!(corr >= 0)) {
        error_at(loc, "%s: correction must not be negative, got %g", b->name, corr);
        return el_err();
    }
    if (el_n(e, x)->shape.rank == 0) {
        error_at(loc, "%s: x is a scalar: there is no axis to reduce", b->name);
        return el_err();
    }
    if (!axes_mask(e, a[1], el_n(e, x)->shape.rank, b->name, loc, &mask)) return el_err();
    Attrs at = {.i = {mask, keep, b->name[0] == 's'}, .f = {corr}};
    return el_tensor(e, el_add(e, OP_MOMENTS, loc, 1, &x, &at, NULL, DT_REAL));
}

/* logsumexp(x, axis?, keepdim=false): torch.logsumexp (all axes when none given). */
Value bs_logsumexp(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc);
    int64_t mask;
    bool keep;
    if (x < 0 || !el_bool(e, a[2], b->name, "keepdim", loc, &keep)) return el_err();
    if (el_n(e, x)->shape.rank == 0) {
        error_at(loc, "%s: x is a scalar: there is no axis to reduce", b->name);
        return el_err();
    }
    if (!axes_mask(e, a[1], el_n(e, x)->shape.rank, b->name, loc, &mask)) return el_err();
    Attrs at = {.i = {mask, keep}};
    return el_tensor(e, el_add(e, OP_LOGSUMEXP, loc, 1, &x, &at, NULL, DT_REAL));
}

/* float(ids): i32 -> f32 (exact below 2^24); int(x): f32 -> i32 truncated toward zero
 * (torch's .float() / .int()).  A tensor already of that type is returned as it is. */
Value bs_cast(Elab *e, const Builtin *b, Loc loc, Value *a) {
    bool to_int = b->name[0] == 'i';
    int x = el_node(e, a[0], b->name, "x", loc);
    if (x < 0) return el_err();
    if ((el_n(e, x)->dtype == DT_I32) == to_int) return el_tensor(e, x);
    Attrs at = {.i = {to_int}};
    return el_tensor(e, el_add(e, OP_CAST, loc, 1, &x, &at, NULL, to_int ? DT_I32 : DT_REAL));
}

/* stack(tensors, axis=0): torch.stack, the same-shaped tensors joined along a new
 * axis (axis in [-(rank + 1), rank]); a reshape of each and a concat.  Batched tensors
 * keep the batch at axis 0, so they stack along axis 1 or later. */
Value bs_stack(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int64_t axis;
    int *in, n = el_tensor_list(e, a[0], b->name, "stack", loc, &in);
    if (n < 0 || !el_int(e, a[1], b->name, "axis", loc, &axis)) return el_err();
    Shape s0 = el_n(e, in[0])->shape;
    for (int i = 1; i < n; i++) {
        const Shape *s = &el_n(e, in[i])->shape;
        if (!shape_eq(s, &s0) || s->batched != s0.batched) {
            error_at(loc, "stack: tensor %d has shape %s, tensor 1 %s; stack needs equal shapes", i + 1, shape_str(s),
                     shape_str(&s0));
            return el_err();
        }
    }
    int64_t ax = axis < 0 ? axis + s0.rank + 1 : axis;
    if (ax < 0 || ax > s0.rank || s0.rank + 1 > MAXDIM) {
        error_at(loc, "stack: axis %lld is out of range for stacking tensors of rank %d", (long long)axis, s0.rank);
        return el_err();
    }
    if (ax == 0 && s0.batched) {
        error_at(loc, "stack: cannot stack batched tensors along the batch axis 0 (axis=1 keeps the batch first)");
        return el_err();
    }
    Shape u = s0;
    for (int i = u.rank; i > ax; i--) u.d[i] = u.d[i - 1];
    u.d[ax] = 1;
    u.rank++;
    for (int i = 0; i < n; i++) in[i] = el_add(e, OP_RESHAPE, loc, 1, &in[i], NULL, &u, DT_REAL);
    if (n == 1) return el_tensor(e, in[0]);
    Attrs at = {.i = {ax}};
    return el_tensor(e, el_add(e, OP_CONCAT, loc, n, in, &at, NULL, DT_REAL));
}

/* builtins_sel.c -- the constructors of the mask and selection built-ins (issue 13
 * items 6 and 7): where, masked_fill, tril/triu, one_hot, argmax/argmin, var/std,
 * logsumexp, stack and the casts float()/int().  Their rows are in builtins.c's table,
 * with its conventions: the bound arguments arrive in signature order, user errors are
 * reported at loc and give V_ERR.  The comparison operators (< <= > >= == !=) are
 * el_arith's (elab_core.c). */
#include "cdlc.h"

#include <string.h>

/* where(cond, a, b): torch.where; a and b may be numbers (scalar constants). */
Value bs_where(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int in[3] = {el_real_node(e, a[0], b->name, "cond", loc), el_operand(e, a[1], b->name, "a", loc),
                 el_operand(e, a[2], b->name, "b", loc)};
    if (in[0] < 0 || in[1] < 0 || in[2] < 0) return el_err();
    return el_tensor(e, el_add(e, OP_WHERE, loc, 3, in, NULL, NULL, DT_REAL));
}

/* masked_fill(x, mask, value): Tensor.masked_fill, i.e. where(mask, value, x); the
 * mask broadcasts to x's shape (the result has x's shape). */
Value bs_masked_fill(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc), m = el_real_node(e, a[1], b->name, "mask", loc);
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

/* builtins_nn.c -- the constructors of the built-ins of issue 13 (attention,
 * normalisation layers, the general convolution family, selection and axis
 * reductions); their rows are in builtins.c's table, with the same conventions: the
 * bound arguments arrive in signature order, layers make PyTorch-named parameters under
 * an instance name, user errors are reported at loc and give V_ERR. */
#include "cdlc.h"

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

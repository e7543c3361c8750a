/* builtins.c -- the built-in layers and functions of CDL, mapped onto ops.def: the
 * table (name, signature, constructor) and the constructors.  The operators
 * (+ - * / @ **) and the argument checks they use live in elab_core.c.
 *
 * Each entry has a signature string ("x out bias=true * name?": formals in order, with
 * defaults; `?` marks an optional argument without default; formals after `*` are
 * keyword-only, as every layer's name= and conv2d's stride=), and a function that gets
 * the bound arguments in that order.  Layers make their parameters through el_param
 * under an instance name (el_instance): linear -> linear1.weight, linear1.bias.
 * Weights use PyTorch's layouts and default initialisation (CDL_INIT_DEFAULT, i.e.
 * U(+-1/sqrt(fan_in))), so checkpoints map onto a state_dict.
 * docs/language.md lists every built-in with its shape rule; keep the two in step.
 */
#include "cdlc.h"

#include <math.h>
#include <string.h>

/* CDL_INIT_* numbering of runtime/cdl.h (the compiler does not include cdl.h). */
enum { INIT_ZEROS, INIT_ONES, INIT_CONSTANT, INIT_UNIFORM, INIT_NORMAL, INIT_XAVIER_UNIFORM,
       INIT_XAVIER_NORMAL, INIT_HE_UNIFORM, INIT_HE_NORMAL, INIT_DEFAULT };

static bool pos_int(Elab *e, Value v, const char *fn, const char *arg, Loc loc, int64_t *out) {
    if (!el_int(e, v, fn, arg, loc, out)) return false;
    if (*out > 0) return true;
    error_at(loc, "%s: %s must be positive, got %lld", fn, arg, (long long)*out);
    return false;
}

static bool nonneg_int(Elab *e, Value v, const char *fn, const char *arg, Loc loc, int64_t *out) {
    if (!el_int(e, v, fn, arg, loc, out)) return false;
    if (*out >= 0) return true;
    error_at(loc, "%s: %s must not be negative, got %lld", fn, arg, (long long)*out);
    return false;
}

static Shape shp(int rank, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t d[4] = {d0, d1, d2, d3};
    return shape_make(rank, d, false);
}

static const Shape *shape_of(Elab *e, int id) { return &el_n(e, id)->shape; }

static bool need_rank(Elab *e, int x, const char *fn, int lo, int hi, const char *what, Loc loc) {
    int r = shape_of(e, x)->rank;
    if (r >= lo && r <= hi) return true;
    error_at(loc, "%s: expected %s, got %s", fn, what, shape_str(shape_of(e, x)));
    return false;
}

/* ------------------------------------------------------------------ elementwise */

static Value b_unary(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc);
    return el_tensor(e, el_add(e, b->op, loc, 1, &x, NULL, NULL, DT_REAL));
}

static Value b_stop(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_node(e, a[0], b->name, "x", loc);
    if (x < 0) return el_err();
    return el_tensor(e, el_add(e, OP_STOP_GRAD, loc, 1, &x, NULL, NULL, el_n(e, x)->dtype));
}

/* leaky_relu(x, slope), elu(x, alpha): one real attribute. */
static Value b_unary_f(Elab *e, const Builtin *b, Loc loc, Value *a) {
    double f;
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0 || !el_num(e, a[1], b->name, b->op == OP_ELU ? "alpha" : "slope", loc, &f)) return el_err();
    Attrs at = {.f = {f}};
    return el_tensor(e, el_add(e, b->op, loc, 1, &x, &at, NULL, DT_REAL));
}

static Value b_clamp(Elab *e, const Builtin *b, Loc loc, Value *a) {
    double lo, hi;
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0 || !el_num(e, a[1], b->name, "lo", loc, &lo) || !el_num(e, a[2], b->name, "hi", loc, &hi))
        return el_err();
    if (lo > hi) {
        error_at(loc, "clamp: lo (%g) is greater than hi (%g)", lo, hi);
        return el_err();
    }
    Attrs at = {.f = {lo, hi}};
    return el_tensor(e, el_add(e, OP_CLAMP, loc, 1, &x, &at, NULL, DT_REAL));
}

/* maximum(a, b), minimum(a, b): broadcasting; numbers become scalars. */
static Value b_binary(Elab *e, const Builtin *b, Loc loc, Value *a) {
    if (a[0].k == V_NUM && a[1].k == V_NUM) return el_num_minmax(a[0], a[1], b->op == OP_MAXIMUM);
    int in[2] = {el_operand(e, a[0], b->name, "a", loc), el_operand(e, a[1], b->name, "b", loc)};
    return el_tensor(e, el_add(e, b->op, loc, 2, in, NULL, NULL, DT_REAL));
}

static Value b_pow(Elab *e, const Builtin *b, Loc loc, Value *a) {
    (void)b;
    return el_arith(e, 'P', a[0], a[1], loc);
}

static Value b_matmul(Elab *e, const Builtin *b, Loc loc, Value *a) {
    (void)b;
    return el_arith(e, '@', a[0], a[1], loc);
}

static Value b_dropout(Elab *e, const Builtin *b, Loc loc, Value *a) {
    double p;
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0 || !el_num(e, a[1], b->name, "p", loc, &p)) return el_err();
    if (!(p >= 0 && p < 1)) {
        error_at(loc, "dropout: p must be in [0, 1), got %g", p);
        return el_err();
    }
    if (p == 0) return el_tensor(e, x);   /* no-op: no node, no RNG stream */
    Attrs at = {.f = {p}};
    at.i[7] = el_stream(e);
    return el_tensor(e, el_add(e, OP_DROPOUT, loc, 1, &x, &at, NULL, DT_REAL));
}

/* choose(flag, a, b): a when the constant flag is true, else b (Python's `a if flag
 * else b`, decided at compile time).  Both are elaborated (their parameters are made,
 * shared by name); the one not chosen is dead code and never computed.  For options
 * such as norm_first= of the nn library's blocks. */
static Value b_choose(Elab *e, const Builtin *b, Loc loc, Value *a) {
    bool flag;
    if (!el_bool(e, a[0], b->name, "flag", loc, &flag)) return el_err();
    return flag ? a[1] : a[2];
}

/* ------------------------------------------------------------------ reductions */

/* axis: none (all), an integer or a list of integers; negative counts from the end. */
bool axes_mask(Elab *e, Value v, int rank, const char *fn, Loc loc, int64_t *mask) {
    *mask = 0;
    if (v.k == V_NONE) return true;
    int n = v.k == V_LIST || v.k == V_TUPLE ? v.n : 1;
    for (int i = 0; i < n; i++) {
        Value x = v.k == V_LIST || v.k == V_TUPLE ? v.v[i] : v;
        int64_t ax;
        if (!el_int(e, x, fn, "axis", loc, &ax)) return false;
        int64_t a = ax < 0 ? ax + rank : ax;
        if (a < 0 || a >= rank) {
            error_at(loc, "%s: axis %lld is out of range for a tensor of rank %d", fn, (long long)ax, rank);
            return false;
        }
        if (*mask & ((int64_t)1 << a)) {
            error_at(loc, "%s: axis %lld is given twice", fn, (long long)ax);
            return false;
        }
        *mask |= (int64_t)1 << a;
    }
    if (n == 0) {
        error_at(loc, "%s: the axis list is empty", fn);
        return false;
    }
    return true;
}

static Value b_reduce(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc);
    int64_t mask;
    bool keep;
    if (x < 0 || !axes_mask(e, a[1], shape_of(e, x)->rank, b->name, loc, &mask) ||
        !el_bool(e, a[2], b->name, "keepdim", loc, &keep))
        return el_err();
    Attrs at = {.i = {mask, keep}};
    return el_tensor(e, el_add(e, b->op, loc, 1, &x, &at, NULL, DT_REAL));
}

/* max / min(x, axis?, keepdim=false): torch.amax / amin over the axes (all when none
 * given); the gradient goes to the first winner (torch.max(x, dim)'s rule). */
static Value b_reduce_max(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0) return el_err();
    if (shape_of(e, x)->rank == 0) {
        error_at(loc, "%s: x is a scalar: there is no axis to reduce", b->name);
        return el_err();
    }
    int64_t mask;
    bool keep;
    if (!axes_mask(e, a[1], shape_of(e, x)->rank, b->name, loc, &mask) || !el_bool(e, a[2], b->name, "keepdim", loc, &keep))
        return el_err();
    Attrs at = {.i = {mask, keep, b->name[1] == 'i'}};
    return el_tensor(e, el_add(e, OP_REDUCE_MAX, loc, 1, &x, &at, NULL, DT_REAL));
}

static Value b_gap(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0 || !need_rank(e, x, b->name, 4, 4, "a 4-D input [N, C, H, W]", loc)) return el_err();
    Attrs at = {.i = {(1 << 2) | (1 << 3), 0}};
    return el_tensor(e, el_add(e, OP_MEAN, loc, 1, &x, &at, NULL, DT_REAL));
}

/* ------------------------------------------------------------------ tensors from nothing */

static Value b_fill(Elab *e, const Builtin *b, Loc loc, Value *a) {
    Shape s;
    double v = strcmp(b->name, "ones") == 0 ? 1 : 0;
    if (!el_dims(e, a[0], b->name, "shape", loc, &s)) return el_err();
    if (strcmp(b->name, "full") == 0 && !el_num(e, a[1], b->name, "value", loc, &v)) return el_err();
    bool runtime = strcmp(b->name, "full") == 0 && a[1].bx;   /* full(s, 1 / B): ones(s) * (1 / nb) */
    Attrs at = {.f = {runtime ? 1 : v}};
    int c = el_add(e, OP_CONST, loc, 0, NULL, &at, &s, DT_REAL);
    if (!runtime || c < 0) return el_tensor(e, c);
    int in[2] = {c, el_operand(e, a[1], b->name, "value", loc)};
    return el_tensor(e, el_add(e, OP_MUL, loc, 2, in, NULL, NULL, DT_REAL));
}

static Value b_random(Elab *e, const Builtin *b, Loc loc, Value *a) {
    Shape s;
    if (!el_dims(e, a[0], b->name, "shape", loc, &s)) return el_err();
    Attrs at = {0};
    at.i[7] = el_stream(e);
    return el_tensor(e, el_add(e, b->op, loc, 0, NULL, &at, &s, DT_REAL));
}

/* ------------------------------------------------------------------ shapes */

static Value b_flatten(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_node(e, a[0], b->name, "x", loc);
    if (x < 0 || !need_rank(e, x, b->name, 1, MAXDIM, "a tensor of rank 1 or more", loc)) return el_err();
    const Node *n = el_n(e, x);
    if (n->shape.rank <= 2) return el_tensor(e, x);
    int64_t rest = 1;
    for (int i = 1; i < n->shape.rank; i++) rest *= n->shape.d[i];
    Shape s = shp(2, n->shape.d[0], rest, 0, 0);
    s.batched = n->shape.batched;
    return el_tensor(e, el_add(e, OP_RESHAPE, loc, 1, &x, NULL, &s, n->dtype));
}

/* The 'shape' argument of reshape and broadcast_to: a list of at most MAXDIM integers,
 * copied into s as they are (-1 and other sizes are the caller's to check). */
static bool shape_arg(Elab *e, const Builtin *b, Value l, Loc loc, Shape *s) {
    if (l.k != V_LIST && l.k != V_TUPLE) {
        error_at(loc, "%s: argument 'shape' must be a list like [B, 28, 28], got %s", b->name, el_describe(e, l));
        return false;
    }
    if (l.n > MAXDIM) {
        error_at(loc, "%s: %d dimensions; at most %d are supported", b->name, l.n, MAXDIM);
        return false;
    }
    *s = (Shape){.rank = l.n};
    for (int i = 0; i < l.n; i++)
        if (!el_int(e, l.v[i], b->name, "shape", loc, &s->d[i])) return false;
    return true;
}

/* reshape(x, [d...]): one -1 is inferred.  A batched x keeps its batch in dim 0. */
static Value b_reshape(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_node(e, a[0], b->name, "x", loc);
    if (x < 0) return el_err();
    Shape s;
    if (!shape_arg(e, b, a[1], loc, &s)) return el_err();
    const Node *n = el_n(e, x);
    int64_t total = shape_numel(&n->shape), known = 1;
    int infer = -1;
    for (int i = 0; i < s.rank; i++) {
        int64_t d = s.d[i];
        if (d == -1 && infer < 0) {
            infer = i;
            continue;
        }
        if (d <= 0) {
            error_at(loc, "reshape: dimension %d is %lld; use positive sizes and at most one -1", i, (long long)d);
            return el_err();
        }
        if (__builtin_mul_overflow(known, d, &known) || known > MAX_ELEMS) {
            error_at(loc, "reshape: the new shape is too large");
            return el_err();
        }
        s.d[i] = d;
    }
    if (infer >= 0) {
        if (total % known != 0) {
            error_at(loc, "reshape: cannot infer dimension %d: %lld elements do not divide by %lld", infer,
                     (long long)total, (long long)known);
            return el_err();
        }
        s.d[infer] = total / known;
        known = total;
    }
    if (known != total) {
        error_at(loc, "reshape: %s has %lld elements, the new shape %s has %lld", shape_str(&n->shape),
                 (long long)total, shape_str(&s), (long long)known);
        return el_err();
    }
    if (n->shape.batched) {
        /* runtime rows = d0 / B * nb: dim 0 must stay a multiple of the batch */
        if (s.rank == 0 || s.d[0] % el_batch(e) != 0) {
            error_at(loc, "reshape: %s is batched; the new shape must keep the batch in dim 0", shape_str(&n->shape));
            return el_err();
        }
        s.batched = true;
    }
    return el_tensor(e, el_add(e, OP_RESHAPE, loc, 1, &x, NULL, &s, n->dtype));
}

/* broadcast_to(x, [d0, d1, ...]): numpy broadcasting to an explicit shape (the op's
 * shape rule checks compatibility); -1 keeps x's size on that axis (x's axes align with
 * the last ones, as in torch.expand).  The result is batched when x is (same rank, so
 * dim 0 is still the batch) or when d0 is a batch multiple, like zeros([B, ...]): then
 * the axis of x under d0 must be 1 or absent, since it is repeated over the rows. */
static Value b_broadcast_to(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_node(e, a[0], b->name, "x", loc);
    if (x < 0) return el_err();
    Value l = a[1];
    Shape s;
    if (!shape_arg(e, b, l, loc, &s)) return el_err();
    const Shape *xs = shape_of(e, x);
    int lead = l.n - xs->rank;
    for (int i = 0; i < l.n; i++) {
        if (s.d[i] == -1 && i >= lead) s.d[i] = xs->d[i - lead];
        if (s.d[i] == -1) {
            error_at(loc, "broadcast_to: -1 keeps an axis of x, but dimension %d of the new shape is a new axis (x is %s)",
                     i, shape_str(xs));
            return el_err();
        }
        if (s.d[i] <= 0) {
            error_at(loc, "broadcast_to: dimension %d is %lld; sizes must be positive", i,
                     (long long)s.d[i]);
            return el_err();
        }
    }
    bool batch_dim = l.n > 0 && l.v[0].bfac != 0 && el_batch(e) > 0;
    if (batch_dim && !xs->batched && lead == 0 && xs->d[0] != 1) {
        error_at(loc, "broadcast_to: %s cannot be repeated over the batch in %s: its dimension 0 must be 1",
                 shape_str(xs), shape_str(&s));
        return el_err();
    }
    s.batched = (xs->batched && lead == 0) || batch_dim;
    return el_tensor(e, el_add(e, OP_BROADCAST, loc, 1, &x, NULL, &s, el_n(e, x)->dtype));
}

/* dim(x, axis): a dimension of x as a constant (x.shape[axis]); dim 0 of a batched x
 * is a batch multiple. */
static Value b_dim(Elab *e, const Builtin *b, Loc loc, Value *a) {
    Shape s;
    int64_t ax;
    if (!el_value_shape(e, a[0], b->name, "x", loc, &s) || !el_int(e, a[1], b->name, "axis", loc, &ax))
        return el_err();
    if (ax < -s.rank || ax >= s.rank) {
        error_at(loc, "dim: axis %lld is out of range for %s", (long long)ax, shape_str(&s));
        return el_err();
    }
    return el_dim_value(e, &s, (int)(ax < 0 ? ax + s.rank : ax));
}

/* transpose(x) swaps a 2-D tensor; transpose(x, [perm]) permutes (numpy's
 * transpose); transpose(x, d0, d1) swaps two axes (torch.transpose).  Negative axes
 * count from the end. */
static Value b_transpose(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_node(e, a[0], b->name, "x", loc);
    if (x < 0) return el_err();
    const Node *n = el_n(e, x);
    int r = n->shape.rank;
    int64_t perm[MAXDIM] = {0};
    for (int i = 0; i < r; i++) perm[i] = i;
    if (a[2].k != V_NONE) {
        int64_t d[2];
        if (!el_int(e, a[1], b->name, "dim0", loc, &d[0]) || !el_int(e, a[2], b->name, "dim1", loc, &d[1]))
            return el_err();
        for (int k = 0; k < 2; k++) {
            if (d[k] < -r || d[k] >= r) {
                error_at(loc, "transpose: axis %lld is out of range for %s", (long long)d[k], shape_str(&n->shape));
                return el_err();
            }
            if (d[k] < 0) d[k] += r;
        }
        perm[d[0]] = d[1];
        perm[d[1]] = d[0];
    } else if (a[1].k == V_NONE) {
        if (r != 2) {
            error_at(loc, "transpose: give the permutation for a tensor of rank %d", r);
            return el_err();
        }
        perm[0] = 1;
        perm[1] = 0;
    } else {
        Value l = a[1];
        if ((l.k != V_LIST && l.k != V_TUPLE) || l.n != r) {
            error_at(loc, "transpose: the permutation must list all %d axes (or give two axes to swap)", r);
            return el_err();
        }
        bool seen[MAXDIM] = {false};
        for (int i = 0; i < r; i++) {
            if (!el_int(e, l.v[i], b->name, "perm", loc, &perm[i])) return el_err();
            if (perm[i] < 0) perm[i] += r;
            if (perm[i] < 0 || perm[i] >= r || seen[perm[i]]) {
                error_at(loc, "transpose: the permutation is not a permutation of 0..%d", r - 1);
                return el_err();
            }
            seen[perm[i]] = true;
        }
    }
    if (n->shape.batched && perm[0] != 0) {
        error_at(loc, "transpose: cannot move the batch axis of a batched tensor");
        return el_err();
    }
    Attrs at = {0};
    for (int i = 0; i < r; i++) at.i[i] = perm[i];
    return el_tensor(e, el_add(e, OP_TRANSPOSE, loc, 1, &x, &at, NULL, n->dtype));
}

int el_tensor_list(Elab *e, Value l, const char *fn, const char *verb, Loc loc, int **in) {
    if (l.k != V_LIST && l.k != V_TUPLE) {
        error_at(loc, "%s: the first argument must be a list of tensors like [a, b]", fn);
        return -1;
    }
    if (l.n == 0) {
        error_at(loc, "%s: nothing to %s", fn, verb);
        return -1;
    }
    *in = NEWN(int, l.n);
    for (int i = 0; i < l.n; i++)
        if (((*in)[i] = el_real_node(e, l.v[i], fn, "tensors", loc)) < 0) return -1;
    return l.n;
}

static Value b_concat(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int64_t axis;
    int *in, cnt = el_tensor_list(e, a[0], b->name, "concatenate", loc, &in);
    if (cnt < 0 || !el_int(e, a[1], b->name, "axis", loc, &axis)) return el_err();
    if (cnt == 1) return el_tensor(e, in[0]);
    const Node *n = el_n(e, in[0]);
    int r = n->shape.rank;
    int64_t ax = axis < 0 ? axis + r : axis;
    if (ax < 0 || ax >= r) {
        error_at(loc, "concat: axis %lld is out of range for rank %d", (long long)axis, r);
        return el_err();
    }
    if (ax == 0 && n->shape.batched) {
        error_at(loc, "concat: cannot join batched tensors along the batch axis");
        return el_err();
    }
    Attrs at = {.i = {ax}};
    return el_tensor(e, el_add(e, OP_CONCAT, loc, cnt, in, &at, NULL, DT_REAL));
}

/* ------------------------------------------------------------------ layers */

/* linear(x, out): x[..., in] @ weight[out, in]^T + bias[out].  suf names the
 * parameters "weight<suf>", "bias<suf>": "_ih" gives PyTorch's weight_ih of a cell. */
static int linear_op(Elab *e, int x, const char *inst, const char *suf, int64_t out, bool bias, int64_t fan,
                     Loc loc) {
    int64_t in = shape_of(e, x)->d[shape_of(e, x)->rank - 1];
    const char *w = cc_str("weight%s", suf), *bn = cc_str("bias%s", suf);
    int ins[3];
    ins[0] = x;
    ins[1] = el_param(e, inst, w, shp(2, out, in, 0, 0), INIT_DEFAULT, 0, 0, fan ? fan : in, out, false, loc);
    if (ins[1] < 0) return -1;
    if (bias) {
        ins[2] = el_param(e, inst, bn, shp(1, out, 0, 0, 0), INIT_DEFAULT, 0, 0, fan ? fan : in, out, false, loc);
        if (ins[2] < 0) return -1;
    }
    return el_add(e, OP_LINEAR, loc, bias ? 3 : 2, ins, NULL, NULL, DT_REAL);
}

static Value b_linear(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int64_t out;
    bool bias;
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0 || !pos_int(e, a[1], b->name, "out", loc, &out) || !el_bool(e, a[2], b->name, "bias", loc, &bias))
        return el_err();
    if (!need_rank(e, x, b->name, 1, MAXDIM, "an input of rank 1 or more", loc)) return el_err();
    const char *inst = el_instance(e, b->base, a[3], loc);
    if (!inst) return el_err();
    return el_tensor(e, linear_op(e, x, inst, "", out, bias, 0, loc));
}

static Value b_pool(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int64_t k, stride, pad;
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0 || !pos_int(e, a[1], b->name, "k", loc, &k)) return el_err();
    stride = k;
    if (a[2].k != V_NONE && !pos_int(e, a[2], b->name, "stride", loc, &stride)) return el_err();
    if (!nonneg_int(e, a[3], b->name, "pad", loc, &pad)) return el_err();
    if (!need_rank(e, x, b->name, 4, 4, "a 4-D input [N, C, H, W]", loc)) return el_err();
    Attrs at = {.i = {k, stride, pad}};
    return el_tensor(e, el_add(e, b->op, loc, 1, &x, &at, NULL, DT_REAL));
}

static Value b_batchnorm(Elab *e, const Builtin *b, Loc loc, Value *a) {
    double eps, mom;
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0 || !el_num(e, a[1], b->name, "eps", loc, &eps) || !el_num(e, a[2], b->name, "momentum", loc, &mom))
        return el_err();
    if (!need_rank(e, x, b->name, 2, 4, "an input [N, C], [N, C, L] or [N, C, H, W]", loc)) return el_err();
    if (!(eps > 0) || !(mom >= 0 && mom <= 1)) {
        error_at(loc, "batchnorm: eps must be positive and momentum in [0, 1]");
        return el_err();
    }
    const char *inst = el_instance(e, b->base, a[3], loc);
    if (!inst) return el_err();
    int64_t c = shape_of(e, x)->d[1];
    Shape s = shp(1, c, 0, 0, 0);
    int ins[5] = {x,
                  el_param(e, inst, "weight", s, INIT_ONES, 0, 0, c, c, false, loc),
                  el_param(e, inst, "bias", s, INIT_ZEROS, 0, 0, c, c, false, loc),
                  el_param(e, inst, "running_mean", s, INIT_ZEROS, 0, 0, c, c, true, loc),
                  el_param(e, inst, "running_var", s, INIT_ONES, 0, 0, c, c, true, loc)};
    Attrs at = {.f = {eps, mom}};
    return el_tensor(e, el_add(e, OP_BATCHNORM, loc, 5, ins, &at, NULL, DT_REAL));
}

/* embedding(ids, vocab, dim): a table of its own (embeddingN.weight); embedding(ids,
 * weight=w): a lookup into a given real [V, D] tensor (F.embedding(ids, w)), so the
 * table can be a `param` that other ops use too (a tied output projection); its
 * gradient adds to the other uses' (autodiff accumulates).  vocab and dim, if given
 * with weight=, must match it. */
static Value b_embedding(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int64_t vd[2] = {0, 0};
    const char *vdn[2] = {"vocab", "dim"};
    int ids = el_node(e, a[0], b->name, "ids", loc);
    if (ids < 0) return el_err();
    for (int i = 0; i < 2; i++)
        if (a[1 + i].k != V_NONE && !pos_int(e, a[1 + i], b->name, vdn[i], loc, &vd[i])) return el_err();
    if (el_n(e, ids)->dtype != DT_I32) {
        error_at(loc, "embedding: argument 'ids' must be i32 indices, got f32%s", shape_str(shape_of(e, ids)));
        return el_err();
    }
    int w;
    if (a[3].k != V_NONE) {
        if (a[4].k != V_NONE) {
            error_at(loc, "embedding: name= makes a table of its own; with weight= there is none to name");
            return el_err();
        }
        w = el_real_node(e, a[3], b->name, "weight", loc);
        if (w < 0 || !need_rank(e, w, b->name, 2, 2, "a 2-D weight [vocab, dim]", loc)) return el_err();
        for (int i = 0; i < 2; i++)
            if (vd[i] && vd[i] != shape_of(e, w)->d[i]) {
                error_at(loc, "embedding: %s is %lld but the weight is %s", vdn[i], (long long)vd[i],
                         shape_str(shape_of(e, w)));
                return el_err();
            }
    } else {
        if (!vd[0] || !vd[1]) {
            error_at(loc, "embedding: give vocab and dim (a table of its own) or weight= (a given [vocab, dim] table)");
            return el_err();
        }
        const char *inst = el_instance(e, b->base, a[4], loc);
        if (!inst) return el_err();
        w = el_param(e, inst, "weight", shp(2, vd[0], vd[1], 0, 0), INIT_NORMAL, 0, 1, vd[1], vd[0], false, loc);
    }
    int ins[2] = {ids, w};
    return el_tensor(e, el_add(e, OP_EMBEDDING, loc, 2, ins, NULL, NULL, DT_REAL));
}

/* Common checks of the recurrent cells: x [N, in], h [N, H]; hidden defaults to H. */
static bool cell_args(Elab *e, const Builtin *b, Loc loc, Value *a, int nstate, int *x, int *h, int64_t *H) {
    *x = el_real_node(e, a[0], b->name, "x", loc);
    if (*x < 0) return false;
    for (int i = 0; i < nstate; i++) {
        h[i] = el_real_node(e, a[1 + i], b->name, i ? "c" : "h", loc);
        if (h[i] < 0) return false;
    }
    if (!need_rank(e, *x, b->name, 2, 2, "x of shape [N, features]", loc) ||
        !need_rank(e, h[0], b->name, 2, 2, "h of shape [N, hidden]", loc))
        return false;
    *H = shape_of(e, h[0])->d[1];
    Value hv = a[1 + nstate];
    if (hv.k != V_NONE) {
        int64_t given;
        if (!pos_int(e, hv, b->name, "hidden", loc, &given)) return false;
        if (given != *H) {
            error_at(loc, "%s: hidden is %lld but h is %s", b->name, (long long)given, shape_str(shape_of(e, h[0])));
            return false;
        }
    }
    for (int i = 0; i < nstate; i++)
        if (!shape_eq(shape_of(e, h[i]), shape_of(e, h[0])) ||
            shape_of(e, h[i])->d[0] != shape_of(e, *x)->d[0]) {
            error_at(loc, "%s: x %s and the state %s do not match", b->name, shape_str(shape_of(e, *x)),
                     shape_str(shape_of(e, h[i])));
            return false;
        }
    return true;
}

/* rnn_cell: tanh(linear_ih(x) + linear_hh(h)). */
static Value b_rnn(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x, h;
    int64_t H;
    if (!cell_args(e, b, loc, a, 1, &x, &h, &H)) return el_err();
    const char *inst = el_instance(e, b->base, a[3], loc);
    if (!inst) return el_err();
    int s[2] = {linear_op(e, x, inst, "_ih", H, true, H, loc), linear_op(e, h, inst, "_hh", H, true, H, loc)};
    int sum = el_add(e, OP_ADD, loc, 2, s, NULL, NULL, DT_REAL);
    return el_tensor(e, el_add(e, OP_TANH, loc, 1, &sum, NULL, NULL, DT_REAL));
}

/* lstm_cell: gates = linear_ih(x, 4H) + linear_hh(h, 4H) (i, f, g, o); LSTM_ACT gives
 * the packed [2, N, H] (h', c'); two views split it. */
static Value b_lstm(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x, hc[2];
    int64_t H;
    if (!cell_args(e, b, loc, a, 2, &x, hc, &H)) return el_err();
    const char *inst = el_instance(e, b->base, a[4], loc);
    if (!inst) return el_err();
    int s[2] = {linear_op(e, x, inst, "_ih", 4 * H, true, H, loc), linear_op(e, hc[0], inst, "_hh", 4 * H, true, H, loc)};
    int gates = el_add(e, OP_ADD, loc, 2, s, NULL, NULL, DT_REAL);
    int act[2] = {gates, hc[1]};
    int packed = el_add(e, OP_LSTM_ACT, loc, 2, act, NULL, NULL, DT_REAL);
    if (packed < 0) return el_err();
    Shape hs = *shape_of(e, hc[0]);
    Attrs a0 = {.i = {0}}, a1 = {.i = {hs.d[0] * H}};
    Value out[2] = {el_tensor(e, el_add(e, OP_VIEW, loc, 1, &packed, &a0, &hs, DT_REAL)),
                    el_tensor(e, el_add(e, OP_VIEW, loc, 1, &packed, &a1, &hs, DT_REAL))};
    if (out[0].k == V_ERR || out[1].k == V_ERR) return el_err();
    return el_tuple(2, out);
}

/* gru_cell: GRU_ACT(linear_ih(x, 3H), linear_hh(h, 3H), h) (r, z, n). */
static Value b_gru(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x, h;
    int64_t H;
    if (!cell_args(e, b, loc, a, 1, &x, &h, &H)) return el_err();
    const char *inst = el_instance(e, b->base, a[3], loc);
    if (!inst) return el_err();
    int in[3] = {linear_op(e, x, inst, "_ih", 3 * H, true, H, loc), linear_op(e, h, inst, "_hh", 3 * H, true, H, loc), h};
    return el_tensor(e, el_add(e, OP_GRU_ACT, loc, 3, in, NULL, NULL, DT_REAL));
}

/* ------------------------------------------------------------------ losses */

/* What a class weight depends on that would want a gradient ("parameter 'w'", "an
 * input", "a loop variable"), NULL when nothing: a class weight gets none (as PyTorch's
 * weight=), so a trained one would silently stay put.  stop_gradient cuts the walk. */
static const char *grad_source(Elab *e, int w) {
    bool *seen = NEWN(bool, w + 1);
    memset(seen, 0, sizeof(bool) * (size_t)(w + 1));
    seen[w] = true;
    for (int i = w; i >= 0; i--) {
        const Node *n = el_n(e, i);
        if (!seen[i] || n->dtype != DT_REAL || n->op == OP_STOP_GRAD) continue;
        if (n->op == OP_PARAM) return cc_str("parameter '%s'", n->name ? n->name : "?");
        if (n->op == OP_INPUT) return "an input";
        if (n->op == OP_LOOP_CARRY || n->op == OP_LOOP_CAPTURE) return "a loop variable";
        for (int k = 0; k < n->nin; k++)
            if (n->in[k] >= 0 && n->in[k] <= w) seen[n->in[k]] = true;
    }
    return NULL;
}

/* cross_entropy(logits, labels, label_smoothing, reduce, *, weight, row_weight,
 * ignore_index), nll(logp, labels, reduce, *, weight, row_weight, ignore_index): labels
 * are i32 class indices; weight [C] is PyTorch's per-class weight (no gradient; ia4 = 1,
 * the last input), row_weight (real, the labels' shape) weights each row's loss,
 * ignore_index drops the rows with that label (ia2 = 1, ia3 = the label). */
static Value b_class_loss(Elab *e, const Builtin *b, Loc loc, Value *a) {
    bool ce = b->op == OP_CROSS_ENTROPY;
    double smooth = 0;
    int64_t red, ignore = 0;
    int x = el_real_node(e, a[0], b->name, ce ? "logits" : "logp", loc);
    int y = el_node(e, a[1], b->name, "labels", loc);
    if (x < 0 || y < 0) return el_err();
    if (el_n(e, y)->dtype != DT_I32) {
        error_at(loc, "%s: argument 'labels' must be i32 class indices, got f32%s", b->name, shape_str(shape_of(e, y)));
        return el_err();
    }
    if (ce && !el_num(e, a[2], b->name, "label_smoothing", loc, &smooth)) return el_err();
    if (!(smooth >= 0 && smooth < 1)) {
        error_at(loc, "%s: label_smoothing must be in [0, 1), got %g", b->name, smooth);
        return el_err();
    }
    int k = ce ? 3 : 2;
    if (!el_reduce(e, a[k], b->name, loc, &red)) return el_err();
    int in[4] = {x, y, -1, -1}, nin = 2, cw = -1;
    if (a[k + 2].k != V_NONE) {
        if ((in[nin++] = el_real_node(e, a[k + 2], b->name, "row_weight", loc)) < 0) return el_err();
    }
    if (a[k + 1].k != V_NONE) {
        if ((cw = in[nin++] = el_real_node(e, a[k + 1], b->name, "weight", loc)) < 0) return el_err();
        const char *src = grad_source(e, cw);
        if (src) {
            error_at(loc, "%s: weight= (PyTorch's per-class weight) gets no gradient, but it depends on %s; "
                     "write weight=stop_gradient(...) to use it as a constant", b->name, src);
            return el_err();
        }
    }
    if (a[k + 3].k != V_NONE && !el_int(e, a[k + 3], b->name, "ignore_index", loc, &ignore)) return el_err();
    Attrs at = {.i = {red, 0, a[k + 3].k != V_NONE, ignore, cw >= 0}, .f = {smooth}};
    return el_tensor(e, el_add(e, b->op, loc, nin, in, &at, NULL, DT_REAL));
}

/* mse, l1, bce, bce_with_logits, kl_normal (a, b, reduce); huber (a, b, delta, reduce). */
static Value b_loss2(Elab *e, const Builtin *b, Loc loc, Value *a) {
    bool huber = b->op == OP_HUBER;
    bool kl = b->op == OP_KL_NORMAL;
    double delta = 0;
    int64_t red;
    int in[2] = {el_real_node(e, a[0], b->name, kl ? "mu" : "input", loc),
                 el_real_node(e, a[1], b->name, kl ? "logvar" : "target", loc)};
    if (in[0] < 0 || in[1] < 0) return el_err();
    if (huber) {
        if (!el_num(e, a[2], b->name, "delta", loc, &delta)) return el_err();
        if (!(delta > 0)) {
            error_at(loc, "huber: delta must be positive, got %g", delta);
            return el_err();
        }
    }
    if (!el_reduce(e, a[huber ? 3 : 2], b->name, loc, &red)) return el_err();
    Attrs at = {.i = {red}, .f = {delta}};
    return el_tensor(e, el_add(e, b->op, loc, 2, in, &at, NULL, DT_REAL));
}

/* ------------------------------------------------------------------ the table */

#define LOSS2 "input target reduce=\"mean\""

/* The convolution layers' signatures (builtins_nn.c): PyTorch's positional order stops
 * after the kernel size, the rest is keyword-only. */
#define CONV_SIG "x out k * stride=1 pad=0 dilation=1 groups=1 bias=true name?"
#define CONVT_SIG "x out k * stride=1 pad=0 dilation=1 output_padding=0 groups=1 bias=true name?"

const Builtin builtins[] = {
    /* layers (make parameters) */
    {"linear", "x out bias=true * name?", b_linear, OP_LINEAR, "linear"},
    {"conv1d", CONV_SIG, bn_conv, OP_CONV, "conv"},
    {"conv2d", CONV_SIG, bn_conv, OP_CONV2D, "conv"},
    {"conv_transpose1d", CONVT_SIG, bn_conv_t, OP_CONV_T, "convt"},
    {"conv_transpose2d", CONVT_SIG, bn_conv_t, OP_CONV_T, "convt"},
    {"batchnorm", "x eps=1e-5 momentum=0.1 * name?", b_batchnorm, OP_BATCHNORM, "bn"},
    {"embedding", "ids vocab? dim? * weight? name?", b_embedding, OP_EMBEDDING, "embedding"},
    {"rnn_cell", "x h hidden? * name?", b_rnn, OP_TANH, "rnn"},
    {"lstm_cell", "x h c hidden? * name?", b_lstm, OP_LSTM_ACT, "lstm"},
    {"gru_cell", "x h hidden? * name?", b_gru, OP_GRU_ACT, "gru"},
    /* pooling, shapes */
    {"maxpool2d", "x k stride? pad=0", b_pool, OP_MAXPOOL2D, NULL},
    {"avgpool2d", "x k stride? pad=0", b_pool, OP_AVGPOOL2D, NULL},
    {"maxpool1d", "x k stride? pad=0", bn_pool, OP_POOL, NULL},
    {"avgpool1d", "x k stride? pad=0", bn_pool, OP_POOL, NULL},
    {"adaptive_avgpool2d", "x size", bn_pool, OP_POOL, NULL},
    {"upsample", "x scale? mode=\"nearest\" size?", bn_upsample, OP_UPSAMPLE, NULL},
    {"global_avgpool", "x", b_gap, OP_MEAN, NULL},
    {"flatten", "x", b_flatten, OP_RESHAPE, NULL},
    {"reshape", "x shape", b_reshape, OP_RESHAPE, NULL},
    {"broadcast_to", "x shape", b_broadcast_to, OP_BROADCAST, NULL},
    {"dim", "x axis", b_dim, OP_COUNT, NULL},
    {"transpose", "x perm? dim1?", b_transpose, OP_TRANSPOSE, NULL},
    {"concat", "tensors axis=-1", b_concat, OP_CONCAT, NULL},
    {"dropout", "x p=0.5", b_dropout, OP_DROPOUT, NULL},
    {"matmul", "a b", b_matmul, OP_MATMUL, NULL},
    {"choose", "flag a b", b_choose, OP_COUNT, NULL},
    {"attention", "q k v causal=false scale=0 * key_padding_mask? heads_last=false", bn_attention, OP_ATTENTION, NULL},
    {"layer_norm", "x eps=1e-5 affine=true bias=true * name?", bn_norm, OP_LAYER_NORM, "ln"},
    {"rms_norm", "x eps? affine=true * name?", bn_norm, OP_RMS_NORM, "rms"},
    {"group_norm", "x groups eps=1e-5 affine=true * name?", bn_norm, OP_GROUP_NORM, "gn"},
    {"instance_norm", "x eps=1e-5 affine=false * name?", bn_norm, OP_GROUP_NORM, "inorm"},
    /* activations and elementwise */
    /* relu, sigmoid, exp, ... (ops.def rows marked OPF_FN): builtin_find makes them */
    {"leaky_relu", "x slope=0.01", b_unary_f, OP_LEAKY_RELU, NULL},
    {"elu", "x alpha=1.0", b_unary_f, OP_ELU, NULL},
    {"clamp", "x lo hi", b_clamp, OP_CLAMP, NULL},
    {"maximum", "a b", b_binary, OP_MAXIMUM, NULL},
    {"minimum", "a b", b_binary, OP_MINIMUM, NULL},
    {"pow", "x exponent", b_pow, OP_POWS, NULL},
    {"stop_gradient", "x", b_stop, OP_STOP_GRAD, NULL},
    {"perturb", "x * name?", el_perturb, OP_ADD, "perturb"},
    /* masks and selection (builtins_sel.c) */
    {"where", "cond a b", bs_where, OP_WHERE, NULL},
    {"masked_fill", "x mask value", bs_masked_fill, OP_WHERE, NULL},
    {"tril", "x k=0", bs_tril, OP_TRIL, NULL},
    {"triu", "x k=0", bs_tril, OP_TRIL, NULL},
    {"one_hot", "ids n", bs_one_hot, OP_ONE_HOT, NULL},
    {"argmax", "x axis? keepdim=false", bs_argmax, OP_ARGMAX, NULL},
    {"argmin", "x axis? keepdim=false", bs_argmax, OP_ARGMAX, NULL},
    {"var", "x axis? keepdim=false * unbiased=true correction?", bs_moments, OP_MOMENTS, NULL},
    {"std", "x axis? keepdim=false * unbiased=true correction?", bs_moments, OP_MOMENTS, NULL},
    {"logsumexp", "x axis? keepdim=false", bs_logsumexp, OP_LOGSUMEXP, NULL},
    {"float", "x", bs_cast, OP_CAST, NULL},
    {"int", "x", bs_cast, OP_CAST, NULL},
    {"stack", "tensors axis=0", bs_stack, OP_CONCAT, NULL},
    /* reductions */
    {"sum", "x axis? keepdim=false", b_reduce, OP_SUM, NULL},
    {"mean", "x axis? keepdim=false", b_reduce, OP_MEAN, NULL},
    {"max", "x axis? keepdim=false", b_reduce_max, OP_REDUCE_MAX, NULL},
    {"min", "x axis? keepdim=false", b_reduce_max, OP_REDUCE_MAX, NULL},
    /* constants and random tensors */
    {"zeros", "shape", b_fill, OP_CONST, NULL},
    {"ones", "shape", b_fill, OP_CONST, NULL},
    {"full", "shape value", b_fill, OP_CONST, NULL},
    {"randn", "shape", b_random, OP_RANDN, NULL},
    {"rand", "shape", b_random, OP_RAND, NULL},
    /* losses (scalar results; reduce="none": one value a row or element) */
    {"cross_entropy", "logits labels label_smoothing=0 reduce=\"mean\" * weight? row_weight? ignore_index?", b_class_loss,
     OP_CROSS_ENTROPY, NULL},
    {"nll", "logp labels reduce=\"mean\" * weight? row_weight? ignore_index?", b_class_loss, OP_NLL, NULL},
    {"mse", LOSS2, b_loss2, OP_MSE, NULL},
    {"l1", LOSS2, b_loss2, OP_L1, NULL},
    {"huber", "input target delta=1.0 reduce=\"mean\"", b_loss2, OP_HUBER, NULL},
    {"bce", LOSS2, b_loss2, OP_BCE, NULL},
    {"bce_with_logits", LOSS2, b_loss2, OP_BCE_LOGITS, NULL},
    {"kl_normal", "mu logvar reduce=\"mean\"", b_loss2, OP_KL_NORMAL, NULL},
};
const int builtin_count = (int)(sizeof builtins / sizeof builtins[0]);

/* The table above, then the simple functions of one real tensor that runtime/ops.def
 * marks OPF_FN (relu(x), exp(x), ...): their entry is made from the op table, so a new
 * activation needs no line here. */
const Builtin *builtin_find(const char *name) {
    for (int i = 0; i < builtin_count; i++)
        if (strcmp(builtins[i].name, name) == 0) return &builtins[i];
    static Builtin fn[OP_COUNT];
    for (int op = 0; op < OP_COUNT; op++)
        if ((op_info[op].flags & OPF_FN) && strcmp(op_info[op].name, name) == 0) {
            fn[op] = (Builtin){op_info[op].name, "x", b_unary, (Op)op, NULL};
            return &fn[op];
        }
    return NULL;
}

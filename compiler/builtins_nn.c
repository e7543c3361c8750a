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
    int in[4] = {el_real_node(e, a[0], b->name, "q", loc), el_real_node(e, a[1], b->name, "k", loc),
                 el_real_node(e, a[2], b->name, "v", loc), -1};
    bool causal, heads_last;
    double scale;
    if (in[0] < 0 || in[1] < 0 || in[2] < 0 || !el_bool(e, a[3], b->name, "causal", loc, &causal) ||
        !el_num(e, a[4], b->name, "scale", loc, &scale) || !el_bool(e, a[6], b->name, "heads_last", loc, &heads_last))
        return el_err();
    if (scale < 0) {
        error_at(loc, "attention: scale must be positive (0: 1/sqrt(d)), got %g", scale);
        return el_err();
    }
    /* key_padding_mask: a tensor (i32 or f32, nonzero = ignore), or 0 for none (a
     * block's default passed through) */
    if (a[5].k == V_NUM && !a[5].bx && (a[5].isint ? a[5].i : a[5].r) == 0) a[5].k = V_NONE;
    if (a[5].k != V_NONE) {
        if (a[5].k == V_NUM) {
            error_at(loc, "attention: key_padding_mask must be a [B, S] tensor or 0 (none), got %s", el_describe(e, a[5]));
            return el_err();
        }
        if ((in[3] = el_mask_operand(e, a[5], b->name, "key_padding_mask", loc)) < 0) return el_err();
    }
    Attrs at = {.i = {causal, heads_last}, .f = {scale}};
    return el_tensor(e, el_add(e, OP_ATTENTION, loc, in[3] >= 0 ? 4 : 3, in, &at, NULL, DT_REAL));
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

/* ------------------------------------------------------------------ convolution family */

/* An integer argument or a pair of them ((kh, kw) or [kh, kw]): out[0], out[1] (a
 * single integer is both), each >= lo. */
static bool nn_pair(Elab *e, Value v, const char *fn, const char *arg, Loc loc, int64_t lo, int64_t out[2]) {
    if (v.k == V_LIST || v.k == V_TUPLE) {
        if (v.n != 2) {
            error_at(loc, "%s: argument '%s' must be an integer or a pair of integers, got %s", fn, arg, el_describe(e, v));
            return false;
        }
        if (!el_int(e, v.v[0], fn, arg, loc, &out[0]) || !el_int(e, v.v[1], fn, arg, loc, &out[1])) return false;
    } else {
        if (!el_int(e, v, fn, arg, loc, &out[0])) return false;
        out[1] = out[0];
    }
    if (out[0] >= lo && out[1] >= lo) return true;
    error_at(loc, "%s: %s must be at least %lld, got %lld", fn, arg, (long long)lo, (long long)(out[0] < lo ? out[0] : out[1]));
    return false;
}

/* The 1-D or 2-D arguments of a convolution: kernel, stride, pad, dilation (pairs
 * whose first element is the height's, 1 / 0 for 1-D), at a[2..5]. */
typedef struct NnConv { int64_t k[2], st[2], pad[2], dil[2], groups, out; bool one_d; } NnConv;

static bool nn_conv_args(Elab *e, const Builtin *b, Loc loc, Value *a, int x, NnConv *c) {
    c->one_d = b->name[strlen(b->name) - 2] == '1';
    int rank = c->one_d ? 3 : 4;
    const Shape *xs = &el_n(e, x)->shape;
    if (xs->rank != rank) {
        error_at(loc, "%s: expected a %s, got %s", b->name, c->one_d ? "3-D input [N, C, L]" : "4-D input [N, C, H, W]", shape_str(xs));
        return false;
    }
    if (!el_int(e, a[1], b->name, "out", loc, &c->out)) return false;
    if (c->out < 1) {
        error_at(loc, "%s: out must be positive, got %lld", b->name, (long long)c->out);
        return false;
    }
    int64_t *v[4] = {c->k, c->st, c->pad, c->dil};
    static const char *const names[4] = {"k", "stride", "pad", "dilation"};
    for (int i = 0; i < 4; i++) {
        if (c->one_d && (a[2 + i].k == V_LIST || a[2 + i].k == V_TUPLE)) {
            error_at(loc, "%s: %s must be one integer", b->name, names[i]);
            return false;
        }
        if (!nn_pair(e, a[2 + i], b->name, names[i], loc, i == 2 ? 0 : 1, v[i])) return false;
        if (c->one_d) v[i][0] = i == 2 ? 0 : 1;
    }
    return true;
}

static Attrs nn_conv_attrs(const NnConv *c) {
    return (Attrs){.i = {c->st[0], c->st[1], c->pad[0], c->pad[1], c->dil[0], c->dil[1], c->groups}};
}

/* The weight [wd0, wd1, (kh,) kw] and bias [nb] of a convolution layer, initialised as
 * PyTorch does (U(+-1/sqrt(fan_in)), fan_in = wd1 kh kw): ins[1], ins[2]; the count of
 * inputs, or 0 after an error. */
static int nn_conv_params(Elab *e, const Builtin *b, Loc loc, Value name, const NnConv *c, int64_t wd0, int64_t wd1,
                          int64_t nbias, bool bias, int *ins) {
    const char *inst = el_instance(e, b->base, name, loc);
    if (!inst) return 0;
    int64_t rec = c->k[0] * c->k[1];
    Shape ws = {.rank = c->one_d ? 3 : 4, .d = {wd0, wd1, c->k[0], c->k[1]}};
    if (c->one_d) ws.d[2] = c->k[1];
    ins[1] = el_param(e, inst, "weight", ws, CDL_INIT_DEFAULT, 0, 0, wd1 * rec, wd0 * rec, false, loc);
    if (ins[1] < 0) return 0;
    if (!bias) return 2;
    Shape bs = {.rank = 1, .d = {nbias}};
    ins[2] = el_param(e, inst, "bias", bs, CDL_INIT_DEFAULT, 0, 0, wd1 * rec, wd0 * rec, false, loc);
    return ins[2] < 0 ? 0 : 3;
}

/* The output size along one axis of a convolution, or 0 (and a message) when the
 * dilated kernel does not fit the padded input. */
static int64_t nn_conv_out(const char *fn, Loc loc, const Shape *xs, int axis, const NnConv *c) {
    int64_t in = axis ? xs->d[xs->rank - 1] : c->one_d ? 1 : xs->d[2];
    int64_t span = c->dil[axis] * (c->k[axis] - 1) + 1;
    if (in + 2 * c->pad[axis] >= span) return (in + 2 * c->pad[axis] - span) / c->st[axis] + 1;
    error_at(loc, "%s: the kernel (%lld, dilation %lld) is larger than the padded input %s (padding %lld)", fn,
             (long long)c->k[axis], (long long)c->dil[axis], shape_str(xs), (long long)c->pad[axis]);
    return 0;
}

/* conv1d / conv2d(x, out, kernel, *, stride, pad, dilation, groups, bias, name) [conv]:
 * torch.nn.Conv1d / Conv2d(C, out, kernel, stride, padding, dilation, groups, bias),
 * weight [out, C/groups, (kh,) kw].  A 2-D geometry the square kernels cover (one
 * group, a square kernel, one stride and padding, no dilation) is a CONV2D node, the
 * rest a CONV node. */
Value bn_conv(Elab *e, const Builtin *b, Loc loc, Value *a) {
    NnConv c;
    bool bias;
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0 || !nn_conv_args(e, b, loc, a, x, &c) || !el_int(e, a[6], b->name, "groups", loc, &c.groups) ||
        !el_bool(e, a[7], b->name, "bias", loc, &bias))
        return el_err();
    const Shape *xs = &el_n(e, x)->shape;
    int64_t ch = xs->d[1];
    if (c.groups < 1 || ch % c.groups || c.out % c.groups) {
        error_at(loc, "%s: groups (%lld) must divide the %lld input and %lld output channels", b->name,
                 (long long)c.groups, (long long)ch, (long long)c.out);
        return el_err();
    }
    if (!nn_conv_out(b->name, loc, xs, 0, &c) || !nn_conv_out(b->name, loc, xs, 1, &c)) return el_err();
    int ins[3] = {x};
    int nin = nn_conv_params(e, b, loc, a[8], &c, c.out, ch / c.groups, c.out, bias, ins);
    if (!nin) return el_err();
    bool square = !c.one_d && c.groups == 1 && c.k[0] == c.k[1] && c.st[0] == c.st[1] && c.pad[0] == c.pad[1] &&
                  c.dil[0] == 1 && c.dil[1] == 1;
    if (square) {
        Attrs at = {.i = {c.st[0], c.pad[0]}};
        return el_tensor(e, el_add(e, OP_CONV2D, loc, nin, ins, &at, NULL, DT_REAL));
    }
    Attrs at = nn_conv_attrs(&c);
    return el_tensor(e, el_add(e, OP_CONV, loc, nin, ins, &at, NULL, DT_REAL));
}

/* conv_transpose1d / 2d(x, out, kernel, *, stride, pad, output_padding, dilation,
 * groups, bias, name) [convt]: torch.nn.ConvTranspose1d / 2d(C, out, ...), weight
 * [C, out/groups, (kh,) kw], output size (in - 1) stride - 2 pad + dilation (k - 1) +
 * output_padding + 1. */
Value bn_conv_t(Elab *e, const Builtin *b, Loc loc, Value *a) {
    NnConv c;
    bool bias;
    int64_t op[2];
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0 || !nn_conv_args(e, b, loc, a, x, &c) || !el_int(e, a[7], b->name, "groups", loc, &c.groups) ||
        !el_bool(e, a[8], b->name, "bias", loc, &bias) || !nn_pair(e, a[6], b->name, "output_padding", loc, 0, op))
        return el_err();
    if (c.one_d) op[0] = 0;
    const Shape *xs = &el_n(e, x)->shape;
    int64_t ch = xs->d[1], osz[2] = {1, 1};
    if (c.groups < 1 || ch % c.groups || c.out % c.groups) {
        error_at(loc, "%s: groups (%lld) must divide the %lld input and %lld output channels", b->name,
                 (long long)c.groups, (long long)ch, (long long)c.out);
        return el_err();
    }
    for (int i = c.one_d; i < 2; i++) {
        int64_t in = c.one_d ? xs->d[2] : xs->d[2 + i];
        if (op[i] >= c.st[i] && op[i] >= c.dil[i]) {
            error_at(loc, "%s: output_padding (%lld) must be smaller than the stride or the dilation", b->name,
                     (long long)op[i]);
            return el_err();
        }
        osz[i] = (in - 1) * c.st[i] - 2 * c.pad[i] + c.dil[i] * (c.k[i] - 1) + op[i] + 1;
        if (osz[i] < 1) {
            error_at(loc, "%s: the output size %lld of %s is not positive (padding %lld too large)", b->name,
                     (long long)osz[i], shape_str(xs), (long long)c.pad[i]);
            return el_err();
        }
    }
    int ins[3] = {x};
    int nin = nn_conv_params(e, b, loc, a[9], &c, ch, c.out / c.groups, c.out, bias, ins);
    if (!nin) return el_err();
    Shape y = {.rank = xs->rank, .d = {xs->d[0], c.out, c.one_d ? osz[1] : osz[0], osz[1]}};
    Attrs at = nn_conv_attrs(&c);
    return el_tensor(e, el_add(e, OP_CONV_T, loc, nin, ins, &at, &y, DT_REAL));
}

/* maxpool1d / avgpool1d(x, k, stride=k, pad=0): torch.nn.MaxPool1d / AvgPool1d over
 * [N, C, L] (average: padding counted).  adaptive_avgpool2d(x, size):
 * AdaptiveAvgPool2d over [N, C, H, W] to size (an integer or a pair). */
Value bn_pool(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0) return el_err();
    const Shape *xs = &el_n(e, x)->shape;
    bool adaptive = strncmp(b->name, "adaptive", 8) == 0;
    if (xs->rank != (adaptive ? 4 : 3)) {
        error_at(loc, "%s: expected an input %s, got %s", b->name, adaptive ? "[N, C, H, W]" : "[N, C, L]", shape_str(xs));
        return el_err();
    }
    if (adaptive) {
        int64_t sz[2];
        if (!nn_pair(e, a[1], b->name, "size", loc, 1, sz)) return el_err();
        if (sz[0] > xs->d[2] || sz[1] > xs->d[3]) {
            error_at(loc, "%s: output size %lldx%lld is larger than the input %s", b->name, (long long)sz[0],
                     (long long)sz[1], shape_str(xs));
            return el_err();
        }
        Shape y = {.rank = 4, .d = {xs->d[0], xs->d[1], sz[0], sz[1]}};
        Attrs at = {.i = {CDL_POOL_ADAPTIVE}};
        return el_tensor(e, el_add(e, OP_POOL, loc, 1, &x, &at, &y, DT_REAL));
    }
    int64_t k, st, pad;
    if (!el_int(e, a[1], b->name, "k", loc, &k) || !el_int(e, a[3], b->name, "pad", loc, &pad)) return el_err();
    st = k;
    if (a[2].k != V_NONE && !el_int(e, a[2], b->name, "stride", loc, &st)) return el_err();
    if (k < 1 || st < 1 || pad < 0 || 2 * pad > k || xs->d[2] + 2 * pad < k) {
        error_at(loc, "%s: kernel %lld, stride %lld, padding %lld do not fit %s (padding at most half the kernel)",
                 b->name, (long long)k, (long long)st, (long long)pad, shape_str(xs));
        return el_err();
    }
    Attrs at = {.i = {b->name[0] == 'm' ? CDL_POOL_MAX : CDL_POOL_AVG, 1, k, 1, st, 0, pad}};
    return el_tensor(e, el_add(e, OP_POOL, loc, 1, &x, &at, NULL, DT_REAL));
}

/* upsample(x, scale?, mode="nearest", size?): torch.nn.Upsample(size, scale_factor,
 * mode) over [N, C, H, W], mode "nearest" or "bilinear" (align_corners=False); scale
 * a number or a pair (the output is floor(in * scale)), or size an integer or a pair. */
Value bn_upsample(Elab *e, const Builtin *b, Loc loc, Value *a) {
    int x = el_real_node(e, a[0], b->name, "x", loc);
    if (x < 0) return el_err();
    const Shape *xs = &el_n(e, x)->shape;
    if (xs->rank != 4) {
        error_at(loc, "upsample: expected an input [N, C, H, W], got %s", shape_str(xs));
        return el_err();
    }
    const char *mode = a[2].k == V_STR ? a[2].s : "";
    if (strcmp(mode, "nearest") != 0 && strcmp(mode, "bilinear") != 0) {
        error_at(loc, "upsample: mode must be \"nearest\" or \"bilinear\", got %s", el_describe(e, a[2]));
        return el_err();
    }
    if ((a[1].k == V_NONE) == (a[3].k == V_NONE)) {
        error_at(loc, "upsample: give either scale or size");
        return el_err();
    }
    double sc[2] = {0, 0};
    int64_t sz[2];
    if (a[3].k != V_NONE) {
        if (!nn_pair(e, a[3], b->name, "size", loc, 1, sz)) return el_err();
    } else {
        Value v = a[1];
        bool pair = v.k == V_LIST || v.k == V_TUPLE;
        if ((pair && v.n != 2) || !el_num(e, pair ? v.v[0] : v, b->name, "scale", loc, &sc[0]) ||
            !el_num(e, pair ? v.v[1] : v, b->name, "scale", loc, &sc[1]))
            return el_err();
        for (int i = 0; i < 2; i++) {
            sz[i] = (int64_t)((double)xs->d[2 + i] * sc[i]);
            if (!(sc[i] > 0) || sz[i] < 1 || sz[i] > ((int64_t)1 << 30)) {
                error_at(loc, "upsample: scale %g gives output size %lld for %s", sc[i], (long long)sz[i], shape_str(xs));
                return el_err();
            }
        }
    }
    Shape y = {.rank = 4, .d = {xs->d[0], xs->d[1], sz[0], sz[1]}};
    Attrs at = {.i = {mode[0] == 'b'}, .f = {sc[0], sc[1]}};
    return el_tensor(e, el_add(e, OP_UPSAMPLE, loc, 1, &x, &at, &y, DT_REAL));
}

/* cdl_tape.h -- part of cdl.h, the one public header of libcdlrt: the dynamic tape
 * (tape*.c, compare.c) and the activations (whose tape calls are inline here).
 *
 * Include cdl.h, never this file: cdl.h includes it after the trainer block, inside its
 * extern "C", so that every type used here (cdl_net, cdl_model, cdl_pool_geom, ...) is
 * declared.  It is a second file only to keep each header readable; `make install`
 * installs both side by side.
 */
#ifndef CDL_TAPE_H
#define CDL_TAPE_H

#ifndef CDL_H
#error "include cdl.h, not cdl_tape.h"
#endif

/* ======================================================================== tape (tape.c) */
/* BEGIN TAPE */
/* Dynamic-tape autograd (tape.c, tape_ops.c, tape_nn.c): the PyTorch-eager way of running
 * a model, over the SAME kernels the static code calls.  Each cdl_t_<op> call computes
 * its result at once and records itself on the tape; cdl_backward sweeps the records in
 * reverse and calls the backward kernels.  Everything (tape header, records, values,
 * gradients, saved scratch) lives in net->act: the header at its start, the rest a bump
 * arena reset by cdl_tape_reset, so a step allocates nothing from the heap.  The arena
 * must hold one whole step without reuse (cdlc --target=tape sizes act_bytes so; a
 * hand-written program picks act_bytes itself).  Both precisions: the tape reads
 * net->model->real_size and calls the _f32 or _f64 kernels.
 *
 * Shapes are runtime shapes (dims[0] is the runtime batch where it scales with it).
 * Errors (shape mismatch, arena exhausted, a bad label) set cdl_last_error, mark the
 * tape failed and make that call return NULL; every op given a NULL input returns NULL,
 * so a failed step runs to its end and cdl_backward reports -1.  Nothing aborts.
 * Random ops take the stream id (the compiler's ia[7]) and the loop step t: key
 * (net->seed, net->step, stream), counter base t * numel, as in the static code. */
typedef struct cdl_tape cdl_tape;
typedef struct cdl_t cdl_t;
/* A tensor on the tape.  Read data/grad/dims; the rest is the tape's record. */
struct cdl_t {
    void *data;                  /* numel values: the tape's real type, or int32_t */
    void *grad;                  /* after cdl_backward: d loss / d this, or NULL */
    cdl_dtype dtype;             /* CDL_F32 / CDL_F64 (the tape's precision) or CDL_I32 */
    int rank;
    int64_t dims[CDL_MAXDIM];
    int64_t numel;
    /* ---- the record (private) ---- */
    const char *op;              /* op name, as in ops.def ("linear", "relu", ...) */
    void (*bwd)(cdl_tape *tp, cdl_t *y);   /* backward rule, NULL: none */
    cdl_t *prev;                 /* the record before this one */
    cdl_t **in;                  /* inputs (points at in1[] or into the arena) */
    cdl_t *in1[3];
    int nin;
    unsigned flags;              /* CDL_TF_* */
    int slot;                    /* input / parameter index of leaves, -1 otherwise */
    int64_t ia[6];               /* integer attributes of the op */
    double fa[3];                /* real attributes of the op */
    void *aux;                   /* saved scratch for the backward (probs, masks, stats) */
};
enum { CDL_TF_PARAM = 1,         /* depends on a trainable parameter */
       CDL_TF_INPUT = 2,         /* depends on a real model input */
       CDL_TF_GRAD = 4,          /* grad holds a value (some gradient has arrived) */
       CDL_TF_FIXED = 8 };       /* grad storage is fixed (net->grad, net->in_grad) */
/* Upper bound of the arena bytes of one record besides its values (cdlc's estimate). */
#define CDL_TAPE_RECORD_BYTES 384

/* The tape inside net->act (NULL and a message when act_bytes is too small).  The first
 * call initialises it; later calls return the same tape (its statistics survive). */
cdl_tape *cdl_tape_attach(cdl_net *net);
/* Start a step: empty the arena; train != 0 selects train mode (dropout active, random
 * ops sample, batch norm on batch statistics and updating its running ones). */
void cdl_tape_reset(cdl_tape *tp, int train);
int cdl_tape_failed(const cdl_tape *tp);     /* 1 after an error in this step */
/* Statistics: records made in the last step, the peak arena bytes in use since attach
 * (values, gradients, scratch and records), arena allocations in the last step.  Any
 * pointer may be NULL. */
void cdl_tape_stats(const cdl_tape *tp, uint64_t *ops_recorded, size_t *arena_bytes_used,
                    uint64_t *arena_allocs);
/* One line per record, oldest first: "12 linear [64, 256] <- 3 7 9". */
void cdl_tape_dump(const cdl_tape *tp, FILE *f);

/* ---- leaves ---- */
cdl_t *cdl_t_input(cdl_tape *tp, int slot, int nb);   /* net->in[slot], dims[0] = nb if batched */
cdl_t *cdl_t_param(cdl_tape *tp, int index);          /* net->param at the parameter's offset */
/* Caller memory as a constant (no gradient); data must outlive the step. */
cdl_t *cdl_t_from(cdl_tape *tp, cdl_dtype dt, void *data, int rank, const int64_t *dims);
cdl_t *cdl_t_new(cdl_tape *tp, cdl_dtype dt, int rank, const int64_t *dims); /* zeros, to fill */
cdl_t *cdl_t_full(cdl_tape *tp, double v, int rank, const int64_t *dims);
cdl_t *cdl_t_full_i32(cdl_tape *tp, int32_t v, int rank, const int64_t *dims);
cdl_t *cdl_t_batch_size(cdl_tape *tp, int nb);       /* scalar nb */
cdl_t *cdl_t_randn(cdl_tape *tp, int stream, int64_t t, int rank, const int64_t *dims); /* eval: 0 */
cdl_t *cdl_t_rand(cdl_tape *tp, int stream, int64_t t, int rank, const int64_t *dims);  /* eval: 0.5 */

/* ---- elementwise (numpy broadcasting), activations, dropout ---- */
cdl_t *cdl_t_add(cdl_tape *tp, cdl_t *a, cdl_t *b);
cdl_t *cdl_t_sub(cdl_tape *tp, cdl_t *a, cdl_t *b);
cdl_t *cdl_t_mul(cdl_tape *tp, cdl_t *a, cdl_t *b);
cdl_t *cdl_t_div(cdl_tape *tp, cdl_t *a, cdl_t *b);
cdl_t *cdl_t_maximum(cdl_tape *tp, cdl_t *a, cdl_t *b);
cdl_t *cdl_t_minimum(cdl_tape *tp, cdl_t *a, cdl_t *b);
/* Masks and selection (tape_sel.c): a op b for op = CDL_BIN_LT ... CDL_BIN_NE (a 1/0
 * mask, no gradient); torch.where(c != 0, a, b) over the broadcast of the three. */
cdl_t *cdl_t_compare(cdl_tape *tp, cdl_t *a, cdl_t *b, int op);
cdl_t *cdl_t_where(cdl_tape *tp, cdl_t *c, cdl_t *a, cdl_t *b);
/* tril / triu (upper) of the last two axes, keeping j - i <= diag (>= diag); one_hot
 * (i32 ids -> [..., classes], no gradient); sign (no gradient); float(ids) / int(x)
 * (to_i32: truncation toward zero, no gradient); argmax / argmin (is_min) along axis
 * (-1: of the flattened x) as i32; var / std (take_sqrt) over the axes (0: all) with
 * torch's correction (1: unbiased); logsumexp over the axes. */
cdl_t *cdl_t_tril(cdl_tape *tp, cdl_t *x, int64_t diag, int upper);
cdl_t *cdl_t_one_hot(cdl_tape *tp, cdl_t *ids, int64_t classes);
cdl_t *cdl_t_sign(cdl_tape *tp, cdl_t *x);
cdl_t *cdl_t_cast(cdl_tape *tp, cdl_t *x, int to_i32);
cdl_t *cdl_t_argmax(cdl_tape *tp, cdl_t *x, int axis, int keepdim, int is_min);
cdl_t *cdl_t_moments(cdl_tape *tp, cdl_t *x, unsigned axes, int keepdim, double correction, int take_sqrt);
cdl_t *cdl_t_logsumexp(cdl_tape *tp, cdl_t *x, unsigned axes, int keepdim);
cdl_t *cdl_t_neg(cdl_tape *tp, cdl_t *x);
cdl_t *cdl_t_exp(cdl_tape *tp, cdl_t *x);
cdl_t *cdl_t_log(cdl_tape *tp, cdl_t *x);
cdl_t *cdl_t_sqrt(cdl_tape *tp, cdl_t *x);
cdl_t *cdl_t_abs(cdl_tape *tp, cdl_t *x);
cdl_t *cdl_t_square(cdl_tape *tp, cdl_t *x);
cdl_t *cdl_t_pow(cdl_tape *tp, cdl_t *x, double p);
cdl_t *cdl_t_clamp(cdl_tape *tp, cdl_t *x, double lo, double hi);
cdl_t *cdl_t_leaky_relu(cdl_tape *tp, cdl_t *x, double slope);
cdl_t *cdl_t_softplus(cdl_tape *tp, cdl_t *x);
cdl_t *cdl_t_elu(cdl_tape *tp, cdl_t *x, double alpha);
cdl_t *cdl_t_dropout(cdl_tape *tp, cdl_t *x, double p, int stream, int64_t t);
cdl_t *cdl_t_stop_gradient(cdl_tape *tp, cdl_t *x);

/* ---- dense, reductions, shapes ---- */
cdl_t *cdl_t_matmul(cdl_tape *tp, cdl_t *a, cdl_t *b, int trans_a, int trans_b);
/* a @ b on rank >= 2 operands with torch.matmul's broadcasting of the leading axes;
 * trans_a / trans_b transpose the last two axes (tape_attn.c). */
cdl_t *cdl_t_bmm(cdl_tape *tp, cdl_t *a, cdl_t *b, int trans_a, int trans_b);
/* softmax(scale q k^T + causal mask) v over [..., T, d] (scale <= 0: 1/sqrt(d)); keeps
 * only each row's log-sum-exp for its backward (tape_attn.c). */
cdl_t *cdl_t_attention(cdl_tape *tp, cdl_t *q, cdl_t *k, cdl_t *v, cdl_t *key_mask, int causal, double scale);
/* the same with q, k, v and the result [..., T, H, d] (heads last), read in place */
cdl_t *cdl_t_attention_heads_last(cdl_tape *tp, cdl_t *q, cdl_t *k, cdl_t *v, cdl_t *key_mask, int causal,
                                  double scale);
/* torch.nn.functional.layer_norm over the last axis, rms_norm (torch.nn.RMSNorm), group_norm
 * over [N, C, ...] (instance norm: groups = C); w, b may be NULL (no affine part); eps > 0
 * (tape_norm.c). */
cdl_t *cdl_t_layer_norm(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b, double eps);
cdl_t *cdl_t_rms_norm(cdl_tape *tp, cdl_t *x, cdl_t *w, double eps);
cdl_t *cdl_t_group_norm(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b, int64_t groups, double eps);
/* The general convolution over [N, C, L] (weight [K, C/groups, S]) or [N, C, H, W]
 * (weight [K, C/groups, R, S]) with options o (a 1-D one has sh = dh = 1, ph = 0),
 * torch's Conv1d/Conv2d; the transposed convolution (ConvTranspose1d/2d, weight
 * [Ci, Co/groups, (R,) S]) to the output size oh x ow (oh = 1 for 1-D), which must
 * convolve back to x's size; pooling of kind CDL_POOL_* with the window, stride and
 * padding of win (adaptive: its output size oh x ow; 1-D: kh = 1, oh = 1);
 * nearest (bilinear = 0) or bilinear upsampling of [N, C, H, W] to oh x ow with the
 * scale factors the user gave (0: none) (tape_conv2.c).  b may be NULL. */
typedef struct cdl_conv_opts { int64_t sh, sw, ph, pw, dh, dw, groups; } cdl_conv_opts;
cdl_t *cdl_t_conv(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b, const cdl_conv_opts *o);
cdl_t *cdl_t_conv_transpose(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b, const cdl_conv_opts *o, int64_t oh, int64_t ow);
cdl_t *cdl_t_pool(cdl_tape *tp, cdl_t *x, int kind, const cdl_pool_geom *win);
cdl_t *cdl_t_upsample(cdl_tape *tp, cdl_t *x, int bilinear, int64_t oh, int64_t ow, double scale_h, double scale_w);
cdl_t *cdl_t_linear(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b);    /* b may be NULL */
cdl_t *cdl_t_sum(cdl_tape *tp, cdl_t *x, unsigned axes, int keepdim);  /* axes: bitmask, 0 = all */
cdl_t *cdl_t_mean(cdl_tape *tp, cdl_t *x, unsigned axes, int keepdim);
/* amax / amin over the axes (0 = all; x of rank >= 1); the first winner (NaN wins) takes the gradient. */
cdl_t *cdl_t_reduce_max(cdl_tape *tp, cdl_t *x, unsigned axes, int keepdim, int is_min);
cdl_t *cdl_t_broadcast_to(cdl_tape *tp, cdl_t *x, int rank, const int64_t *dims);
cdl_t *cdl_t_reshape(cdl_tape *tp, cdl_t *x, int rank, const int64_t *dims);  /* a view */
cdl_t *cdl_t_transpose(cdl_tape *tp, cdl_t *x, const int *perm);
cdl_t *cdl_t_concat(cdl_tape *tp, int n, cdl_t *const *xs, int axis);
/* x along axis: count positions start, start+step, ... (outside the axis: zeros);
 * index != 0 takes one position and drops the axis. */
cdl_t *cdl_t_slice(cdl_tape *tp, cdl_t *x, int axis, int64_t start, int64_t step, int64_t count,
                   int index);
cdl_t *cdl_t_softmax(cdl_tape *tp, cdl_t *x);
cdl_t *cdl_t_log_softmax(cdl_tape *tp, cdl_t *x);
cdl_t *cdl_t_embedding(cdl_tape *tp, cdl_t *ids, cdl_t *w);
/* Stack n same-shaped step values: batched ([B, ...] -> [B, n, ...]) or not ([n, ...]). */
cdl_t *cdl_t_stack(cdl_tape *tp, int n, cdl_t *const *xs, int batched);
/* numel elements of x from element offset on, shaped dims (a view, like ops.def VIEW). */
cdl_t *cdl_t_view(cdl_tape *tp, cdl_t *x, int64_t offset, int rank, const int64_t *dims);

/* ---- convolution, pooling, normalisation (NCHW), recurrent cells ---- */
cdl_t *cdl_t_conv2d(cdl_tape *tp, cdl_t *x, cdl_t *w, cdl_t *b, int stride, int pad);
cdl_t *cdl_t_maxpool2d(cdl_tape *tp, cdl_t *x, int k, int stride, int pad);
cdl_t *cdl_t_avgpool2d(cdl_tape *tp, cdl_t *x, int k, int stride, int pad);
cdl_t *cdl_t_batchnorm(cdl_tape *tp, cdl_t *x, cdl_t *gamma, cdl_t *beta, cdl_t *running_mean,
                       cdl_t *running_var, double eps, double momentum);
/* Packed [2, rows, H] = (h', c') (views of it at 0 and rows*H give h' and c'). */
cdl_t *cdl_t_lstm_act(cdl_tape *tp, cdl_t *gates, cdl_t *c);
cdl_t *cdl_t_gru_act(cdl_tape *tp, cdl_t *gi, cdl_t *gh, cdl_t *h);

/* ---- losses: reduce = CDL_RED_MEAN, _SUM, _NONE; _ex: row_weight [labels], weight [C] (NULL: none), ignore_index (CDL_NO_IGNORE: none) */
cdl_t *cdl_t_cross_entropy(cdl_tape *tp, cdl_t *logits, cdl_t *labels, double smoothing, int reduce);
cdl_t *cdl_t_nll(cdl_tape *tp, cdl_t *logp, cdl_t *labels, int reduce);
cdl_t *cdl_t_cross_entropy_ex(cdl_tape *tp, cdl_t *logits, cdl_t *labels, cdl_t *row_weight, cdl_t *weight, int64_t ignore_index, double smoothing, int reduce);
cdl_t *cdl_t_nll_ex(cdl_tape *tp, cdl_t *logp, cdl_t *labels, cdl_t *row_weight, cdl_t *weight, int64_t ignore_index, int reduce);
cdl_t *cdl_t_mse(cdl_tape *tp, cdl_t *a, cdl_t *b, int reduce);
cdl_t *cdl_t_l1(cdl_tape *tp, cdl_t *a, cdl_t *b, int reduce);
cdl_t *cdl_t_huber(cdl_tape *tp, cdl_t *a, cdl_t *b, double delta, int reduce);
cdl_t *cdl_t_bce(cdl_tape *tp, cdl_t *p, cdl_t *target, int reduce);
cdl_t *cdl_t_bce_with_logits(cdl_tape *tp, cdl_t *z, cdl_t *target, int reduce);
cdl_t *cdl_t_kl_normal(cdl_tape *tp, cdl_t *mu, cdl_t *logvar, int reduce);

/* Element 0 of t as a double (NaN for NULL). */
double cdl_t_item(const cdl_t *t);
/* Reverse sweep from the scalar loss: every trainable parameter's gradient into
 * net->grad (overwriting; zeros where the loss does not depend on it) when want_params,
 * every real input's into net->in_grad[slot] when want_inputs; intermediate tensors'
 * grad fields are valid afterwards.  0, or -1 and a message (the step failed). */
int cdl_backward(cdl_tape *tp, cdl_t *loss, int want_params, int want_inputs);

/* Static vs tape comparison (compare.c): runs both models (same parameter table) on the
 * same batches from the same seed and prints losses, gradient differences, time and
 * memory per step.  Options: --steps N (20), --batch N (the compiled batch), --data NAME
 * (a dataset whose columns feed the inputs by name; default fashion-mnist when it fits,
 * else random: "random" makes inputs shaped like the model's),
 * --seed N, --lr X (SGD step between steps, 0.01), --threads N (1), --json.  Returns the
 * exit status (0, 1 on an error, 2 on a usage error). */
int cdl_compare(const cdl_model *static_m, const cdl_model *tape_m, int argc, char **argv);
/* END TAPE */

/* ---- activations: BEGIN ACT */
/* An activation y = f(x), elementwise, whose backward is one kernel of the incoming
 * gradient g and v, the forward's input x (CDL_ACT_X) or output y (CDL_ACT_Y):
 *   void cdl_<name>_f32(int64_t n, const float *x, float *y);              (and _f64)
 *   void cdl_<name>_bwd_f32(int64_t n, const float *g, const float *v, float *dx);
 * Both may run in place (y == x, dx == g or v).  CDL_ACTIVATION(name, reads) declares
 * the four kernels (kernels_ew_t.h defines them) and the tape call cdl_t_<name>(tp, x),
 * which records the op through cdl_t_act with those kernels. */
typedef struct cdl_act {
    const char *name;
    int reads;                   /* CDL_ACT_X or CDL_ACT_Y: what the backward kernel reads */
    void (*f32)(int64_t n, const float *x, float *y);
    void (*f64)(int64_t n, const double *x, double *y);
    void (*bwd_f32)(int64_t n, const float *g, const float *v, float *dx);
    void (*bwd_f64)(int64_t n, const double *g, const double *v, double *dx);
} cdl_act;
enum { CDL_ACT_X, CDL_ACT_Y };
/* Record activation a on the tape (a must outlive the step: CDL_ACTIVATION's is static). */
cdl_t *cdl_t_act(cdl_tape *tp, cdl_t *x, const cdl_act *a);
#define CDL_ACTIVATION(name, reads)                                                              \
    void cdl_##name##_f32(int64_t n, const float *x, float *y);                                  \
    void cdl_##name##_f64(int64_t n, const double *x, double *y);                                \
    void cdl_##name##_bwd_f32(int64_t n, const float *g, const float *v, float *dx);             \
    void cdl_##name##_bwd_f64(int64_t n, const double *g, const double *v, double *dx);          \
    static inline cdl_t *cdl_t_##name(cdl_tape *tp, cdl_t *x) {                                  \
        static const cdl_act act = {#name, reads, cdl_##name##_f32, cdl_##name##_f64,            \
                                    cdl_##name##_bwd_f32, cdl_##name##_bwd_f64};                 \
        return cdl_t_act(tp, x, &act);                                                           \
    }
CDL_ACTIVATION(relu, CDL_ACT_X)          /* max(x, 0) */
CDL_ACTIVATION(sigmoid, CDL_ACT_Y)
CDL_ACTIVATION(tanh, CDL_ACT_Y)
CDL_ACTIVATION(gelu, CDL_ACT_X)          /* exact, erf */
CDL_ACTIVATION(silu, CDL_ACT_X)          /* x sigmoid(x) */
CDL_ACTIVATION(mish, CDL_ACT_X)          /* x tanh(softplus(x)) */
CDL_ACTIVATION(sin, CDL_ACT_X)
CDL_ACTIVATION(cos, CDL_ACT_X)
CDL_ACTIVATION(erf, CDL_ACT_X)
CDL_ACTIVATION(log1p, CDL_ACT_X)
CDL_ACTIVATION(gelu_tanh, CDL_ACT_X)     /* gelu(approximate="tanh") */
/* ---- END ACT */

#endif /* CDL_TAPE_H */

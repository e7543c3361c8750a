/* cdl.h -- the one public header of libcdlrt, the cdl runtime.
 *
 * Generated models and user programs include only this file.  Sections, one per
 * runtime source file:  basics & allocation (alloc.c) . RNG (rng.c) . kernels
 * (kernels_*.c, blas.c) . models and nets (net.c) . optimizers (optim.c) . data (data.c)
 * . checkpoints (ckpt.c) . many processes (dist.c) . trainer (trainer.c) . tape (tape.c; its
 * declarations are in cdl_tape.h, which this file includes).
 *
 * Kernels exist in two precisions with the same body: name_f32 over float and
 * name_f64 over double (the f64 build is used by gradient checks).  Element counts and
 * dimensions are int64_t.  Every kernel takes its runtime sizes explicitly: a batch
 * smaller than the compiled one is just a smaller leading dimension.
 */
#ifndef CDL_H
#define CDL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CDL_VERSION "0.1.0"

/* The runtime ABI: the contract between C that cdlc generates and this runtime (header
 * and library).  Bump CDL_ABI on any change of
 *   - a runtime function's signature or meaning that generated C calls (kernels, tape
 *     calls, net, optimizer, checkpoint, trainer entry points),
 *   - a struct or enum the generated C reads, fills or lays out (cdl_model, cdl_tensor,
 *     cdl_entry, cdl_net, the geometry structs, the op and flag numbers),
 *   - a scratch or arena contract whose size the generated C computes (say, a kernel's
 *     scratch bytes: C generated for the old size reserves too little for the new
 *     kernel and memory is corrupted silently).
 * Generated C stops at compile time (#error) when this header has another number than
 * the cdlc that generated it, and cdl_net_new refuses a descriptor whose .abi is not
 * this library's cdl_abi() (a header and a library of two versions), with a message
 * saying to regenerate.  Hand-made descriptors set .abi = CDL_ABI. */
#define CDL_ABI 5
int cdl_abi(void);                      /* the CDL_ABI this library was built with */
#define CDL_MAXDIM 6

/* ======================================================================== basics (alloc.c) */

typedef enum cdl_dtype { CDL_F32 = 0, CDL_F64 = 1, CDL_I32 = 2 } cdl_dtype;

/* All runtime allocation goes through one hook (Lua's lua_Alloc contract):
 * fn(ud, p, n): n == 0 frees p and returns NULL; otherwise (re)allocates p to n bytes
 * (p == NULL: a new block) and returns NULL on failure.  Blocks are 64-byte aligned
 * when the default allocator is used.  Tests install a counting or failing hook. */
typedef void *(*cdl_alloc_fn)(void *ud, void *p, size_t n);
void cdl_set_allocator(cdl_alloc_fn fn, void *ud);
void *cdl_alloc(size_t n);             /* NULL on failure; zeroed memory */
void cdl_free(void *p);
uint64_t cdl_alloc_count(void);        /* allocations made through the hook so far */

/* Errors: runtime functions that can fail return 0 on success and -1 on failure, and
 * leave a message (naming the file / place / tensor) readable with cdl_last_error().
 * The message is per thread. */
const char *cdl_last_error(void);
int cdl_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;                                   /* sets the message, returns -1 */
void cdl_clear_error(void);             /* empties this thread's message */

/* Strict numbers (parse.c): the whole string is the number, nothing around it.
 * Reals: strtod's syntax, finite (NaN, infinity and overflow refused; underflow
 * rounds).  Integers: decimal with an optional sign (i64, within [lo, hi]); unsigned
 * ones also 0x hex.  0 on success, else CDL_PARSE_BAD (not a number) or
 * CDL_PARSE_RANGE (a number, out of range); no message: the caller names the place. */
enum { CDL_PARSE_BAD = -1, CDL_PARSE_RANGE = -2 };
int cdl_parse_f64(const char *s, double *v);
int cdl_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *v);
int cdl_parse_u64(const char *s, uint64_t *v);

/* ======================================================================== RNG (rng.c) */
/* Counter-based Philox-4x32-10.  A random number is a pure function of
 * (seed, step, stream, index): stream identifies the op (the compiler's stream id, the
 * same in static and tape mode), index the element (loop step t folded in by the caller
 * as index + t * numel).  So dropout masks and noise are identical in both modes and
 * independent of thread count. */
typedef struct cdl_rng_key { uint64_t seed, step, stream; } cdl_rng_key;
void cdl_philox(cdl_rng_key k, uint64_t index, uint32_t out[4]);
/* Uniform [0,1) and standard normal fills; element i uses counter base + i. */
void cdl_rand_f32(cdl_rng_key k, uint64_t base, int64_t n, float *out);
void cdl_rand_f64(cdl_rng_key k, uint64_t base, int64_t n, double *out);
void cdl_randn_f32(cdl_rng_key k, uint64_t base, int64_t n, float *out);
void cdl_randn_f64(cdl_rng_key k, uint64_t base, int64_t n, double *out);

/* Parameter initialisation (kinds match the language's initialisers). */
typedef enum cdl_init_kind {
    CDL_INIT_ZEROS, CDL_INIT_ONES, CDL_INIT_CONSTANT,   /* a */
    CDL_INIT_UNIFORM,                                   /* U(a, b) */
    CDL_INIT_NORMAL,                                    /* N(a, b^2) */
    CDL_INIT_XAVIER_UNIFORM, CDL_INIT_XAVIER_NORMAL,    /* gain a (1 if 0) */
    CDL_INIT_HE_UNIFORM, CDL_INIT_HE_NORMAL,            /* kaiming, fan_in, relu gain */
    CDL_INIT_DEFAULT                                    /* PyTorch layer default: U(+-1/sqrt(fan_in)) */
} cdl_init_kind;
void cdl_init_f32(float *p, int64_t n, cdl_init_kind kind, double a, double b,
                  int64_t fan_in, int64_t fan_out, cdl_rng_key k);
void cdl_init_f64(double *p, int64_t n, cdl_init_kind kind, double a, double b,
                  int64_t fan_in, int64_t fan_out, cdl_rng_key k);

/* ======================================================================== kernels */
/* Declared once for both precisions through CDL_KERNELS(T, S): T the element type,
 * S the suffix.  Each kernel family adds its prototypes to its own block below.
 * Conventions: y = output, g = incoming gradient, dx = gradient output; shapes in the
 * comment; "rows" is the runtime leading dimension. */
#define CDL_KERNELS(T, S) \
    CDL_KERNELS_EW(T, S) \
    CDL_KERNELS_DENSE(T, S) \
    CDL_KERNELS_LOSS(T, S) \
    CDL_KERNELS_CONV(T, S) \
    CDL_KERNELS_RNN(T, S) \
    CDL_KERNELS_ATTN(T, S) \
    CDL_KERNELS_NORM(T, S) \
    CDL_KERNELS_CONV2(T, S) \
    CDL_KERNELS_SEL(T, S)

/* ---- elementwise, activations, random, dropout (kernels_ew.c) ---- BEGIN EW */
/* Elementwise kernels.  n is the runtime element count.  Unless a comment says
 * otherwise the output may alias an input exactly (in place), never partially.
 * Scalar attributes (fill value, slope, bounds, p) are passed as double and
 * converted once; +-1e308 or beyond means +-infinity (clamp without a bound).
 *
 * Binary ops with numpy broadcasting, op = CDL_BIN_*:
 *   cdl_add/sub/mul/div/maximum/minimum(n, a, b, y): same shape.
 *   cdl_binary(op, n, a, sa, b, sb, y): y[i] = a[i*sa] op b[i*sb]; sa, sb in {0, 1}
 *     (0 = a single element: the scalar fast path).
 *   cdl_binary_bc(op, rank, dims, sa, sb, a, b, y): general strided broadcast over
 *     rank <= 6 output dims (dims[0] may be the runtime batch); sa/sb are element
 *     strides of a and b per output dim (0 on broadcast dims); y is contiguous.
 *   maximum/minimum: ties pick a.  cdl_maxmin_bwd: dx = g where a wins (ties: a),
 *     else 0, over the broadcast output (g, dx contiguous; strided a, b).
 *   CDL_BIN_LT, LE, GT, GE, EQ, NE: comparisons giving masks, 1 where true, else 0
 *     (NaN compares false except !=); they have no gradient.
 * sin, cos, erf, log1p, sign (0 at 0, NaN stays NaN), gelu_tanh (approximate="tanh");
 * sign has no gradient, the others a _bwd(g, x) helper.
 * Dropout (inverted): element i is kept when its 32-bit random word (a pure function
 * of k and base + i, the same in both precisions; see kernels_ew.c) is >= p * 2^32,
 * kept values scaled by 1/(1-p); p >= 1 gives zeros.  The backward regenerates the
 * same mask from the same (k, base). */
enum { CDL_BIN_ADD, CDL_BIN_SUB, CDL_BIN_MUL, CDL_BIN_DIV, CDL_BIN_MAX, CDL_BIN_MIN,
       CDL_BIN_LT, CDL_BIN_LE, CDL_BIN_GT, CDL_BIN_GE, CDL_BIN_EQ, CDL_BIN_NE };
void cdl_fill_i32(int64_t n, int32_t v, int32_t *y);
/* The elementwise kernels that differ only in name: y = a op b, y = f(x), and the
 * unary gradients dx = g * f'(x).  X(name, T, S) is called once per name. */
#define CDL_EW_BINARY(X, T, S) X(add, T, S) X(sub, T, S) X(mul, T, S) X(div, T, S) X(maximum, T, S) X(minimum, T, S)
#define CDL_EW_UNARY(X, T, S) \
    X(neg, T, S) X(exp, T, S) X(log, T, S) X(sqrt, T, S) X(abs, T, S) X(square, T, S) X(sin, T, S) X(cos, T, S) \
    X(erf, T, S) X(log1p, T, S) X(sign, T, S) X(softplus, T, S) X(gelu_tanh, T, S)
#define CDL_EW_UNARY_BWD(X, T, S) X(sin, T, S) X(cos, T, S) X(erf, T, S) X(log1p, T, S) X(gelu_tanh, T, S)
#define CDL_EW_BINARY_PROTO(name, T, S) void cdl_##name##_##S(int64_t n, const T *a, const T *b, T *y);
#define CDL_EW_UNARY_PROTO(name, T, S) void cdl_##name##_##S(int64_t n, const T *x, T *y);
#define CDL_EW_UNARY_BWD_PROTO(name, T, S) void cdl_##name##_bwd_##S(int64_t n, const T *g, const T *x, T *dx);
#define CDL_KERNELS_EW(T, S) \
    CDL_EW_BINARY(CDL_EW_BINARY_PROTO, T, S) \
    CDL_EW_UNARY(CDL_EW_UNARY_PROTO, T, S) \
    CDL_EW_UNARY_BWD(CDL_EW_UNARY_BWD_PROTO, T, S) \
    void cdl_fill_##S(int64_t n, double v, T *y); \
    void cdl_copy_##S(int64_t n, const T *x, T *y); \
    void cdl_add_inplace_##S(int64_t n, const T *x, T *y);            /* y += x */ \
    void cdl_axpy_##S(int64_t n, double a, const T *x, T *y);         /* y += a*x */ \
    void cdl_scale_##S(int64_t n, double a, T *y);                    /* y *= a */ \
    void cdl_binary_##S(int op, int64_t n, const T *a, int64_t sa, const T *b, int64_t sb, T *y); \
    void cdl_binary_bc_##S(int op, int rank, const int64_t *dims, const int64_t *sa, \
                           const int64_t *sb, const T *a, const T *b, T *y); \
    void cdl_maxmin_bwd_##S(int is_max, int rank, const int64_t *dims, const int64_t *sa, \
                            const int64_t *sb, const T *g, const T *a, const T *b, T *dx); \
    void cdl_pows_##S(int64_t n, double p, const T *x, T *y);         /* x ** p */ \
    void cdl_gelu_keep_##S(int64_t n, const T *x, T *y, T *d);        /* gelu; d = gelu'(x) */ \
    void cdl_gelu_bwd_kept_##S(int64_t n, const T *g, const T *d, T *dx); /* dx = g d */ \
    void cdl_clamp_##S(int64_t n, double lo, double hi, const T *x, T *y); \
    void cdl_leaky_relu_##S(int64_t n, double slope, const T *x, T *y); \
    void cdl_elu_##S(int64_t n, double alpha, const T *x, T *y); \
    void cdl_leaky_relu_bwd_##S(int64_t n, double slope, const T *g, const T *x, T *dx); \
    void cdl_elu_bwd_##S(int64_t n, double alpha, const T *g, const T *x, T *dx); \
    void cdl_clamp_bwd_##S(int64_t n, double lo, double hi, const T *g, const T *x, T *dx); \
    void cdl_dropout_##S(cdl_rng_key k, uint64_t base, int64_t n, double p, const T *x, T *y); \
    void cdl_dropout_bwd_##S(cdl_rng_key k, uint64_t base, int64_t n, double p, const T *g, T *dx); \
    void cdl_dropout_keep_##S(cdl_rng_key k, uint64_t base, int64_t n, double p, const T *x, T *y, uint8_t *keep); \
    void cdl_dropout_keep_bwd_##S(int64_t n, double p, const uint8_t *keep, const T *g, T *dx);
/* ---- END EW */

/* ---- dense, reductions, shapes, softmax, embedding (kernels_dense.c, blas.c) ---- BEGIN DENSE */
/* All tensors are dense row-major.  Sizes are runtime sizes; the physical row lengths
 * (lda, ...) are the compiled ones, so a smaller batch is only a smaller leading dim.
 *  gemm        C[M,N] = alpha op(A) op(B) + beta C, row-major; op(A) is A (transA = 0,
 *              A is [M,K], lda >= K) or A^T (transA = 1, A is [K,M], lda >= M); same for
 *              B.  beta = 0 overwrites C (NaNs in C ignored).  (blas.c: OpenBLAS)
 *  gemm_batch  batch GEMMs as gemm, product i on A + i*sA, B + i*sB, C + i*sC
 *              (element strides; sA or sB = 0 shares one matrix); sC = 0 sums every
 *              product into one C, beta applied once.  (blas.c)
 *  linear      y[rows,out] = x[rows,in] w[out,in]^T + b[out]; b may be NULL
 *  reduce      y = sum (mean: / count) of x over the axes in mask (bit i = axis i;
 *              0 = every axis); dims = x's runtime dims; y holds the kept dims in order
 *  broadcast   y[ydims] = x[xdims] (numpy rules; xdims has y's rank, padded with 1s;
 *              x repeats along the axes where its dim is 1, elsewhere it is indexed
 *              like y, so x may have more rows than y)
 *  transpose   y = x permuted: y dim i is x dim perm[i]; dims = x's runtime dims
 *  concat      y[outer, sum inner] = the n parts xs[k][outer, inner[k]] side by side
 *  slice       x is [outer, len, inner], y is [outer, count, inner]:
 *              y[o, j, :] = x[o, start + j*step, :], zeros where that index is outside
 *              [0, len) (never reads out of bounds)
 *  slice_bwd   dx[outer, len, inner] = 0, then dx[o, start + j*step, :] += g[o, j, :]
 *              (indices outside [0, len) dropped)
 *  softmax, log_softmax over the last axis (x[rows, n]); their backward from g and y
 *  embedding   y[n, D] = w[ids[i], :]; an id outside [0, V) gives a zero row
 *  embedding_bwd dw[V, D] = 0, then dw[ids[i], :] += g[i, :] (ids outside [0, V) ignored)
 */
/* Element-moving kernels: also in an i32 version (cdl_slice_i32, ...) for labels. */
#define CDL_KERNELS_DENSE_MOVE(T, S) \
    void cdl_broadcast_##S(int rank, const int64_t *xdims, const int64_t *ydims, \
                           const T *x, T *y); \
    void cdl_transpose_##S(int rank, const int64_t *dims, const int *perm, const T *x, T *y); \
    void cdl_concat_##S(int n, int64_t outer, const int64_t *inner, const T *const *xs, T *y); \
    void cdl_slice_##S(int64_t outer, int64_t len, int64_t inner, int64_t start, \
                       int64_t step, int64_t count, const T *x, T *y);
CDL_KERNELS_DENSE_MOVE(int32_t, i32)
#define CDL_KERNELS_DENSE(T, S) \
    CDL_KERNELS_DENSE_MOVE(T, S) \
    void cdl_gemm_##S(int transA, int transB, int64_t M, int64_t N, int64_t K, T alpha, \
                      const T *A, int64_t lda, const T *B, int64_t ldb, T beta, T *C, \
                      int64_t ldc); \
    void cdl_gemm_batch_##S(int transA, int transB, int64_t M, int64_t N, int64_t K, T alpha, \
                            const T *A, int64_t lda, int64_t sA, const T *B, int64_t ldb, \
                            int64_t sB, T beta, T *C, int64_t ldc, int64_t sC, int64_t batch); \
    void cdl_linear_##S(int64_t rows, int64_t in, int64_t out, const T *x, const T *w, \
                        const T *b, T *y); \
    void cdl_reduce_##S(int rank, const int64_t *dims, unsigned mask, int mean, \
                        const T *x, T *y); \
    void cdl_slice_bwd_##S(int64_t outer, int64_t len, int64_t inner, int64_t start, \
                           int64_t step, int64_t count, const T *g, T *dx); \
    void cdl_softmax_##S(int64_t rows, int64_t n, const T *x, T *y); \
    void cdl_log_softmax_##S(int64_t rows, int64_t n, const T *x, T *y); \
    void cdl_softmax_bwd_##S(int64_t rows, int64_t n, const T *g, const T *y, T *dx); \
    void cdl_log_softmax_bwd_##S(int64_t rows, int64_t n, const T *g, const T *y, T *dx); \
    void cdl_embedding_##S(int64_t n, int64_t V, int64_t D, const int32_t *ids, \
                           const T *w, T *y); \
    void cdl_embedding_bwd_##S(int64_t n, int64_t V, int64_t D, const T *g, \
                               const int32_t *ids, T *dw);
/* ---- END DENSE */

/* ---- losses (kernels_loss.c) ---- BEGIN LOSS */
/* Losses write one real to *loss, accumulating in double.  red = CDL_RED_MEAN
 * (mse, l1, huber, bce, bce_logits: over all n elements, like PyTorch;
 * cross_entropy, nll: over rows; kl_normal: over rows = the batch) or CDL_RED_SUM.
 * Class losses: logits/logp are [rows, cols], labels i32[rows]; a label outside
 * [0, cols) sets cdl_fail, makes the loss NaN (its gradient row 0) and returns -1.
 * cross_entropy saves softmax probabilities (rows*cols) in probs for its backward;
 * smoothing s: target q = (1-s)*onehot + s/cols.  Backward kernels take g, the
 * upstream gradient (one element), and write d/d(input); pair losses take wrt = 0
 * for d/da, 1 for d/db.  huber: delta > 0.  bce: logs clamped at -100 like PyTorch.
 * kl_normal(mu, logvar) = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)), [rows, cols].
 * red = CDL_RED_NONE: loss receives the unreduced values (pair losses: n, one an
 * element; class losses and kl_normal: rows, one a row) and the backward kernels take
 * g of the same size.
 * cross_entropy_ex / nll_ex generalise the class losses (the plain ones call them with
 * rw = cw = NULL, ignore_index = CDL_NO_IGNORE): a row whose label is ignore_index has
 * no loss (0 under none) and no gradient; rw (NULL: all 1) weights row r's loss by rw[r],
 * cw[cols] (NULL: all 1) by class as PyTorch's weight=; mean divides by the sum of
 * rw[r] cw[y_r] over the rows not ignored (all rows ignored gives NaN). */
enum { CDL_RED_MEAN = 0, CDL_RED_SUM = 1, CDL_RED_NONE = 2 };
#define CDL_NO_IGNORE INT64_MIN   /* ignore_index of a class loss that ignores no label */
#define CDL_KERNELS_LOSS(T, S) \
    int cdl_cross_entropy_##S(int64_t rows, int64_t cols, const T *logits, const int32_t *labels, \
                              double smoothing, int red, T *probs, T *loss); \
    int cdl_cross_entropy_bwd_##S(int64_t rows, int64_t cols, const T *g, const int32_t *labels, \
                                  const T *probs, double smoothing, int red, T *dx); \
    int cdl_nll_##S(int64_t rows, int64_t cols, const T *logp, const int32_t *labels, int red, T *loss); \
    int cdl_nll_bwd_##S(int64_t rows, int64_t cols, const T *g, const int32_t *labels, int red, T *dx); \
    int cdl_cross_entropy_ex_##S(int64_t rows, int64_t cols, const T *logits, const int32_t *labels, \
                                 const T *rw, const T *cw, int64_t ignore_index, double smoothing, int red, T *probs, T *loss); \
    int cdl_cross_entropy_ex_bwd_##S(int64_t rows, int64_t cols, const T *g, const int32_t *labels, \
                                     const T *rw, const T *cw, int64_t ignore_index, const T *probs, double smoothing, \
                                     int red, T *dx); \
    int cdl_nll_ex_##S(int64_t rows, int64_t cols, const T *logp, const int32_t *labels, const T *rw, \
                       const T *cw, int64_t ignore_index, int red, T *loss); \
    int cdl_nll_ex_bwd_##S(int64_t rows, int64_t cols, const T *g, const int32_t *labels, const T *rw, \
                           const T *cw, int64_t ignore_index, int red, T *dx); \
    void cdl_class_weight_bwd_##S(int64_t rows, int64_t cols, const T *g, const int32_t *labels, const T *rw, const T *cw, int64_t ignore_index, const T *u, const T *loss, int red, T *dw); \
    void cdl_mse_##S(int64_t n, const T *a, const T *b, int red, T *loss); \
    void cdl_mse_bwd_##S(int64_t n, const T *g, const T *a, const T *b, int red, int wrt, T *d); \
    void cdl_l1_##S(int64_t n, const T *a, const T *b, int red, T *loss); \
    void cdl_l1_bwd_##S(int64_t n, const T *g, const T *a, const T *b, int red, int wrt, T *d); \
    void cdl_huber_##S(int64_t n, double delta, const T *a, const T *b, int red, T *loss); \
    void cdl_huber_bwd_##S(int64_t n, double delta, const T *g, const T *a, const T *b, int red, \
                           int wrt, T *d); \
    void cdl_bce_##S(int64_t n, const T *p, const T *t, int red, T *loss); \
    void cdl_bce_bwd_##S(int64_t n, const T *g, const T *p, const T *t, int red, int wrt, T *d); \
    void cdl_bce_logits_##S(int64_t n, const T *z, const T *t, int red, T *loss); \
    void cdl_bce_logits_bwd_##S(int64_t n, const T *g, const T *z, const T *t, int red, int wrt, T *d); \
    void cdl_kl_normal_##S(int64_t rows, int64_t cols, const T *mu, const T *logvar, int red, T *loss); \
    void cdl_kl_normal_bwd_##S(int64_t rows, int64_t cols, const T *g, const T *mu, const T *logvar, \
                               int red, int wrt, T *d);
/* ---- END LOSS */

/* ---- conv, pooling, batch norm (kernels_conv.c) ---- BEGIN CONV */
/* All NCHW.  Geometry of one 2-D convolution: x[n, c, h, w] * w[k, c, r, s] ->
 * y[n, k, oh, ow], oh = (h + 2 pad - r) / stride + 1 (likewise ow).  n is the runtime
 * batch.  `group` (>= 1) images are lowered together into one im2col matrix so that
 * one GEMM covers them (small feature maps); the caller's scratch must hold
 * cdl_conv2d_scratch(geom) reals.  The three conv kernels share that scratch size. */
typedef struct cdl_conv2d_geom {
    int64_t n, c, h, w;          /* input */
    int64_t k, r, s;             /* output channels, kernel height, width */
    int64_t stride, pad;
    int64_t oh, ow;              /* output spatial size (as above) */
    int64_t group;               /* images per GEMM */
} cdl_conv2d_geom;
/* How the conv kernels lower a geometry (shared by the kernels, the compiler's aux
 * sizes and the tape, so it is defined once, here):
 *   direct (1x1, stride 1, no padding): the image is its own im2col matrix;
 *   wide (stride 1): the im2col matrix is computed on the padded-width grid, so each
 *     of its rows is ONE contiguous copy of the (zero-padded) image, cols per image
 *     (oh - 1) * (w + 2 pad) + ow; the GEMM's extra columns are dropped afterwards;
 *   strided: classic im2col, oh * ow columns per image.
 * Scratch parts, in this order: the zero-padded image (wide with pad > 0), the im2col
 * matrix (not for direct with group 1), the GEMM result / widened gradient (wide, or
 * group > 1), dw transposed (k*c*r*s: bwd_w accumulates dw^T = col g^T, the faster
 * GEMM shape).  parts[4] = columns per image. */
static inline void cdl_conv2d_parts(const cdl_conv2d_geom *g, int64_t parts[5]) {
    int64_t G = g->group > 1 ? g->group : 1, Wp = g->w + 2 * g->pad, Hp = g->h + 2 * g->pad;
    int direct = g->r == 1 && g->s == 1 && g->stride == 1 && g->pad == 0;
    int wide = g->stride == 1 && !direct;
    int64_t cols = wide ? (g->oh - 1) * Wp + g->ow : g->oh * g->ow;
    parts[0] = wide && g->pad > 0 ? g->c * Hp * Wp : 0;
    parts[1] = direct && G == 1 ? 0 : g->c * g->r * g->s * G * cols;
    parts[2] = wide || G > 1 ? g->k * G * cols : 0;
    parts[3] = g->k * g->c * g->r * g->s;
    parts[4] = cols;
}
/* Stride-1 convolutions other than the direct 1x1 case (and with pad < the kernel, so
 * that the input gradient is a stride-1 convolution too) skip im2col and the GEMM: a
 * register-blocked direct kernel computes them on the padded-width grid (above), vector
 * by vector.  Its scratch, in this order: CDL_CONV_THREADS slots of parts[4] reals for
 * the zero-padded input (x, or g for bwd_x) plus one pixel block of slack; the wide
 * result grid, CDL_CONV_THREADS slots of parts[5] reals (rows rounded up to a block of
 * CDL_CONV_NB), or of bwd_w's widened g (a group of images per slot); the repacked
 * weights (k*c*r*s); CDL_CONV_THREADS slots of bwd_w's per-lane partial sums
 * (k*c*r*s*CDL_CONV_VL, when cdl_conv2d_vec_w).  The scratch is the larger of that and the im2col layout when
 * bwd_w is not direct.  The pool (cdl_parallel_for) runs the forward and bwd_x an image
 * range per thread, each in its own slot, and bwd_w an image chunk per task
 * (cdl_conv2d_vec_chunks), each in its own slots: at most CDL_CONV_THREADS threads,
 * and the same bits for any thread count (the chunks do not depend on it). */
#define CDL_CONV_VL 16 /* lanes of a 64-byte vector of floats (doubles use 8) */
#define CDL_CONV_NB 48 /* pixels per register block, floats (doubles: 24) */
#define CDL_CONV_THREADS 2 /* per-thread scratch slots: threads a conv can use (each
                            * slot costs activation memory; the bench machine has 2) */
static inline int cdl_conv2d_vec(const cdl_conv2d_geom *g) {
    int direct = g->r == 1 && g->s == 1 && g->stride == 1 && g->pad == 0;
    return g->stride == 1 && !direct && g->pad < g->r && g->pad < g->s;
}
/* bwd_w's lane partials (k*c*r*s*CDL_CONV_VL reals) must stay cache-sized: larger
 * weights take im2col + GEMM for bwd_w only (measured, 64 channels 3x3 on 7x7 images:
 * 3.9 ms by GEMM, 4.5 direct; 256 channels: the partials alone were 37 MB). */
static inline int cdl_conv2d_vec_w(const cdl_conv2d_geom *g) {
    return cdl_conv2d_vec(g) && g->k * g->c * g->r * g->s <= 16384;
}
/* bwd_w takes small grids several images at a time: about 512 grid columns, at most 8. */
static inline int64_t cdl_conv2d_vec_group(const cdl_conv2d_geom *g) {
    int64_t cols = (g->oh - 1) * (g->w + 2 * g->pad) + g->ow, G = cols > 0 ? (512 + cols - 1) / cols : 1;
    return G < 1 ? 1 : G > 8 ? 8 : G;
}
/* bwd_w's image chunks (each with its own slot and lane partials, summed in chunk
 * order): CDL_CONV_THREADS, or 1 for a call too small to split (CDL_CONV_PAR_MACS
 * multiply-adds, about 20 us: waking a worker costs about that) or one image.  A
 * function of the geometry only, so dw has the same bits for any thread count. */
#define CDL_CONV_PAR_MACS ((int64_t)1 << 21)
static inline int64_t cdl_conv2d_vec_chunks(const cdl_conv2d_geom *g) {
    const int64_t macs = g->n * g->k * g->c * g->r * g->s * g->oh * g->ow;
    const int64_t c = macs < CDL_CONV_PAR_MACS ? 1 : CDL_CONV_THREADS;
    return g->n < c ? (g->n < 1 ? 1 : g->n) : c;
}
/* dx and dw in one pass (cdl_conv2d_bwd_xw): a "same" 3x3 (5x5, ...) stride-1 conv
 * whose bwd_w is direct; its pad slot then holds g's and x's padded images. */
static inline int cdl_conv2d_vec_xw(const cdl_conv2d_geom *g) {
    return cdl_conv2d_vec_w(g) && g->r == 2 * g->pad + 1 && g->s == 2 * g->pad + 1;
}
static inline void cdl_conv2d_vec_parts(const cdl_conv2d_geom *g, int64_t parts[6]) {
    const int64_t nb = CDL_CONV_NB, Hp = g->h + 2 * g->pad, Wp = g->w + 2 * g->pad;
    const int64_t G = cdl_conv2d_vec_w(g) ? cdl_conv2d_vec_group(g) : 1; /* bwd_w's images */
    const int64_t Hq = g->oh + 2 * (g->r - 1 - g->pad), Wq = g->ow + 2 * (g->s - 1 - g->pad);
    const int64_t colsf = ((g->oh - 1) * Wp + g->ow + nb - 1) / nb * nb; /* forward, bwd_w */
    const int64_t colsx = ((g->h - 1) * Wq + g->w + nb - 1) / nb * nb;   /* bwd_x */
    const int64_t crs = g->c * g->r * g->s, T = CDL_CONV_THREADS;
    const int64_t gq = g->k * Hq * Wq + (cdl_conv2d_vec_xw(g) ? g->c * Hp * Wp + nb : 0);
    parts[4] = (G * g->c * Hp * Wp > gq ? G * g->c * Hp * Wp : gq) + nb;
    parts[5] = g->k * colsf > g->c * colsx ? g->k * colsf : g->c * colsx;
    parts[0] = T * parts[4];
    parts[1] = T * (parts[5] > G * g->k * colsf ? parts[5] : G * g->k * colsf);
    parts[2] = g->k * crs;
    parts[3] = cdl_conv2d_vec_w(g) ? T * g->k * crs * CDL_CONV_VL : 0;
}
/* bwd_xw's bias gradient: after the vec parts, n * k reals of per-image channel sums
 * (cdl_conv2d_bwd_xw's db; n is the compiled batch, at least the runtime one). */
static inline int64_t cdl_conv2d_scratch(const cdl_conv2d_geom *g) {
    int64_t p[6], v = -1;
    if (cdl_conv2d_vec(g)) {
        cdl_conv2d_vec_parts(g, p);
        v = p[0] + p[1] + p[2] + p[3] + (cdl_conv2d_vec_xw(g) ? g->n * g->k : 0);
        if (cdl_conv2d_vec_w(g)) return v;
    }
    cdl_conv2d_parts(g, p); /* bwd_w (or all three) through im2col + GEMM */
    return p[0] + p[1] + p[2] + p[3] > v ? p[0] + p[1] + p[2] + p[3] : v;
}
/* The group the compiler picks for a geometry at its compiled batch n: enough images
 * for a GEMM about 256 columns wide (measured: wider groups only add memory traffic),
 * capped so the im2col matrix stays near 1M reals. */
static inline int64_t cdl_conv2d_pick_group(const cdl_conv2d_geom *g) {
    const int64_t cols = 256, cap = (int64_t)1 << 20;
    int64_t P = g->oh * g->ow, crs = g->c * g->r * g->s;
    if (P <= 0 || g->n <= 1) return 1;
    int64_t G = (cols + P - 1) / P;
    if (G > g->n) G = g->n;
    int64_t fit = cap / (crs * P > 0 ? crs * P : 1);
    if (G > fit) G = fit;
    return G < 1 ? 1 : G;
}
/* Kernels (g = incoming gradient dL/dy):
 *   conv2d          y = x * w (+ b[k] per output channel; b may be NULL)
 *   conv2d_bwd_x    dx = full correlation of g with w (overwrites dx)
 *   conv2d_bwd_w    dw = sum over images of g (x) x-patches (overwrites dw)
 *   conv2d_fused    conv2d with an epilogue applied as y is stored (static target only,
 *                   compiler/opt_fuse_conv.c): v = conv + b[k], then v = v + skip
 *                   (skip shaped like y, may be NULL), then max(v, 0) when relu != 0;
 *                   the same roundings as conv2d, add and relu one after the other.
 *   conv2d_bwd_x_fused  conv2d_bwd_x with an epilogue: v = dx + acc (acc shaped like dx,
 *                   may be NULL), then v = mask > 0 ? v : 0 (mask may be NULL): the
 *                   fused add and relu_bwd of the relu whose output is mask.
 *   conv2d_bwd_xw   conv2d_bwd_x_fused(g, w, acc, mask) -> dx and conv2d_bwd_w(g, x) -> dw
 *                   in one call, the same bits as the two (static target only: the
 *                   emitter pairs them); a same-padded stride-1 conv pads g once for both.
 *                   db (may be NULL): the bias gradient, the bits of
 *                   reduce(4, {n, k, oh, ow}, 0xd, 0, g, db), summed from each image's g
 *                   while it is in cache.
 *   maxpool2d       y[nc, oh, ow] = max over each k x k window (stride, pad: padded
 *                   cells never win; NaN propagates); nc = rows * channels
 *   maxpool2d_bwd   dx = g routed to each window's first maximum of x (overwrites dx)
 *   maxpool2d_bwd_relu  maxpool2d_bwd, then relu_bwd with x (a relu's output) as the
 *                   mask: dx = x > 0 ? routed g : 0 (static target only,
 *                   compiler/opt_fuse_conv.c; the same values as the two kernels)
 *   avgpool2d       mean over each k x k window, padding counted (count_include_pad)
 *   avgpool2d_bwd   dx = g spread evenly over each window (overwrites dx)
 *   batchnorm       per channel of x[n, c, hw]: train != 0: batch mean / biased var,
 *                   y = (x - mean) * invstd * gamma + beta, running stats updated in
 *                   place (running = (1 - momentum) running + momentum batch, the
 *                   variance unbiased as in PyTorch); train == 0: running stats.
 *                   save = [mean c | invstd c | gamma*invstd c | xhat n*c*hw], the
 *                   xhat part written only when save_xhat != 0.
 *   batchnorm_bwd   from g and save: out = [dgamma c | dbeta c | dx n*c*hw]; train
 *                   selects the batch-statistics formula (as the forward's train). */
#define CDL_KERNELS_CONV(T, S) \
    void cdl_conv2d_##S(const cdl_conv2d_geom *geom, const T *x, const T *w, const T *b, T *y, T *scratch); \
    void cdl_conv2d_bwd_x_##S(const cdl_conv2d_geom *geom, const T *g, const T *w, T *dx, T *scratch); \
    void cdl_conv2d_bwd_w_##S(const cdl_conv2d_geom *geom, const T *g, const T *x, T *dw, T *scratch); \
    void cdl_conv2d_fused_##S(const cdl_conv2d_geom *geom, const T *x, const T *w, const T *b, const T *skip, int relu, \
                              T *y, T *scratch); \
    void cdl_conv2d_bwd_x_fused_##S(const cdl_conv2d_geom *geom, const T *g, const T *w, const T *acc, const T *mask, \
                                    T *dx, T *scratch); \
    void cdl_conv2d_bwd_xw_##S(const cdl_conv2d_geom *geom, const T *g, const T *w, const T *x, const T *acc, \
                               const T *mask, T *dx, T *dw, T *db, T *scratch); \
    void cdl_maxpool2d_##S(int64_t nc, int64_t h, int64_t w, int64_t k, int64_t stride, int64_t pad, const T *x, T *y); \
    void cdl_maxpool2d_bwd_##S(int64_t nc, int64_t h, int64_t w, int64_t k, int64_t stride, int64_t pad, const T *g, const T *x, T *dx); \
    void cdl_maxpool2d_bwd_relu_##S(int64_t nc, int64_t h, int64_t w, int64_t k, int64_t stride, int64_t pad, const T *g, const T *x, T *dx); \
    void cdl_avgpool2d_##S(int64_t nc, int64_t h, int64_t w, int64_t k, int64_t stride, int64_t pad, const T *x, T *y); \
    void cdl_avgpool2d_bwd_##S(int64_t nc, int64_t h, int64_t w, int64_t k, int64_t stride, int64_t pad, const T *g, T *dx); \
    void cdl_batchnorm_##S(int train, int64_t n, int64_t c, int64_t hw, double eps, double momentum, const T *x, const T *gamma, const T *beta, T *running_mean, T *running_var, T *y, T *save, int save_xhat); \
    void cdl_batchnorm_bwd_##S(int train, int64_t n, int64_t c, int64_t hw, const T *g, const T *save, T *out); \
    int cdl_conv2d_lanes_##S(const cdl_conv2d_geom *geom);
/* cdl_conv2d_lanes: whether conv2d and conv2d_bwd_x (and their fused forms) of this
 * geometry take the lane mode (images in vector lanes, kernels_conv_lane_t.h: the vec
 * mode's narrow images) -- the same values as the vec mode's grid, bit for bit.
 * cdl_conv_lanes = 0 turns the lane mode off (tests compare the two; default 1). */
extern int cdl_conv_lanes;
/* Batch statistics over a sharded batch (data parallelism, trainer_dp.c): while
 * cdl_bn_sharded is set, batchnorm and batchnorm_bwd with train != 0 treat their rows
 * as this process's shard (rows of global_rows) of a global batch and sum their
 * per-channel sums over every shard with sum() (in place; every shard calls it the
 * same number of times, CDL_BN_BLOCK channels at a time), so the statistics are the
 * global batch's (SyncBatchNorm).  The backward weights its sums by rows / global_rows:
 * g is the gradient of the shard's mean loss.  NULL (the default): the rows are the
 * batch. */
typedef struct cdl_bn_shards {
    void (*sum)(double *v, int64_t n);
    int64_t rows, global_rows;
} cdl_bn_shards;
extern const cdl_bn_shards *cdl_bn_sharded;
#define CDL_BN_BLOCK 64
/* ---- END CONV */

/* ---- recurrent cells (kernels_rnn.c) ---- BEGIN RNN */
/* Fused pointwise parts of LSTM / GRU cells (PyTorch gate order).  rows = runtime batch,
 * hid = hidden size, bmax = the COMPILED batch: parts of packed buffers start at offsets
 * counted with bmax, rows inside a part are runtime rows.
 *   lstm_act       gates[rows, 4hid] (i, f, g, o pre-activations), c[rows, hid] ->
 *                  out = [h' at 0 | c' at bmax*hid];
 *                  aux = [activated gates rows x 4hid at 0 | tanh(c') at bmax*4hid]
 *   lstm_act_bwd   dh', dc' [rows, hid] (the gradients of out's parts), c, aux ->
 *                  dst = [dgates at 0 | dc at bmax*4hid]
 *   gru_act        gi, gh [rows, 3hid] (r, z, n; gh includes b_hn), h [rows, hid] ->
 *                  h' = (1 - z) n + z h, n = tanh(gi_n + r gh_n); aux [rows, 3hid] = r, z, n
 *   gru_act_bwd    g = dh', gh, h, aux -> dst = [dgi at 0 | dgh at bmax*3hid | dh at bmax*6hid]
 *   view_bwd       dst[0, total) = 0, then dst[off + i] = g[i] for i < n */
#define CDL_KERNELS_RNN(T, S) \
    void cdl_lstm_act_##S(int64_t rows, int64_t hid, int64_t bmax, const T *gates, const T *c, T *out, T *aux); \
    void cdl_lstm_act_bwd_##S(int64_t rows, int64_t hid, int64_t bmax, const T *dh, const T *dc, const T *c, const T *aux, T *dst); \
    void cdl_gru_act_##S(int64_t rows, int64_t hid, const T *gi, const T *gh, const T *h, T *out, T *aux); \
    void cdl_gru_act_bwd_##S(int64_t rows, int64_t hid, int64_t bmax, const T *g, const T *gh, const T *h, const T *aux, T *dst); \
    void cdl_view_bwd_##S(int64_t total, int64_t off, int64_t n, const T *g, T *dst);
/* ---- END RNN */

/* ---- batched matmul, fused attention (kernels_attn.c) ---- BEGIN ATTN */
/* matmul_bc   torch.matmul on batches: for every index i of the nb batch dims bdims
 *             (the output's; nb <= CDL_MAXDIM - 2), C_i = op(A_ia) op(B_ib), op as
 *             gemm (A_i is [M, K] or, transposed, [K, M]; B likewise), matrices dense
 *             (ld = their row length).  sa, sb, sc: element strides of A, B, C per
 *             batch dim; 0 on a dim of size > 1 broadcasts (A, B) or sums (C: every
 *             product landing on the same C adds into it, in index order: the adjoint of
 *             a broadcast, so gradients use the same kernel).  C is overwritten.
 * The backward of C = op(A) op(B) with upstream G, through the same kernel:
 *   dA = G op(B)^T (A plain) or op(B) G^T (A transposed), at A's strides;
 *   dB = op(A)^T G (B plain) or G^T op(A) (B transposed), at B's strides.
 * attention   y = softmax(scale q k^T + mask) v per (batch*head) slice, without the
 *             [tq, tk] matrix: keys in blocks with an online softmax (flash attention).
 *             q [bh, tq, d], k [bh, tk, d], v [bh, tk, dv], y [bh, tq, dv] (or, nh > 0,
 *             q [bh / nh, tq, nh, d], ... y [bh / nh, tq, nh, dv], dq, dk, dv as q, k, v); lse
 *             [bh, tq] receives each row's log-sum-exp of the masked scaled scores (the
 *             backward's only extra state).  causal masks key j > query i (top-left, as
 *             torch), kmask the keys of slice b's row b / heads (a query with none left
 *             gets y = 0, lse = -inf).  scale <= 0 means 1 / sqrt(d).  tk >= 1.
 * attention_bwd  from gy = dL/dy, q, k, v, y, lse: dq, dk, dv (overwritten), the scores
 *             recomputed block by block.  Both kernels need cdl_attention_scratch reals
 *             of scratch, and split the bh slices over the pool (each slice's result is
 *             computed the same way on any thread: the same bits for any thread count). */
typedef struct cdl_attn_geom {
    int64_t bh;                  /* batch * heads (runtime) */
    int64_t tq, tk;              /* query and key lengths */
    int64_t d, dv;               /* q / k head size, v head size */
    int causal;
    int64_t heads;               /* slices per kmask row (e.g. the heads of [B, H, T, d]) */
    const void *kmask;           /* key_padding_mask: NULL or T [bh / heads, tk], nonzero: key ignored */
    double scale;                /* <= 0: 1 / sqrt(d) */
    int64_t nh;                  /* 0: slices dense as above; > 0: heads last, q [bh / nh, tq, nh, d]
                                  * (k, v, y likewise): slice b is head b % nh of b / nh, its rows
                                  * nh * d apart (no copy to or from [B, H, T, d]) */
} cdl_attn_geom;
#define CDL_ATTN_BR 64           /* query rows per block */
#define CDL_ATTN_BC 128          /* keys per backward block (the forward's are twice that) */
#define CDL_ATTN_THREADS 2       /* scratch slots: threads one call can use */
static inline int64_t cdl_attention_scratch(const cdl_attn_geom *g) {
    int64_t slot = 2 * CDL_ATTN_BR * CDL_ATTN_BC + 2 * CDL_ATTN_BR + g->tq;
    return CDL_ATTN_THREADS * slot;
}
#define CDL_KERNELS_ATTN(T, S) \
    void cdl_matmul_bc_##S(int nb, const int64_t *bdims, const int64_t *sa, const int64_t *sb, \
                           const int64_t *sc, int ta, int tb, int64_t M, int64_t N, int64_t K, \
                           const T *A, const T *B, T *C); \
    void cdl_attention_##S(const cdl_attn_geom *g, const T *q, const T *k, const T *v, T *y, \
                           T *lse, T *scratch); \
    void cdl_attention_bwd_##S(const cdl_attn_geom *g, const T *gy, const T *q, const T *k, \
                               const T *v, const T *y, const T *lse, T *dq, T *dk, T *dv, \
                               T *scratch);
/* ---- END ATTN */

/* ---- layer, RMS, group and instance normalisation (kernels_norm.c) ---- BEGIN NORM */
/* PyTorch's layouts and formulas; statistics in double, variances biased, rstd =
 * 1 / sqrt(var + eps).  Affine weight w and bias b may be NULL (elementwise_affine /
 * affine = False); backward outputs dw, db may be NULL (not wanted).  Backward kernels
 * overwrite dx, dw, db; dx may not alias g.
 *   layer_norm      x [rows, n] over its last axis: y = (x - mean) rstd w + b (w, b [n]);
 *                   save = [mean rows | rstd rows]
 *   layer_norm_bwd  with xh = (x - mean) rstd, gh = g w:
 *                   dx = rstd (gh - mean(gh) - xh mean(gh xh)), dw = sum_rows g xh,
 *                   db = sum_rows g
 *   rms_norm        y = x rstd w, rstd = 1 / sqrt(mean(x^2) + eps); save = [rstd rows]
 *                   (torch.nn.RMSNorm)
 *   rms_norm_bwd    dx = rstd (gh - x rstd^2 mean(gh x)), dw = sum_rows g x rstd
 *   group_norm      x [n, c, hw], groups divides c: each (image, group) normalised over
 *                   its c/groups channels x hw; per-channel w, b [c];
 *                   save = [mean n*groups | rstd n*groups].  instance_norm is groups = c
 *                   (InstanceNorm: affine off by default, no running statistics).
 *   group_norm_bwd  as layer_norm_bwd over each (image, group), dw, db per channel */
#define CDL_KERNELS_NORM(T, S) \
    void cdl_layer_norm_##S(int64_t rows, int64_t n, double eps, const T *x, const T *w, const T *b, \
                            T *y, T *save); \
    void cdl_layer_norm_bwd_##S(int64_t rows, int64_t n, const T *g, const T *x, const T *w, \
                                const T *save, T *dx, T *dw, T *db); \
    void cdl_rms_norm_##S(int64_t rows, int64_t n, double eps, const T *x, const T *w, T *y, T *save); \
    void cdl_rms_norm_bwd_##S(int64_t rows, int64_t n, const T *g, const T *x, const T *w, \
                              const T *save, T *dx, T *dw); \
    void cdl_group_norm_##S(int64_t n, int64_t c, int64_t hw, int64_t groups, double eps, const T *x, \
                            const T *w, const T *b, T *y, T *save); \
    void cdl_group_norm_bwd_##S(int64_t n, int64_t c, int64_t hw, int64_t groups, const T *g, \
                                const T *x, const T *w, const T *save, T *dx, T *dw, T *db);
/* ---- END NORM */

/* ---- general convolution, transposed convolution, pooling, upsampling (kernels_conv2.c) ---- BEGIN CONV2 */
/* NCHW; a 1-D layer is the 2-D one with h = 1 and a 1-row kernel.  PyTorch's layouts
 * and output sizes (floor mode).  Geometry of a general convolution: weight
 * [k, c/groups, r, s], oh = (h + 2 ph - dh (r - 1) - 1) / sh + 1 (likewise ow).
 * cdl_convg_init fills oh, ow and ipg for the compiled batch n (call it there; the
 * kernels then take any runtime n up to it).  The square kernels of BEGIN CONV
 * (direct stride-1 and im2col) serve every geometry they cover (one group, square
 * kernel, one stride and pad for both axes, no dilation); a geometry with one input
 * channel a group (depthwise, any channel multiplier) runs direct loops split over
 * the pool by output plane (bits independent of the thread count); the rest lowers
 * each image and group through im2col + GEMM.  Scratch: cdl_convg_scratch reals.
 *   convg          y = x * w (+ b[k]; b may be NULL)
 *   convg_bwd_x    dx = the adjoint of x -> y in x (overwrites dx)
 *   convg_bwd_w    dw = sum over images of g (x) x-patches (overwrites dw)
 * Transposed convolution (ConvTranspose2d, weight [cin, cout/groups, r, s]) is the
 * adjoint of the convolution whose geometry has the transposed output as its input:
 * with that geometry G (c = cout, h, w = the output size incl. output_padding; k =
 * cin, oh, ow = the input size), y = convg_bwd_x(G, x, w) (+ bias:
 * cdl_conv_transpose2d), dx = convg(G, g, w, NULL), dw = convg_bwd_w(G, x, g).
 * Pooling over cdl_pool_geom (nc planes of h x w, windows kh x kw, stride, padding;
 * oh = (h + 2 ph - kh) / sh + 1; pad <= half the window):
 *   maxpool        max over each window, -inf padding (first maximum wins, NaN wins)
 *   maxpool_bwd    dx = g routed to each window's first maximum (overwrites dx)
 *   avgpool        mean over kh * kw (count_include_pad); avgpool_bwd its adjoint
 *   adaptive_avgpool  windows [floor(i h / oh), ceil((i + 1) h / oh)) (kh, kw, stride
 *                  and pad unused); adaptive_avgpool_bwd its adjoint
 * Upsampling nc planes h x w -> oh x ow (F.interpolate): scale_h, scale_w are the
 * scale factors the user gave (0: none, the ratio of the sizes is used), as PyTorch's
 * source index rules read them:
 *   nearest        src = min(floor(dst / scale), in - 1)
 *   bilinear       align_corners = False: src = max((dst + 0.5) / scale - 0.5, 0),
 *                  weights of the two neighbours
 *   *_bwd          the adjoints (overwrite dx) */
typedef struct cdl_convg_geom {
    int64_t n, c, h, w;          /* input; n the runtime batch */
    int64_t k, r, s;             /* output channels, kernel height and width */
    int64_t sh, sw, ph, pw, dh, dw;   /* stride, zero padding, dilation per axis */
    int64_t groups;              /* divides c and k */
    int64_t oh, ow;              /* output size (cdl_convg_init) */
    int64_t ipg;                 /* images per GEMM on the square path (cdl_convg_init) */
} cdl_convg_geom;
/* The square kernels' geometry when they cover g (returns 1), else 0. */
static inline int cdl_convg_square(const cdl_convg_geom *g, cdl_conv2d_geom *q) {
    if (g->groups != 1 || g->r != g->s || g->sh != g->sw || g->ph != g->pw || g->dh != 1 || g->dw != 1) return 0;
    cdl_conv2d_geom t = {.n = g->n, .c = g->c, .h = g->h, .w = g->w, .k = g->k, .r = g->r, .s = g->s,
                         .stride = g->sh, .pad = g->ph, .oh = g->oh, .ow = g->ow, .group = g->ipg};
    *q = t;
    return 1;
}
static inline void cdl_convg_init(cdl_convg_geom *g) {
    cdl_conv2d_geom q;
    g->oh = (g->h + 2 * g->ph - g->dh * (g->r - 1) - 1) / g->sh + 1;
    g->ow = (g->w + 2 * g->pw - g->dw * (g->s - 1) - 1) / g->sw + 1;
    g->ipg = 1;
    if (cdl_convg_square(g, &q)) g->ipg = cdl_conv2d_pick_group(&q);
}
static inline int64_t cdl_convg_scratch(const cdl_convg_geom *g) {
    cdl_conv2d_geom q;
    if (cdl_convg_square(g, &q)) return cdl_conv2d_scratch(&q);
    if (g->c == g->groups) return 0;
    return g->c / g->groups * g->r * g->s * g->oh * g->ow;
}
enum { CDL_POOL_MAX, CDL_POOL_AVG, CDL_POOL_ADAPTIVE };   /* pooling kinds (the tape's cdl_t_pool) */
typedef struct cdl_pool_geom {
    int64_t nc, h, w;            /* planes (runtime batch x channels), plane size */
    int64_t kh, kw, sh, sw, ph, pw;
    int64_t oh, ow;
} cdl_pool_geom;
#define CDL_KERNELS_CONV2(T, S) \
    void cdl_convg_##S(const cdl_convg_geom *g, const T *x, const T *w, const T *b, T *y, T *scratch); \
    void cdl_convg_bwd_x_##S(const cdl_convg_geom *g, const T *gy, const T *w, T *dx, T *scratch); \
    void cdl_convg_bwd_w_##S(const cdl_convg_geom *g, const T *gy, const T *x, T *dw, T *scratch); \
    void cdl_conv_transpose2d_##S(const cdl_convg_geom *g, const T *x, const T *w, const T *b, T *y, T *scratch); \
    void cdl_maxpool_##S(const cdl_pool_geom *p, const T *x, T *y); \
    void cdl_maxpool_bwd_##S(const cdl_pool_geom *p, const T *g, const T *x, T *dx); \
    void cdl_avgpool_##S(const cdl_pool_geom *p, const T *x, T *y); \
    void cdl_avgpool_bwd_##S(const cdl_pool_geom *p, const T *g, T *dx); \
    void cdl_adaptive_avgpool_##S(const cdl_pool_geom *p, const T *x, T *y); \
    void cdl_adaptive_avgpool_bwd_##S(const cdl_pool_geom *p, const T *g, T *dx); \
    void cdl_upsample_nearest_##S(int64_t nc, int64_t h, int64_t w, int64_t oh, int64_t ow, double scale_h, \
                                  double scale_w, const T *x, T *y); \
    void cdl_upsample_nearest_bwd_##S(int64_t nc, int64_t h, int64_t w, int64_t oh, int64_t ow, double scale_h, \
                                      double scale_w, const T *g, T *dx); \
    void cdl_upsample_bilinear_##S(int64_t nc, int64_t h, int64_t w, int64_t oh, int64_t ow, double scale_h, \
                                   double scale_w, const T *x, T *y); \
    void cdl_upsample_bilinear_bwd_##S(int64_t nc, int64_t h, int64_t w, int64_t oh, int64_t ow, double scale_h, \
                                       double scale_w, const T *g, T *dx);
/* ---- END CONV2 */

/* ---- selection, masks, axis reductions (kernels_sel.c) ---- BEGIN SEL */
/* Masks are reals (1 where true, 0 where false): comparisons are the binary ops
 * CDL_BIN_LT ... CDL_BIN_NE of BEGIN EW (cdl_binary, cdl_binary_bc).
 *   where          y = c != 0 ? a : b over a broadcast of rank <= 6 (dims the output's,
 *                  sc, sa, sb the element strides of c, a, b per output dim, 0 on
 *                  broadcast dims; y dense).  Its backward is where itself:
 *                  da = where(c, g, 0), db = where(c, 0, g), then summed over a's and b's
 *                  broadcast axes.  masked_fill(x, m, v) is where(m, v, x).
 *   tril, triu     x as [batch, rows, cols]: keep j - i <= diag (tril, upper = 0) or
 *                  j - i >= diag (triu), zeros elsewhere; y may be x.  The backward is
 *                  the same op on g.
 *   one_hot        y[n, classes] = 1 at ids[i], 0 elsewhere; an id outside [0, classes)
 *                  gives a zero row, sets cdl_fail and returns -1 (else 0).
 *   reduce_max     y = max (is_min: min) over the axes in mask (bit i = axis i; 0 =
 *                  every axis; dims = x's runtime dims; y the kept dims in order), arg[j]
 *                  = the flat index in x of output j's winner: the first in memory order,
 *                  a NaN beating any number (torch.amax propagates NaN).
 *   reduce_max_bwd dx[nx] = 0, then dx[arg[j]] += g[j] (the winner takes the gradient,
 *                  as torch.max(dim) does).
 *   argmax         x as [outer, len, inner]: y[o, i] = the position along len of the
 *                  first maximum (is_min: minimum; NaN wins) of x[o, :, i], i32, no gradient.
 *   moments        mean (ny reals, kept for the backward) and y = the variance over the
 *                  masked axes, sum (x - mean)^2 / max(0, N - correction) (N the reduced
 *                  count; correction 1 = unbiased, torch's default), or its square root
 *                  when take_sqrt (std).
 *   moments_bwd    dx = 2 g (x - mean) / (N - correction), or g (x - mean) / ((N - c) std).
 *   logsumexp      y = m + log sum exp(x - m), m the group's maximum (0 when infinite);
 *                  work: ny reals of scratch.  logsumexp_bwd: dx = g exp(x - y).
 *   from_i32       y = (T)x (float(ids)); to_i32: y = x truncated toward zero (int(x),
 *                  torch's .int()), NaN to 0, out-of-range values saturated. */
#define CDL_KERNELS_SEL(T, S) \
    void cdl_where_##S(int rank, const int64_t *dims, const int64_t *sc, const int64_t *sa, const int64_t *sb, \
                       const T *c, const T *a, const T *b, T *y); \
    void cdl_tril_##S(int64_t batch, int64_t rows, int64_t cols, int64_t diag, int upper, const T *x, T *y); \
    int cdl_one_hot_##S(int64_t n, int64_t classes, const int32_t *ids, T *y); \
    void cdl_reduce_max_##S(int rank, const int64_t *dims, unsigned mask, int is_min, const T *x, T *y, \
                            int64_t *arg); \
    void cdl_reduce_max_bwd_##S(int64_t ny, int64_t nx, const T *g, const int64_t *arg, T *dx); \
    void cdl_argmax_##S(int64_t outer, int64_t len, int64_t inner, int is_min, const T *x, int32_t *y); \
    void cdl_moments_##S(int rank, const int64_t *dims, unsigned mask, double correction, int take_sqrt, \
                         const T *x, T *y, T *mean); \
    void cdl_moments_bwd_##S(int rank, const int64_t *dims, unsigned mask, double correction, int take_sqrt, \
                             const T *g, const T *x, const T *mean, const T *y, T *dx); \
    void cdl_from_i32_##S(int64_t n, const int32_t *x, T *y); \
    void cdl_to_i32_##S(int64_t n, const T *x, int32_t *y); \
    void cdl_logsumexp_##S(int rank, const int64_t *dims, unsigned mask, const T *x, T *y, T *work); \
    void cdl_logsumexp_bwd_##S(int rank, const int64_t *dims, unsigned mask, const T *g, const T *x, const T *y, \
                               T *dx);
/* ---- END SEL */

CDL_KERNELS(float, f32)
CDL_KERNELS(double, f64)

/* Loops (kernels_loop.c): a batched per-step value is kept as a stack of steps
 * [steps][B][row] (step_stride elements apart); a collected result is [nb, steps, row]. */
void cdl_steps_to_batch_f32(int64_t steps, int64_t nb, int64_t row, const float *stack, int64_t step_stride, float *out);
void cdl_steps_to_batch_f64(int64_t steps, int64_t nb, int64_t row, const double *stack, int64_t step_stride, double *out);

/* Number of compute threads (n <= 0: the CPUs this process may run on, by its affinity
 * mask).  They are the runtime's worker pool (parallel.c): n - 1 workers beside the
 * calling thread, for the direct convolutions, pooling, large elementwise kernels and
 * the blocks of large GEMMs; OpenBLAS and oneDNN themselves run on one thread each
 * (blas.c says why).  Results are bitwise the same for any n.  Call it outside a
 * step: it starts or stops the pool's threads.  Until it is called the libraries keep
 * their own defaults and the pool has no workers. */
void cdl_blas_set_threads(int n);
/* The kernel backend serving f32 GEMMs in this process: "openblas", or "onednn" in a
 * `make BACKEND=onednn` build unless CDL_BACKEND=openblas is in the environment
 * (docs/design.md, Backends).  f64 GEMMs always run on OpenBLAS. */
const char *cdl_backend(void);
/* The worker pool.  cdl_parallel_set_threads(n) keeps n - 1 workers (the
 * caller is the n-th thread); cdl_parallel_threads() is that n.  cdl_parallel_for
 * runs fn(ctx, i) for every i in [0, n) on the pool and returns when all are done; the
 * tasks must be independent (each writes its own outputs), so that results do not
 * depend on which thread runs which task.  A call made while another job runs (from
 * a task, or from another thread) runs its tasks serially.  No allocation. */
typedef void cdl_task_fn(void *ctx, int64_t i);
void cdl_parallel_set_threads(int n);
int cdl_parallel_threads(void);
void cdl_parallel_for(int64_t n, cdl_task_fn *fn, void *ctx);
/* cdl_parallel_for for a job of about `work` elements of memory traffic in all (the
 * unit of cdl_parallel_ranges' cost): under CDL_PAR_MIN its tasks run in index order
 * on the calling thread, since posting a job costs the caller ~6 us and waking a
 * sleeping worker 15-50 us, more than such a job gives back (docs/benchmarks.md,
 * "2 threads: the caller's wait and OpenBLAS's lock").  The tasks are the same either
 * way, so the results are. */
void cdl_parallel_for_work(int64_t n, int64_t work, cdl_task_fn *fn, void *ctx);
/* How long a thread of the pool waiting for the next job (or the caller waiting for the
 * workers to finish one) stays awake before it sleeps, in ns: it spins for the first
 * 5 us, then yields its core (sched_yield) until the window ends, so jobs closer
 * together than the window never pay a wake-up (~20-50 us), and a thread burns at most
 * one window of CPU after the last job.  A yield that takes longer than busy_ns means
 * another thread wanted the core (a loaded machine): the thread sleeps at once (busy_ns
 * <= 0: it never does).  Defaults: window 5 us (no yielding), busy_ns 20 us;
 * CDL_POOL_WAIT_US in the environment sets the window when the thread count is first
 * set (a value that is not a whole number of microseconds under 10 s is reported on
 * stderr and ignored).  Returns the previous window.  cdl_parallel_sleeping: workers asleep now. */
int64_t cdl_parallel_set_wait(int64_t ns, int64_t busy_ns);
int cdl_parallel_sleeping(void);
/* The same for tasks that need a scratch slot of their own: fn(ctx, i, slot) runs on
 * the thread numbered slot (the caller is 0), and only threads 0 .. slots - 1 take
 * part, so a kernel with `slots` scratch slots can hand out more tasks than threads
 * (a thread that comes late takes what is left).  One thread runs a slot at a time. */
typedef void cdl_slot_fn(void *ctx, int64_t i, int slot);
void cdl_parallel_slots(int64_t n, int slots, cdl_slot_fn *fn, void *ctx);
/* Ranges over the pool, for a kernel whose result for an index does not depend on the
 * range it falls in (elementwise ops, a reduction's kept elements): fn(ctx, i0, i1) is
 * called on ranges that cover [0, n) once.  Each index costs `cost` elements of memory
 * traffic; below CDL_PAR_MIN elements in all the call is one range on this thread,
 * else the pool takes min(threads, n * cost / (CDL_PAR_MIN / 2), n) ranges (a task
 * reads CDL_PAR_MIN / 2 elements or more: a pass over 64K floats takes about what
 * waking a worker costs).  Range starts are multiples of align (>= 1: 16 floats puts
 * them on 64-byte lines), so a range may be empty.  No allocation. */
#define CDL_PAR_MIN ((int64_t)1 << 17)
typedef void cdl_range_fn(void *ctx, int64_t i0, int64_t i1);
void cdl_parallel_ranges(int64_t n, int64_t cost, int64_t align, cdl_range_fn *fn, void *ctx);

/* ======================================================================== models and nets (net.c) */

/* One row of a generated table: a parameter, a state buffer, an input or an output. */
enum { CDL_T_STATE = 1,      /* non-trainable buffer (batch-norm running stats), after the trainable ones */
       CDL_T_BATCHED = 2,    /* dims[0] is the (maximum) batch size: runtime size is nb */
       CDL_T_PERTURB = 4 };  /* input: the delta of a perturb(), never fed from data, zero unless set */
typedef struct cdl_tensor {
    const char *name;        /* dotted, stable: "fc1.weight", "block2.conv1.bias", "x" */
    cdl_dtype dtype;         /* CDL_F32 means "the model's real type" for f64 builds too */
    size_t offset;           /* element offset in its slab (params); 0 otherwise */
    int rank;
    int64_t dims[CDL_MAXDIM];
    int flags;               /* CDL_T_* */
    const char *loc;         /* "model.cdl:12:5" where it was declared */
} cdl_tensor;

typedef struct cdl_net cdl_net;

/* An extra entry point (`entry generate(z: f32[B, Z]) = ...`): same parameters,
 * own inputs and outputs; run reads in[i] and writes out[i] (caller's buffers,
 * sized for nb rows). */
typedef struct cdl_entry {
    const char *name;
    int n_in;  const cdl_tensor *in;
    int n_out; const cdl_tensor *out;
    void (*run)(cdl_net *net, int nb, const void *const *in, void *const *out);
} cdl_entry;

/* The static descriptor every generated model exports (`extern const cdl_model NAME_model`).
 * The runtime (trainer, checkpoints, compare tool, tape) drives any model through it. */
typedef struct cdl_model {
    int abi;                     /* CDL_ABI of the cdlc that generated it; first, at a fixed place */
    const char *name;            /* model name in the .cdl file */
    const char *source;          /* "models/mlp.cdl" */
    uint64_t fingerprint;        /* hash of the model's parameter table and graph */
    int real_size;               /* 4 (f32 build) or 8 (f64 build) */
    int batch;                   /* compiled (maximum) batch size */
    int n_params;  const cdl_tensor *params;   /* trainable first, then CDL_T_STATE */
    size_t param_count;          /* slab elements, trainable + state */
    size_t train_count;          /* the trainable prefix of the slab */
    int n_inputs;  const cdl_tensor *inputs;
    int n_outputs; const cdl_tensor *outputs;
    int has_loss;
    size_t act_bytes;            /* activation arena */
    int n_entries; const cdl_entry *entries;
    const char *train_defaults;  /* the `train {}` section as "key=value" lines, or "" */

    void (*init)(cdl_net *net, uint64_t seed);   /* parameter initialisation */
    /* Eval mode (no dropout, no sampling, batch norm on running stats): reads net->in,
     * sets net->out[] and, when the model has a loss, net->loss. */
    void (*forward)(cdl_net *net, int nb);
    /* Train mode: forward + backward; writes every parameter gradient into net->grad
     * (overwriting), updates state buffers, sets net->loss and returns it. */
    double (*grad)(cdl_net *net, int nb);
    /* Eval mode: loss and its gradient with respect to every f32 input into
     * net->in_grad[i]; no parameter gradients are computed.  NULL when the model has
     * no loss. */
    double (*input_grad)(cdl_net *net, int nb);
    /* Eval mode, every parameter gradient into net->grad (overwriting): no dropout,
     * rand/randn at their means, batch norm on running statistics (left unchanged);
     * sets net->loss and returns it (`grad --eval`).  NULL when the model has no loss. */
    double (*eval_grad)(cdl_net *net, int nb);
} cdl_model;

/* A model instance.  Everything is allocated once by cdl_net_new. */
struct cdl_net {
    const cdl_model *model;
    void *param;                 /* param_count reals */
    void *grad;                  /* train_count reals */
    void *act;                   /* act_bytes */
    void **in;                   /* n_inputs buffers, each sized for the compiled batch */
    void **in_grad;              /* n_inputs buffers (NULL for i32 inputs) */
    void **out;                  /* n_outputs pointers into act, valid after forward/grad */
    double loss;
    uint64_t seed;               /* RNG key for dropout and noise: (seed, step, stream) */
    uint64_t step;               /* training steps taken; the trainer advances it */
    /* Shards of a global batch (data parallelism, micro-batches): the nb rows of this
     * call are rows batch_row0 .. batch_row0 + nb - 1 of a global batch of batch_rows
     * rows (0: nb).  Random streams (dropout, noise) are keyed by that global row, so
     * the shards draw what one process running the whole batch would. */
    int64_t batch_row0, batch_rows;
};

cdl_net *cdl_net_new(const cdl_model *m);    /* NULL (and cdl_last_error) on failure */
void cdl_net_free(cdl_net *net);
/* Index of the parameter / input / output called name, or -1. */
int cdl_model_find_param(const cdl_model *m, const char *name);
int cdl_model_find_input(const cdl_model *m, const char *name);
/* Elements of row-scaled tensor t at runtime batch nb. */
int64_t cdl_tensor_numel(const cdl_tensor *t, int nb);
/* The counter base, in rows, of loop step t of a batched random op: t * rows + row0
 * (rows = net->batch_rows, or nb when 0; row0 = net->batch_row0).  The generated code
 * multiplies it by the values per example. */
uint64_t cdl_net_row_base(const cdl_net *net, int nb, uint64_t t);

/* ======================================================================== optimizers (optim.c) */
/* BEGIN OPTIM */
/* Optimizers update the trainable prefix of net->param from net->grad, in place, over
 * the flat slabs.  State slots (momentum; Adam's m and v) are slabs of train_count
 * reals each, saved in checkpoints as "<slot_name>.<param name>". */
typedef enum cdl_optim_kind { CDL_OPT_SGD, CDL_OPT_ADAM, CDL_OPT_ADAMW, CDL_OPT_RMSPROP, CDL_OPT_ADAGRAD } cdl_optim_kind;
typedef struct cdl_optim_cfg {
    cdl_optim_kind kind;
    double lr;
    double momentum;        /* SGD, RMSprop */
    int nesterov;           /* SGD */
    double weight_decay;    /* SGD, Adam, RMSprop, Adagrad: L2 added to the gradient; AdamW: decoupled */
    double beta1, beta2;    /* Adam, AdamW */
    double eps;             /* Adam, AdamW, RMSprop, Adagrad */
    double alpha;           /* RMSprop: smoothing constant */
    int centered;           /* RMSprop: normalise by the estimated variance */
    double lr_decay;        /* Adagrad */
    double initial_accumulator_value;   /* Adagrad */
} cdl_optim_cfg;
#define CDL_OPTIM_SLOTS 3        /* state slots at most (RMSprop centered with momentum) */
typedef struct cdl_optim {
    cdl_optim_cfg cfg;
    struct cdl_optim_pset *pset; /* parameter groups (optim_groups.h), NULL: none */
    const cdl_model *model;
    int n_slots;                 /* 0, 1 (SGD momentum, Adagrad), 2 (Adam), 1..3 (RMSprop) */
    const char *slot_name[CDL_OPTIM_SLOTS];  /* torch's state names: "sgd.momentum"; "adam.m", "adam.v";
                                   "rmsprop.square_avg" (+ .momentum_buffer, .grad_avg); "adagrad.sum" */
    void *slot[CDL_OPTIM_SLOTS]; /* train_count reals each, zeroed at init (Adagrad: initial_accumulator_value) */
    uint64_t t;                  /* steps taken (Adam bias correction, Adagrad lr decay) */
} cdl_optim;
/* Defaults (torch.optim's): SGD lr 0.01 momentum 0; Adam lr 1e-3, betas (0.9, 0.999),
 * eps 1e-8; RMSprop lr 0.01, alpha 0.99, eps 1e-8; Adagrad lr 0.01, eps 1e-10. */
void cdl_optim_defaults(cdl_optim_cfg *cfg, cdl_optim_kind kind);
/* The spec name of a kind: "sgd", "adam", "adamw", "rmsprop", "adagrad". */
const char *cdl_optim_kind_name(cdl_optim_kind kind);
/* "sgd", "sgd:lr=0.1,momentum=0.9,nesterov=1,weight_decay=5e-4", "adam:lr=1e-3", "adamw:lr=1e-3,weight_decay=0.01",
 * "rmsprop:lr=1e-2,alpha=0.99,momentum=0.9,centered=1", "adagrad:lr=0.01,lr_decay=1e-4,initial_accumulator_value=0.1".
 * -1 and a message on a bad spec. */
int cdl_optim_parse(cdl_optim_cfg *cfg, const char *spec);
int cdl_optim_init(cdl_optim *o, const cdl_model *m, const cdl_optim_cfg *cfg);
void cdl_optim_free(cdl_optim *o);
/* One update with learning rate lr (the schedule's current value).  No allocation. */
void cdl_optim_step(cdl_optim *o, cdl_net *net, double lr);
/* The same update, returning > 0 when a gradient value of the updated parameters was
 * Inf or NaN (the update is made all the same: the caller stops), else 0.  Adam and
 * AdamW look in their update pass (cdl_optim_counts_nonfinite 1), so a trainer without
 * clipping needs no pass of its own over the gradient to catch a diverging run; the
 * other optimizers return 0. */
int64_t cdl_optim_step_count(cdl_optim *o, cdl_net *net, double lr);
int cdl_optim_counts_nonfinite(const cdl_optim *o);

/* Learning-rate schedules: the lr is a pure function of the global step, so a resumed
 * run continues the same curve.  Specs: "const", "step:every=E,gamma=G" (multiply by
 * G every E epochs; gamma 0.1 if omitted), "cosine" or "cosine:min=X" (from the base lr
 * down to X over the run), "warmup:steps=N" (linear warmup, then constant).  A warmup
 * combines with any kind (the trainer's --warmup N): lr * (s + 1) / N for s < N, and
 * the cosine then spans the steps after the warmup. */
typedef enum cdl_sched_kind { CDL_SCHED_CONST, CDL_SCHED_STEP, CDL_SCHED_COSINE } cdl_sched_kind;
typedef struct cdl_sched {
    cdl_sched_kind kind;
    int64_t every;               /* step: epochs between decays */
    double gamma;                /* step: decay factor */
    double min_lr;               /* cosine: final lr */
    int64_t span_epochs, span_steps; /* cosine: horizon in epochs ("cosine:epochs=N"), or in steps
                                    ("cosine:steps=N", the warmup included; wins); 0 = the run's --epochs.
                                    A fixed horizon keeps resume exact when a run is split. */
    int64_t warmup;              /* warmup steps, 0 = none */
    int64_t steps_per_epoch;     /* set by the caller (step kind) */
    int64_t total_steps;         /* set by the caller (cosine) */
} cdl_sched;
int cdl_sched_parse(cdl_sched *s, const char *spec);     /* -1 and a message on a bad spec */
double cdl_sched_lr(const cdl_sched *s, double base_lr, uint64_t step);
/* L2 norm of the whole gradient slab (accumulated in double; NaN/Inf propagate). */
double cdl_grad_norm(const cdl_net *net);
/* PyTorch's clip_grad_norm_: when max_norm > 0 and the norm exceeds it, scale the
 * gradients by max_norm / (norm + 1e-6).  Returns the norm before clipping; a
 * non-finite norm leaves the gradients untouched. */
double cdl_clip_grad_norm(cdl_net *net, double max_norm);
/* END OPTIM */

/* ======================================================================== data (data.c) */
/* BEGIN DATA */
/* A dataset is a table: n examples, each with a value in every named column.  A value
 * is a tensor of fixed shape: an image [28, 28], a class label [] (a scalar), T token
 * ids [T], a regression target [].  The trainer feeds each model input from the
 * column of its name (cdl_dataset_feeds), so a model with several inputs (two images,
 * ids and a mask, a real target) takes them all from one dataset.
 *
 * Columns of the readers: IDX and the named image sets: x (the images, f32, in [0, 1])
 * and y (i32 labels).  CSV: x (every column but the target, f32 [F]), y (the target:
 * i32 when every value is an integer class label in [0, 2^20), else f32) and, when the
 * file has a header, every column also under its header name (a scalar).
 *
 * Storage: value k of example i of column c is col[c].data[i * stride + k], floats for
 * CDL_F32 and int32_t for CDL_I32, except that a CDL_F32 column flagged CDL_COL_U8 holds
 * one uint8_t per value, meaning byte / 255.0f (the _u8 readers below: images kept as
 * their file's bytes, a quarter of the floats' memory; the loader converts a batch at a
 * time, to exactly the floats the other readers give).  Columns are views: several may share one block (a
 * CSV header column is a view into x), and the blocks belong to the dataset.  Free it
 * with cdl_dataset_free.  Every reader validates its input strictly and fails with -1
 * and a message "file: reason" (CSV: "file:line: reason"); readers overwrite *d
 * without freeing it and leave it zeroed on failure. */
#define CDL_DATA_NAME 32           /* a column name's bytes, with its NUL */
enum {
    CDL_COL_TARGET = 1,            /* a label or target: never transformed */
    CDL_COL_U8 = 2,                /* CDL_F32 values stored as uint8_t bytes v, meaning v / 255.0f */
    CDL_COL_FILE = 4               /* with CDL_COL_U8: the bytes stay in a file (data is NULL); the
                                      loader reads each batch's examples from it (_stream readers) */
};
typedef struct cdl_column {
    char name[CDL_DATA_NAME];      /* "x", "y", "label", "t", "ids", "mask" */
    cdl_dtype dtype;               /* CDL_F32 (float values) or CDL_I32 */
    int rank;                      /* of one value, 0..CDL_MAXDIM (0: a scalar) */
    int64_t dims[CDL_MAXDIM];
    int64_t feat;                  /* values per example: the product of dims */
    const void *data;              /* value k of example i at [i * stride + k] */
    int64_t stride;                /* elements from one example to the next (>= feat) */
    int flags;                     /* CDL_COL_* */
    int32_t nclasses;              /* i32: 1 + the largest value (0: none) */
} cdl_column;
typedef struct cdl_dataset {
    int64_t n;                     /* examples */
    int ncols;
    cdl_column *col;               /* ncols columns (owned) */
    char name[64];                 /* "fashion-mnist/train", "a.csv" */
    void *block[4];                /* the storage the columns view (owned) */
    char *vocab;                   /* text, tsv: the vocabulary (cdl_vocab_format; owned), else NULL */
    char *labels;                  /* tsv: the class names, one a line (owned), else NULL */
    void *stream;                  /* the file of a CDL_COL_FILE column (owned, data_int.h), else NULL */
} cdl_dataset;
/* Index of the column called name, or -1. */
int cdl_dataset_find(const cdl_dataset *d, const char *name);
/* IDX files (LeCun's MNIST format), gzip-compressed or raw.  images: magic 0x0000080D
 * with D = 2..CDL_MAXDIM+1 dimensions (0x803 for images), type byte 0x08 (ubyte);
 * values are scaled to [0, 1] (column x).  labels (NULL: none): magic 0x00000801, one
 * label per image (column y).  Sizes, truncation, trailing bytes and the image/label
 * counts are checked. */
int cdl_dataset_load_idx(cdl_dataset *d, const char *images, const char *labels);
/* The same over raw (uncompressed) IDX bytes in memory; what names them in messages.
 * Used by the fuzz harness; lab may be NULL. */
int cdl_dataset_parse_idx(cdl_dataset *d, const void *img, size_t img_len,
                          const void *lab, size_t lab_len, const char *what);
/* CSV of numbers, comma-separated, one example a line (blank lines and a trailing
 * newline are ignored, CRLF accepted, a UTF-8 byte-order mark at the start skipped).
 * label_col: the target column (>= 0), CDL_CSV_NO_LABEL (-1): none, CDL_CSV_LAST (-2):
 * the last column, CDL_CSV_AUTO (-3): the header column named label, target or y if
 * there is one, else the last.  header: 1 the first line is a header, 0 it is not, -1
 * auto (a header if any field of the first line is not a number).  Values must be
 * finite in float range.  Files: regular files only (a FIFO or a device is refused,
 * never waited on), raw or gzip (concatenated members are fine, anything else after
 * the gzip data is an error). */
enum { CDL_CSV_NO_LABEL = -1, CDL_CSV_LAST = -2, CDL_CSV_AUTO = -3 };
/* The longest line a data file may have (bytes, without its newline): a longer one is
 * refused as soon as that many bytes of it are read, in bounded memory. */
#define CDL_DATA_MAX_LINE ((size_t)4 << 20)
int cdl_dataset_load_csv(cdl_dataset *d, const char *path, int label_col, int header);
/* The same over CSV text in memory (len bytes, no NUL needed); path names it in messages. */
int cdl_dataset_parse_csv(cdl_dataset *d, const char *text, size_t len, const char *path,
                          int label_col, int header);
/* A named dataset.  name: "fashion-mnist" or "mnist" (optionally ":DIR"; DIR defaults to
 * $CDL_DATA_DIR/<name>, then $CDL_DATA_DIR, then /usr/share/datasets/<name>;
 * files train-images-idx3-ubyte[.gz] etc.; labels must be < 10), or "csv:PATH"
 * (CDL_CSV_AUTO target, header auto-detected; train is ignored).
 * train = 1: training split, 0: test split. */
int cdl_dataset_open(cdl_dataset *d, const char *name, int train);
/* The same, but IDX images stay bytes (column x flagged CDL_COL_U8: 47 MB for
 * Fashion-MNIST's training split instead of 188 MB of floats); the loader's batches are
 * bitwise those of cdl_dataset_open.  Read such a column's data as uint8_t. */
int cdl_dataset_open_u8(cdl_dataset *d, const char *name, int train);
int cdl_dataset_load_idx_u8(cdl_dataset *d, const char *images, const char *labels);
/* The same again, but the images are not held in memory at all (column x flagged
 * CDL_COL_U8 | CDL_COL_FILE, data NULL): the loader reads each batch's examples from an
 * uncompressed IDX file with pread, so a training split costs no resident memory
 * (batches bitwise those of the readers above).  A raw IDX file is read in place.  A
 * gzip one is inflated once into a cache file, in $CDL_CACHE_DIR, else
 * $XDG_CACHE_HOME/cdl, else $HOME/.cache/cdl, named after the file and keyed by its
 * absolute path, size, modification time and inode (a changed file gets a new
 * entry); it is written under a temporary name and renamed, so a killed run never
 * leaves a partial entry, and an entry whose size or header is wrong is rebuilt.
 * When no cache can be written (no such directory can be made, a full disk) the images
 * are read into memory as _u8 does, without an error.  A streamed file that changes
 * while in use fails the batch with a message naming it.  Delete the directory at will. */
int cdl_dataset_open_stream(cdl_dataset *d, const char *name, int train);
int cdl_dataset_load_idx_stream(cdl_dataset *d, const char *images, const char *labels);
/* Text for language models (data_text.c): the file (raw or gzip) is one token array of
 * its bytes; example i is the window of T + 1 tokens at offset i, column x its first T
 * and column y (the target) its last T, both i32 [T] views into that array (N tokens
 * cost N ints, not N * T).  bytes = 0: ids 0..K-1 number the file's K distinct bytes
 * in byte order (--data text:FILE); 1: the ids are the byte values (bytes:FILE).  A
 * character is a byte (a UTF-8 character outside ASCII is several tokens; invalid
 * UTF-8 is not an error).  The last tenth (at least T + 1 tokens) is the test split
 * (train = 0), the rest the training split; the columns' classes are the largest id
 * in the file plus one.  Files of fewer than 2 (T + 1) bytes are refused. */
int cdl_dataset_load_text(cdl_dataset *d, const char *path, int64_t T, int bytes, int train);
/* The same numbered with vocab (a checkpoint's; NULL: the file's, as above) of kind bytes
 * or text: as bytes says; a byte it lacks is an error "path:line: ...".  d->vocab: the one used. */
int cdl_dataset_load_text_vocab(cdl_dataset *d, const char *path, int64_t T, int bytes, int train,
                                const char *vocab);
/* Text classification (data_tsv.c, whose header has the details): lines label<TAB>text
 * into columns x i32 [T] (ids of a chars: vocabulary, padded with 0, truncated to T),
 * y i32 [] (the class; target), len i32 [] and mask f32 [T].  split: every example but
 * every tenth, every tenth, or all.  vocab / labels NULL: built from the training
 * examples; else given (a checkpoint's).  Bad lines are errors "path:line: ...". */
enum { CDL_TSV_TRAIN = 1, CDL_TSV_HELDOUT = 2, CDL_TSV_ALL = 3 };
int cdl_dataset_load_tsv(cdl_dataset *d, const char *path, int64_t T, int split, const char *vocab,
                         const char *labels);
/* Vocabularies (data_text.c): token ids to characters.  Text form (checkpoint metadata
 * "vocab"): "bytes" (ids are byte values), "text:HH,..." (id i: the i-th byte, increasing),
 * "chars:H,..." (ids 0, 1: padding, unknown; id i + 2: the i-th code point, increasing). */
enum { CDL_VOCAB_BYTES = 1, CDL_VOCAB_TEXT = 2, CDL_VOCAB_CHARS = 3 };
typedef struct cdl_vocab {
    int kind;                      /* CDL_VOCAB_* */
    int32_t n;                     /* ids 0..n-1 */
    uint32_t *tok;                 /* tok[id]: its byte or code point (CHARS: tok[0] = tok[1] = 0) */
} cdl_vocab;
/* Parse the text form s; what names it in messages.  -1 and a message. */
int cdl_vocab_parse(cdl_vocab *v, const char *s, const char *what);
/* The text form of v (cdl_alloc'd: cdl_free it); NULL on failure. */
char *cdl_vocab_format(const cdl_vocab *v);
/* The id of byte / code point c, or -1 when v lacks it (CHARS: never 0 or 1). */
int32_t cdl_vocab_id(const cdl_vocab *v, uint32_t c);
/* Token id as UTF-8 (BYTES, TEXT: the byte) into buf (>= 4 bytes): its length (0: none). */
int cdl_vocab_put(const cdl_vocab *v, int32_t id, char *buf);
void cdl_vocab_free(cdl_vocab *v);
/* The code point of the UTF-8 character at s (n >= 1 bytes available), its length in
 * *len; -1 (and *len 1) when s does not start with a valid one: a stray continuation
 * byte, an overlong form, a surrogate, a value past U+10FFFF or a truncated one. */
int32_t cdl_utf8_next(const unsigned char *s, size_t n, size_t *len);
/* A dataset holding copies of x (n * prod(dims) floats: column x) and y (n labels
 * >= 0: column y; or NULL). */
int cdl_dataset_from_arrays(cdl_dataset *d, int64_t n, int rank, const int64_t *dims,
                            const float *x, const int32_t *y);
/* n examples of random values shaped like model m's batched inputs: one column per
 * input, of its name, type and per-example shape; reals uniform in [0, 1), integers
 * uniform in [0, classes) (classes <= 0: the last dimension of output 0, else 10).
 * A pure function of (seed, input index, element).  A model without batched inputs
 * gets n examples of no columns (its batches feed nothing). */
int cdl_dataset_random(cdl_dataset *d, const cdl_model *m, int64_t n, int32_t classes, uint64_t seed);
/* Keep the first n examples (n < d->n); the columns' nclasses stay as they were. */
void cdl_dataset_head(cdl_dataset *d, int64_t n);
void cdl_dataset_free(cdl_dataset *d);      /* frees the columns' storage, zeroes *d; NULL is fine */

/* A feed: what the loader writes into one destination buffer per batch, namely column
 * col as dtype (CDL_F32: reals of the loader's real_size, CDL_I32: int32_t).  An i32
 * column may feed reals (labels as numbers), a real column never feeds integers. */
#define CDL_DATA_MAXFEED 16
typedef struct cdl_feed { int col; cdl_dtype dtype; } cdl_feed;
/* The feeds of model m's inputs from d, feeds[i] for input i: the column named in map
 * for it ("input=column,input=column", NULL or "" for none), else the column of the
 * input's own name (a CDL_T_PERTURB input: col -1, the loader leaves it alone).  Every
 * input must be batched, have a column, the same number of values per example ([784]
 * feeds [B, 1, 28, 28]) and a type the column can feed.  -1 and a message naming the
 * input, its shape, the dataset and the columns it has (and how to map one) otherwise. */
int cdl_dataset_feeds(const cdl_dataset *d, const cdl_model *m, const char *map, cdl_feed *feeds);

/* Per-example transforms of the real feeds whose column is not a target, applied in
 * this order: random crop with padding (values of rank >= 2: the last two dims are
 * H, W; pad crop_pad zeros on each side, crop back to H x W at a random offset, the
 * same for every channel and every column of the example), horizontal flip with p =
 * 0.5 (rank >= 2: reverses the last dim; likewise shared), normalize ((x - mean) /
 * std), gaussian noise (x += noise_std * N(0, 1), its own draw per column)).  Zero
 * fields disable each transform. */
typedef struct cdl_transform {
    int normalize; double mean, std;
    int crop_pad;
    int hflip;
    double noise_std;
} cdl_transform;
typedef struct cdl_loader_cfg {
    int batch;                 /* rows per batch, >= 1 (with shards: the global batch) */
    int shuffle;               /* per-epoch permutation = f(seed, epoch) */
    int drop_last;             /* 1: no final partial batch */
    int workers;               /* 0: synchronous; else worker threads (<= 64) */
    int prefetch;              /* batches in flight (>= workers; 0: 2 * workers, up to 8 small ones) */
    uint64_t seed;
    cdl_transform tf;
    int real_size;             /* 4 (float) or 8 (double) written for real feeds; 0 means 4 */
    int nfeed;                 /* 0: every column, in order, as its own type */
    cdl_feed feed[CDL_DATA_MAXFEED];
    /* Data parallelism: shard s of nshards (0 and 0 or 1: the whole batch) takes rows
     * [rows * s / nshards, rows * (s + 1) / nshards) of every global batch; every shard
     * shuffles alike, and transforms are keyed by the example, not the shard, so the
     * shards together see exactly the unsharded batches.  A final batch with fewer rows
     * than shards is dropped. */
    int shard, nshards;
    int64_t fail_batch;        /* testing: > 0 makes producing batch fail_batch - 1 fail */
} cdl_loader_cfg;
typedef struct cdl_loader cdl_loader;
/* A loader over d (which must outlive it); NULL and a message on a bad cfg.  All
 * buffers and threads are made here: cdl_loader_next does not allocate. */
cdl_loader *cdl_loader_new(const cdl_dataset *d, const cdl_loader_cfg *cfg);
int64_t cdl_loader_batches(const cdl_loader *l);          /* per epoch */
/* Batch b's shard: its rows (returned) start at row *row0 of the global batch, which
 * has *global rows (without shards: 0 and the batch's rows). */
int64_t cdl_loader_shard_rows(const cdl_loader *l, int64_t b, int64_t *row0, int64_t *global);
/* Begin epoch `epoch` at batch skip_batches (resume).  Stops the work of any
 * unfinished previous epoch.  Batches and transforms are a function of (seed, epoch,
 * batch index) only: the same seed gives the same batches whatever the worker count.
 * Must be called before the first cdl_loader_next of every epoch. */
int cdl_loader_start(cdl_loader *l, uint64_t epoch, int64_t skip_batches);
/* Fills dst[k] with feed k's values of the batch's rows (rows * feat values each;
 * dst[k] NULL: skipped); returns rows (< batch for a final partial batch), 0 at the end
 * of the epoch, -1 on error (a failing worker surfaces here, never a hang). */
int cdl_loader_next(cdl_loader *l, void *const *dst);
void cdl_loader_free(cdl_loader *l);       /* stops and joins the workers; NULL is fine */
/* The ring's slots (0 without workers) and the times cdl_loader_next woke sleeping
 * workers so far (once per half ring when they run ahead: tests, profiling). */
void cdl_loader_stats(const cdl_loader *l, int *slots, int64_t *wakes);
/* END DATA */

/* ======================================================================== checkpoints (ckpt.c) */
/* BEGIN CKPT */
/* Checkpoints are safetensors files: 8-byte little-endian header length N, N bytes of
 * JSON header (padded with spaces), then the raw little-endian tensor data.  Every
 * parameter is stored under its dotted name; optimizer slots as "<slot>.<param>" (e.g.
 * "adam.m.fc1.weight"); each batch-norm layer L (state tensors L.running_mean and
 * L.running_var) also gets L.num_batches_tracked, an I64 scalar holding the step, as
 * PyTorch's BatchNorm has it.  __metadata__ holds "format": "cdl-ckpt 1", the model
 * name and fingerprint, step/epoch/seed/batch_in_epoch, the optimizer, a CRC-32 per
 * tensor ("crc32:<name>") and "header_crc32", the CRC-32 of the JSON text with that
 * value's 8 hex digits replaced by '0': every byte of the file is checked on load. */
typedef struct cdl_ckpt_meta {
    uint64_t step, epoch, seed;
    int64_t batch_in_epoch;        /* batches of `epoch` already done (resume point) */
    char model[64];                /* load: the file's model name; save: ignored */
    uint64_t fingerprint;          /* load: the file's fingerprint; save: ignored */
    /* save: the metadata "vocab" and "labels" when not NULL (the dataset's vocabulary
     * and class names, see cdl_dataset); load: NULL (cdl_ckpt_read_meta reads them) */
    const char *vocab, *labels;
} cdl_ckpt_meta;
/* Atomic save: writes path.tmp.<pid> (holding an flock on it), fsyncs, renames over
 * path, fsyncs the directory; first removes path.tmp.<pid> files of dead processes
 * (killed mid-save).  Refuses a path that exists and is not a regular file (a symbolic
 * link, a FIFO, a device) and any non-finite parameter or optimizer value (the message
 * names the tensor and the element).  opt NULL: no optimizer state.  meta NULL: step
 * and seed from the net, epoch and batch_in_epoch 0.  The model name and fingerprint
 * come from net->model. */
int cdl_ckpt_save(const char *path, const cdl_net *net, const cdl_optim *opt,
                  const cdl_ckpt_meta *meta);
/* 0 when a save may write path (it does not exist, or is a regular file); else -1 and
 * the reason.  The trainer checks --save with it before training. */
int cdl_ckpt_check_target(const char *path);
/* Validates the whole file (a regular file: FIFOs and devices are refused, never
 * read; sizes, strict JSON, dtypes, shapes, offsets, the exact set of tensors,
 * checksums, finite values, the model fingerprint) before touching net or opt; then
 * copies the parameters, the optimizer slots and t (opt NULL: optimizer state in the
 * file is checked and ignored; opt non-NULL: the file must hold the same optimizer's
 * state), and sets net->step and net->seed from the file.
 *   - A checkpoint of the same model built in the other precision (f32 / f64) loads,
 *     converted; any other fingerprint difference is refused with the reason (model
 *     name, a missing, unexpected or reshaped tensor: which one, or the table's order).
 *   - A parameter file (a safetensors file whose metadata is absent or has no
 *     "cdl-ckpt" format, as safetensors.torch.save_file writes it) loads when it holds
 *     exactly the model's parameters and state buffers (plus any num_batches_tracked),
 *     by name and shape, F32 or F64 (converted); checksums are verified where present.
 *     It has no optimizer state (opt must be NULL) and leaves net->step and seed alone.
 * meta (NULL ok) receives the file's metadata (a parameter file's: all zero, model
 * "").  -1 and a message naming the file and the problem otherwise. */
int cdl_ckpt_load(const char *path, cdl_net *net, cdl_optim *opt, cdl_ckpt_meta *meta);
/* Metadata entry key of safetensors file path (the header alone, header_crc32 checked):
 * 1 and a copy in *value (cdl_free it), 0 when absent (*value NULL), -1 and a message. */
int cdl_ckpt_read_meta(const char *path, const char *key, char **value);
/* The same over a checkpoint in memory; what names it in messages. */
int cdl_ckpt_load_mem(const void *buf, size_t len, const char *what, cdl_net *net,
                      cdl_optim *opt, cdl_ckpt_meta *meta);
/* The fingerprint cdlc gives model m when built with real_size (4 or 8): FNV-1a over
 * the model name, the real size and the parameter table.  A hand-written descriptor
 * can use it for its own fingerprint. */
uint64_t cdl_model_fingerprint(const cdl_model *m, int real_size);
/* Generic writer for named tensors (the trainer's `grad` subcommand dumps gradients
 * with it); atomic like cdl_ckpt_save, with the same checksums added to the metadata.
 * meta_kv: nmeta (key, value) pairs, 2 * nmeta strings. */
typedef struct cdl_st_tensor {
    const char *name;
    cdl_dtype dtype;
    int rank;
    int64_t dims[CDL_MAXDIM];
    const void *data;
} cdl_st_tensor;
int cdl_safetensors_write(const char *path, int n, const cdl_st_tensor *t, int nmeta,
                          const char *const *meta_kv);
/* Testing: when set, called during a save after each write (stage 0, bytes written so
 * far), after the fsync before the rename (stage 1) and after the rename (stage 2). */
extern void (*cdl_ckpt_test_hook)(int stage, uint64_t bytes);
/* END CKPT */

/* ======================================================================== many processes (dist.c) */
/* BEGIN DIST */
/* Data-parallel training over MPI (docs/trainer.md, "Many processes, many machines").
 * A program started by mpirun is one rank of a job of cdl_dist_size() processes;
 * started otherwise it is a job of one, rank 0, and MPI is never touched.  The runtime
 * has MPI when it was built where mpicc is installed (cdl_dist_mpi() == 1); without
 * it, cdl_dist_init refuses to run as one of several processes.
 * Every rank must call the collective functions (agree, sum, bcast, same, sync_net,
 * mean_state) at the same points in the same order, from one thread. */
int cdl_dist_mpi(void);                /* 1: built with MPI */
/* Join the job (MPI_Init_thread when started by an MPI launcher).  0, or -1 and a
 * message (a runtime without MPI under mpirun -np N > 1). */
int cdl_dist_init(void);
int cdl_dist_rank(void);               /* 0 .. size - 1 */
int cdl_dist_size(void);
/* The step's agreement: every rank passes whether it failed (with cdl_last_error set),
 * whether a signal arrived (*sig != 0; NULL: none) and n <= CDL_DIST_AGREE_MAX doubles
 * to sum over the ranks (in place).  Returns -1 on every rank when any rank failed,
 * with the message of the lowest failing rank R ("rank R: ..." when R != 0); *sig
 * becomes the highest signal number any rank caught (0: none). */
#define CDL_DIST_AGREE_MAX 14
int cdl_dist_agree(int failed, int *sig, double *sum, int n);
/* Sum n reals (real_size 4 or 8) over the ranks, in place (MPI_Allreduce). */
int cdl_dist_sum(void *buf, int64_t n, int real_size);
/* Rank 0's bytes to every rank. */
int cdl_dist_bcast(void *buf, size_t bytes);
/* -1 on every rank (message naming what) when the bytes differ between ranks. */
int cdl_dist_same(const void *buf, size_t bytes, const char *what);
/* Rank 0's parameters and state, step, seed and optimizer state (opt NULL: none) to
 * every rank. */
int cdl_dist_sync_net(cdl_net *net, cdl_optim *opt);
/* The state part of the parameter slab (batch-norm running statistics): the mean
 * over the ranks. */
int cdl_dist_mean_state(cdl_net *net);
/* 1 when every rank knows of the last failure (cdl_dist_agree failed or agreed on a
 * signal, or cdl_dist_same failed, at the last such call); always 1 in a job of one. */
int cdl_dist_agreed(void);
/* Time and traffic of the collectives so far (this rank). */
typedef struct cdl_dist_stats {
    double sum_seconds;                /* in cdl_dist_sum (gradients, state) */
    uint64_t sum_bytes, sum_calls;
    double agree_seconds;              /* in cdl_dist_agree: includes waiting for slower ranks */
    uint64_t agree_calls;
} cdl_dist_stats;
void cdl_dist_get_stats(cdl_dist_stats *s);
/* Leave the job and return status: MPI_Finalize when status is 0 or every rank knows
 * of the failure (cdl_dist_agree or cdl_dist_same failed last), else MPI_Abort, which
 * ends every rank (a rank never waits for one that has left). */
int cdl_dist_finish(int status);
/* END DIST */

/* ======================================================================== trainer (trainer.c) */
/* BEGIN TRAINER */
/* The main() of every generated program: `int main(int argc, char **argv) { return
 * cdl_main(&NAME_model, argc, argv); }`.  Subcommands train, eval, gradcheck, sample,
 * grad (see docs/trainer.md or `PROG --help`).  Returns the exit status: 0 success,
 * 1 failure (an error, a NaN/Inf stop, a failed gradient check), 2 a usage error.
 * Defaults for `train` come from m->train_defaults: "key=value" lines whose keys are
 * the long option names (data or dataset, epochs, batch, optimizer, lr, schedule,
 * warmup, clip, seed, workers, threads, normalize, augment, ...). */
int cdl_main(const cdl_model *m, int argc, char **argv);

/* A hand-written SVG of per-epoch curves (plot.c): left panel train and test loss,
 * right panel test accuracy; x = epoch[i].  NaN values are left out (a missing curve
 * is not drawn).  -1 and a message on an I/O error. */
int cdl_plot_svg(const char *path, const char *title, int n, const double *epoch,
                 const double *train_loss, const double *test_loss, const double *test_acc);
/* An 8-bit grayscale PNG (w x h pixels, row-major) written with zlib (plot.c). */
int cdl_png_write_gray(const char *path, int w, int h, const unsigned char *pix);
/* n tiles of w x h values in [0, 1] (tiles[i] row-major; NaN is 0, the rest clamped;
 * a NULL tile stays background) as a grayscale PNG grid of cols columns filled row by
 * row, each value scale x scale pixels, tiles 2 scaled pixels apart on mid-grey (96).
 * 0, or -1 and a message. */
int cdl_png_write_tiles(const char *path, const float *const *tiles, int n, int cols, int w, int h, int scale);

/* Adversarial examples (adversarial.c): FGSM / FGM and PGD under the L-infinity or the L2
 * norm, driven by the model's input_grad (eval mode, no parameter gradients).  A spec is
 *   fgsm[:eps=E,alpha=A,rand=0|1,min=LO,max=HI,clip=0|1,ratio=R,norm=inf|2,on=NAME]
 *   fgm[:...]   (fgsm with norm=2: Miyato et al.'s r = eps g / ||g||_2 per example)
 *   pgd[:eps=E,alpha=A,steps=N,rand=0|1,min=LO,max=HI,clip=0|1,ratio=R,norm=inf|2,on=NAME]
 * Defaults: eps 0.1; pgd steps 7, rand 1, alpha 2.5 eps / steps; fgsm steps 1, rand 0,
 * alpha eps (rand=1: 1.25 eps, "fast" FGSM); valid range [min, max] = [0, 1], clip=0
 * for none; ratio 0.5 (training only: the fraction of each batch's examples replaced
 * by adversarial ones).  The attack: x0 = clean, x = rand ? P(x0 + U(-eps, eps)) : x0,
 * then steps times x = P(x + alpha s(g)), g = d loss / d x.  L-inf: s = sign, P clamps
 * each element into [max(x0 - eps, min), min(x0 + eps, max)] (into [min, max] when that
 * is empty).  L2: s(g) = g / ||g||_2 and P scales x - x0 back onto the eps-ball, both
 * per example (row), then clamps into [min, max].
 * The target: input `on` (NAME or NAME.delta), else the model's first perturbation input
 * (CDL_T_PERTURB: `e = perturb(...)`), else the caller's input.  On a perturbation input
 * the defaults not given become norm=2, clip=0 and ratio=1, and training adds the
 * adversarial loss to the clean one (cdl_adv_train_grad) instead of replacing rows. */
typedef enum cdl_attack_kind { CDL_ATTACK_NONE = 0, CDL_ATTACK_FGSM, CDL_ATTACK_PGD, CDL_ATTACK_HOTFLIP } cdl_attack_kind;
enum { CDL_ATK_NORM = 1, CDL_ATK_RANGE = 2, CDL_ATK_RATIO = 4 };   /* cdl_attack.given */
typedef struct cdl_attack {
    cdl_attack_kind kind;
    double eps, alpha;           /* radius and step size, in the units of the input */
    int steps, cand, show;       /* gradient steps (fgsm: 1); hotflip: flips, candidates per flip, examples shown */
    int rand_start;              /* start at a uniform random point of the ball */
    double lo, hi;               /* valid input range (+-INFINITY: unclipped) */
    double ratio;                /* training: fraction of each batch made adversarial */
    int norm;                    /* 0: L-infinity, 2: L2 */
    int given;                   /* CDL_ATK_*: keys the spec set (the rest may follow the target) */
    char on[64];                 /* the input attacked, by name; "": the default */
} cdl_attack;
int cdl_attack_parse(cdl_attack *a, const char *spec);     /* -1 and a message */
void cdl_attack_str(const cdl_attack *a, char *buf, size_t n); /* canonical spec */
/* The input spec a attacks in m (see above; xi: the caller's default, the first real
 * input it feeds); -1 and a message (no such input, not real, not batched). */
int cdl_adv_target(const cdl_model *m, const cdl_attack *a, int xi);
/* Attack state: the settings and one scratch buffer (compiled batch), made once. */
typedef struct cdl_adv cdl_adv;
/* For real input xi of m (batched; m must have input_grad): a on cdl_adv_target(m, a,
 * xi), the defaults of a perturbation input filled in.  NULL and a message. */
cdl_adv *cdl_adv_new(const cdl_model *m, int xi, const cdl_attack *a);
void cdl_adv_free(cdl_adv *s);                             /* NULL is fine */
const cdl_attack *cdl_adv_attack(const cdl_adv *s);        /* the settings as resolved */
int cdl_adv_input(const cdl_adv *s);                       /* the input attacked */
int cdl_adv_on_delta(const cdl_adv *s);                    /* it is a perturbation input */
/* Replace rows 0..rows-1 of net->in[xi] by adversarial examples against the labels
 * etc. in the other inputs (rows <= 0: nothing).  Calls m->input_grad(net, rows)
 * `steps` times, so net->act, net->out and net->in_grad are overwritten; parameters and
 * net->grad are untouched.  The random start uses key with counters from
 * net->batch_row0 * feat on (the rows' place in a sharded global batch; 0 otherwise).
 * No allocation.  0, or -1 and a message (rows > the compiled batch, a foreign net). */
int cdl_adv_perturb(cdl_adv *s, cdl_net *net, int rows, cdl_rng_key key);
/* A perturbation input back to zero (after evaluating at the attacked point); no-op
 * for a data input (the next batch overwrites it). */
void cdl_adv_reset(cdl_adv *s, cdl_net *net);
/* Embedding-space adversarial training (Miyato et al. 2017), for a perturbation input:
 * net->grad = grad L(clean) + grad L(clean + r_adv), r_adv from cdl_adv_perturb at the
 * current parameters; returns L(clean) + L(adv), the delta left at zero.  Three passes
 * (train, `steps` input gradients, train); no allocation. */
double cdl_adv_train_grad(cdl_adv *s, cdl_net *net, int rows, cdl_rng_key key);
/* END TRAINER */

/* ======================================================================== tape (tape.c)
 * The dynamic tape (BEGIN TAPE) and the activations (BEGIN ACT) are in cdl_tape.h, a part
 * of this header (installed beside it; never included on its own). */
#include "cdl_tape.h"

#ifdef __cplusplus
}
#endif
#endif /* CDL_H */

/* tape_int.h -- private to the tape (tape.c, tape_ops.c, tape_nn.c): the tape header, the
 * arena, record creation, gradient plumbing and the precision dispatch.  The public
 * contract is cdl.h's TAPE block.
 *
 * Arena: [base, end) inside net->act after the header.  Values, records and gradients are
 * bump-allocated upward from `lo`; short-lived scratch (a backward rule's temporaries, a
 * convolution's im2col matrix) downward from `hi` and released when the op is done, so
 * the scratch costs the largest single op, not the sum over the step.
 */
#ifndef CDL_TAPE_INT_H
#define CDL_TAPE_INT_H

#include "cdl.h"

#include <stdint.h>
#include <string.h>

#define TAPE_MAGIC 0x5441504543444c31ull     /* "TAPECDL1" */
#define TAPE_ALIGN 64

struct cdl_tape {
    uint64_t magic;
    cdl_net *net;
    const cdl_model *m;
    int rs;                  /* real size: 4 or 8 */
    cdl_dtype real;          /* CDL_F32 or CDL_F64 */
    int train;
    int failed;
    int want_p, want_i;      /* during cdl_backward */
    char *base, *lo, *hi, *end;
    size_t peak;             /* most bytes in use at once since attach */
    uint64_t nrec, nalloc;   /* this step */
    cdl_t *last;             /* newest record */
    cdl_t **pcache;          /* per parameter: its leaf this step, or NULL */
    cdl_t **icache;          /* per input slot */
};

/* Kernel call in the tape's precision; pointer arguments are void * (converted to the
 * kernel's T * implicitly), scalars convert as usual. */
#define TK(tp, name, ...) \
    ((tp)->rs == 8 ? cdl_##name##_f64(__VA_ARGS__) : cdl_##name##_f32(__VA_ARGS__))
/* The element-moving kernels also exist for i32 (labels). */
#define TKM(tp, t, name, ...) \
    ((t)->dtype == CDL_I32 ? cdl_##name##_i32(__VA_ARGS__) : TK(tp, name, __VA_ARGS__))

/* ---- arena (tape.c) ---- */
/* n bytes (64-aligned) that live until the next reset; NULL, failed and a message when
 * the arena is full. */
void *tape_alloc(cdl_tape *tp, size_t n);
void *tape_alloc0(cdl_tape *tp, size_t n);                 /* zeroed */
/* Scratch from the top; release with tape_release(tp, mark) where mark = tp->hi before. */
void *tape_temp(cdl_tape *tp, size_t n);
static inline void tape_release(cdl_tape *tp, char *mark) { tp->hi = mark; }
/* Fail the step: a message "tape: <op>: ..." and NULL. */
cdl_t *tape_err(cdl_tape *tp, const char *op, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- records (tape.c) ---- */
/* A new record for op with the given result dtype and dims, its value storage allocated
 * (alloc_data) or left NULL (views), linked after the newest record.  The inputs' flags
 * (dependence on parameters / inputs) propagate when the result is real.  NULL after
 * an error; also when any input is NULL (an earlier error: the message is kept). */
cdl_t *tape_rec(cdl_tape *tp, const char *op, cdl_dtype dt, int rank, const int64_t *dims,
                int alloc_data, int nin, cdl_t *const *in);
/* Finishes record y: its integer attributes ia[0 .. n) and its backward rule; returns y. */
static inline cdl_t *tape_done(cdl_t *y, void (*bwd)(cdl_tape *, cdl_t *), int n, const int64_t *ia) {
    for (int i = 0; i < n; i++) y->ia[i] = ia[i];
    y->bwd = bwd;
    return y;
}
/* Bytes per element of t. */
static inline size_t tape_esize(const cdl_tape *tp, const cdl_t *t) {
    return t->dtype == CDL_I32 ? 4 : (size_t)tp->rs;
}
/* Element offset into real or i32 data. */
static inline void *tape_at(const cdl_tape *tp, const cdl_t *t, void *p, int64_t off) {
    return (char *)p + (size_t)off * tape_esize(tp, t);
}
int tape_is_real(const cdl_tape *tp, const cdl_t *t);
/* 1 when every xs[k] is a real tensor of the tape's precision.  A NULL input means an
 * earlier failure (already reported: the step is failed quietly); a non-real one is an
 * error naming op and the argument. */
int tape_need_real(cdl_tape *tp, const char *op, cdl_t *const *xs, int n);
/* "[64, 784]" into buf (cap bytes); DSTR(t) gives t's dims in a temporary buffer. */
const char *tape_dims_str(char *buf, size_t cap, int rank, const int64_t *dims);
#define DSTR(t) tape_dims_str((char[96]){0}, 96, (t)->rank, (t)->dims)
/* Product of dims[from, to). */
int64_t tape_prod(const int64_t *dims, int from, int to);

/* ---- gradients (tape.c), used by the backward rules ---- */
/* Does x need a gradient in this backward pass? */
static inline int tape_need(const cdl_tape *tp, const cdl_t *x) {
    return x && x->dtype != CDL_I32 &&
           (((x->flags & CDL_TF_PARAM) && tp->want_p) || ((x->flags & CDL_TF_INPUT) && tp->want_i));
}
/* Where an overwriting kernel writes x's gradient contribution: x->grad itself when no
 * gradient has arrived yet (*acc = 0), else a temporary (*acc = 1) that tape_gfin adds
 * in.  NULL after an error. */
void *tape_gdst(cdl_tape *tp, cdl_t *x, int *acc);
void tape_gfin(cdl_tape *tp, cdl_t *x, void *dst, int acc);
/* bwd_NAME, the backward rule of an op of one real input x = y->in[0] whose kernels
 * overwrite dx: the statements BODY see tp, y, x, g (y->grad) and d (where dx goes) and
 * run only when x needs a gradient; tape_gfin adds d in after them. */
#define TAPE_BWD1(name, ...)                                                         \
    static void bwd_##name(cdl_tape *tp, cdl_t *y) {                                 \
        cdl_t *x = y->in[0];                                                         \
        int acc;                                                                     \
        void *g = y->grad, *d = tape_need(tp, x) ? tape_gdst(tp, x, &acc) : NULL;    \
        if (!d) return;                                                              \
        (void)g;                                                                     \
        __VA_ARGS__;                                                                 \
        tape_gfin(tp, x, d, acc);                                                    \
    }
/* x->grad += src (numel(x) reals); a copy when it is the first contribution. */
void tape_gadd(cdl_tape *tp, cdl_t *x, const void *src);
/* x->grad holding a value (zeros if none had arrived); for partial contributions and
 * accumulating kernels (GEMM with beta = 1).  NULL after an error. */
void *tape_gzero(cdl_tape *tp, cdl_t *x);
/* For GEMM: x's gradient buffer and the beta to use (0: first contribution). */
void *tape_gemm_dst(cdl_tape *tp, cdl_t *x, double *beta);
/* Add src, shaped like y (the op's result), into x's gradient, summing over the axes
 * where x was broadcast to y's shape (numpy rules). */
void tape_acc_bcast(cdl_tape *tp, cdl_t *x, const cdl_t *y, const void *src);
/* ---- broadcasting (tape_ops.c) ---- */
/* numpy broadcasting of a and b into rank/dims; 0 if they do not broadcast. */
int tape_bcast_dims(const cdl_t *a, const cdl_t *b, int *rank, int64_t *dims);
/* Element strides of x (dims xr/xd) per dim of an output of rank r (0 where broadcast). */
void tape_bcast_strides(int r, const int64_t *ydims, int xr, const int64_t *xd, int64_t *st);
/* A temporary of n reals. */
static inline void *tape_rtemp(cdl_tape *tp, int64_t n) {
    return tape_temp(tp, (size_t)(n > 0 ? n : 1) * (size_t)tp->rs);
}

#endif /* CDL_TAPE_INT_H */

/* kernels_dense_t.h -- dense, reduction, shape, softmax and embedding kernels, written
 * once over T (element type) with S(name) the suffixing macro (S(relu) -> cdl_relu_f32).
 * Included by kernels_dense.c for float and double (through kernels_inst.h: M(exp)
 * is expf / exp), and
 * once more for int32_t with DENSE_MOVE_ONLY = 1: only the kernels that move elements
 * without arithmetic (broadcast, transpose, concat, slice), so i32 tensors such as
 * labels can be sliced and rearranged too.
 * The contracts are in cdl.h's DENSE block; the notes here are about how.
 * No allocation: every kernel works in the buffers it is given.
 */

/* ---- axis groups (reduce, broadcast) ------------------------------------------- */

/* Merges the axes of dims into groups of one kind (kind[i] 1: reduced, or repeated by
 * a broadcast; 0: kept): size-1 axes are dropped and neighbours of the same kind fused,
 * so the loop nest has at most rank alternating groups.  Fills gd[] (sizes), gk[]
 * (kinds) and the odometer over them: stride[g], the step in the tensor that lacks the
 * kind-1 axes (0 along those), and idx[] zeroed.  Returns the group count. */
static int S(axis_groups)(int rank, const int64_t *dims, const int *kind, int64_t *gd, int *gk,
                          int64_t *stride, int64_t *idx) {
    int ng = 0;
    for (int i = 0; i < rank; i++) {
        if (dims[i] == 1)
            continue;
        if (ng > 0 && gk[ng - 1] == kind[i]) {
            gd[ng - 1] *= dims[i];
        } else {
            gd[ng] = dims[i];
            gk[ng] = kind[i];
            ng++;
        }
    }
    int64_t s = 1;
    for (int g = ng - 1; g >= 0; g--) {
        stride[g] = gk[g] ? 0 : s;
        if (!gk[g])
            s *= gd[g];
        idx[g] = 0;
    }
    return ng;
}

/* One step of the odometer over the outer groups (all but the innermost, which the
 * caller runs through): the offset off in the other tensor, moved to the next run. */
static inline int64_t S(axis_next)(int ng, const int64_t *gd, const int64_t *stride, int64_t *idx,
                                   int64_t off) {
    for (int g = ng - 2; g >= 0; g--) {
        off += stride[g];
        if (++idx[g] < gd[g])
            break;
        off -= stride[g] * gd[g];
        idx[g] = 0;
    }
    return off;
}

#if !DENSE_MOVE_ONLY
/* ---- linear ------------------------------------------------------------------ */

/* y[rows,out] = x[rows,in] w[out,in]^T (+ b[out]).  The bias is fused: y is filled
 * with bias rows and the GEMM accumulates onto it (beta = 1), so there is no second
 * pass over y. */
void S(linear)(int64_t rows, int64_t in, int64_t out, const T *restrict x,
               const T *restrict w, const T *restrict b, T *restrict y) {
    if (rows <= 0 || out <= 0)
        return;
    if (b) {
        for (int64_t i = 0; i < rows; i++)
            memcpy(y + i * out, b, (size_t)out * sizeof(T));
    }
    S(gemm)(0, 1, rows, out, in, (T)1, x, in, w, in, b ? (T)1 : (T)0, y, out);
}

/* ---- reductions ---------------------------------------------------------------- */

#include "kernels_sum_t.h" /* S(run_sum): shared with the conv backward's bias gradient */

/* Kept elements [j0, j1) of a RedJob: y[j] = sum over o of the run x[o, j, :], o in
 * order (reduce's own order for these shapes). */
static void S(reduce_range)(void *arg, int64_t j0, int64_t j1) {
    const RedJob *J = arg;
    const T *x = J->x;
    T *y = J->y;
    for (int64_t j = j0; j < j1; j++) {
        y[j] = 0;
        for (int64_t o = 0; o < J->outer; o++) y[j] += (T)S(run_sum)(x + (o * J->kept + j) * J->inner, J->inner);
    }
}

/* Groups (reduced, kept, reduced) or (kept, reduced) of a large reduce on the pool:
 * 1 if done, 0 if the caller should walk it itself. */
static int S(reduce_par)(int ng, const int64_t *gd, const int *gr, int64_t numel, const T *x, T *y) {
    if (numel < CDL_PAR_MIN || cdl_parallel_threads() < 2) return 0;
    RedJob J = {.x = x, .y = y, .inner = gd[ng - 1]};
    if (ng == 3 && gr[0] && !gr[1] && gr[2]) J.outer = gd[0], J.kept = gd[1];
    else if (ng == 2 && !gr[0] && gr[1]) J.outer = 1, J.kept = gd[0];
    else return 0;
    if (J.kept < 2) return 0;
    cdl_parallel_ranges(J.kept, J.outer * J.inner, 1, S(reduce_range), &J);
    return 1;
}

/* y = sum over the masked axes of x (mean: divided by the runtime count of summed
 * elements).  Walks x once in memory order: an odometer over the outer groups and a
 * contiguous inner run, which is either summed (innermost axes reduced: row sums) or
 * added lane-wise into y (innermost axes kept: column sums, vectorizable). */
void S(reduce)(int rank, const int64_t *dims, unsigned mask, int mean, const T *restrict x,
               T *restrict y) {
    int64_t gd[CDL_MAXDIM], ystride[CDL_MAXDIM], idx[CDL_MAXDIM];
    int kind[CDL_MAXDIM], gr[CDL_MAXDIM];
    int64_t ny = 1, count = 1, numel = 1;
    if (rank < 0 || rank > CDL_MAXDIM)
        return;
    for (int i = 0; i < rank; i++) {
        numel *= dims[i];
        kind[i] = mask == 0 || (mask >> i & 1u);
        if (kind[i])
            count *= dims[i];
        else
            ny *= dims[i];
    }
    if (ny <= 0)
        return;
    for (int64_t j = 0; j < ny; j++)
        y[j] = 0;
    if (numel <= 0)
        return;
    int ng = S(axis_groups)(rank, dims, kind, gd, gr, ystride, idx);
    if (ng == 0) {                      /* a single element */
        y[0] = x[0];
        return;
    }
    int64_t inner = gd[ng - 1], nouter = S(reduce_par)(ng, gd, gr, numel, x, y) ? 0 : numel / inner, yoff = 0;
    int inner_kept = !gr[ng - 1];
    for (int64_t o = 0; o < nouter; o++) {
        const T *restrict xp = x + o * inner;
        if (inner_kept) {
            T *restrict yp = y + yoff;
            for (int64_t j = 0; j < inner; j++)
                yp[j] += xp[j];
        } else {
            y[yoff] += (T)S(run_sum)(xp, inner);
        }
        yoff = S(axis_next)(ng, gd, ystride, idx, yoff);
    }
    if (mean && count > 0) {
        T inv = (T)(1.0 / (double)count);
        for (int64_t j = 0; j < ny; j++)
            y[j] *= inv;
    }
}

#endif /* !DENSE_MOVE_ONLY */

/* ---- broadcast ----------------------------------------------------------------- */

/* y = x broadcast to ydims.  Axes are merged into groups of the same kind (x repeats
 * along the group, or x follows y), the innermost group becomes a fill or a copy. */
void S(broadcast)(int rank, const int64_t *xdims, const int64_t *ydims,
                  const T *restrict x, T *restrict y) {
    int64_t gd[CDL_MAXDIM], xs[CDL_MAXDIM], idx[CDL_MAXDIM];
    int kind[CDL_MAXDIM], gb[CDL_MAXDIM];
    int64_t ny = 1;
    if (rank < 0 || rank > CDL_MAXDIM)
        return;
    for (int i = 0; i < rank; i++) {
        ny *= ydims[i];
        kind[i] = xdims[i] == 1;        /* x repeats along this axis */
    }
    if (ny <= 0)
        return;
    int ng = S(axis_groups)(rank, ydims, kind, gd, gb, xs, idx);
    if (ng == 0) {
        y[0] = x[0];
        return;
    }
    int64_t inner = gd[ng - 1], nouter = ny / inner, xoff = 0;
    int inner_bcast = gb[ng - 1];
    for (int64_t o = 0; o < nouter; o++) {
        T *restrict yp = y + o * inner;
        if (inner_bcast) {
            T v = x[xoff];
            for (int64_t j = 0; j < inner; j++)
                yp[j] = v;
        } else {
            memcpy(yp, x + xoff, (size_t)inner * sizeof(T));
        }
        xoff = S(axis_next)(ng, gd, xs, idx, xoff);
    }
}

/* ---- transpose ----------------------------------------------------------------- */

/* 2-D transpose y[n,m] = x[m,n]^T in 32x32 tiles (both sides stay in cache). */
static void S(transpose2)(int64_t m, int64_t n, const T *restrict x, T *restrict y) {
    enum { TILE = 32 };
    for (int64_t i0 = 0; i0 < m; i0 += TILE) {
        int64_t i1 = i0 + TILE < m ? i0 + TILE : m;
        for (int64_t j0 = 0; j0 < n; j0 += TILE) {
            int64_t j1 = j0 + TILE < n ? j0 + TILE : n;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = i0; i < i1; i++)
                    y[j * m + i] = x[i * n + j];
        }
    }
}

/* y = permute(x, perm).  Output axes that stay neighbours in x are merged first; a
 * plain 2-D transpose goes through the tiled kernel, anything else is an odometer over
 * the output with a strided (or, when the last axis stays last, contiguous) inner run. */
void S(transpose)(int rank, const int64_t *dims, const int *perm, const T *restrict x,
                  T *restrict y) {
    int64_t xstr[CDL_MAXDIM], md[CDL_MAXDIM], ms[CDL_MAXDIM], idx[CDL_MAXDIM];
    int64_t numel = 1;
    int nm = 0;
    if (rank < 0 || rank > CDL_MAXDIM)
        return;
    for (int i = 0; i < rank; i++) {
        if (perm[i] < 0 || perm[i] >= rank)
            return;
        numel *= dims[i];
    }
    if (numel <= 0)
        return;
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        xstr[i] = s;
        s *= dims[i];
    }
    /* merged output axes: size and x stride; skip size-1 axes */
    for (int i = 0; i < rank; i++) {
        int64_t d = dims[perm[i]], st = xstr[perm[i]];
        if (d == 1)
            continue;
        if (nm > 0 && ms[nm - 1] == st * d) {
            md[nm - 1] *= d;
            ms[nm - 1] = st;
        } else {
            md[nm] = d;
            ms[nm] = st;
            nm++;
        }
    }
    if (nm == 0) {
        y[0] = x[0];
        return;
    }
    if (nm == 1) {                      /* only size-1 axes moved */
        memcpy(y, x, (size_t)numel * sizeof(T));
        return;
    }
    if (nm == 2 && ms[1] == md[0] && ms[0] == 1) {
        S(transpose2)(md[1], md[0], x, y);
        return;
    }
    for (int g = 0; g < nm; g++)
        idx[g] = 0;
    int64_t inner = md[nm - 1], istr = ms[nm - 1], nouter = numel / inner, xoff = 0;
    for (int64_t o = 0; o < nouter; o++) {
        T *restrict yp = y + o * inner;
        const T *restrict xp = x + xoff;
        if (istr == 1) {
            memcpy(yp, xp, (size_t)inner * sizeof(T));
        } else {
            for (int64_t j = 0; j < inner; j++)
                yp[j] = xp[j * istr];
        }
        xoff = S(axis_next)(nm, md, ms, idx, xoff);
    }
}

/* ---- concat, slice ------------------------------------------------------------- */

/* y[o, :] = xs[0][o, :inner[0]] | xs[1][o, :inner[1]] | ... for o < outer. */
void S(concat)(int n, int64_t outer, const int64_t *inner, const T *const *xs, T *y) {
    int64_t row = 0;
    for (int k = 0; k < n; k++)
        row += inner[k];
    for (int64_t o = 0; o < outer; o++) {
        T *yp = y + o * row;
        for (int k = 0; k < n; k++) {
            if (inner[k] <= 0)
                continue;
            memcpy(yp, xs[k] + o * inner[k], (size_t)inner[k] * sizeof(T));
            yp += inner[k];
        }
    }
}

/* y[o, j, :] = x[o, start + j*step, :] (zeros for indices outside [0, len)). */
void S(slice)(int64_t outer, int64_t len, int64_t inner, int64_t start, int64_t step,
              int64_t count, const T *restrict x, T *restrict y) {
    if (inner <= 0 || count <= 0)
        return;
    size_t bytes = (size_t)inner * sizeof(T);
    for (int64_t o = 0; o < outer; o++) {
        const T *xo = x + o * len * inner;
        T *yo = y + o * count * inner;
        for (int64_t j = 0; j < count; j++) {
            int64_t src = start + j * step;
            if (src >= 0 && src < len)
                memcpy(yo + j * inner, xo + src * inner, bytes);
            else
                memset(yo + j * inner, 0, bytes);
        }
    }
}

#if !DENSE_MOVE_ONLY
/* d[0 .. n) += s[0 .. n): one gathered row's gradient added back (slice_bwd, embedding_bwd). */
static inline void S(row_add)(int64_t n, T *restrict d, const T *restrict s) {
    for (int64_t i = 0; i < n; i++)
        d[i] += s[i];
}

/* dx[outer, len, inner] = 0; dx[o, start + j*step, :] += g[o, j, :]. */
void S(slice_bwd)(int64_t outer, int64_t len, int64_t inner, int64_t start, int64_t step,
                  int64_t count, const T *restrict g, T *restrict dx) {
    if (outer <= 0 || len <= 0 || inner <= 0)
        return;
    memset(dx, 0, (size_t)(outer * len * inner) * sizeof(T));
    for (int64_t o = 0; o < outer; o++) {
        T *dxo = dx + o * len * inner;
        const T *go = g + o * count * inner;
        for (int64_t j = 0; j < count; j++) {
            int64_t dst = start + j * step;
            if (dst >= 0 && dst < len)
                S(row_add)(inner, dxo + dst * inner, go + j * inner);
        }
    }
}

/* ---- softmax ------------------------------------------------------------------- */

/* One row of n > 0: e[j] = exp(x[j] - max x), returns sum_j e[j] and the max in *m. */
static inline T S(exp_shifted_row)(int64_t n, const T *restrict x, T *restrict e, T *m) {
    T mx = x[0];
    for (int64_t j = 1; j < n; j++)
        mx = x[j] > mx ? x[j] : mx;
    T sum = 0;
    for (int64_t j = 0; j < n; j++) {
        e[j] = M(exp)(x[j] - mx);
        sum += e[j];
    }
    *m = mx;
    return sum;
}

/* y = softmax(x) over rows of n: max-shifted for stability. */
void S(softmax)(int64_t rows, int64_t n, const T *restrict x, T *restrict y) {
    if (n <= 0)
        return;
    for (int64_t r = 0; r < rows; r++) {
        T m, *yr = y + r * n;
        T inv = (T)1 / S(exp_shifted_row)(n, x + r * n, yr, &m);
        for (int64_t j = 0; j < n; j++)
            yr[j] *= inv;
    }
}

/* y = x - max - log(sum exp(x - max)) over rows of n (y holds the exponentials first). */
void S(log_softmax)(int64_t rows, int64_t n, const T *restrict x, T *restrict y) {
    if (n <= 0)
        return;
    for (int64_t r = 0; r < rows; r++) {
        const T *xr = x + r * n;
        T m, *yr = y + r * n;
        T sum = S(exp_shifted_row)(n, xr, yr, &m);
        T lse = m + M(log)(sum);
        for (int64_t j = 0; j < n; j++)
            yr[j] = xr[j] - lse;
    }
}

/* The two backwards per row, lg a constant at each call: softmax (y its output)
 * dx = y * (g - sum_j g_j y_j); log_softmax (y its output) dx = g - exp(y) * sum_j g_j. */
static inline void S(softmax_bwd_rows)(int lg, int64_t rows, int64_t n, const T *restrict g,
                                       const T *restrict y, T *restrict dx) {
    for (int64_t r = 0; r < rows; r++) {
        const T *gr = g + r * n, *yr = y + r * n;
        T *dr = dx + r * n;
        T acc = 0;
        for (int64_t j = 0; j < n; j++)
            acc += lg ? gr[j] : gr[j] * yr[j];
        for (int64_t j = 0; j < n; j++)
            dr[j] = lg ? gr[j] - M(exp)(yr[j]) * acc : yr[j] * (gr[j] - acc);
    }
}

void S(softmax_bwd)(int64_t rows, int64_t n, const T *restrict g, const T *restrict y,
                    T *restrict dx) {
    S(softmax_bwd_rows)(0, rows, n, g, y, dx);
}

void S(log_softmax_bwd)(int64_t rows, int64_t n, const T *restrict g, const T *restrict y,
                        T *restrict dx) {
    S(softmax_bwd_rows)(1, rows, n, g, y, dx);
}

/* ---- embedding ----------------------------------------------------------------- */

/* y[i, :] = w[ids[i], :]; ids outside [0, V) give zero rows (never read out of bounds). */
void S(embedding)(int64_t n, int64_t V, int64_t D, const int32_t *restrict ids,
                  const T *restrict w, T *restrict y) {
    if (D <= 0)
        return;
    size_t bytes = (size_t)D * sizeof(T);
    for (int64_t i = 0; i < n; i++) {
        int64_t id = ids[i];
        if (id >= 0 && id < V)
            memcpy(y + i * D, w + id * D, bytes);
        else
            memset(y + i * D, 0, bytes);
    }
}

/* dw[V, D] = 0; dw[ids[i], :] += g[i, :] (ids outside [0, V) contribute nothing). */
void S(embedding_bwd)(int64_t n, int64_t V, int64_t D, const T *restrict g,
                      const int32_t *restrict ids, T *restrict dw) {
    if (V <= 0 || D <= 0)
        return;
    memset(dw, 0, (size_t)(V * D) * sizeof(T));
    for (int64_t i = 0; i < n; i++) {
        int64_t id = ids[i];
        if (id >= 0 && id < V)
            S(row_add)(D, dw + id * D, g + i * D);
    }
}
#endif /* !DENSE_MOVE_ONLY */

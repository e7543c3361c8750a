/* kernels_rnn_t.h -- bodies of the recurrent-cell kernels for one element type.
 * Included twice by kernels_rnn.c through kernels_inst.h (T = float / double, S(name)
 * = cdl_name_f32 / cdl_name_f64, M(exp) = expf / exp).  Contracts: cdl.h, BEGIN RNN.
 * Packed buffers: a part starts at an offset counted with the compiled batch bmax;
 * within a part, rows are runtime rows. */

static inline T S(sigm)(T x) { return (T)1 / ((T)1 + M(exp)(-x)); }

/* One row of each cell kernel is a function whose parts arrive as separate restrict
 * parameters: compilers vectorize that, and neither the p[H + j] form nor restrict
 * locals derived from one base pointer. */
static inline void S(lstm_row)(int64_t H, const T *restrict gi, const T *restrict gf, const T *restrict gg,
                               const T *restrict go, const T *restrict c, T *restrict ai, T *restrict af,
                               T *restrict ag, T *restrict ao, T *restrict tcs, T *restrict cn, T *restrict h) {
    for (int64_t j = 0; j < H; j++) {
        T i = S(sigm)(gi[j]), f = S(sigm)(gf[j]), g = M(tanh)(gg[j]), o = S(sigm)(go[j]);
        T cj = f * c[j] + i * g, tc = M(tanh)(cj);
        ai[j] = i;
        af[j] = f;
        ag[j] = g;
        ao[j] = o;
        tcs[j] = tc;
        cn[j] = cj;
        h[j] = o * tc;
    }
}

void S(lstm_act)(int64_t rows, int64_t hid, int64_t bmax, const T *gates, const T *c, T *out, T *aux) {
    const int64_t H = hid;
    for (int64_t b = 0; b < rows; b++) {
        const T *gr = gates + b * 4 * H;
        T *ar = aux + b * 4 * H;
        S(lstm_row)(H, gr, gr + H, gr + 2 * H, gr + 3 * H, c + b * H, ar, ar + H, ar + 2 * H, ar + 3 * H,
                    aux + bmax * 4 * H + b * H, out + bmax * H + b * H, out + b * H);
    }
}

static inline void S(lstm_bwd_row)(int64_t H, const T *restrict ai, const T *restrict af, const T *restrict ag,
                                   const T *restrict ao, const T *restrict tcs, const T *restrict c,
                                   const T *restrict dh, const T *restrict dcn, T *restrict di, T *restrict df,
                                   T *restrict dg, T *restrict dgo, T *restrict dc) {
    for (int64_t j = 0; j < H; j++) {
        T i = ai[j], f = af[j], g = ag[j], o = ao[j], tc = tcs[j];
        T dct = dcn[j] + dh[j] * o * (1 - tc * tc);
        di[j] = dct * g * i * (1 - i);
        df[j] = dct * c[j] * f * (1 - f);
        dg[j] = dct * i * (1 - g * g);
        dgo[j] = dh[j] * tc * o * (1 - o);
        dc[j] = dct * f;
    }
}

void S(lstm_act_bwd)(int64_t rows, int64_t hid, int64_t bmax, const T *dh, const T *dc, const T *c, const T *aux,
                     T *dst) {
    const int64_t H = hid;
    for (int64_t b = 0; b < rows; b++) {
        const T *ar = aux + b * 4 * H;
        T *dg = dst + b * 4 * H;
        S(lstm_bwd_row)(H, ar, ar + H, ar + 2 * H, ar + 3 * H, aux + bmax * 4 * H + b * H, c + b * H, dh + b * H,
                        dc + b * H, dg, dg + H, dg + 2 * H, dg + 3 * H, dst + bmax * 4 * H + b * H);
    }
}

static inline void S(gru_row)(int64_t H, const T *restrict ir, const T *restrict iz, const T *restrict in,
                              const T *restrict hr, const T *restrict hz, const T *restrict hn, const T *restrict h,
                              T *restrict ar, T *restrict az, T *restrict an, T *restrict out) {
    for (int64_t j = 0; j < H; j++) {
        T r = S(sigm)(ir[j] + hr[j]), z = S(sigm)(iz[j] + hz[j]);
        T n = M(tanh)(in[j] + r * hn[j]);
        ar[j] = r;
        az[j] = z;
        an[j] = n;
        out[j] = (1 - z) * n + z * h[j];
    }
}

void S(gru_act)(int64_t rows, int64_t hid, const T *gi, const T *gh, const T *h, T *out, T *aux) {
    const int64_t H = hid;
    for (int64_t b = 0; b < rows; b++) {
        const T *ir = gi + b * 3 * H, *hr = gh + b * 3 * H;
        T *ar = aux + b * 3 * H;
        S(gru_row)(H, ir, ir + H, ir + 2 * H, hr, hr + H, hr + 2 * H, h + b * H, ar, ar + H, ar + 2 * H, out + b * H);
    }
}

static inline void S(gru_bwd_row)(int64_t H, const T *restrict g, const T *restrict hn, const T *restrict h,
                                  const T *restrict ar, const T *restrict az, const T *restrict an,
                                  T *restrict dir, T *restrict diz, T *restrict din, T *restrict dhr,
                                  T *restrict dhz, T *restrict dhn, T *restrict dh) {
    for (int64_t j = 0; j < H; j++) {
        T r = ar[j], z = az[j], n = an[j], go = g[j];
        T dan = go * (1 - z) * (1 - n * n);
        T dar = dan * hn[j] * r * (1 - r);
        T daz = go * (h[j] - n) * z * (1 - z);
        dir[j] = dar;
        diz[j] = daz;
        din[j] = dan;
        dhr[j] = dar;
        dhz[j] = daz;
        dhn[j] = dan * r;
        dh[j] = go * z;
    }
}

void S(gru_act_bwd)(int64_t rows, int64_t hid, int64_t bmax, const T *g, const T *gh, const T *h, const T *aux,
                    T *dst) {
    const int64_t H = hid;
    for (int64_t b = 0; b < rows; b++) {
        const T *ar = aux + b * 3 * H;
        T *di = dst + b * 3 * H, *dh3 = dst + bmax * 3 * H + b * 3 * H;
        S(gru_bwd_row)(H, g + b * H, gh + b * 3 * H + 2 * H, h + b * H, ar, ar + H, ar + 2 * H, di, di + H, di + 2 * H,
                       dh3, dh3 + H, dh3 + 2 * H, dst + bmax * 6 * H + b * H);
    }
}

void S(view_bwd)(int64_t total, int64_t off, int64_t n, const T *g, T *dst) {
    memset(dst, 0, sizeof(T) * (size_t)total);
    if (n > 0) memcpy(dst + off, g, sizeof(T) * (size_t)n);
}

/* kernels_sum_t.h -- S(run_sum), the sum of a contiguous run, written once over T.
 * Included by kernels_dense_t.h (reduce: every sum over an innermost run) and by
 * kernels_conv_t.h (conv2d_bwd_xw's bias gradient, which must have reduce's bits), once
 * per element type; no include guard, like the templates that include it. */
/* Sum of a contiguous run, accumulated in double (accuracy for f32) in 16 independent
 * chains added at the end: they vectorise (two AVX-512 registers of doubles), where
 * four chains took two-lane vectors and left the bias gradients of the bench ResNet's
 * convolutions (sums over N, H, W) at 3.6% of its step. */
#ifndef RUN_SUM_LANES
#define RUN_SUM_LANES 16
#endif
static double S(run_sum)(const T *restrict x, int64_t n) {
    double a[RUN_SUM_LANES] = {0};
    int64_t i = 0;
    for (; i + RUN_SUM_LANES <= n; i += RUN_SUM_LANES)
        for (int k = 0; k < RUN_SUM_LANES; k++)
            a[k] += (double)x[i + k];
    for (; i < n; i++)
        a[i % RUN_SUM_LANES] += (double)x[i];
    double s = 0;
    for (int k = 0; k < RUN_SUM_LANES; k++)
        s += a[k];
    return s;
}


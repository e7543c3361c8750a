/* kernels_loop_t.h -- bodies of kernels_loop.c for one element type T, names S(x). */

/* out[b][t][r] = step t's row b: stack + t * step_stride + b * row, for rows nb. */
void S(steps_to_batch)(int64_t steps, int64_t nb, int64_t row, const T *stack, int64_t step_stride, T *out) {
    for (int64_t b = 0; b < nb; b++)
        for (int64_t t = 0; t < steps; t++) {
            const T *src = stack + t * step_stride + b * row;
            T *dst = out + (b * steps + t) * row;
            for (int64_t r = 0; r < row; r++) dst[r] = src[r];
        }
}

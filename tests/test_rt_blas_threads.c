/* test_rt_blas_threads.c -- cdl_blas_set_threads leaves exactly the runtime's threads
 * (runtime/blas.c): OpenBLAS starts its own workers when it is loaded (here
 * OPENBLAS_NUM_THREADS=4, capped by OpenBLAS at the CPU count), and they spun on
 * sched_yield beside the pool's worker although cdl never gives them work; after
 * cdl_blas_set_threads(n) the process has n threads (the caller and n - 1 pool
 * workers), and products of every size still give the right numbers.  On a 1-CPU
 * machine OpenBLAS starts no worker and the counts hold trivially. */
#include "test_rt_util.h"

#include <dirent.h>
#include <unistd.h>

static int threads_now(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* C = A B for A 96x200 and B 200x300 (over the pool's split size when big), checked
 * against a plain double sum. */
static void gemm_ok(int64_t M, int64_t N, int64_t K) {
    float *A = malloc(sizeof(float) * (size_t)(M * K)), *B = malloc(sizeof(float) * (size_t)(K * N));
    float *C = malloc(sizeof(float) * (size_t)(M * N));
    assert_true(A && B && C);
    for (int64_t i = 0; i < M * K; i++) A[i] = (float)((i * 7) % 13) / 8 - 0.75f;
    for (int64_t i = 0; i < K * N; i++) B[i] = (float)((i * 5) % 11) / 8 - 0.6f;
    cdl_gemm_f32(0, 0, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
    for (int64_t i = 0; i < M; i += 7)
        for (int64_t j = 0; j < N; j += 5) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += (double)A[i * K + k] * B[k * N + j];
            assert_true(fabs(C[i * N + j] - s) <= 1e-4 * (1 + fabs(s)));
        }
    free(A), free(B), free(C);
}

static void test_only_the_pool(void **state) {
    (void)state;
    const int at_load = threads_now();
    assert_true(at_load >= 1);
    for (int n = 1; n <= 3; n++) {
        cdl_blas_set_threads(n);
        assert_int_equal(threads_now(), n);
        gemm_ok(96, 300, 200);
        gemm_ok(256, 256, 256); /* 2^24 multiply-adds: blocks on the pool */
        assert_int_equal(threads_now(), n);
    }
    cdl_blas_set_threads(1);
    assert_int_equal(threads_now(), 1);
}

int main(int argc, char **argv) {
    (void)argc;
    const char *v = getenv("OPENBLAS_NUM_THREADS");
    if (!v || strcmp(v, "4") != 0) { /* OpenBLAS reads it when loaded: run again with it */
        setenv("OPENBLAS_NUM_THREADS", "4", 1);
        execv("/proc/self/exe", argv);
        perror("execv /proc/self/exe");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_only_the_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

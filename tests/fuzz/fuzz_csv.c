/* fuzz_csv.c -- libFuzzer harness for the CSV reader (runtime/data.c).
 *
 * Input: one byte selecting the target column (byte % 5 - 3: auto, last, none, 0, 1)
 * and the header mode (byte / 5 % 3 - 1), then the CSV text.  An accepted dataset must
 * be self-consistent: columns x and (with a target) y, every column a view inside its
 * block, reals finite, integers in [0, nclasses).
 */
#include "cdl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size < 1) return 0;
    int label = data[0] % 5 - 3, header = data[0] / 5 % 3 - 1;
    cdl_dataset d;
    if (cdl_dataset_parse_csv(&d, (const char *)data + 1, size - 1, "fuzz.csv", label, header) == 0) {
        const cdl_column *x = &d.col[0];
        if (d.n < 1 || d.ncols < 1 || strcmp(x->name, "x") || x->rank != 1 || x->dims[0] != x->feat) abort();
        if ((label != CDL_CSV_NO_LABEL) != (d.ncols > 1 && !strcmp(d.col[1].name, "y"))) abort();
        for (int c = 0; c < d.ncols; c++) {
            const cdl_column *col = &d.col[c];
            if (!col->data || col->feat < 1 || col->stride < col->feat) abort();
            for (int64_t i = 0; i < d.n; i++)
                for (int64_t k = 0; k < col->feat; k++) {
                    int64_t j = i * col->stride + k;
                    if (col->dtype == CDL_F32 ? !isfinite(((const float *)col->data)[j])
                                              : ((const int32_t *)col->data)[j] < 0 ||
                                                    ((const int32_t *)col->data)[j] >= col->nclasses)
                        abort();
                }
        }
        cdl_dataset_free(&d);
    }
    return 0;
}

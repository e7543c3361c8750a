/* fuzz_csv.c -- libFuzzer harness for the CSV reader (runtime/data.c).
 *
 * Input: one byte selecting the label column (byte % 4 - 2: last, none, 0, 1) and the
 * header mode (byte / 4 % 3 - 1), then the CSV text.  An accepted dataset must be
 * self-consistent.
 */
#include "cdl.h"

#include <math.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size < 1) return 0;
    int label = data[0] % 4 - 2, header = data[0] / 4 % 3 - 1;
    cdl_dataset d;
    if (cdl_dataset_parse_csv(&d, (const char *)data + 1, size - 1, "fuzz.csv", label, header) == 0) {
        if (d.n < 1 || d.feat < 1 || !d.x || d.rank != 1 || d.dims[0] != d.feat) abort();
        for (int64_t i = 0; i < d.n * d.feat; i++)
            if (!isfinite(d.x[i])) abort();
        for (int64_t i = 0; d.y && i < d.n; i++)
            if (d.y[i] < 0 || d.y[i] >= d.nclasses) abort();
        cdl_dataset_free(&d);
    }
    return 0;
}

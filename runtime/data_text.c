/* data_text.c -- text for language models: `--data text:FILE` and `bytes:FILE`.
 *
 * The file (raw or gzip) is one token array: its bytes, numbered by a vocabulary.
 * text: the distinct bytes of the whole file, in byte order, are ids 0..K-1 (a file of
 * 70 distinct characters fits a model with V >= 70); bytes: the ids are the byte
 * values (V = 256 covers any file).  A character is a byte: a UTF-8 character outside
 * ASCII is as many tokens as it has bytes, and invalid UTF-8 is not an error.
 *
 * Example i is the window of T + 1 tokens at offset i: column x its first T, column y
 * (the target) its last T.  Both are strided views into the one token array (stride
 * 1, T values each), so a corpus of N tokens costs N ints, not N * T, and the loader,
 * the feeds, shuffling, workers, resume and shards treat them as any other column.
 * The last tenth of the file (at least T + 1 tokens) is the test split, the rest the
 * training split; both splits number tokens with the whole file's vocabulary.
 */
#include "data_int.h"

#include <string.h>

#define TEXT_MAX_BYTES ((uint64_t)1 << 31)    /* ids and offsets stay well inside int32 */

/* The whole file into *buf (*n bytes); -1 and a message. */
static int text_read(const char *path, unsigned char **buf, uint64_t *n) {
    data_file f;
    *buf = NULL;
    *n = 0;
    if (data_file_open(&f, path) < 0) return -1;
    uint64_t cap = data_file_size_hint(&f) + 1, len = 0;
    if (cap > TEXT_MAX_BYTES) cap = TEXT_MAX_BYTES;
    unsigned char *b = cdl_alloc(cap);
    int rc = b ? 0 : -1;
    while (rc == 0) {
        if (len == cap) {
            if (cap >= TEXT_MAX_BYTES) {
                rc = cdl_fail("%s: more than %llu bytes of text", path, (unsigned long long)TEXT_MAX_BYTES);
                break;
            }
            uint64_t nc = cap * 2 > TEXT_MAX_BYTES ? TEXT_MAX_BYTES : cap * 2;
            unsigned char *nb = cdl_alloc(nc);
            if (!nb) {
                rc = -1;
                break;
            }
            memcpy(nb, b, len);
            cdl_free(b);
            b = nb;
            cap = nc;
        }
        int64_t r = data_file_read(&f, b + len, cap - len);
        if (r < 0) rc = -1;
        else if (r == 0) break;
        else len += (uint64_t)r;
    }
    data_file_close(&f);
    if (rc < 0) {
        cdl_free(b);
        return -1;
    }
    *buf = b;
    *n = len;
    return 0;
}

int cdl_dataset_load_text(cdl_dataset *d, const char *path, int64_t T, int bytes, int train) {
    if (!d) return cdl_fail("cdl_dataset_load_text: NULL dataset");
    memset(d, 0, sizeof *d);
    if (!path) return cdl_fail("cdl_dataset_load_text: no path");
    if (T < 1 || (uint64_t)T > CDL_DATA_MAX_LINE) return cdl_fail("%s: window length %lld is not in [1, %zu]", path,
                                                        (long long)T, CDL_DATA_MAX_LINE);
    unsigned char *b;
    uint64_t n;
    if (text_read(path, &b, &n) < 0) return -1;
    int32_t id[256], nid = 0;                 /* nid: the largest id used, plus one */
    int seen[256] = {0};
    for (uint64_t i = 0; i < n; i++) seen[b[i]] = 1;
    for (int c = 0, k = 0; c < 256; c++) {
        id[c] = bytes ? c : seen[c] ? k++ : -1;
        if (seen[c]) nid = id[c] + 1;
    }
    /* the held-out tail: a tenth, and room for one window in each split */
    uint64_t hold = n / 10 > (uint64_t)T + 1 ? n / 10 : (uint64_t)T + 1;
    if (n < hold + (uint64_t)T + 1) {
        cdl_free(b);
        return cdl_fail("%s: %llu bytes of text are too few for windows of T + 1 = %lld tokens in both the "
                        "training part and the held-out tail (at least %llu bytes)", path, (unsigned long long)n,
                        (long long)T + 1, (unsigned long long)(2 * ((uint64_t)T + 1)));
    }
    uint64_t lo = train ? 0 : n - hold, len = train ? n - hold : hold;
    int32_t *tok = cdl_alloc(len * sizeof(int32_t));
    if (!tok || data_cols(d, 2) < 0) {
        cdl_free(b);
        cdl_free(tok);
        cdl_dataset_free(d);
        return -1;
    }
    for (uint64_t i = 0; i < len; i++) tok[i] = id[b[lo + i]];
    cdl_free(b);
    d->block[0] = tok;
    /* the columns' classes are the vocabulary, not a scan of every window: d->n is
     * set after adding them, so data_add_col scans nothing */
    int64_t dims[1] = {T};
    cdl_column *x = data_add_col(d, "x", CDL_I32, 1, dims, tok, 1, 0);
    cdl_column *y = data_add_col(d, "y", CDL_I32, 1, dims, tok + 1, 1, CDL_COL_TARGET);
    x->nclasses = y->nclasses = nid;
    d->n = (int64_t)(len - (uint64_t)T);
    snprintf(d->name, sizeof d->name, "%s/%s", data_base_name(path), train ? "train" : "test");
    return 0;
}

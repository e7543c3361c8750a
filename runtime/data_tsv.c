/* data_tsv.c -- text classification data: `--data tsv:FILE`, lines `label<TAB>text`.
 *
 * Every line (raw or gzip file, UTF-8, "\n" or "\r\n") is one example: the label is
 * what comes before the first tab, the text everything after it.  Empty lines are
 * skipped; a line without a tab, with an empty label or text, or with invalid UTF-8
 * is an error "file:line: ...".  A text longer than T characters keeps its first T
 * (truncation); a shorter one is padded with id 0.
 *
 * Characters are Unicode code points numbered by a chars: vocabulary (cdl_vocab): id
 * 0 is padding, 1 a character the vocabulary lacks, 2.. the characters of the
 * training lines in code point order.  Classes are the training lines' labels in byte
 * order.  Both are built from this file's training lines, or given (a checkpoint's,
 * or the training file's for a separate test file); a label outside the given or
 * built classes is an error naming its line, an unknown character becomes id 1.
 *
 * Columns: x i32 [T] (the ids), y i32 [] (the class; the target), len i32 [] (the
 * characters kept, 1..T) and mask f32 [T] (1 for a character, 0 for padding; never
 * transformed).  Split: every tenth example (the 10th, 20th, ...) is held out, so a
 * file sorted by label still has every label in both parts.
 */
#include "data_int.h"

#include <stdlib.h>
#include <string.h>

#define TSV_BOM "\xEF\xBB\xBF"

/* The file's examples as read: per example its label (offset into lab), line and
 * first T code points (cp, T per example, len of them used). */
typedef struct tsv_rows {
    int64_t n, cap, T;
    uint32_t *cp;
    int32_t *len;
    long *line;
    size_t *lab;
    char *pool;                  /* the labels, NUL-terminated */
    size_t plen, pcap;
} tsv_rows;

static void tsv_rows_free(tsv_rows *r) {
    cdl_free(r->cp);
    cdl_free(r->len);
    cdl_free(r->line);
    cdl_free(r->lab);
    cdl_free(r->pool);
}

static int tsv_grow(tsv_rows *r, size_t need_pool) {
    if (r->n == r->cap) {
        int64_t nc = r->cap ? r->cap * 2 : 256;
        uint32_t *cp = cdl_alloc(sizeof *cp * (size_t)(nc * r->T));
        int32_t *len = cdl_alloc(sizeof *len * (size_t)nc);
        long *line = cdl_alloc(sizeof *line * (size_t)nc);
        size_t *lab = cdl_alloc(sizeof *lab * (size_t)nc);
        if (!cp || !len || !line || !lab) {
            tsv_rows_free(&(tsv_rows){.cp = cp, .len = len, .line = line, .lab = lab});
            return cdl_fail("tsv: out of memory");
        }
        if (r->n) {
            memcpy(cp, r->cp, sizeof *cp * (size_t)(r->n * r->T));
            memcpy(len, r->len, sizeof *len * (size_t)r->n);
            memcpy(line, r->line, sizeof *line * (size_t)r->n);
            memcpy(lab, r->lab, sizeof *lab * (size_t)r->n);
        }
        tsv_rows_free(&(tsv_rows){.cp = r->cp, .len = r->len, .line = r->line, .lab = r->lab});
        r->cp = cp, r->len = len, r->line = line, r->lab = lab, r->cap = nc;
    }
    if (r->plen + need_pool > r->pcap) {
        size_t nc = r->pcap ? r->pcap : 4096;
        while (nc < r->plen + need_pool) nc *= 2;
        char *p = cdl_alloc(nc);
        if (!p) return cdl_fail("tsv: out of memory");
        if (r->plen) memcpy(p, r->pool, r->plen);
        cdl_free(r->pool);
        r->pool = p, r->pcap = nc;
    }
    return 0;
}

/* One line [s, e) of `path` (line number ln) into r; -1 and a message. */
static int tsv_line(tsv_rows *r, const char *path, long ln, const char *s, const char *e) {
    const char *tab = memchr(s, '\t', (size_t)(e - s));
    if (!tab) return cdl_fail("%s:%ld: no tab: a line is label<TAB>text", path, ln);
    if (tab == s) return cdl_fail("%s:%ld: empty label before the tab", path, ln);
    if (tab + 1 == e) return cdl_fail("%s:%ld: empty text after the tab", path, ln);
    size_t ll = (size_t)(tab - s);
    if (tsv_grow(r, ll + 1) < 0) return -1;
    uint32_t *cp = r->cp + r->n * r->T;
    int32_t k = 0;
    for (const char *p = s; p < e;) {
        size_t len;
        int32_t c = cdl_utf8_next((const unsigned char *)p, (size_t)(e - p), &len);
        if (c < 0) return cdl_fail("%s:%ld: invalid UTF-8 at byte %zu of the line", path, ln, (size_t)(p - s) + 1);
        if (p > tab && k < r->T) cp[k++] = (uint32_t)c;
        p += len;
    }
    memcpy(r->pool + r->plen, s, ll);
    r->pool[r->plen + ll] = 0;
    r->lab[r->n] = r->plen;
    r->plen += ll + 1;
    r->len[r->n] = k;
    r->line[r->n++] = ln;
    return 0;
}

static int tsv_read(tsv_rows *r, const char *path) {
    data_file f;
    data_lines L;
    if (data_file_open(&f, path) < 0) return -1;
    if (data_lines_file(&L, &f, CDL_DATA_MAX_LINE) < 0) {
        data_file_close(&f);
        return -1;
    }
    const char *s, *e;
    int rc;
    while ((rc = data_lines_next(&L, &s, &e)) > 0) {
        if (L.line == 1 && e - s >= 3 && !memcmp(s, TSV_BOM, 3)) s += 3;   /* a byte-order mark */
        if (s == e) continue;
        if ((rc = tsv_line(r, path, L.line, s, e)) < 0) break;
    }
    data_lines_free(&L);
    data_file_close(&f);
    return rc < 0 ? -1 : 0;
}

/* Example k is held out (every tenth). */
static int tsv_heldout(int64_t k) { return k % 10 == 9; }

static int tsv_strcmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The classes: the given names ("a\nb\n..." in increasing byte order) or the training
 * rows' distinct labels, sorted, into *names (pointers into *store) and *nc. */
static int tsv_classes(const tsv_rows *r, const char *path, const char *given, char **store, char ***names,
                       int32_t *nc) {
    size_t cnt = 0, len = given ? strlen(given) : r->plen;
    if (!(*store = cdl_alloc(len + 1))) return -1;
    if (given) {
        memcpy(*store, given, len + 1);
        cnt = 1;
        for (char *p = *store; *p; p++) cnt += *p == '\n';
    } else {
        memcpy(*store, r->pool, len);
        cnt = (size_t)r->n;
    }
    if (!(*names = cdl_alloc(sizeof **names * (cnt ? cnt : 1)))) return -1;
    size_t k = 0;
    if (given) {
        for (char *p = *store, *q; p; p = q) {
            if ((q = strchr(p, '\n'))) *q++ = 0;
            (*names)[k++] = p;
        }
    } else {
        for (int64_t i = 0; i < r->n; i++)
            if (!tsv_heldout(i)) (*names)[k++] = *store + r->lab[i];
        qsort(*names, k, sizeof **names, tsv_strcmp);
    }
    size_t u = 0;
    for (size_t i = 0; i < k; i++) {
        int c = u ? strcmp((*names)[u - 1], (*names)[i]) : -1;
        if (given && (!*(*names)[i] || c >= 0))
            return cdl_fail("%s: the class names given are not distinct, non-empty and in increasing order", path);
        if (c) (*names)[u++] = (*names)[i];
    }
    if (u == 0) return cdl_fail("%s: no training lines, so no classes", path);
    *nc = (int32_t)u;
    return 0;
}

/* The vocabulary: given (a chars: one) or the training rows' characters. */
static int tsv_vocab(const tsv_rows *r, const char *path, const char *given, cdl_vocab *v) {
    if (given) {
        if (cdl_vocab_parse(v, given, path) < 0) return -1;
        if (v->kind != CDL_VOCAB_CHARS) {
            cdl_vocab_free(v);
            return cdl_fail("%s: tsv: numbers characters, but the vocabulary given is %.12s...", path, given);
        }
        return 0;
    }
    unsigned char *seen = cdl_alloc(0x110000 / 8);
    if (!seen) return -1;
    memset(seen, 0, 0x110000 / 8);
    for (int64_t i = 0; i < r->n; i++)
        for (int32_t k = 0; !tsv_heldout(i) && k < r->len[i]; k++) {
            uint32_t c = r->cp[i * r->T + k];
            seen[c >> 3] |= (unsigned char)(1u << (c & 7));
        }
    int32_t n = 2;
    for (uint32_t c = 0; c < 0x110000; c++) n += seen[c >> 3] >> (c & 7) & 1;
    v->kind = CDL_VOCAB_CHARS;
    if (!(v->tok = cdl_alloc(sizeof *v->tok * (size_t)n))) {
        cdl_free(seen);
        return -1;
    }
    v->tok[0] = v->tok[1] = 0;
    v->n = 2;
    for (uint32_t c = 0; c < 0x110000; c++)
        if (seen[c >> 3] >> (c & 7) & 1) v->tok[v->n++] = c;
    cdl_free(seen);
    return 0;
}

/* The class names, one a line (cdl_alloc'd). */
static char *tsv_join(char *const *names, int32_t nc) {
    size_t len = 1;
    for (int32_t i = 0; i < nc; i++) len += strlen(names[i]) + 1;
    char *s = cdl_alloc(len), *p = s;
    for (int32_t i = 0; s && i < nc; i++) p += sprintf(p, "%s%s", i ? "\n" : "", names[i]);
    return s;
}

/* The dataset's blocks and columns from the rows of the split; -1 and a message. */
static int tsv_build(cdl_dataset *d, const tsv_rows *r, const char *path, int split, const cdl_vocab *v,
                     char *const *names, int32_t nc) {
    int64_t T = r->T, n = 0;
    for (int64_t i = 0; i < r->n; i++) n += split == CDL_TSV_ALL || tsv_heldout(i) == (split == CDL_TSV_HELDOUT);
    int32_t *x = cdl_alloc(sizeof *x * (size_t)(n * T + 1)), *yl = cdl_alloc(sizeof *yl * (size_t)(2 * n + 1));
    float *mask = cdl_alloc(sizeof *mask * (size_t)(n * T + 1));
    d->block[0] = x, d->block[1] = yl, d->block[2] = mask;
    if (!x || !yl || !mask || data_cols(d, 4) < 0) return -1;
    int64_t k = 0;
    for (int64_t i = 0; i < r->n; i++) {
        if (!(split == CDL_TSV_ALL || tsv_heldout(i) == (split == CDL_TSV_HELDOUT))) continue;
        const char *lab = r->pool + r->lab[i];
        char *const *hit = bsearch(&lab, names, (size_t)nc, sizeof *names, tsv_strcmp);
        if (!hit)
            return cdl_fail("%s:%ld: label '%.60s' is not one of the %d classes of the training lines", path,
                            r->line[i], lab, (int)nc);
        yl[k] = (int32_t)(hit - names);
        yl[n + k] = r->len[i];
        for (int64_t t = 0; t < T; t++) {
            int32_t id = t < r->len[i] ? cdl_vocab_id(v, r->cp[i * T + t]) : 0;
            x[k * T + t] = t < r->len[i] && id < 0 ? 1 : id;
            mask[k * T + t] = t < r->len[i] ? 1.0f : 0.0f;
        }
        k++;
    }
    int64_t dims[1] = {T};
    cdl_column *cx = data_add_col(d, "x", CDL_I32, 1, dims, x, T, 0);
    cdl_column *cy = data_add_col(d, "y", CDL_I32, 0, NULL, yl, 1, CDL_COL_TARGET);
    cdl_column *cl = data_add_col(d, "len", CDL_I32, 0, NULL, yl + n, 1, 0);
    data_add_col(d, "mask", CDL_F32, 1, dims, mask, T, CDL_COL_TARGET);
    cx->nclasses = v->n;
    cy->nclasses = nc;
    cl->nclasses = (int32_t)T + 1;
    d->n = n;
    snprintf(d->name, sizeof d->name, "%.50s/%s", data_base_name(path),
             split == CDL_TSV_TRAIN ? "train" : split == CDL_TSV_HELDOUT ? "test" : "all");
    return 0;
}

int cdl_dataset_load_tsv(cdl_dataset *d, const char *path, int64_t T, int split, const char *vocab,
                         const char *labels) {
    if (!d) return cdl_fail("cdl_dataset_load_tsv: NULL dataset");
    memset(d, 0, sizeof *d);
    if (!path) return cdl_fail("cdl_dataset_load_tsv: no path");
    if (T < 1 || T > (1 << 20)) return cdl_fail("%s: text length T = %lld is not in [1, 2^20]", path, (long long)T);
    if (split != CDL_TSV_TRAIN && split != CDL_TSV_HELDOUT && split != CDL_TSV_ALL)
        return cdl_fail("%s: bad split %d", path, split);
    tsv_rows r = {.T = T};
    cdl_vocab v = {0};
    char *store = NULL, **names = NULL;
    int32_t nc = 0;
    int rc = tsv_read(&r, path);
    if (rc == 0 && r.n == 0) rc = cdl_fail("%s: no examples (lines label<TAB>text)", path);
    if (rc == 0) rc = tsv_classes(&r, path, labels, &store, &names, &nc);
    if (rc == 0) rc = tsv_vocab(&r, path, vocab, &v);
    if (rc == 0) rc = tsv_build(d, &r, path, split, &v, names, nc);
    if (rc == 0 && (!(d->vocab = cdl_vocab_format(&v)) || !(d->labels = tsv_join(names, nc)))) rc = -1;
    if (rc < 0) cdl_dataset_free(d);
    tsv_rows_free(&r);
    cdl_vocab_free(&v);
    cdl_free(store);
    cdl_free(names);
    return rc < 0 ? -1 : 0;
}

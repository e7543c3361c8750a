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
 * training split; both splits number tokens with the whole file's vocabulary, or with
 * a given one (a checkpoint's: then a byte it lacks is an error naming its line).
 *
 * Vocabularies (cdl_vocab) and their text form, the checkpoint's "vocab" metadata,
 * are here too: tsv:FILE (data_tsv.c) numbers characters with one.
 */
#include "data_int.h"

#include <stdlib.h>
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

/* ---------------------------------------------------------------- vocabularies */

#define VOCAB_MAX_CHARS (1 << 20)     /* more than every code point */

void cdl_vocab_free(cdl_vocab *v) {
    if (!v) return;
    cdl_free(v->tok);
    memset(v, 0, sizeof *v);
}

int cdl_vocab_parse(cdl_vocab *v, const char *s, const char *what) {
    memset(v, 0, sizeof *v);
    if (!s) return cdl_fail("%s: no vocabulary", what);
    int chars = !strncmp(s, "chars:", 6);
    if (!strcmp(s, "bytes")) v->kind = CDL_VOCAB_BYTES, v->n = 256;
    else if (!strncmp(s, "text:", 5) || chars) v->kind = chars ? CDL_VOCAB_CHARS : CDL_VOCAB_TEXT;
    else return cdl_fail("%s: vocabulary '%.20s...' is not bytes, text:... or chars:...", what, s);
    const char *p = s + (chars ? 6 : 5);
    int32_t cnt = v->kind == CDL_VOCAB_BYTES ? 0 : (int32_t)(chars ? 2 : 0) + (*p != 0);
    for (const char *q = p; v->kind != CDL_VOCAB_BYTES && *q; q++) cnt += *q == ',';
    if (v->kind != CDL_VOCAB_BYTES) v->n = cnt;
    if (!*p && v->kind != CDL_VOCAB_BYTES) {
        memset(v, 0, sizeof *v);
        return cdl_fail("%s: empty vocabulary", what);
    }
    if (v->n > VOCAB_MAX_CHARS + 2 || !(v->tok = cdl_alloc(sizeof *v->tok * (size_t)(v->n ? v->n : 1)))) {
        cdl_vocab_free(v);
        return cdl_fail("%s: vocabulary too large", what);
    }
    uint32_t max = chars ? 0x10FFFF : 0xFF;
    for (int32_t i = 0; i < v->n; i++) {
        if (v->kind == CDL_VOCAB_BYTES || (chars && i < 2)) {
            v->tok[i] = v->kind == CDL_VOCAB_BYTES ? (uint32_t)i : 0;
            continue;
        }
        char *end;
        unsigned long x = strtoul(p, &end, 16);
        int first = i == (chars ? 2 : 0);
        if (end == p || end - p > 6 || x > max || (!first && x <= v->tok[i - 1]) || (*end && *end != ',') ||
            (*end == ',' && i == v->n - 1)) {
            cdl_vocab_free(v);
            return cdl_fail("%s: vocabulary: entry %d is not a hex %s above the previous one", what, (int)i,
                            chars ? "code point" : "byte");
        }
        v->tok[i] = (uint32_t)x;
        p = *end ? end + 1 : end;
    }
    return 0;
}

char *cdl_vocab_format(const cdl_vocab *v) {
    if (v->kind == CDL_VOCAB_BYTES) {
        char *s = cdl_alloc(6);
        if (s) memcpy(s, "bytes", 6);
        return s;
    }
    size_t cap = 8 + 7 * (size_t)v->n, k = 0;
    char *s = cdl_alloc(cap);
    if (!s) return NULL;
    k += (size_t)snprintf(s, cap, "%s", v->kind == CDL_VOCAB_CHARS ? "chars:" : "text:");
    for (int32_t i = v->kind == CDL_VOCAB_CHARS ? 2 : 0, first = 1; i < v->n; i++, first = 0)
        k += (size_t)snprintf(s + k, cap - k, first ? "%02x" : ",%02x", v->tok[i]);
    return s;
}

int32_t cdl_vocab_id(const cdl_vocab *v, uint32_t c) {
    if (v->kind == CDL_VOCAB_BYTES) return c < 256 ? (int32_t)c : -1;
    int32_t lo = v->kind == CDL_VOCAB_CHARS ? 2 : 0, hi = v->n - 1;
    while (lo <= hi) {                     /* tok is increasing */
        int32_t mid = lo + (hi - lo) / 2;
        if (v->tok[mid] == c) return mid;
        if (v->tok[mid] < c) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

int cdl_vocab_put(const cdl_vocab *v, int32_t id, char *b) {
    if (id < 0 || id >= v->n || (v->kind == CDL_VOCAB_CHARS && id < 2)) return 0;
    uint32_t c = v->tok[id];
    if (v->kind != CDL_VOCAB_CHARS || c < 0x80) return b[0] = (char)c, 1;
    if (c < 0x800) return b[0] = (char)(0xC0 | c >> 6), b[1] = (char)(0x80 | (c & 63)), 2;
    if (c < 0x10000)
        return b[0] = (char)(0xE0 | c >> 12), b[1] = (char)(0x80 | (c >> 6 & 63)), b[2] = (char)(0x80 | (c & 63)), 3;
    b[0] = (char)(0xF0 | c >> 18);
    b[1] = (char)(0x80 | (c >> 12 & 63));
    b[2] = (char)(0x80 | (c >> 6 & 63));
    b[3] = (char)(0x80 | (c & 63));
    return 4;
}

int32_t cdl_utf8_next(const unsigned char *s, size_t n, size_t *len) {
    *len = 1;
    unsigned c = s[0];
    if (c < 0x80) return (int32_t)c;
    size_t k = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 0;
    if (!k || n < k) return -1;
    uint32_t u = c & (0x7F >> k);
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return -1;
        u = u << 6 | (s[i] & 0x3F);
    }
    if ((k == 3 && (u < 0x800 || (u >= 0xD800 && u < 0xE000))) || (k == 4 && (u < 0x10000 || u > 0x10FFFF)))
        return -1;
    *len = k;
    return (int32_t)u;
}

/* ---------------------------------------------------------------- text:FILE */

/* The byte -> id table of the file's bytes b[0..n): from vocab (its text form) when
 * given, else the file's distinct bytes (bytes: their values); the vocabulary used
 * into *vs (cdl_alloc'd).  id[c] is -1 for a byte the vocabulary lacks. */
static int text_ids(const char *path, const unsigned char *b, uint64_t n, int bytes, const char *vocab,
                    int32_t *id, int32_t *nid, char **vs) {
    cdl_vocab v = {0};
    if (vocab) {
        if (cdl_vocab_parse(&v, vocab, path) < 0) return -1;
        if ((v.kind == CDL_VOCAB_BYTES) != bytes || v.kind == CDL_VOCAB_CHARS) {
            cdl_vocab_free(&v);
            return cdl_fail("%s: %s, but the vocabulary given is %.12s...", path,
                            bytes ? "bytes: numbers tokens by byte value" : "text: numbers the bytes of a text",
                            vocab);
        }
    } else {
        int seen[256] = {0};
        for (uint64_t i = 0; i < n; i++) seen[b[i]] = 1;
        v.kind = bytes ? CDL_VOCAB_BYTES : CDL_VOCAB_TEXT;
        if (!(v.tok = cdl_alloc(sizeof *v.tok * 256))) return -1;
        for (int c = 0; c < 256; c++)
            if (bytes || seen[c]) v.tok[v.n++] = (uint32_t)c;
    }
    for (int c = 0; c < 256; c++) id[c] = cdl_vocab_id(&v, (uint32_t)c);
    *nid = v.n;
    *vs = cdl_vocab_format(&v);
    cdl_vocab_free(&v);
    return *vs ? 0 : -1;
}

/* The message for byte i of b, which the vocabulary lacks: its line and character. */
static int text_unknown(const char *path, const unsigned char *b, uint64_t i) {
    long line = 1;
    for (uint64_t k = 0; k < i; k++) line += b[k] == '\n';
    if (b[i] >= 0x20 && b[i] < 0x7F)
        return cdl_fail("%s:%ld: character '%c' (byte 0x%02x) is not in the vocabulary", path, line, b[i], b[i]);
    return cdl_fail("%s:%ld: byte 0x%02x is not in the vocabulary", path, line, b[i]);
}

int cdl_dataset_load_text(cdl_dataset *d, const char *path, int64_t T, int bytes, int train) {
    return cdl_dataset_load_text_vocab(d, path, T, bytes, train, NULL);
}

int cdl_dataset_load_text_vocab(cdl_dataset *d, const char *path, int64_t T, int bytes, int train,
                                const char *vocab) {
    if (!d) return cdl_fail("cdl_dataset_load_text: NULL dataset");
    memset(d, 0, sizeof *d);
    if (!path) return cdl_fail("cdl_dataset_load_text: no path");
    if (T < 1 || (uint64_t)T > CDL_DATA_MAX_LINE) return cdl_fail("%s: window length %lld is not in [1, %zu]", path,
                                                        (long long)T, CDL_DATA_MAX_LINE);
    unsigned char *b;
    uint64_t n;
    if (text_read(path, &b, &n) < 0) return -1;
    int32_t id[256], nid = 0;                 /* nid: the columns' classes */
    char *vs = NULL;
    if (text_ids(path, b, n, bytes, vocab, id, &nid, &vs) < 0) {
        cdl_free(b);
        return -1;
    }
    if (bytes) nid = 0;                       /* bytes: the classes reach the largest byte used */
    for (uint64_t i = 0; i < n; i++)
        if (bytes && b[i] >= nid) nid = b[i] + 1;
        else if (id[b[i]] < 0) {
            text_unknown(path, b, i);
            cdl_free(b);
            cdl_free(vs);
            return -1;
        }
    /* the held-out tail: a tenth, and room for one window in each split */
    uint64_t hold = n / 10 > (uint64_t)T + 1 ? n / 10 : (uint64_t)T + 1;
    if (n < hold + (uint64_t)T + 1) {
        cdl_free(b);
        cdl_free(vs);
        return cdl_fail("%s: %llu bytes of text are too few for windows of T + 1 = %lld tokens in both the "
                        "training part and the held-out tail (at least %llu bytes)", path, (unsigned long long)n,
                        (long long)T + 1, (unsigned long long)(2 * ((uint64_t)T + 1)));
    }
    uint64_t lo = train ? 0 : n - hold, len = train ? n - hold : hold;
    int32_t *tok = cdl_alloc(len * sizeof(int32_t));
    if (!tok || data_cols(d, 2) < 0) {
        cdl_free(b);
        cdl_free(tok);
        cdl_free(vs);
        cdl_dataset_free(d);
        return -1;
    }
    for (uint64_t i = 0; i < len; i++) tok[i] = id[b[lo + i]];
    cdl_free(b);
    d->block[0] = tok;
    d->vocab = vs;
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

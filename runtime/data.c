/* data.c -- datasets (IDX, CSV, named, in-memory), per-example transforms, and the
 * batch loader with worker threads.
 *
 * Datasets are read whole into memory (data_file.c: regular files only, raw or gzip,
 * lines of bounded length), validated strictly, and kept as floats.  The loader hands
 * out batches in order; batch b of epoch e holds examples perm_e[b * batch ...], where perm_e is a Fisher-Yates
 * shuffle driven by Philox keyed by (seed, e), and every random transform of example i
 * is keyed by (seed, e, i).  So the batches depend on (seed, epoch) only, never on the
 * number of workers or on timing.
 *
 * Threads: workers claim batch indices in order under one mutex and produce them into
 * a ring of `prefetch` slots (batch b goes to slot b % nslots, claimable only once the
 * consumer has taken batch b - nslots: the bounded prefetch queue).  The consumer
 * waits for its slot, copies the batch out and frees the slot.  A failed batch is
 * reported by the consumer as -1 with the worker's message.
 */
#include "data_int.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define DATA_MAX_LABEL (1 << 20)               /* CSV and in-memory labels */
#define DATA_DEFAULT_DIR "/usr/share/datasets"
#define GZ_MAX_RATIO 1040                      /* deflate expands at most ~1032:1 */

/* RNG streams of the loader (cdl_rng_key.stream); the example index is or'ed in. */
#define STREAM_SHUFFLE 0xDA7A000000000000ull
#define STREAM_CROP    0xDA7B000000000000ull
#define STREAM_NOISE   0xDA7C000000000000ull

/* ---------------------------------------------------------------- files */

/* The last path component, for dataset names. */
static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* ---------------------------------------------------------------- IDX */

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* The 4-byte magic: 0, 0, type 0x08 (ubyte), dimension count (1 for labels,
 * 2..CDL_MAXDIM+1 for images).  Sets *nd. */
static int idx_magic(const unsigned char *b, size_t len, const char *what, int labels, int *nd) {
    if (len < 4) return cdl_fail("%s: %zu bytes, too short for an IDX header", what, len);
    uint32_t magic = be32(b);
    if (b[0] != 0 || b[1] != 0)
        return cdl_fail("%s: bad magic number 0x%08x: not an IDX file (expected 0x%08x)", what, magic,
                        labels ? 0x801u : 0x803u);
    if (b[2] != 0x08)
        return cdl_fail("%s: IDX element type 0x%02x is not unsigned byte (0x08)", what, b[2]);
    int k = b[3];
    if (labels && k != 1)
        return cdl_fail("%s: magic 0x%08x: a label file has 1 dimension (0x00000801), not %d", what, magic, k);
    if (!labels && (k < 2 || k > CDL_MAXDIM + 1))
        return cdl_fail("%s: magic 0x%08x: an image file has 2..%d dimensions (0x00000803 for images), not %d",
                        what, magic, CDL_MAXDIM + 1, k);
    *nd = k;
    return 0;
}

/* The nd big-endian dimensions at b (len bytes available): each > 0, product
 * (overflow-checked) in *total. */
static int idx_dims(const unsigned char *b, size_t len, const char *what, int nd, int64_t *dims,
                    uint64_t *total) {
    if (len < 4 * (size_t)nd) return cdl_fail("%s: truncated IDX header", what);
    uint64_t t = 1;
    for (int i = 0; i < nd; i++) {
        uint32_t v = be32(b + 4 * i);
        if (v == 0) return cdl_fail("%s: IDX dimension %d is 0", what, i);
        if (t > ((uint64_t)1 << 40) / v) return cdl_fail("%s: IDX dimensions overflow", what);
        t *= v;
        dims[i] = v;
    }
    *total = t;
    return 0;
}

/* Widen total bytes that sit at the end of the 4 * total byte block out into 4-byte
 * values, in place and front to back (safe: value i is written at bytes [4i, 4i+4),
 * which never reaches the unread bytes 3 * total + i + 1 ...).  Images become floats
 * v / 255, labels int32. */
static void idx_widen(void *block, uint64_t total, int labels) {
    const unsigned char *src = (const unsigned char *)block + 3 * total;
    if (labels) {
        int32_t *y = block;
        for (uint64_t i = 0; i < total; i++) y[i] = src[i];
        return;
    }
    float lut[256];
    for (int v = 0; v < 256; v++) lut[v] = (float)v / 255.0f;
    float *x = block;
    for (uint64_t i = 0; i < total; i++) x[i] = lut[src[i]];
}

/* One IDX file read (through data_file: raw or gzip) into a new block of 4-byte values
 * (see idx_widen), the raw bytes read straight into the block's tail: no second copy
 * of the file. */
static int idx_read(const char *path, int labels, int *nd, int64_t *dims, uint64_t *total, void **out) {
    *out = NULL;
    data_file f;
    if (data_file_open(&f, path) < 0) return -1;
    unsigned char h[4 * (CDL_MAXDIM + 2)];
    unsigned char *blk = NULL;
    int rc = -1;
    int64_t r = data_file_read(&f, h, 4);
    if (r < 0 || idx_magic(h, (size_t)r, path, labels, nd) < 0) goto out;
    if ((r = data_file_read(&f, h + 4, 4 * (size_t)*nd)) < 0) goto out;
    if (idx_dims(h + 4, (size_t)r, path, *nd, dims, total) < 0) goto out;
    if (*total > SIZE_MAX / 4) {
        cdl_fail("%s: too large to load", path);
        goto out;
    }
    /* Never allocate what the file cannot hold: a raw file's size is exact, a gzip
     * file expands at most GZ_MAX_RATIO times. */
    uint64_t hb = 4 + 4 * (uint64_t)*nd, fs = f.size;
    if (!f.gz && fs - hb < *total) {
        cdl_fail("%s: truncated: %llu data bytes, the header promises %llu", path, (unsigned long long)(fs - hb),
                 (unsigned long long)*total);
        goto out;
    }
    if (f.gz && *total / GZ_MAX_RATIO > fs) {
        cdl_fail("%s: truncated: the header promises %llu data bytes, more than %llu compressed bytes can hold",
                 path, (unsigned long long)*total, (unsigned long long)fs);
        goto out;
    }
    if (!(blk = cdl_alloc((size_t)*total * 4))) {
        cdl_fail("%s: out of memory (%llu bytes)", path, (unsigned long long)*total * 4);
        goto out;
    }
    if ((r = data_file_read(&f, blk + 3 * *total, (size_t)*total)) < 0) goto out;
    if ((uint64_t)r < *total) {
        cdl_fail("%s: truncated: %llu data bytes, the header promises %llu", path, (unsigned long long)r,
                 (unsigned long long)*total);
        goto out;
    }
    unsigned char extra[4096];
    uint64_t more = 0;
    while ((r = data_file_read(&f, extra, sizeof extra)) > 0) more += (uint64_t)r;
    if (r < 0) goto out;
    if (more) {
        cdl_fail("%s: %llu bytes of trailing garbage after the data", path, (unsigned long long)more);
        goto out;
    }
    idx_widen(blk, *total, labels);
    rc = 0;
out:
    data_file_close(&f);
    if (rc < 0) cdl_free(blk);
    else *out = blk;
    return rc;
}

/* Assemble d from image dims/values and optional labels (ownership taken). */
static int idx_finish(cdl_dataset *d, int nd, const int64_t *dims, float *x, int64_t nlab, int32_t *y,
                      const char *iname, const char *lname) {
    if (y && nlab != dims[0]) {
        cdl_free(x);
        cdl_free(y);
        return cdl_fail("%s: %lld labels, but %s has %lld images", lname, (long long)nlab, iname,
                        (long long)dims[0]);
    }
    int maxl = -1;
    for (int64_t i = 0; y && i < nlab; i++)
        if (y[i] > maxl) maxl = y[i];
    d->n = dims[0];
    d->feat = 1;
    for (int i = 1; i < nd; i++) d->feat *= dims[i];
    d->rank = nd - 1;
    for (int i = 1; i < nd; i++) d->dims[i - 1] = dims[i];
    d->x = x;
    d->y = y;
    d->nclasses = y ? maxl + 1 : 0;
    snprintf(d->name, sizeof d->name, "%s", base_name(iname));
    return 0;
}

/* Raw IDX bytes in memory: header checks, exact size, then widen a copy. */
static int idx_mem(const unsigned char *b, size_t len, const char *what, int labels, int *nd, int64_t *dims,
                   uint64_t *total, void **out) {
    *out = NULL;
    if (idx_magic(b, len, what, labels, nd) < 0) return -1;
    if (idx_dims(b + 4, len - 4, what, *nd, dims, total) < 0) return -1;
    size_t h = 4 + 4 * (size_t)*nd;
    if (len - h < *total)
        return cdl_fail("%s: truncated: %zu data bytes, the header promises %llu", what, len - h,
                        (unsigned long long)*total);
    if (len - h > *total)
        return cdl_fail("%s: %llu bytes of trailing garbage after the data", what,
                        (unsigned long long)(len - h - *total));
    unsigned char *blk = cdl_alloc((size_t)*total * 4);
    if (!blk) return -1;
    memcpy(blk + 3 * *total, b + h, (size_t)*total);
    idx_widen(blk, *total, labels);
    *out = blk;
    return 0;
}

int cdl_dataset_parse_idx(cdl_dataset *d, const void *img, size_t img_len, const void *lab,
                          size_t lab_len, const char *what) {
    if (!d) return cdl_fail("cdl_dataset_parse_idx: NULL dataset");
    memset(d, 0, sizeof *d);
    if (!what) what = "idx";
    char in[96], ln[96];
    snprintf(in, sizeof in, "%s (images)", what);
    snprintf(ln, sizeof ln, "%s (labels)", what);
    if (!img) return cdl_fail("%s: no data", in);
    int nd, ld;
    int64_t dims[CDL_MAXDIM + 1], ldims[1];
    uint64_t tot, ltot;
    void *x, *y = NULL;
    if (idx_mem(img, img_len, in, 0, &nd, dims, &tot, &x) < 0) return -1;
    if (lab && idx_mem(lab, lab_len, ln, 1, &ld, ldims, &ltot, &y) < 0) {
        cdl_free(x);
        return -1;
    }
    return idx_finish(d, nd, dims, x, y ? ldims[0] : 0, y, in, ln);
}

int cdl_dataset_load_idx(cdl_dataset *d, const char *images, const char *labels) {
    if (!d) return cdl_fail("cdl_dataset_load_idx: NULL dataset");
    memset(d, 0, sizeof *d);
    if (!images) return cdl_fail("cdl_dataset_load_idx: no image file");
    int nd, ld;
    int64_t dims[CDL_MAXDIM + 1], ldims[1];
    uint64_t tot, ltot;
    void *x, *y = NULL;
    if (idx_read(images, 0, &nd, dims, &tot, &x) < 0) return -1;
    if (labels && idx_read(labels, 1, &ld, ldims, &ltot, &y) < 0) {
        cdl_free(x);
        return -1;
    }
    return idx_finish(d, nd, dims, x, y ? ldims[0] : 0, y, images, labels ? labels : "");
}

/* ---------------------------------------------------------------- CSV */

/* Parse field [s, e) as a number: 0, -1 if it is not one, -2 if it is not finite as a
 * float. */
static int csv_number(const char *s, const char *e, double *v) {
    while (s < e && (*s == ' ' || *s == '\t')) s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) e--;
    char t[128];
    size_t k = (size_t)(e - s);
    if (k == 0 || k >= sizeof t) return -1;
    memcpy(t, s, k);
    t[k] = 0;
    double x;
    int rc = cdl_parse_f64(t, &x);
    if (rc < 0) return rc;
    if (!(fabs(x) <= FLT_MAX)) return CDL_PARSE_RANGE;
    *v = x;
    return 0;
}

/* Columns of line [s, e). */
static int csv_cols(const char *s, const char *e) {
    int c = 1;
    for (; s < e; s++) c += *s == ',';
    return c;
}

static int csv_blank(const char *s, const char *e) {
    for (; s < e; s++)
        if (*s != ' ' && *s != '\t') return 0;
    return 1;
}

/* Parse every numeric field of line [s, e) (ncol columns) into row/label; -1 and a
 * message "path:line: reason". */
static int csv_row(const char *path, long line, const char *s, const char *e, int ncol, int lcol,
                   float *row, int32_t *label) {
    int c = 0, f = 0;
    const char *fs = s;
    for (const char *q = s;; q++) {
        if (q < e && *q != ',') continue;
        if (c >= ncol) break;
        double v;
        int nr = csv_number(fs, q, &v);
        if (nr < 0) {
            const char *a = fs, *b = q;
            while (a < b && (*a == ' ' || *a == '\t')) a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
            if (a == b) return cdl_fail("%s:%ld: column %d is empty", path, line, c + 1);
            return cdl_fail("%s:%ld: column %d: '%.*s' is %s", path, line, c + 1, (int)(b - a > 40 ? 40 : b - a),
                            a, nr == -2 ? "out of float range" : "not a number");
        }
        if (c == lcol) {
            if (v != floor(v) || v < 0 || v >= DATA_MAX_LABEL)
                return cdl_fail("%s:%ld: label %g is not an integer in [0, %d)", path, line, v, DATA_MAX_LABEL);
            *label = (int32_t)v;
        } else {
            row[f++] = (float)v;
        }
        c++;
        fs = q + 1;
        if (q >= e) break;
    }
    return 0;
}

/* The rows being parsed: x (cap * feat floats) and y (cap labels), grown by doubling. */
typedef struct csv_acc {
    float *x;
    int32_t *y;
    int64_t rows, cap, feat;
} csv_acc;

/* Room for one more row; -1 and a message. */
static int csv_grow(csv_acc *a, int with_y, const char *path) {
    if (a->rows < a->cap) return 0;
    int64_t nc = a->cap < 1024 ? 1024 : a->cap * 2;
    if ((uint64_t)nc > SIZE_MAX / sizeof(float) / (uint64_t)a->feat) return cdl_fail("%s: too large", path);
    float *x = cdl_alloc((size_t)(nc * a->feat) * sizeof(float));
    int32_t *y = with_y ? cdl_alloc((size_t)nc * sizeof(int32_t)) : NULL;
    if (!x || (with_y && !y)) {
        cdl_free(x);
        cdl_free(y);
        return cdl_fail("%s: out of memory (%lld rows of %lld values)", path, (long long)nc, (long long)a->feat);
    }
    if (a->rows) memcpy(x, a->x, (size_t)(a->rows * a->feat) * sizeof(float));
    if (a->rows && with_y) memcpy(y, a->y, (size_t)a->rows * sizeof(int32_t));
    cdl_free(a->x);
    cdl_free(a->y);
    a->x = x;
    a->y = y;
    a->cap = nc;
    return 0;
}

/* The first non-blank line of L (a UTF-8 byte-order mark at the very start dropped) in
 * [*s, *e); 1, 0 for an empty file, -1. */
static int csv_first_line(data_lines *L, const char **s, const char **e) {
    int r;
    while ((r = data_lines_next(L, s, e)) > 0) {
        if (L->line == 1 && *e - *s >= 3 && !memcmp(*s, "\xEF\xBB\xBF", 3)) *s += 3;
        if (!csv_blank(*s, *e)) return 1;
    }
    return r;
}

/* Does line [s, e) look like a header: is any field not a number? */
static int csv_is_header(const char *s, const char *e) {
    const char *a = s;
    for (const char *c = s;; c++) {
        if (c < e && *c != ',') continue;
        double v;
        if (csv_number(a, c, &v) < 0) return 1;
        a = c + 1;
        if (c >= e) return 0;
    }
}

/* The whole CSV from L into d (see cdl.h); one pass, rows kept as they are parsed. */
static int csv_parse(cdl_dataset *d, data_lines *L, const char *path, int label_col, int header) {
    const char *s, *e;
    csv_acc a = {0};
    int rc = -1, r = csv_first_line(L, &s, &e);
    if (r <= 0) {
        if (r == 0) cdl_fail("%s: empty file", path);
        return -1;
    }
    long first_line = L->line;
    int ncol = csv_cols(s, e);
    if (header == -1) header = csv_is_header(s, e);
    int lcol = label_col == CDL_CSV_LAST ? ncol - 1 : label_col;
    if (lcol >= ncol) return cdl_fail("%s:%ld: label column %d, but the file has %d columns", path, first_line, lcol, ncol);
    a.feat = ncol - (lcol >= 0);
    if (a.feat < 1) return cdl_fail("%s:%ld: no feature columns", path, first_line);
    int maxl = -1, have = !header;                   /* have: [s, e) is a data line */
    for (;;) {
        if (!have) {
            if ((r = data_lines_next(L, &s, &e)) <= 0) break;
            if (csv_blank(s, e)) continue;
        }
        have = 0;
        if (memchr(s, 0, (size_t)(e - s))) {
            cdl_fail("%s:%ld: binary data (NUL byte) in a CSV file", path, L->line);
            goto out;
        }
        int nc = csv_cols(s, e);
        if (nc != ncol) {
            cdl_fail("%s:%ld: %d columns, expected %d", path, L->line, nc, ncol);
            goto out;
        }
        if (csv_grow(&a, lcol >= 0, path) < 0) goto out;
        int32_t lab = 0;
        if (csv_row(path, L->line, s, e, ncol, lcol, a.x + a.rows * a.feat, &lab) < 0) goto out;
        if (a.y) {
            a.y[a.rows] = lab;
            if (lab > maxl) maxl = lab;
        }
        a.rows++;
    }
    if (r < 0) goto out;
    if (a.rows == 0) {
        cdl_fail("%s: no data rows", path);
        goto out;
    }
    d->n = a.rows;
    d->feat = a.feat;
    d->rank = 1;
    d->dims[0] = a.feat;
    d->x = a.x;
    d->y = a.y;
    d->nclasses = a.y ? maxl + 1 : 0;
    snprintf(d->name, sizeof d->name, "%s", base_name(path));
    a.x = NULL;
    a.y = NULL;
    rc = 0;
out:
    cdl_free(a.x);
    cdl_free(a.y);
    return rc;
}

/* The label column and header flag are sane; -1 and a message. */
static int csv_check_args(const char *path, int label_col, int header) {
    if (label_col < CDL_CSV_LAST || header < -1 || header > 1)
        return cdl_fail("%s: bad label column %d or header flag %d", path, label_col, header);
    return 0;
}

int cdl_dataset_parse_csv(cdl_dataset *d, const char *text, size_t len, const char *path, int label_col,
                          int header) {
    if (!d) return cdl_fail("cdl_dataset_parse_csv: NULL dataset");
    memset(d, 0, sizeof *d);
    if (!path) path = "csv";
    if (!text && len) return cdl_fail("%s: no text", path);
    if (csv_check_args(path, label_col, header) < 0) return -1;
    data_lines L;
    data_lines_mem(&L, text, len, path, CDL_DATA_MAX_LINE);
    return csv_parse(d, &L, path, label_col, header);
}

int cdl_dataset_load_csv(cdl_dataset *d, const char *path, int label_col, int header) {
    if (!d) return cdl_fail("cdl_dataset_load_csv: NULL dataset");
    memset(d, 0, sizeof *d);
    if (!path) return cdl_fail("cdl_dataset_load_csv: no path");
    if (csv_check_args(path, label_col, header) < 0) return -1;
    data_file f;
    data_lines L;
    if (data_file_open(&f, path) < 0) return -1;
    int rc = data_lines_file(&L, &f, CDL_DATA_MAX_LINE);
    if (rc == 0) rc = csv_parse(d, &L, path, label_col, header);
    data_lines_free(&L);
    data_file_close(&f);
    return rc;
}

/* ---------------------------------------------------------------- named datasets */

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir/base.gz or dir/base into out; 0 if one exists. */
static int find_idx(char *out, size_t n, const char *dir, const char *base) {
    snprintf(out, n, "%s/%s.gz", dir, base);
    if (file_exists(out)) return 0;
    snprintf(out, n, "%s/%s", dir, base);
    return file_exists(out) ? 0 : -1;
}

int cdl_dataset_open(cdl_dataset *d, const char *name, int train) {
    if (!d) return cdl_fail("cdl_dataset_open: NULL dataset");
    memset(d, 0, sizeof *d);
    if (!name) return cdl_fail("cdl_dataset_open: no dataset name");
    if (strncmp(name, "csv:", 4) == 0) return cdl_dataset_load_csv(d, name + 4, CDL_CSV_LAST, -1);
    const char *colon = strchr(name, ':');
    size_t bl = colon ? (size_t)(colon - name) : strlen(name);
    char base[32];
    if (bl >= sizeof base || !((bl == 13 && strncmp(name, "fashion-mnist", 13) == 0) ||
                               (bl == 5 && strncmp(name, "mnist", 5) == 0)))
        return cdl_fail("unknown dataset '%s' (known: fashion-mnist[:DIR], mnist[:DIR], csv:PATH)", name);
    memcpy(base, name, bl);
    base[bl] = 0;
    const char *split = train ? "train" : "t10k";
    char ib[64], lb[64], dir[4096], ip[4200], lp[4200];
    snprintf(ib, sizeof ib, "%s-images-idx3-ubyte", split);
    snprintf(lb, sizeof lb, "%s-labels-idx1-ubyte", split);
    const char *env = getenv("CDL_DATA_DIR");
    int found = -1;
    char tried[3][4096];
    int ntried = 0;
    if (colon) {
        snprintf(tried[ntried++], sizeof tried[0], "%s", colon + 1);
    } else {
        if (env && *env) {
            snprintf(tried[ntried++], sizeof tried[0], "%s/%s", env, base);
            snprintf(tried[ntried++], sizeof tried[0], "%s", env);
        }
        snprintf(tried[ntried++], sizeof tried[0], "%s/%s", DATA_DEFAULT_DIR, base);
    }
    for (int i = 0; i < ntried && found < 0; i++) {
        snprintf(dir, sizeof dir, "%s", tried[i]);
        if (find_idx(ip, sizeof ip, dir, ib) == 0 && find_idx(lp, sizeof lp, dir, lb) == 0) found = i;
    }
    if (found < 0)
        return cdl_fail("%s: cannot find %s[.gz] and %s[.gz] in %s%s%s (install dataset-fashion-mnist, "
                        "set CDL_DATA_DIR, or name the directory: %s:DIR)",
                        base, ib, lb, tried[0], ntried > 1 ? " or " : "", ntried > 1 ? tried[ntried - 1] : "",
                        base);
    if (cdl_dataset_load_idx(d, ip, lp) < 0) return -1;
    for (int64_t i = 0; i < d->n; i++)
        if (d->y[i] >= 10) {
            int32_t v = d->y[i];
            cdl_dataset_free(d);
            return cdl_fail("%s: label %d of example %lld is out of range for %s (10 classes)", lp, v,
                            (long long)i, base);
        }
    d->nclasses = 10;
    snprintf(d->name, sizeof d->name, "%s/%s", base, train ? "train" : "test");
    return 0;
}

int cdl_dataset_from_arrays(cdl_dataset *d, int64_t n, int rank, const int64_t *dims, const float *x,
                            const int32_t *y) {
    if (!d) return cdl_fail("cdl_dataset_from_arrays: NULL dataset");
    memset(d, 0, sizeof *d);
    if (n < 1 || rank < 1 || rank > CDL_MAXDIM || !dims || !x)
        return cdl_fail("cdl_dataset_from_arrays: need n >= 1, rank 1..%d, dims and x", CDL_MAXDIM);
    int64_t feat = 1;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 1 || feat > ((int64_t)1 << 40) / dims[i])
            return cdl_fail("cdl_dataset_from_arrays: bad dimension %d", i);
        feat *= dims[i];
    }
    if ((uint64_t)n > (((uint64_t)1 << 62) / (uint64_t)feat) || (uint64_t)(n * feat) > SIZE_MAX / sizeof(float))
        return cdl_fail("cdl_dataset_from_arrays: too large");
    int maxl = -1;
    for (int64_t i = 0; y && i < n; i++) {
        if (y[i] < 0 || y[i] >= DATA_MAX_LABEL)
            return cdl_fail("cdl_dataset_from_arrays: label %d of example %lld out of range [0, %d)", y[i],
                            (long long)i, DATA_MAX_LABEL);
        if (y[i] > maxl) maxl = y[i];
    }
    float *xc = cdl_alloc((size_t)(n * feat) * sizeof(float));
    int32_t *yc = y ? cdl_alloc((size_t)n * sizeof(int32_t)) : NULL;
    if (!xc || (y && !yc)) {
        cdl_free(xc);
        cdl_free(yc);
        return cdl_fail("cdl_dataset_from_arrays: out of memory");
    }
    memcpy(xc, x, (size_t)(n * feat) * sizeof(float));
    if (y) memcpy(yc, y, (size_t)n * sizeof(int32_t));
    d->n = n;
    d->feat = feat;
    d->rank = rank;
    memcpy(d->dims, dims, sizeof(int64_t) * (size_t)rank);
    d->x = xc;
    d->y = yc;
    d->nclasses = y ? maxl + 1 : 0;
    snprintf(d->name, sizeof d->name, "arrays");
    return 0;
}

void cdl_dataset_free(cdl_dataset *d) {
    if (!d) return;
    cdl_free(d->x);
    cdl_free(d->y);
    memset(d, 0, sizeof *d);
}

/* ---------------------------------------------------------------- loader */

enum { SLOT_FREE, SLOT_BUSY, SLOT_READY, SLOT_FAILED };

typedef struct slot {
    int state;
    int rows;
    int64_t batch;
    void *x;                     /* batch * feat reals */
    int32_t *y;                  /* batch labels */
    char err[256];
} slot;

typedef struct worker {
    cdl_loader *l;
    pthread_t th;
    double *scratch;             /* 2 * feat doubles */
} worker;

struct cdl_loader {
    const cdl_dataset *d;
    cdl_loader_cfg cfg;
    size_t rs;                   /* bytes per real written */
    int64_t nbatches;
    int64_t *perm;               /* n example indices, this epoch's order */
    uint64_t epoch;
    int started;
    int64_t next;                /* next batch the consumer takes */
    double *scratch;             /* synchronous mode: 2 * feat doubles */
    /* worker threads */
    int nw, nstarted;
    worker *w;
    int nslots;
    slot *slots;
    pthread_mutex_t mu;
    pthread_cond_t cv_work;      /* workers wait: a claimable batch or shutdown */
    pthread_cond_t cv_done;      /* consumer waits: its batch produced, or idle workers */
    int64_t claim;               /* next batch a worker claims */
    int busy;                    /* workers producing right now */
    int active, shutdown;
    int sync_ok;                 /* mu and the condition variables are initialised */
};

/* Example idx transformed into dst (feat reals of size rs), scratch 2 * feat doubles.
 * Randomness keyed by (seed, epoch, idx) only. */
static void tf_example(const cdl_loader *l, int64_t idx, void *dst, double *scratch) {
    const cdl_dataset *d = l->d;
    const cdl_transform *tf = &l->cfg.tf;
    const float *src = d->x + idx * d->feat;
    int64_t feat = d->feat;
    int geo = tf->crop_pad > 0 || tf->hflip;
    if (!geo && !tf->normalize && tf->noise_std == 0) {
        if (l->rs == 4) memcpy(dst, src, (size_t)feat * sizeof(float));
        else
            for (int64_t i = 0; i < feat; i++) ((double *)dst)[i] = src[i];
        return;
    }
    double *t = scratch, *z = scratch + feat;
    if (geo) {
        int64_t H = d->dims[d->rank - 2], W = d->dims[d->rank - 1], C = feat / (H * W);
        int64_t p = tf->crop_pad, dy = 0, dx = 0;
        int flip = 0;
        cdl_rng_key k = {l->cfg.seed, l->epoch, STREAM_CROP | (uint64_t)idx};
        uint32_t r[4];
        cdl_philox(k, 0, r);
        if (p > 0) {
            dy = (int64_t)(r[0] % (uint32_t)(2 * p + 1)) - p;
            dx = (int64_t)(r[1] % (uint32_t)(2 * p + 1)) - p;
        }
        if (tf->hflip) flip = r[2] & 1;
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < H; y++) {
                int64_t sy = y + dy;
                double *o = t + (c * H + y) * W;
                if (sy < 0 || sy >= H) {
                    for (int64_t x = 0; x < W; x++) o[x] = 0;
                    continue;
                }
                const float *row = src + (c * H + sy) * W;
                for (int64_t x = 0; x < W; x++) {
                    int64_t sx = (flip ? W - 1 - x : x) + dx;
                    o[x] = sx < 0 || sx >= W ? 0.0 : row[sx];
                }
            }
    } else {
        for (int64_t i = 0; i < feat; i++) t[i] = src[i];
    }
    if (tf->normalize) {
        double m = tf->mean, is = 1.0 / tf->std;
        for (int64_t i = 0; i < feat; i++) t[i] = (t[i] - m) * is;
    }
    if (tf->noise_std != 0) {
        cdl_rng_key k = {l->cfg.seed, l->epoch, STREAM_NOISE | (uint64_t)idx};
        cdl_randn_f64(k, 0, feat, z);
        for (int64_t i = 0; i < feat; i++) t[i] += tf->noise_std * z[i];
    }
    if (l->rs == 4)
        for (int64_t i = 0; i < feat; i++) ((float *)dst)[i] = (float)t[i];
    else
        memcpy(dst, t, (size_t)feat * sizeof(double));
}

/* Produce batch b into x / y; returns rows or -1 with a message in err. */
static int produce(const cdl_loader *l, int64_t b, void *x, int32_t *y, double *scratch, char *err,
                   size_t errlen) {
    if (l->cfg.fail_batch > 0 && b == l->cfg.fail_batch - 1) {
        snprintf(err, errlen, "loader: batch %lld of epoch %llu failed (test failure injection)", (long long)b,
                 (unsigned long long)l->epoch);
        return -1;
    }
    const cdl_dataset *d = l->d;
    int64_t start = b * l->cfg.batch;
    int64_t rows = d->n - start < l->cfg.batch ? d->n - start : l->cfg.batch;
    size_t row_bytes = (size_t)d->feat * l->rs;
    for (int64_t r = 0; r < rows; r++) {
        int64_t idx = l->perm[start + r];
        tf_example(l, idx, (char *)x + (size_t)r * row_bytes, scratch);
        if (y && d->y) y[r] = d->y[idx];
    }
    return (int)rows;
}

static void *worker_main(void *arg) {
    worker *w = arg;
    cdl_loader *l = w->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->shutdown &&
               !(l->active && l->claim < l->nbatches && l->slots[l->claim % l->nslots].state == SLOT_FREE))
            pthread_cond_wait(&l->cv_work, &l->mu);
        if (l->shutdown) break;
        int64_t b = l->claim++;
        slot *s = &l->slots[b % l->nslots];
        s->state = SLOT_BUSY;
        s->batch = b;
        l->busy++;
        pthread_mutex_unlock(&l->mu);
        int rows = produce(l, b, s->x, s->y, w->scratch, s->err, sizeof s->err);
        pthread_mutex_lock(&l->mu);
        s->rows = rows;
        s->state = rows < 0 ? SLOT_FAILED : SLOT_READY;
        l->busy--;
        pthread_cond_broadcast(&l->cv_done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* The loader's configuration checks; -1 and a message. */
static int loader_check(const cdl_dataset *d, const cdl_loader_cfg *c) {
    if (!d || !c) return cdl_fail("cdl_loader_new: NULL dataset or config");
    if (!d->x || d->n < 1 || d->feat < 1 || d->rank < 1 || d->rank > CDL_MAXDIM)
        return cdl_fail("cdl_loader_new: dataset '%s' is empty or not loaded", d->name);
    if (c->batch < 1) return cdl_fail("cdl_loader_new: batch %d < 1", c->batch);
    if (c->workers < 0 || c->workers > 64) return cdl_fail("cdl_loader_new: workers %d not in 0..64", c->workers);
    if (c->prefetch < 0 || c->prefetch > 1024)
        return cdl_fail("cdl_loader_new: prefetch %d not in 0..1024", c->prefetch);
    if (c->real_size != 0 && c->real_size != 4 && c->real_size != 8)
        return cdl_fail("cdl_loader_new: real_size %d is not 4 or 8", c->real_size);
    const cdl_transform *t = &c->tf;
    if (t->normalize && (!isfinite(t->mean) || !isfinite(t->std) || t->std <= 0))
        return cdl_fail("cdl_loader_new: normalize needs a finite mean and std > 0 (got %g, %g)", t->mean, t->std);
    if (!isfinite(t->noise_std) || t->noise_std < 0)
        return cdl_fail("cdl_loader_new: noise_std %g must be >= 0", t->noise_std);
    if (t->crop_pad < 0 || t->crop_pad > 1024)
        return cdl_fail("cdl_loader_new: crop_pad %d not in 0..1024", t->crop_pad);
    if ((t->crop_pad || t->hflip) && d->rank < 2)
        return cdl_fail("cdl_loader_new: crop and flip need examples of rank >= 2 (dataset '%s' has rank %d)",
                        d->name, d->rank);
    if (c->fail_batch < 0) return cdl_fail("cdl_loader_new: fail_batch < 0");
    return 0;
}

cdl_loader *cdl_loader_new(const cdl_dataset *d, const cdl_loader_cfg *cfg) {
    if (loader_check(d, cfg) < 0) return NULL;
    cdl_loader *l = cdl_alloc(sizeof *l);
    if (!l) return NULL;
    l->d = d;
    l->cfg = *cfg;
    l->rs = cfg->real_size == 8 ? 8 : 4;
    l->nbatches = cfg->drop_last ? d->n / cfg->batch : (d->n + cfg->batch - 1) / cfg->batch;
    l->nw = cfg->workers;
    l->perm = cdl_alloc((size_t)d->n * sizeof(int64_t));
    l->scratch = cdl_alloc((size_t)d->feat * 2 * sizeof(double));
    if (!l->perm || !l->scratch) goto fail;
    if (l->nw == 0) return l;

    l->nslots = cfg->prefetch ? cfg->prefetch : 2 * l->nw;
    if (l->nslots < l->nw) l->nslots = l->nw;
    size_t xb = (size_t)cfg->batch * (size_t)d->feat;
    if (xb / (size_t)cfg->batch != (size_t)d->feat || xb > SIZE_MAX / 8 / (size_t)l->nslots) {
        cdl_fail("cdl_loader_new: batch buffers too large");
        goto fail;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_work, NULL);
    pthread_cond_init(&l->cv_done, NULL);
    l->sync_ok = 1;
    l->slots = cdl_alloc(sizeof(slot) * (size_t)l->nslots);
    l->w = cdl_alloc(sizeof(worker) * (size_t)l->nw);
    if (!l->slots || !l->w) goto fail;
    for (int i = 0; i < l->nslots; i++) {
        l->slots[i].x = cdl_alloc(xb * l->rs);
        l->slots[i].y = cdl_alloc((size_t)cfg->batch * sizeof(int32_t));
        if (!l->slots[i].x || !l->slots[i].y) goto fail;
    }
    for (int i = 0; i < l->nw; i++) {
        l->w[i].l = l;
        l->w[i].scratch = cdl_alloc((size_t)d->feat * 2 * sizeof(double));
        if (!l->w[i].scratch) goto fail;
    }
    for (int i = 0; i < l->nw; i++) {
        int e = pthread_create(&l->w[i].th, NULL, worker_main, &l->w[i]);
        if (e != 0) {
            cdl_loader_free(l);
            cdl_fail("cdl_loader_new: cannot start worker thread %d: %s", i, strerror(e));
            return NULL;
        }
        l->nstarted++;
    }
    return l;
fail:                                           /* cdl_alloc has set the message */
    cdl_loader_free(l);
    return NULL;
}

int64_t cdl_loader_batches(const cdl_loader *l) { return l ? l->nbatches : 0; }

/* This epoch's order: identity, or a Fisher-Yates shuffle keyed by (seed, epoch).  The
 * 64-bit draw modulo (i + 1) has a bias below 2^-30 for any realistic n. */
static void loader_shuffle(cdl_loader *l) {
    int64_t n = l->d->n;
    for (int64_t i = 0; i < n; i++) l->perm[i] = i;
    if (!l->cfg.shuffle) return;
    cdl_rng_key k = {l->cfg.seed, l->epoch, STREAM_SHUFFLE};
    for (int64_t i = n - 1; i > 0; i--) {
        uint32_t r[4];
        cdl_philox(k, (uint64_t)i, r);
        uint64_t v = (uint64_t)r[0] << 32 | r[1];
        int64_t j = (int64_t)(v % (uint64_t)(i + 1));
        int64_t t = l->perm[i];
        l->perm[i] = l->perm[j];
        l->perm[j] = t;
    }
}

int cdl_loader_start(cdl_loader *l, uint64_t epoch, int64_t skip_batches) {
    if (!l) return cdl_fail("cdl_loader_start: NULL loader");
    if (skip_batches < 0 || skip_batches > l->nbatches)
        return cdl_fail("cdl_loader_start: skip_batches %lld not in 0..%lld", (long long)skip_batches,
                        (long long)l->nbatches);
    if (l->nw == 0) {
        l->epoch = epoch;
        loader_shuffle(l);
        l->next = skip_batches;
        l->started = 1;
        return 0;
    }
    pthread_mutex_lock(&l->mu);
    l->active = 0;                              /* no new claims; drain the busy ones */
    while (l->busy > 0) pthread_cond_wait(&l->cv_done, &l->mu);
    for (int i = 0; i < l->nslots; i++) l->slots[i].state = SLOT_FREE;
    l->epoch = epoch;
    loader_shuffle(l);
    l->next = l->claim = skip_batches;
    l->started = 1;
    l->active = 1;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

int cdl_loader_next(cdl_loader *l, void *x, int32_t *y) {
    if (!l || !x) return cdl_fail("cdl_loader_next: NULL loader or buffer");
    if (!l->started) return cdl_fail("cdl_loader_next: call cdl_loader_start first");
    if (l->next >= l->nbatches) return 0;
    if (l->nw == 0) {
        char err[256];
        int rows = produce(l, l->next, x, y, l->scratch, err, sizeof err);
        if (rows < 0) return cdl_fail("%s", err);
        l->next++;
        return rows;
    }
    pthread_mutex_lock(&l->mu);
    slot *s = &l->slots[l->next % l->nslots];
    while (!((s->state == SLOT_READY || s->state == SLOT_FAILED) && s->batch == l->next))
        pthread_cond_wait(&l->cv_done, &l->mu);
    int st = s->state;
    pthread_mutex_unlock(&l->mu);
    if (st == SLOT_FAILED) return cdl_fail("%s", s->err);   /* stays failed until the next start */
    int rows = s->rows;
    memcpy(x, s->x, (size_t)rows * (size_t)l->d->feat * l->rs);
    if (y && l->d->y) memcpy(y, s->y, (size_t)rows * sizeof(int32_t));
    pthread_mutex_lock(&l->mu);
    s->state = SLOT_FREE;
    l->next++;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return rows;
}

void cdl_loader_free(cdl_loader *l) {
    if (!l) return;
    if (l->nstarted > 0) {
        pthread_mutex_lock(&l->mu);
        l->shutdown = 1;
        pthread_cond_broadcast(&l->cv_work);
        pthread_mutex_unlock(&l->mu);
        for (int i = 0; i < l->nstarted; i++) pthread_join(l->w[i].th, NULL);
    }
    if (l->sync_ok) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv_work);
        pthread_cond_destroy(&l->cv_done);
    }
    for (int i = 0; l->slots && i < l->nslots; i++) {
        cdl_free(l->slots[i].x);
        cdl_free(l->slots[i].y);
    }
    for (int i = 0; l->w && i < l->nw; i++) cdl_free(l->w[i].scratch);
    cdl_free(l->slots);
    cdl_free(l->w);
    cdl_free(l->perm);
    cdl_free(l->scratch);
    cdl_free(l);
}

/* data.c -- datasets as tables of named columns (cdl.h, block DATA): building and
 * freeing them, IDX files and the named image sets, random data shaped like a model's
 * inputs, and the feeds that map a model's inputs onto columns by name.  CSV is in
 * data_csv.c, file reading in data_file.c, the batch loader in loader.c.
 *
 * Datasets are read whole into memory (data_file.c: regular files only, raw or gzip,
 * lines of bounded length), validated strictly, and kept as floats and int32s (or, read by the _u8 functions,
 * IDX images as their bytes: CDL_COL_U8, converted a batch at a time by the loader; or,
 * read by the _stream functions, not kept at all: data_stream.c).  Each
 * column is a strided view (data, stride) into one of the dataset's blocks, so a CSV's
 * per-name columns cost nothing and --limit is a change of n.
 */
#include "data_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DATA_DEFAULT_DIR "/usr/share/datasets"
#define GZ_MAX_RATIO 1040                      /* deflate expands at most ~1032:1 */

/* ---------------------------------------------------------------- columns */

const char *data_base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int data_cols(cdl_dataset *d, int cap) {
    if (!(d->col = cdl_alloc(sizeof *d->col * (size_t)(cap > 0 ? cap : 1)))) return -1;
    d->ncols = 0;
    return 0;
}

cdl_column *data_add_col(cdl_dataset *d, const char *name, cdl_dtype dt, int rank, const int64_t *dims,
                         const void *data, int64_t stride, int flags) {
    cdl_column *c = &d->col[d->ncols++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    c->dtype = dt;
    c->rank = rank;
    c->feat = 1;
    for (int i = 0; i < rank; i++) c->feat *= (c->dims[i] = dims[i]);
    c->data = data;
    c->stride = stride;
    c->flags = flags;
    if (dt == CDL_I32) {
        int32_t mx = -1;
        for (int64_t i = 0; i < d->n; i++)
            for (int64_t k = 0; k < c->feat; k++) {
                int32_t v = ((const int32_t *)data)[i * stride + k];
                if (v > mx) mx = v;
            }
        c->nclasses = mx + 1;
    }
    return c;
}

int cdl_dataset_find(const cdl_dataset *d, const char *name) {
    for (int c = 0; d && name && c < d->ncols; c++)
        if (!strcmp(d->col[c].name, name)) return c;
    return -1;
}

void cdl_dataset_free(cdl_dataset *d) {
    if (!d) return;
    cdl_free(d->col);
    for (size_t i = 0; i < sizeof d->block / sizeof d->block[0]; i++) cdl_free(d->block[i]);
    cdl_free(d->vocab);
    cdl_free(d->labels);
    data_stream_close(d->stream);
    memset(d, 0, sizeof *d);
}

void cdl_dataset_head(cdl_dataset *d, int64_t n) {
    if (d && n > 0 && n < d->n) d->n = n;
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

void data_u8_table(float lut[256]) {
    for (int v = 0; v < 256; v++) lut[v] = (float)v / 255.0f;
}

/* Widen total bytes that sit at the end of the 4 * total byte block out into 4-byte
 * values, in place and front to back (safe: value i is written at bytes [4i, 4i+4),
 * which never reaches the unread bytes 3 * total + i + 1 ...).  Images become floats
 * v / 255 (data_u8_table), labels int32. */
static void idx_widen(void *block, uint64_t total, int labels) {
    const unsigned char *src = (const unsigned char *)block + 3 * total;
    if (labels) {
        int32_t *y = block;
        for (uint64_t i = 0; i < total; i++) y[i] = src[i];
        return;
    }
    float lut[256];
    data_u8_table(lut);
    float *x = block;
    for (uint64_t i = 0; i < total; i++) x[i] = lut[src[i]];
}

/* data_int.h: the header of IDX file f (path names it) into h, checked, and its size
 * against the values it promises: a raw file's size is exact, a gzip file expands at
 * most GZ_MAX_RATIO times, so nothing is ever allocated that the file cannot hold. */
int data_idx_head(data_file *f, const char *path, int labels, int *nd, int64_t *dims, uint64_t *total,
                  unsigned char *h) {
    int64_t r = data_file_read(f, h, 4);
    if (r < 0 || idx_magic(h, (size_t)r, path, labels, nd) < 0) return -1;
    if ((r = data_file_read(f, h + 4, 4 * (size_t)*nd)) < 0) return -1;
    if (idx_dims(h + 4, (size_t)r, path, *nd, dims, total) < 0) return -1;
    if (*total > SIZE_MAX / 4) return cdl_fail("%s: too large to load", path);
    uint64_t hb = 4 + 4 * (uint64_t)*nd, fs = f->size;
    if (!f->gz && fs - hb < *total)
        return cdl_fail("%s: truncated: %llu data bytes, the header promises %llu", path,
                        (unsigned long long)(fs - hb), (unsigned long long)*total);
    if (f->gz && *total / GZ_MAX_RATIO > fs)
        return cdl_fail("%s: truncated: the header promises %llu data bytes, more than %llu compressed bytes can "
                        "hold", path, (unsigned long long)*total, (unsigned long long)fs);
    return 0;
}

/* One IDX file read (through data_file: raw or gzip) into a new block of 4-byte values
 * (see idx_widen), the raw bytes read straight into the block's tail: no second copy
 * of the file.  u8 (images only): the block is the file's bytes, not widened. */
static int idx_read(const char *path, int labels, int u8, int *nd, int64_t *dims, uint64_t *total, void **out) {
    *out = NULL;
    data_file f;
    if (data_file_open(&f, path) < 0) return -1;
    unsigned char h[4 * (CDL_MAXDIM + 2)];
    unsigned char *blk = NULL;
    int rc = -1;
    int64_t r;
    if (data_idx_head(&f, path, labels, nd, dims, total, h) < 0) goto out;
    int wide = labels || !u8;                  /* bytes per value of the block: 4, or 1 */
    if (!(blk = cdl_alloc((size_t)*total * (wide ? 4 : 1)))) {
        cdl_fail("%s: out of memory (%llu bytes)", path, (unsigned long long)*total * (wide ? 4 : 1));
        goto out;
    }
    if ((r = data_file_read(&f, blk + (wide ? 3 * *total : 0), (size_t)*total)) < 0) goto out;
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
    if (wide) idx_widen(blk, *total, labels);
    rc = 0;
out:
    data_file_close(&f);
    if (rc < 0) cdl_free(blk);
    else *out = blk;
    return rc;
}

/* Assemble d from image dims/values (floats, or bytes with u8, or with s: bytes left
 * in s's file) and optional labels (ownership taken): columns x (the images) and y
 * (the labels). */
static int idx_finish(cdl_dataset *d, int nd, const int64_t *dims, void *x, int u8, data_stream *s, int64_t nlab,
                      int32_t *y, const char *iname, const char *lname) {
    d->stream = s;
    if (y && nlab != dims[0]) {
        cdl_free(x);
        cdl_free(y);
        data_stream_close(s);
        d->stream = NULL;
        return cdl_fail("%s: %lld labels, but %s has %lld images", lname, (long long)nlab, iname,
                        (long long)dims[0]);
    }
    d->n = dims[0];
    d->block[0] = x;
    d->block[1] = y;
    if (data_cols(d, 2) < 0) {
        cdl_dataset_free(d);
        return -1;
    }
    cdl_column *cx = data_add_col(d, "x", CDL_F32, nd - 1, dims + 1, x, 0, s ? CDL_COL_U8 | CDL_COL_FILE
                                                                            : u8 ? CDL_COL_U8 : 0);
    cx->stride = cx->feat;
    if (y) data_add_col(d, "y", CDL_I32, 0, NULL, y, 1, CDL_COL_TARGET);
    snprintf(d->name, sizeof d->name, "%.63s", data_base_name(iname));
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
    return idx_finish(d, nd, dims, x, 0, NULL, y ? ldims[0] : 0, y, in, ln);
}

/* mode: IDX_FLOATS, IDX_BYTES (_u8) or IDX_STREAM (_stream: the images stay in their
 * file or its cache, else bytes in memory as IDX_BYTES). */
enum { IDX_FLOATS, IDX_BYTES, IDX_STREAM };
static int idx_load(cdl_dataset *d, const char *images, const char *labels, int mode) {
    if (!d) return cdl_fail("cdl_dataset_load_idx: NULL dataset");
    memset(d, 0, sizeof *d);
    if (!images) return cdl_fail("cdl_dataset_load_idx: no image file");
    int nd, ld, u8 = mode != IDX_FLOATS, st = 1;
    int64_t dims[CDL_MAXDIM + 1], ldims[1];
    uint64_t tot, ltot;
    void *x = NULL, *y = NULL;
    data_stream *s = NULL;
    if (mode == IDX_STREAM && (st = data_idx_stream(images, &nd, dims, &tot, &s)) < 0) return -1;
    if (st > 0 && idx_read(images, 0, u8, &nd, dims, &tot, &x) < 0) return -1;   /* not streamed */
    if (labels && idx_read(labels, 1, 0, &ld, ldims, &ltot, (void **)&y) < 0) {
        cdl_free(x);
        data_stream_close(s);
        return -1;
    }
    return idx_finish(d, nd, dims, x, u8, s, y ? ldims[0] : 0, y, images, labels ? labels : "");
}

int cdl_dataset_load_idx(cdl_dataset *d, const char *images, const char *labels) {
    return idx_load(d, images, labels, IDX_FLOATS);
}

int cdl_dataset_load_idx_u8(cdl_dataset *d, const char *images, const char *labels) {
    return idx_load(d, images, labels, IDX_BYTES);
}

int cdl_dataset_load_idx_stream(cdl_dataset *d, const char *images, const char *labels) {
    return idx_load(d, images, labels, IDX_STREAM);
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

static int dataset_open(cdl_dataset *d, const char *name, int train, int mode) {
    if (!d) return cdl_fail("cdl_dataset_open: NULL dataset");
    memset(d, 0, sizeof *d);
    if (!name) return cdl_fail("cdl_dataset_open: no dataset name");
    if (strncmp(name, "csv:", 4) == 0) return cdl_dataset_load_csv(d, name + 4, CDL_CSV_AUTO, -1);
    if (strncmp(name, "text:", 5) == 0 || strncmp(name, "bytes:", 6) == 0)
        return cdl_fail("%s: text needs the model's window length T: the trainer gives it (--data), C callers "
                        "use cdl_dataset_load_text", name);
    if (strncmp(name, "tsv:", 4) == 0)
        return cdl_fail("%s: tsv needs the model's text length T: the trainer gives it (--data), C callers "
                        "use cdl_dataset_load_tsv", name);
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
    if (idx_load(d, ip, lp, mode) < 0) return -1;
    cdl_column *y = &d->col[1];
    const int32_t *lab = y->data;
    for (int64_t i = 0; i < d->n; i++)
        if (lab[i] >= 10) {
            int32_t v = lab[i];
            cdl_dataset_free(d);
            return cdl_fail("%s: label %d of example %lld is out of range for %s (10 classes)", lp, v,
                            (long long)i, base);
        }
    y->nclasses = 10;
    snprintf(d->name, sizeof d->name, "%s/%s", base, train ? "train" : "test");
    return 0;
}

int cdl_dataset_open(cdl_dataset *d, const char *name, int train) {
    return dataset_open(d, name, train, IDX_FLOATS);
}

int cdl_dataset_open_u8(cdl_dataset *d, const char *name, int train) {
    return dataset_open(d, name, train, IDX_BYTES);
}

int cdl_dataset_open_stream(cdl_dataset *d, const char *name, int train) {
    return dataset_open(d, name, train, IDX_STREAM);
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
    for (int64_t i = 0; y && i < n; i++)
        if (y[i] < 0 || y[i] >= DATA_MAX_LABEL)
            return cdl_fail("cdl_dataset_from_arrays: label %d of example %lld out of range [0, %d)", y[i],
                            (long long)i, DATA_MAX_LABEL);
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
    d->block[0] = xc;
    d->block[1] = yc;
    if (data_cols(d, 2) < 0) {
        cdl_dataset_free(d);
        return -1;
    }
    data_add_col(d, "x", CDL_F32, rank, dims, xc, feat, 0);
    if (y) data_add_col(d, "y", CDL_I32, 0, NULL, yc, 1, CDL_COL_TARGET);
    snprintf(d->name, sizeof d->name, "arrays");
    return 0;
}

/* The classes of random i32 values when none are given: output 0's last dimension
 * (the logits' width), else 10. */
static int32_t data_default_classes(const cdl_model *m) {
    if (m->n_outputs > 0 && m->outputs[0].rank >= 1 && m->outputs[0].dims[m->outputs[0].rank - 1] >= 1 &&
        m->outputs[0].dims[m->outputs[0].rank - 1] <= INT32_MAX)
        return (int32_t)m->outputs[0].dims[m->outputs[0].rank - 1];
    return 10;
}

int cdl_dataset_random(cdl_dataset *d, const cdl_model *m, int64_t n, int32_t classes, uint64_t seed) {
    if (!d) return cdl_fail("cdl_dataset_random: NULL dataset");
    memset(d, 0, sizeof *d);
    if (!m || n < 1) return cdl_fail("cdl_dataset_random: need a model and n >= 1");
    if (classes <= 0) classes = data_default_classes(m);
    int64_t total = 0;
    for (int i = 0; i < m->n_inputs; i++)
        if ((m->inputs[i].flags & (CDL_T_BATCHED | CDL_T_PERTURB)) == CDL_T_BATCHED)
            total += cdl_tensor_numel(&m->inputs[i], 1);
    if ((uint64_t)total > (((uint64_t)1 << 40) / (uint64_t)n))       /* none: n examples of no columns */
        return cdl_fail("model %s: too many random values (%lld per example)", m->name ? m->name : "?",
                        (long long)total);
    char *blk = cdl_alloc((size_t)(total * n) * 4);     /* floats and int32s: 4 bytes each */
    if (!blk || data_cols(d, m->n_inputs) < 0) {
        cdl_free(blk);
        return -1;
    }
    d->n = n;
    d->block[0] = blk;
    for (int i = 0; i < m->n_inputs; i++) {
        const cdl_tensor *t = &m->inputs[i];
        if (!(t->flags & CDL_T_BATCHED) || (t->flags & CDL_T_PERTURB)) continue;
        int64_t feat = cdl_tensor_numel(t, 1), cnt = feat * n;
        cdl_rng_key key = {seed, 0, 0xDA7D000000000000ull | (uint64_t)i};
        if (t->dtype == CDL_I32) {
            int32_t *v = (int32_t *)(void *)blk;
            for (int64_t k = 0; k < cnt; k++) {
                uint32_t r[4];
                cdl_philox(key, (uint64_t)k, r);
                v[k] = (int32_t)(r[0] % (uint32_t)classes);
            }
        } else {
            cdl_rand_f32(key, 0, cnt, (float *)(void *)blk);
        }
        data_add_col(d, t->name, t->dtype == CDL_I32 ? CDL_I32 : CDL_F32, t->rank - 1, t->dims + 1, blk, feat, 0);
        blk += cnt * 4;
    }
    snprintf(d->name, sizeof d->name, "random");
    return 0;
}

/* ---------------------------------------------------------------- feeds */

/* "dtype[d0, d1, ...]" into buf; first (e.g. "B") replaces dims[0] when given. */
static void data_shape(char *buf, size_t n, cdl_dtype dt, int rank, const int64_t *dims, const char *first) {
    size_t k = (size_t)snprintf(buf, n, "%s[", dt == CDL_I32 ? "i32" : "f32");
    for (int i = 0; i < rank && k < n; i++) {
        if (i == 0 && first) k += (size_t)snprintf(buf + k, n - k, "%s", first);
        else k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)dims[i]);
    }
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* "x f32[28, 28], y i32[] (10 classes), ..." (the first 8 columns) into buf. */
static void data_describe(const cdl_dataset *d, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    for (int c = 0; c < d->ncols && k < n; c++) {
        char sh[96];
        if (c == 8) {
            snprintf(buf + k, n - k, ", ... (%d columns)", d->ncols);
            return;
        }
        const cdl_column *col = &d->col[c];
        data_shape(sh, sizeof sh, col->dtype, col->rank, col->dims, NULL);
        k += (size_t)snprintf(buf + k, n - k, "%s%s %s", c ? ", " : "", col->name, sh);
        if (col->dtype == CDL_I32 && k < n) k += (size_t)snprintf(buf + k, n - k, " (values < %d)", col->nclasses);
    }
}

/* The column that map ("input=column,...") names for input `in`, into col (size n);
 * 0 when map does not mention it.  Every input named in map must exist. */
static int data_map_lookup(const cdl_model *m, const char *map, const char *in, char *col, size_t n) {
    int found = 0;
    for (const char *p = map; p && *p;) {
        const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p), *eq = memchr(p, '=', (size_t)(end - p));
        if (!eq || eq == p || eq + 1 == end || (size_t)(end - eq) > n)
            return cdl_fail("feed map '%s': '%.*s' is not input=column", map, (int)(end - p), p);
        char iname[128];
        snprintf(iname, sizeof iname, "%.*s", (int)(eq - p), p);
        if (cdl_model_find_input(m, iname) < 0)
            return cdl_fail("feed map '%s': model %s has no input '%s'", map, m->name, iname);
        if (!strcmp(iname, in)) {
            snprintf(col, n, "%.*s", (int)(end - eq - 1), eq + 1);
            found = 1;
        }
        p = comma ? comma + 1 : end;
    }
    return found;
}

/* The example of the first value of real column c that is not an integer in [0, 2^20)
 * (which an i32 input could take), its value in *v; -1 when there is none. */
static int64_t data_first_real(const cdl_dataset *d, const cdl_column *c, double *v) {
    const float *x = c->data;
    const unsigned char *b = c->data;
    unsigned char one[1];
    float lut[256];
    data_u8_table(lut);
    for (int64_t i = 0; i < d->n; i++)
        for (int64_t k = 0; k < c->feat; k++) {
            uint64_t at = (uint64_t)(i * c->stride + k);       /* streamed: one byte at a time (an error's path) */
            if ((c->flags & CDL_COL_FILE) && data_stream_read(d->stream, at, one, 1) < 0) return -1;
            float f = c->flags & CDL_COL_FILE ? lut[one[0]] : c->flags & CDL_COL_U8 ? lut[b[at]] : x[at];
            if (!(f == floorf(f) && f >= 0 && f < DATA_MAX_LABEL)) {
                *v = f;
                return i;
            }
        }
    return -1;
}

/* Checks one input against its column; -1 and a message. */
static int data_feed_check(const cdl_dataset *d, const cdl_model *m, const cdl_tensor *t, int c) {
    const cdl_column *col = &d->col[c];
    char is[96], cs[96];
    data_shape(is, sizeof is, t->dtype, t->rank, t->dims, "B");
    data_shape(cs, sizeof cs, col->dtype, col->rank, col->dims, NULL);
    int64_t feat = cdl_tensor_numel(t, 1);
    if (feat != col->feat)
        return cdl_fail("dataset %s: column %s is %s (%lld values per example) but model %s's input %s is %s "
                        "(%lld values per example)", d->name, col->name, cs, (long long)col->feat, m->name,
                        t->name, is, (long long)feat);
    if (t->dtype == CDL_I32 && col->dtype != CDL_I32) {
        double v = 0;
        int64_t i = data_first_real(d, col, &v);
        return cdl_fail("dataset %s: column %s holds real values (%g at example %lld) but model %s's input %s is "
                        "%s: it takes integers (class labels, ids)", d->name, col->name, i >= 0 ? v : 0.0,
                        (long long)(i >= 0 ? i : 0), m->name, t->name, is);
    }
    const cdl_tensor *o0 = m->n_outputs > 0 ? &m->outputs[0] : NULL;
    if (t->dtype == CDL_I32 && feat == 1 && (col->flags & CDL_COL_TARGET) && o0 && o0->rank == 2 &&
        (o0->flags & CDL_T_BATCHED) && o0->dims[1] < col->nclasses)       /* labels, not a tsv's len */
        return cdl_fail("dataset %s has %d classes (column %s) but model %s's output %s has %lld", d->name,
                        col->nclasses, col->name, m->name, o0->name, (long long)o0->dims[1]);
    return 0;
}

int cdl_dataset_feeds(const cdl_dataset *d, const cdl_model *m, const char *map, cdl_feed *feeds) {
    if (!d || !m || !feeds) return cdl_fail("cdl_dataset_feeds: NULL argument");
    if (m->n_inputs > CDL_DATA_MAXFEED)
        return cdl_fail("model %s has %d inputs; the loader feeds at most %d", m->name, m->n_inputs, CDL_DATA_MAXFEED);
    for (int i = 0; i < m->n_inputs; i++) {
        const cdl_tensor *t = &m->inputs[i];
        char want[CDL_DATA_NAME + 1], is[96], cols[600];
        if (t->flags & CDL_T_PERTURB) {             /* a perturb()'s delta: the runtime's, not the data's */
            feeds[i] = (cdl_feed){-1, CDL_F32};
            continue;
        }
        int mapped = data_map_lookup(m, map, t->name, want, sizeof want);
        if (mapped < 0) return -1;
        if (!mapped) snprintf(want, sizeof want, "%s", t->name);
        data_shape(is, sizeof is, t->dtype, t->rank, t->dims, "B");
        if (!(t->flags & CDL_T_BATCHED))
            return cdl_fail("model %s: input %s %s has no batch dimension: only inputs [B, ...] are fed from "
                            "a dataset", m->name, t->name, is);
        int c = cdl_dataset_find(d, want);
        if (c < 0) {
            data_describe(d, cols, sizeof cols);
            if (mapped)
                return cdl_fail("model %s's input %s %s: dataset %s has no column '%s' (the feed map names it); "
                                "its columns: %s", m->name, t->name, is, d->name, want, cols);
            return cdl_fail("model %s's input %s %s has no column of that name in dataset %s (its columns: %s); "
                            "feed it from one with --feed %s=COLUMN", m->name, t->name, is, d->name, cols, t->name);
        }
        if (data_feed_check(d, m, t, c) < 0) return -1;
        feeds[i].col = c;
        feeds[i].dtype = t->dtype == CDL_I32 ? CDL_I32 : CDL_F32;
    }
    return 0;
}

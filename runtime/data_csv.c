/* data_csv.c -- CSV datasets (cdl_dataset_load_csv, cdl_dataset_parse_csv).
 *
 * One pass over the lines (data_file.c bounds their length): the first non-blank line
 * fixes the column count and may be a header; every data row is parsed strictly into
 * a growing block of features and one of target values.  The target's type is decided
 * at the end: i32 class labels when every value is an integer in [0, 2^20), else f32
 * (a regression target) -- both fit the same 4-byte block, converted in place.
 *
 * Columns: x (the features, f32 [F]), y (the target, CDL_COL_TARGET) and, with a
 * header, every column also under its header name (a scalar view into x or y) unless
 * that name is x or y, repeated, or not a name ([A-Za-z_][A-Za-z0-9_.]*, < 32 bytes).
 */
#include "data_int.h"

#include <float.h>
#include <math.h>
#include <string.h>

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

/* Field [s, e) without its blanks. */
static void csv_trim(const char **s, const char **e) {
    while (*s < *e && (**s == ' ' || **s == '\t')) (*s)++;
    while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t')) (*e)--;
}

/* Parse every field of line [s, e) (ncol columns): the target (column lcol) into *t,
 * the others into row; *labels becomes 0 unless the target is a class label (an
 * integer in [0, 2^20), judged before rounding to float).  -1 and a message
 * "path:line: reason". */
static int csv_row(const char *path, long line, const char *s, const char *e, int ncol, int lcol,
                   float *row, float *t, int *labels) {
    int c = 0, f = 0;
    const char *fs = s;
    for (const char *q = s;; q++) {
        if (q < e && *q != ',') continue;
        if (c >= ncol) break;
        double v;
        int nr = csv_number(fs, q, &v);
        if (nr < 0) {
            const char *a = fs, *b = q;
            csv_trim(&a, &b);
            if (a == b) return cdl_fail("%s:%ld: column %d is empty", path, line, c + 1);
            return cdl_fail("%s:%ld: column %d: '%.*s' is %s", path, line, c + 1, (int)(b - a > 40 ? 40 : b - a),
                            a, nr == -2 ? "out of float range" : "not a number");
        }
        if (c == lcol) {
            *t = (float)v;
            *labels &= v == floor(v) && v >= 0 && v < DATA_MAX_LABEL;
        } else {
            row[f++] = (float)v;
        }
        c++;
        fs = q + 1;
        if (q >= e) break;
    }
    return 0;
}

/* The rows being parsed: x (cap * feat floats) and t (cap target values), grown by
 * doubling. */
typedef struct csv_acc {
    float *x, *t;
    int64_t rows, cap, feat;
    int labels;                   /* every target so far is a class label */
} csv_acc;

/* Room for one more row; -1 and a message. */
static int csv_grow(csv_acc *a, int with_t, const char *path) {
    if (a->rows < a->cap) return 0;
    int64_t nc = a->cap < 1024 ? 1024 : a->cap * 2;
    if ((uint64_t)nc > SIZE_MAX / sizeof(float) / (uint64_t)a->feat) return cdl_fail("%s: too large", path);
    float *x = cdl_alloc((size_t)(nc * a->feat) * sizeof(float));
    float *t = with_t ? cdl_alloc((size_t)nc * sizeof(float)) : NULL;
    if (!x || (with_t && !t)) {
        cdl_free(x);
        cdl_free(t);
        return cdl_fail("%s: out of memory (%lld rows of %lld values)", path, (long long)nc, (long long)a->feat);
    }
    if (a->rows) memcpy(x, a->x, (size_t)(a->rows * a->feat) * sizeof(float));
    if (a->rows && with_t) memcpy(t, a->t, (size_t)a->rows * sizeof(float));
    cdl_free(a->x);
    cdl_free(a->t);
    a->x = x;
    a->t = t;
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

/* The header's field names (trimmed) into names[0..ncol): "" where a field is not a
 * name a column can have. */
static void csv_header_names(const char *s, const char *e, int ncol, char (*names)[CDL_DATA_NAME]) {
    const char *a = s;
    int c = 0;
    for (const char *q = s; c < ncol; q++) {
        if (q < e && *q != ',') continue;
        const char *fs = a, *fe = q;
        csv_trim(&fs, &fe);
        int ok = fe > fs && (size_t)(fe - fs) < CDL_DATA_NAME && !(*fs >= '0' && *fs <= '9') && *fs != '.';
        for (const char *p = fs; ok && p < fe; p++)
            ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
                 *p == '.';
        names[c][0] = 0;
        if (ok) {
            memcpy(names[c], fs, (size_t)(fe - fs));
            names[c][fe - fs] = 0;
        }
        c++;
        a = q + 1;
        if (q >= e) break;
    }
}

/* CDL_CSV_AUTO: the first header column called label, target or y, else the last. */
static int csv_auto_target(int header, int ncol, char (*names)[CDL_DATA_NAME]) {
    for (int c = 0; header && c < ncol; c++)
        if (!strcmp(names[c], "label") || !strcmp(names[c], "target") || !strcmp(names[c], "y")) return c;
    return ncol - 1;
}

/* The finished rows as d's columns: x, y (typed: labels or reals) and the header's
 * names.  Takes the blocks out of a. */
static int csv_columns(cdl_dataset *d, csv_acc *a, int ncol, int lcol, char (*names)[CDL_DATA_NAME],
                       int header, const char *path) {
    if (data_cols(d, 2 + (header ? ncol : 0)) < 0) return -1;
    d->n = a->rows;
    d->block[0] = a->x;
    d->block[1] = a->t;
    int64_t F = a->feat;
    data_add_col(d, "x", CDL_F32, 1, &F, a->x, F, 0);
    cdl_column *y = NULL;
    if (a->t) {
        int labels = a->labels;
        if (labels) {
            int32_t *yi = (int32_t *)(void *)a->t;            /* same block, 4 bytes a value */
            for (int64_t i = 0; i < a->rows; i++) yi[i] = (int32_t)a->t[i];
        }
        y = data_add_col(d, "y", labels ? CDL_I32 : CDL_F32, 0, NULL, a->t, 1, CDL_COL_TARGET);
    }
    a->x = a->t = NULL;
    for (int c = 0; header && c < ncol; c++) {
        const char *nm = names[c];
        int dup = !nm[0] || !strcmp(nm, "x") || !strcmp(nm, "y");
        for (int k = 0; k < ncol && !dup; k++) dup = k != c && !strcmp(names[k], nm);
        if (dup) continue;
        if (c == lcol) data_add_col(d, nm, y->dtype, 0, NULL, y->data, 1, CDL_COL_TARGET);
        else data_add_col(d, nm, CDL_F32, 0, NULL, (const float *)d->block[0] + (lcol >= 0 && c > lcol ? c - 1 : c), F, 0);
    }
    snprintf(d->name, sizeof d->name, "%s", data_base_name(path));
    return 0;
}

/* The whole CSV from L into d (see cdl.h); one pass, rows kept as they are parsed. */
static int csv_parse(cdl_dataset *d, data_lines *L, const char *path, int label_col, int header) {
    const char *s, *e;
    csv_acc a = {.labels = 1};
    char (*names)[CDL_DATA_NAME] = NULL;
    int rc = -1, r = csv_first_line(L, &s, &e);
    if (r <= 0) {
        if (r == 0) cdl_fail("%s: empty file", path);
        return -1;
    }
    long first_line = L->line;
    int ncol = csv_cols(s, e);
    if (header == -1) header = csv_is_header(s, e);
    if (!(names = cdl_alloc((size_t)ncol * sizeof *names))) return cdl_fail("%s: out of memory", path);
    if (header) csv_header_names(s, e, ncol, names);
    int lcol = label_col == CDL_CSV_LAST ? ncol - 1 : label_col == CDL_CSV_AUTO ? csv_auto_target(header, ncol, names)
                                                                                  : label_col;
    if (lcol >= ncol) {
        cdl_fail("%s:%ld: label column %d, but the file has %d columns", path, first_line, lcol, ncol);
        goto out;
    }
    a.feat = ncol - (lcol >= 0);
    if (a.feat < 1) {
        cdl_fail("%s:%ld: no feature columns", path, first_line);
        goto out;
    }
    for (int have = !header;; have = 0) {            /* have: [s, e) is a data line */
        if (!have) {
            if ((r = data_lines_next(L, &s, &e)) <= 0) break;
            if (csv_blank(s, e)) continue;
        }
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
        float t = 0;
        if (csv_row(path, L->line, s, e, ncol, lcol, a.x + a.rows * a.feat, &t, &a.labels) < 0) goto out;
        if (a.t) a.t[a.rows] = t;
        a.rows++;
    }
    if (r < 0) goto out;
    if (a.rows == 0) {
        cdl_fail("%s: no data rows", path);
        goto out;
    }
    rc = csv_columns(d, &a, ncol, lcol, names, header, path);
out:
    if (rc < 0) cdl_dataset_free(d);
    cdl_free(a.x);
    cdl_free(a.t);
    cdl_free(names);
    return rc;
}

/* The label column and header flag are sane; -1 and a message. */
static int csv_check_args(const char *path, int label_col, int header) {
    if (label_col < CDL_CSV_AUTO || header < -1 || header > 1)
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

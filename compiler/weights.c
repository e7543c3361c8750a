/* weights.c -- a checkpoint's parameters, read by the compiler itself for the inference
 * export (cdlc --inference --weights FILE).  The compiler does not link the runtime,
 * so this is its own reader of the safetensors layout runtime/ckpt.c writes:
 *
 *   u64 little-endian N | N bytes of JSON header | tensor data, little-endian
 *
 * The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
 * (offsets into the data section) and "__metadata__" to string: string pairs.
 *
 * Nothing in the file is trusted: the header length against the file size, the JSON
 * strictly (RFC 8259, no duplicate keys, bounded depth), every entry's dtype, shape and
 * offsets against the data section, which the entries must tile exactly.  Where the
 * file carries cdl's checksums ("header_crc32", "crc32:<name>") they are verified; a
 * plain safetensors file (as safetensors.torch.save_file writes it) has none and is
 * checked by names, shapes and dtypes alone.  Every parameter of the model must be
 * there with its shape, as F32 or F64 (an f64 checkpoint is rounded to float), with
 * finite values; the only other tensors allowed are the optimizer slots the metadata
 * names ("m.<param>") and, per batch norm, its counter "<layer>.num_batches_tracked"
 * (an I64 or I32 scalar, as cdl and PyTorch write it; inference does not read it).
 * Every error names the file and stops the compilation.
 */
#include "cdlc.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define WT_MAX_DEPTH 64

/* ------------------------------------------------------------------ JSON */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } JType;

typedef struct JVal JVal;
struct JVal {
    JType t;
    bool is_uint;          /* J_NUM: a plain non-negative integer that fits u */
    uint64_t u;
    const char *s;         /* J_STR: decoded text (no NUL inside: \u0000 is refused) */
    size_t off, end;       /* source span [off, end) of the value (strings: with quotes) */
    const char *key;       /* member of an object: its decoded key */
    JVal *first, *next;    /* J_ARR / J_OBJ children, in order */
    int count;
};

typedef struct JP {
    const char *src;
    size_t len, pos;
    int64_t nvals, max_vals;   /* values made, and the bound (so memory stays bounded) */
    const char *err;       /* the first error, or NULL */
    size_t err_pos;
} JP;

static JVal *jp_fail(JP *p, const char *msg) {
    if (!p->err) {
        p->err = msg;
        p->err_pos = p->pos;
    }
    return NULL;
}

static void jp_ws(JP *p) {
    while (p->pos < p->len && strchr(" \t\n\r", p->src[p->pos]) && p->src[p->pos]) p->pos++;
}

static bool jp_lit(JP *p, const char *w) {
    size_t n = strlen(w);
    if (p->len - p->pos < n || memcmp(p->src + p->pos, w, n)) return false;
    p->pos += n;
    return true;
}

static int hexval(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Four hex digits at p->pos, or -1. */
static long jp_hex4(JP *p) {
    if (p->len - p->pos < 4) return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->src[p->pos + i]);
        if (h < 0) return -1;
        v = v << 4 | h;
    }
    p->pos += 4;
    return v;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), or 0. */
static int utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (k == 0 || (size_t)k > n) return 0;
    uint32_t cp = k == 1 ? c : k == 2 ? (c & 0x1f) : k == 3 ? (c & 0x0f) : (c & 0x07);
    for (int i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return k;
}

static size_t put_utf8(char *o, uint32_t cp) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xc0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3f)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xe0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3f)), o[2] = (char)(0x80 | (cp & 0x3f)), 3;
    o[0] = (char)(0xf0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3f)), o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string at p->pos (the opening quote), decoded into the arena. */
static const char *jp_string(JP *p) {
    p->pos++;
    size_t start = p->pos;
    while (p->pos < p->len && p->src[p->pos] != '"') p->pos += p->src[p->pos] == '\\' ? 2 : 1;
    if (p->pos >= p->len) return (const char *)jp_fail(p, "unterminated string");
    char *out = arena_alloc(cc_arena, p->pos - start + 1), *o = out; /* decoding never grows */
    for (p->pos = start; p->src[p->pos] != '"';) {
        const unsigned char *c = (const unsigned char *)p->src + p->pos;
        if (*c < 0x20) return (const char *)jp_fail(p, "control character in a string");
        if (*c != '\\') {
            int k = utf8_len(c, p->len - p->pos);
            if (!k) return (const char *)jp_fail(p, "invalid UTF-8 in a string");
            memcpy(o, c, (size_t)k);
            o += k;
            p->pos += (size_t)k;
            continue;
        }
        p->pos += 2;
        switch (c[1]) {
        case '"': case '\\': case '/': *o++ = (char)c[1]; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            long hi = jp_hex4(p);
            if (hi < 0) return (const char *)jp_fail(p, "bad \\u escape");
            if (hi >= 0xdc00 && hi <= 0xdfff) return (const char *)jp_fail(p, "lone low surrogate in \\u escape");
            if (hi >= 0xd800 && hi <= 0xdbff) {
                long lo;
                if (!jp_lit(p, "\\u") || (lo = jp_hex4(p)) < 0xdc00 || lo > 0xdfff)
                    return (const char *)jp_fail(p, "unpaired surrogate in \\u escape");
                hi = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (hi == 0) return (const char *)jp_fail(p, "\\u0000 in a string");
            o += put_utf8(o, (uint32_t)hi);
            break;
        }
        default: return (const char *)jp_fail(p, "bad escape in a string");
        }
    }
    *o = 0;
    p->pos++;
    return out;
}

/* A number (RFC 8259 syntax); is_uint when it is a plain non-negative integer. */
static JVal *jp_number(JP *p, JVal *v) {
    size_t s = p->pos;
    if (p->src[p->pos] == '-') p->pos++;
    if (p->pos >= p->len || !(p->src[p->pos] >= '0' && p->src[p->pos] <= '9')) return jp_fail(p, "bad number");
    bool lead0 = p->src[p->pos] == '0';
    uint64_t u = 0;
    bool fits = true;
    size_t d0 = p->pos;
    while (p->pos < p->len && p->src[p->pos] >= '0' && p->src[p->pos] <= '9') {
        unsigned d = (unsigned)(p->src[p->pos++] - '0');
        if (u > (UINT64_MAX - d) / 10) fits = false;
        else u = u * 10 + d;
    }
    if (lead0 && p->pos - d0 > 1) return jp_fail(p, "number with a leading zero");
    bool plain = true;
    if (p->pos < p->len && p->src[p->pos] == '.') {
        plain = false;
        if (++p->pos >= p->len || !(p->src[p->pos] >= '0' && p->src[p->pos] <= '9')) return jp_fail(p, "bad number");
        while (p->pos < p->len && p->src[p->pos] >= '0' && p->src[p->pos] <= '9') p->pos++;
    }
    if (p->pos < p->len && (p->src[p->pos] == 'e' || p->src[p->pos] == 'E')) {
        plain = false;
        p->pos++;
        if (p->pos < p->len && (p->src[p->pos] == '+' || p->src[p->pos] == '-')) p->pos++;
        if (p->pos >= p->len || !(p->src[p->pos] >= '0' && p->src[p->pos] <= '9')) return jp_fail(p, "bad number");
        while (p->pos < p->len && p->src[p->pos] >= '0' && p->src[p->pos] <= '9') p->pos++;
    }
    v->t = J_NUM;
    v->is_uint = plain && fits && p->src[s] != '-';
    v->u = u;
    return v;
}

static JVal *jp_value(JP *p, int depth);

/* The members (or elements) of an object (or array) whose opening bracket is at p->pos. */
static JVal *jp_container(JP *p, JVal *v, int depth) {
    bool obj = p->src[p->pos] == '{';
    char close = obj ? '}' : ']';
    v->t = obj ? J_OBJ : J_ARR;
    p->pos++;
    jp_ws(p);
    if (p->pos < p->len && p->src[p->pos] == close) {
        p->pos++;
        return v;
    }
    JVal **tail = &v->first;
    for (;;) {
        const char *key = NULL;
        if (obj) {
            jp_ws(p);
            if (p->pos >= p->len || p->src[p->pos] != '"') return jp_fail(p, "expected a string key");
            if (!(key = jp_string(p))) return NULL;
            jp_ws(p);
            if (p->pos >= p->len || p->src[p->pos] != ':') return jp_fail(p, "expected ':'");
            p->pos++;
        }
        JVal *x = jp_value(p, depth + 1);
        if (!x) return NULL;
        x->key = key;
        *tail = x;
        tail = &x->next;
        v->count++;
        jp_ws(p);
        if (p->pos < p->len && p->src[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->src[p->pos] == close) {
            p->pos++;
            return v;
        }
        return jp_fail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static JVal *jp_value(JP *p, int depth) {
    if (depth > WT_MAX_DEPTH) return jp_fail(p, "nested too deeply");
    jp_ws(p);
    if (p->pos >= p->len) return jp_fail(p, "unexpected end of the header");
    if (++p->nvals > p->max_vals) return jp_fail(p, "more JSON values than a header of this model can have");
    JVal *v = NEW(JVal);
    v->off = p->pos;
    char c = p->src[p->pos];
    JVal *r = v;
    if (c == '{' || c == '[') r = jp_container(p, v, depth);
    else if (c == '"') {
        v->t = J_STR;
        if (!(v->s = jp_string(p))) r = NULL;
    } else if (c == '-' || (c >= '0' && c <= '9')) r = jp_number(p, v);
    else if (jp_lit(p, "true") || jp_lit(p, "false")) v->t = J_BOOL;
    else if (jp_lit(p, "null")) v->t = J_NULL;
    else r = jp_fail(p, "unexpected character");
    v->end = p->pos;
    return r;
}

static int key_cmp(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The first key that occurs twice in an object of v's tree (sorted per object: no
 * quadratic scan however many members), or NULL. */
static const char *jdup(const JVal *v) {
    if (v->t != J_OBJ && v->t != J_ARR) return NULL;
    const char **k = NEWN(const char *, v->count + 1);
    int n = 0;
    for (const JVal *q = v->first; q; q = q->next) {
        const char *d = jdup(q);
        if (d) return d;
        if (v->t == J_OBJ) k[n++] = q->key;
    }
    qsort(k, (size_t)n, sizeof *k, key_cmp);
    for (int i = 1; i < n; i++)
        if (!strcmp(k[i - 1], k[i])) return k[i];
    return NULL;
}

static JVal *jget(const JVal *obj, const char *key) {
    for (JVal *q = obj->first; q; q = q->next)
        if (!strcmp(q->key, key)) return q;
    return NULL;
}

/* ------------------------------------------------------------------ checks */

/* CRC-32 as zlib's crc32 (reflected, polynomial 0xedb88320), continuing crc. */
static uint32_t wt_crc(uint32_t crc, const unsigned char *p, size_t n) {
    static uint32_t tab[256];
    if (!tab[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            tab[i] = c;
        }
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = tab[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* One tensor entry of the header, validated against the data section. */
typedef struct WtEnt {
    const char *name;
    bool f64, integer;     /* F64 (else F32); I64 or I32 */
    int size;              /* bytes per element */
    Shape shape;
    uint64_t begin, end;
    bool used;
} WtEnt;

typedef struct WtFile {
    const char *path;
    const unsigned char *buf;
    size_t len;
    const unsigned char *data;
    uint64_t data_len;
    JVal *root, *meta;
    WtEnt *ent;
    int nent;
    int64_t max_vals;      /* JSON values a header of this model can need */
    uint64_t max_header;   /* and bytes */
} WtFile;

/* "FILE: error: msg" (diag.c); returns false. */
static bool wt_fail(const WtFile *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool wt_fail(const WtFile *f, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    error_at((Loc){f->path, 0, 0}, "%s", msg);
    return false;
}
#define WT_FAIL wt_fail

static const char *st_meta(const WtFile *f, const char *key) {
    JVal *v = f->meta ? jget(f->meta, key) : NULL;
    return v ? v->s : NULL;
}

static bool is_hex8(const char *s) {
    if (!s || strlen(s) != 8) return false;
    for (int i = 0; i < 8; i++)
        if (hexval(s[i]) < 0 || (s[i] >= 'A' && s[i] <= 'F')) return false;
    return true;
}

/* Parse one entry {dtype, shape, data_offsets}. */
static bool st_entry(WtFile *f, const JVal *o, WtEnt *e) {
    const char *nm = o->key;
    e->name = nm;
    if (o->t != J_OBJ) return WT_FAIL(f, "tensor '%.80s': the entry is not an object", nm);
    JVal *dt = jget(o, "dtype"), *sh = jget(o, "shape"), *of = jget(o, "data_offsets");
    if (!dt || !sh || !of || o->count != 3)
        return WT_FAIL(f, "tensor '%.80s': the entry must have exactly dtype, shape and data_offsets", nm);
    if (dt->t != J_STR || (strcmp(dt->s, "F32") && strcmp(dt->s, "F64") && strcmp(dt->s, "I64") && strcmp(dt->s, "I32")))
        return WT_FAIL(f, "tensor '%.80s': dtype %s%.20s%s: the compiler reads F32 and F64 tensors (and I64 or I32 "
                       "batch-norm counters)", nm,
                       dt->t == J_STR ? "'" : "", dt->t == J_STR ? dt->s : "(not a string)", dt->t == J_STR ? "'" : "");
    e->f64 = !strcmp(dt->s, "F64");
    e->integer = dt->s[0] == 'I';
    e->size = strcmp(dt->s + 1, "64") ? 4 : 8;
    if (sh->t != J_ARR || sh->count > MAXDIM)
        return WT_FAIL(f, "tensor '%.80s': shape must be an array of at most %d dims", nm, MAXDIM);
    e->shape.rank = sh->count;
    int r = 0;
    uint64_t numel = 1;
    for (JVal *d = sh->first; d; d = d->next, r++) {
        if (d->t != J_NUM || !d->is_uint || d->u > (uint64_t)MAX_ELEMS)
            return WT_FAIL(f, "tensor '%.80s': shape entries must be integers from 0 to 2^40", nm);
        e->shape.d[r] = (int64_t)d->u;
        numel = d->u == 0 || numel <= (uint64_t)MAX_ELEMS / d->u ? numel * d->u : (uint64_t)MAX_ELEMS + 1;
    }
    if (numel > (uint64_t)MAX_ELEMS) return WT_FAIL(f, "tensor '%.80s': more than 2^40 elements", nm);
    if (of->t != J_ARR || of->count != 2 || of->first->t != J_NUM || !of->first->is_uint || of->first->next->t != J_NUM ||
        !of->first->next->is_uint)
        return WT_FAIL(f, "tensor '%.80s': data_offsets must be [begin, end], non-negative integers", nm);
    e->begin = of->first->u;
    e->end = of->first->next->u;
    if (e->begin > e->end || e->end > f->data_len)
        return WT_FAIL(f, "tensor '%.80s': data_offsets [%" PRIu64 ", %" PRIu64 "] outside the %" PRIu64 " data bytes", nm,
                       e->begin, e->end, f->data_len);
    uint64_t want = numel * (uint64_t)e->size;
    if (e->end - e->begin != want)
        return WT_FAIL(f, "tensor '%.80s': data_offsets span %" PRIu64 " bytes, but shape %s of %s needs %" PRIu64, nm,
                       e->end - e->begin, shape_str(&e->shape), dt->s, want);
    return true;
}

static int ent_cmp(const void *a, const void *b) {
    const WtEnt *x = a, *y = b;
    return x->begin != y->begin ? (x->begin < y->begin ? -1 : 1) : x->end != y->end ? (x->end < y->end ? -1 : 1) : 0;
}

/* cdl's checksums, when the file has them: the header's (computed with its own eight
 * digits read as '0') and one per tensor.  A file with some but not all is refused. */
static bool st_checksums(WtFile *f, uint64_t hlen) {
    JVal *hc = f->meta ? jget(f->meta, "header_crc32") : NULL;
    int ncrc = 0;
    for (JVal *q = f->meta ? f->meta->first : NULL; q; q = q->next) ncrc += !strncmp(q->key, "crc32:", 6);
    if (!hc && !ncrc) return true;
    if (!hc || !is_hex8(hc->s) || hc->end - hc->off != 10)
        return WT_FAIL(f, "header_crc32 is missing or not 8 lowercase hex digits");
    const unsigned char *h = f->buf + 8;
    size_t at = hc->off + 1;
    uint32_t crc = wt_crc(0, h, at);
    crc = wt_crc(crc, (const unsigned char *)"00000000", 8);
    crc = wt_crc(crc, h + at + 8, (size_t)hlen - at - 8);
    if (crc != (uint32_t)strtoul(hc->s, NULL, 16))
        return WT_FAIL(f, "header checksum mismatch (stored %s, computed %08" PRIx32 "): the file is corrupt", hc->s, crc);
    if (ncrc != f->nent) return WT_FAIL(f, "%d tensor checksums for %d tensors", ncrc, f->nent);
    for (int i = 0; i < f->nent; i++) {
        const WtEnt *e = &f->ent[i];
        const char *v = st_meta(f, cc_str("crc32:%s", e->name));
        if (!is_hex8(v)) return WT_FAIL(f, "tensor '%.80s': no valid crc32 in the metadata", e->name);
        uint32_t got = wt_crc(0, f->data + e->begin, (size_t)(e->end - e->begin));
        if (got != (uint32_t)strtoul(v, NULL, 16))
            return WT_FAIL(f, "tensor '%.80s': checksum mismatch (stored %s, computed %08" PRIx32 "): the data is corrupt",
                           e->name, v, got);
    }
    return true;
}

/* Frame and parse the header, read the entries, check that they tile the data. */
static bool st_parse(WtFile *f) {
    if (f->len < 8) return WT_FAIL(f, "file too short (%zu bytes) for a safetensors header", f->len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | f->buf[i];
    if (n > f->max_header) return WT_FAIL(f, "header length %" PRIu64 " exceeds the limit of %" PRIu64 " bytes for this model", n, f->max_header);
    if (n > f->len - 8) return WT_FAIL(f, "header length %" PRIu64 " exceeds the file size %zu (truncated?)", n, f->len);
    f->data = f->buf + 8 + n;
    f->data_len = f->len - 8 - n;
    JP p = {.src = (const char *)f->buf + 8, .len = (size_t)n, .max_vals = f->max_vals};
    f->root = jp_value(&p, 0);
    if (f->root) jp_ws(&p);
    if (f->root && p.pos != p.len) jp_fail(&p, "text after the header object");
    if (p.err) return WT_FAIL(f, "header JSON: byte %zu: %s", p.err_pos, p.err);
    const char *dup = jdup(f->root);
    if (dup) return WT_FAIL(f, "header JSON: key '%.80s' twice in one object", dup);
    if (f->root->t != J_OBJ) return WT_FAIL(f, "the header is not a JSON object");
    f->meta = jget(f->root, "__metadata__");
    if (f->meta && f->meta->t != J_OBJ) return WT_FAIL(f, "__metadata__ is not an object");
    for (JVal *q = f->meta ? f->meta->first : NULL; q; q = q->next)
        if (q->t != J_STR) return WT_FAIL(f, "metadata '%.80s' is not a string", q->key);
    f->ent = NEWN(WtEnt, f->root->count + 1);
    for (JVal *q = f->root->first; q; q = q->next)
        if (q != f->meta && !st_entry(f, q, &f->ent[f->nent++])) return false;
    WtEnt *sorted = NEWN(WtEnt, f->nent + 1);
    memcpy(sorted, f->ent, sizeof *sorted * (size_t)f->nent);
    qsort(sorted, (size_t)f->nent, sizeof *sorted, ent_cmp);
    uint64_t pos = 0;
    for (int i = 0; i < f->nent; i++) {
        if (sorted[i].begin != pos)
            return WT_FAIL(f, "tensor '%.80s': data begins at %" PRIu64 ", expected %" PRIu64 " (gap or overlap)", sorted[i].name,
                           sorted[i].begin, pos);
        pos = sorted[i].end;
    }
    if (pos != f->data_len)
        return WT_FAIL(f, "%" PRIu64 " bytes after the last tensor's data (trailing garbage or a bad header length)", f->data_len - pos);
    return st_checksums(f, n);
}

/* Read the file whole into the arena, after checking that it is a regular file no
 * bigger than the model's checkpoint can be (limit). */
static bool st_read(WtFile *f, uint64_t limit) {
    FILE *fp = fopen(f->path, "rb");
    if (!fp) return WT_FAIL(f, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) < 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        return WT_FAIL(f, "not a regular file");
    }
    if ((uint64_t)st.st_size > limit) {
        fclose(fp);
        return WT_FAIL(f, "%lld bytes: larger than any checkpoint of this model can be (%" PRIu64 " bytes at most)",
                       (long long)st.st_size, limit);
    }
    f->len = (size_t)st.st_size;
    unsigned char *buf = arena_alloc(cc_arena, f->len + 1);
    size_t got = fread(buf, 1, f->len + 1, fp);
    bool err = ferror(fp);
    fclose(fp);
    if (err) return WT_FAIL(f, "read error");
    if (got != f->len) return WT_FAIL(f, "the file changed while it was read");
    f->buf = buf;
    return true;
}

/* ------------------------------------------------------------------ against the model */

/* The optimizer slot names of a cdl checkpoint ("m,v"), each a prefix of allowed
 * extra tensors. */
static bool slot_tensor(const WtFile *f, const Model *m, const char *name) {
    const char *slots = st_meta(f, "optimizer_slots");
    if (!slots || !*slots) return false;
    for (const char *s = slots; *s;) {
        size_t k = strcspn(s, ",");
        if (!strncmp(name, s, k) && name[k] == '.')
            for (int p = 0; p < m->nparams; p++)
                if (!m->params[p].state && !strcmp(name + k + 1, m->params[p].name)) return true;
        s += k + (s[k] == ',');
    }
    return false;
}

/* Is name "<L>.num_batches_tracked" for a batch norm L of m (state buffers
 * "<L>.running_mean" and "<L>.running_var"): the counter cdl and PyTorch store beside
 * the running statistics? */
static bool bn_counter(const Model *m, const char *name) {
    static const char tail[] = ".num_batches_tracked";
    size_t n = strlen(name), k = sizeof tail - 1;
    if (n <= k || strcmp(name + n - k, tail)) return false;
    const char *mean = cc_str("%.*s.running_mean", (int)(n - k), name), *var = cc_str("%.*s.running_var", (int)(n - k), name);
    bool has_mean = false, has_var = false;
    for (int p = 0; p < m->nparams; p++) {
        has_mean |= m->params[p].state && !strcmp(m->params[p].name, mean);
        has_var |= m->params[p].state && !strcmp(m->params[p].name, var);
    }
    return has_mean && has_var;
}

/* Copy entry e into float values, refusing non-finite ones. */
static float *st_values(const WtFile *f, const WtEnt *e) {
    int64_t n = shape_numel(&e->shape);
    float *v = NEWN(float, n + 1);
    const unsigned char *d = f->data + e->begin;
    for (int64_t i = 0; i < n; i++) {
        double x;
        if (e->f64) {
            uint64_t b = 0;
            for (int k = 7; k >= 0; k--) b = b << 8 | d[8 * i + k];
            memcpy(&x, &b, 8);
        } else {
            uint32_t b = 0;
            float y;
            for (int k = 3; k >= 0; k--) b = b << 8 | d[4 * i + k];
            memcpy(&y, &b, 4);
            x = y;
        }
        if (!isfinite(x) || (e->f64 && fabs(x) > 3.4028234663852886e38)) {
            WT_FAIL(f, "tensor '%.80s': element %lld is %g: the weights must be finite float values", e->name, (long long)i, x);
            return NULL;
        }
        v[i] = (float)x;
    }
    return v;
}

/* The file's metadata against the model: the model name, and cdl's fingerprint of
 * the parameter table (names, shapes, state flags) when the file has one. */
static bool st_model_meta(WtFile *f, const Model *m, bool f64) {
    const char *fmt = st_meta(f, "format"), *model = st_meta(f, "model"), *fp = st_meta(f, "fingerprint");
    if (fmt && strncmp(fmt, "cdl-ckpt ", 9)) return true;     /* another writer's metadata */
    if (fmt && strcmp(fmt, "cdl-ckpt 1")) return WT_FAIL(f, "checkpoint format '%.40s', this compiler reads 'cdl-ckpt 1'", fmt);
    if (model && strcmp(model, m->name))
        return WT_FAIL(f, "a checkpoint of model '%.60s', not of '%s' (%s)", model, m->name, m->file);
    if (fp) {
        char want[24];
        snprintf(want, sizeof want, "%016" PRIx64, emit_fingerprint(m, f64 ? 8 : 4));
        if (strcmp(fp, want))
            return WT_FAIL(f, "fingerprint %.20s, model %s has %s: its parameter table differs (a state buffer "
                           "saved as trainable, or the other way round)", fp, m->name, want);
    }
    return true;
}

Weights *weights_load(const char *path, const Model *m) {
    /* per tensor: its entry (dtype, shape dims, offsets: about 12 values) and two
     * metadata strings (checksum); three tensors per parameter (two optimizer slots) */
    WtFile F = {.path = path, .max_vals = 256 + 48 * (int64_t)m->nparams}, *f = &F;
    /* the biggest checkpoint of m: f64, two optimizer slots, a header of 1 MB plus 4 KB
     * (names, checksums) per parameter */
    uint64_t hmax = ((uint64_t)1 << 20) + 4096 * (uint64_t)m->nparams, limit = 8 + hmax;
    for (int p = 0; p < m->nparams; p++) limit += 3 * 8 * (uint64_t)shape_numel(&m->params[p].shape);
    f->max_header = hmax;
    if (!st_read(f, limit) || !st_parse(f)) return NULL;
    Weights *w = NEW(Weights);
    w->path = path;
    w->cap = m->nparams + 16;
    w->t = NEWN(WTensor, w->cap);
    w->n = m->nparams;
    bool f64 = false, f32 = false;
    for (int p = 0; p < m->nparams; p++) {
        const Param *pa = &m->params[p];
        WtEnt *e = NULL;
        for (int k = 0; k < f->nent && !e; k++)
            if (!strcmp(f->ent[k].name, pa->name)) e = &f->ent[k];
        if (!e) {
            WT_FAIL(f, "tensor '%s' (%s %s, %s:%d) is missing", pa->name, pa->state ? "state buffer" : "parameter",
                    shape_str(&pa->shape), pa->loc.file ? pa->loc.file : m->file, pa->loc.line);
            return NULL;
        }
        if (e->integer) {
            WT_FAIL(f, "tensor '%s': an integer tensor, the model's %s is real (F32 or F64)", pa->name,
                    pa->state ? "state buffer" : "parameter");
            return NULL;
        }
        if (!shape_eq(&e->shape, &pa->shape)) {
            WT_FAIL(f, "tensor '%s': shape %s in the file, the model has %s", pa->name, shape_str(&e->shape),
                    shape_str(&pa->shape));
            return NULL;
        }
        e->used = true;
        f64 |= e->f64;
        f32 |= !e->f64;
        w->t[p] = (WTensor){.name = pa->name, .shape = pa->shape, .data = st_values(f, e)};
        if (!w->t[p].data) return NULL;
    }
    for (int k = 0; k < f->nent; k++) {
        const WtEnt *e = &f->ent[k];
        if (e->used || slot_tensor(f, m, e->name)) continue;
        if (bn_counter(m, e->name)) {
            if (!e->integer || e->shape.rank != 0) {
                WT_FAIL(f, "tensor '%.80s': must be an integer scalar (I64 [] as PyTorch writes it), not %s %s", e->name,
                        e->integer ? "an integer" : e->f64 ? "F64" : "F32", shape_str(&e->shape));
                return NULL;
            }
            continue;
        }
        WT_FAIL(f, "unexpected tensor '%.80s': not a parameter of model %s%s", e->name, m->name,
                st_meta(f, "optimizer_slots") ? " nor an optimizer slot" : "");
        return NULL;
    }
    if (!st_model_meta(f, m, f64 && !f32)) return NULL;
    w->f64 = f64 && !f32;
    return w;
}

int weights_add(Weights *w, const char *name, Shape shape, float *data, const char *note) {
    for (int k = 0; k < w->n; k++)
        if (!strcmp(w->t[k].name, name)) {
            if (!shape_eq(&w->t[k].shape, &shape)) die("weights_add: %s as %s and %s", name, shape_str(&w->t[k].shape), shape_str(&shape));
            return k;
        }
    if (w->n == w->cap) {
        w->t = arena_grow(cc_arena, w->t, sizeof *w->t * (size_t)w->cap, sizeof *w->t * (size_t)w->cap * 2);
        w->cap *= 2;
    }
    w->t[w->n] = (WTensor){.name = name, .shape = shape, .data = data, .note = note};
    return w->n++;
}

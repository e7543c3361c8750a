/* json.c -- a strict JSON reader for safetensors headers (see json.h).
 *
 * Recursive descent over the source bytes; depth is bounded by JSON_MAX_DEPTH so the
 * recursion is bounded too.  Every failure records the byte offset where it was found.
 * Duplicate keys are found after the parse, per object, by sorting its keys.
 */
#include "json.h"

#include "cdl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jp {
    json_doc *doc;
    const unsigned char *s;
    size_t len, pos, pool_len;
    int32_t max_nodes;
    char *err;
    size_t errlen;
    int failed;
} jp;

/* Record the first error ("byte K: ..."); returns -1. */
static int jp_fail(jp *p, const char *fmt, ...) {
    if (p->failed) return -1;
    p->failed = 1;
    int k = snprintf(p->err, p->errlen, "byte %zu: ", p->pos);
    if (k < 0 || (size_t)k >= p->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + k, p->errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

static void jp_ws(jp *p) {
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* A new node (index), or -1 when out of room or memory. */
static int32_t jp_node(jp *p, json_type t) {
    json_doc *d = p->doc;
    if (d->n >= p->max_nodes) return jp_fail(p, "too many JSON values (limit %d)", (int)p->max_nodes);
    if (d->n == d->cap) {
        int64_t nc = d->cap ? (int64_t)d->cap * 2 : 64;
        if (nc > p->max_nodes) nc = p->max_nodes;
        json_node *nn = cdl_alloc((size_t)nc * sizeof *nn);
        if (!nn) return jp_fail(p, "out of memory");
        if (d->n) memcpy(nn, d->node, (size_t)d->n * sizeof *nn);
        cdl_free(d->node);
        d->node = nn;
        d->cap = (int32_t)nc;
    }
    json_node *n = &d->node[d->n];
    memset(n, 0, sizeof *n);
    n->type = (uint8_t)t;
    n->first = n->next = -1;
    n->key = UINT32_MAX;
    n->off = (uint32_t)p->pos;
    return d->n++;
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Four hex digits at p->pos (after "\u"); -1 if not. */
static long jp_hex4(jp *p) {
    if (p->len - p->pos < 4) return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->s[p->pos + (size_t)i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    p->pos += 4;
    return v;
}

/* Length of the valid UTF-8 sequence starting at s[0] (n bytes available), or 0
 * (overlong forms, surrogates and code points above U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t k;
    uint32_t cp, min;
    if ((c & 0xE0) == 0xC0) { k = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { k = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { k = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < k) return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k;
}

static size_t utf8_put(char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string at p->pos (on the opening quote), decoded into the pool.  Sets *off and
 * *len (pool offset, decoded length).  The decoded text plus its NUL never exceeds
 * the source span, so the pool (len + 1 bytes) cannot overflow. */
static int jp_string(jp *p, uint32_t *off, uint32_t *len) {
    p->pos++;                                   /* opening quote */
    char *o = p->doc->pool + p->pool_len;
    size_t w = 0;
    for (;;) {
        if (p->pos >= p->len) return jp_fail(p, "unterminated string");
        unsigned char c = p->s[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) return jp_fail(p, "control character 0x%02x in a string", c);
        if (c == '\\') {
            p->pos++;
            if (p->pos >= p->len) return jp_fail(p, "unterminated string");
            unsigned char e = p->s[p->pos++];
            switch (e) {
            case '"': o[w++] = '"'; break;
            case '\\': o[w++] = '\\'; break;
            case '/': o[w++] = '/'; break;
            case 'b': o[w++] = '\b'; break;
            case 'f': o[w++] = '\f'; break;
            case 'n': o[w++] = '\n'; break;
            case 'r': o[w++] = '\r'; break;
            case 't': o[w++] = '\t'; break;
            case 'u': {
                long cp = jp_hex4(p);
                if (cp < 0) return jp_fail(p, "bad \\u escape");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
                        return jp_fail(p, "unpaired surrogate in \\u escape");
                    p->pos += 2;
                    long lo = jp_hex4(p);
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return jp_fail(p, "unpaired surrogate in \\u escape");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    return jp_fail(p, "unpaired surrogate in \\u escape");
                } else if (cp == 0) {
                    return jp_fail(p, "\\u0000 in a string");
                }
                w += utf8_put(o + w, (uint32_t)cp);
                break;
            }
            default:
                p->pos--;
                return jp_fail(p, "bad escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?');
            }
            continue;
        }
        size_t k = utf8_len(p->s + p->pos, p->len - p->pos);
        if (k == 0) return jp_fail(p, "invalid UTF-8 in a string");
        memcpy(o + w, p->s + p->pos, k);
        w += k;
        p->pos += k;
    }
    o[w] = 0;
    *off = (uint32_t)p->pool_len;
    *len = (uint32_t)w;
    p->pool_len += w + 1;
    return 0;
}

static int isdig(unsigned char c) { return c >= '0' && c <= '9'; }

/* A number per the JSON grammar; is_uint/u when it is a plain integer >= 0 that fits. */
static int jp_number(jp *p, json_node *n) {
    size_t i = p->pos;
    const unsigned char *s = p->s;
    int neg = 0, plain = 1;
    if (i < p->len && s[i] == '-') { neg = 1; i++; }
    if (i >= p->len || !isdig(s[i])) { p->pos = i; return jp_fail(p, "bad number"); }
    size_t d0 = i;
    if (s[i] == '0') i++;
    else while (i < p->len && isdig(s[i])) i++;
    size_t d1 = i;
    if (i < p->len && s[i] == '.') {
        plain = 0;
        i++;
        if (i >= p->len || !isdig(s[i])) { p->pos = i; return jp_fail(p, "bad number"); }
        while (i < p->len && isdig(s[i])) i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        plain = 0;
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->len || !isdig(s[i])) { p->pos = i; return jp_fail(p, "bad number"); }
        while (i < p->len && isdig(s[i])) i++;
    }
    if (plain && !neg) {
        uint64_t u = 0;
        int fits = 1;
        for (size_t k = d0; k < d1; k++) {
            unsigned dv = (unsigned)(s[k] - '0');
            if (u > (UINT64_MAX - dv) / 10) { fits = 0; break; }
            u = u * 10 + dv;
        }
        n->is_uint = (uint8_t)fits;
        n->u = fits ? u : 0;
    }
    p->pos = i;
    return 0;
}

static int jp_value(jp *p, int depth);

/* Parse one value at p->pos into a new node; returns its index or -1. */
static int32_t jp_value_node(jp *p, int depth) {
    int32_t before = p->doc->n;
    if (jp_value(p, depth) < 0) return -1;
    return before;
}

/* An array or object (opening bracket at p->pos). */
static int jp_container(jp *p, int32_t self, int depth, int is_obj) {
    char close = is_obj ? '}' : ']';
    p->pos++;
    jp_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return 0;
    }
    int32_t last = -1;
    for (;;) {
        uint32_t koff = UINT32_MAX, klen = 0;
        if (is_obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"') return jp_fail(p, "expected a string key");
            if (jp_string(p, &koff, &klen) < 0) return -1;
            jp_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') return jp_fail(p, "expected ':'");
            p->pos++;
            jp_ws(p);
        }
        int32_t c = jp_value_node(p, depth + 1);
        if (c < 0) return -1;
        json_node *nodes = p->doc->node;
        nodes[c].key = koff;
        if (last < 0) nodes[self].first = c;
        else nodes[last].next = c;
        last = c;
        nodes[self].count++;
        jp_ws(p);
        if (p->pos >= p->len) return jp_fail(p, "unexpected end inside %s", is_obj ? "an object" : "an array");
        unsigned char ch = p->s[p->pos];
        if (ch == close) { p->pos++; return 0; }
        if (ch != ',') return jp_fail(p, "expected ',' or '%c'", close);
        p->pos++;
        jp_ws(p);
    }
}

static int jp_lit(jp *p, const char *w) {
    size_t k = strlen(w);
    if (p->len - p->pos < k || memcmp(p->s + p->pos, w, k) != 0) return jp_fail(p, "unexpected character");
    p->pos += k;
    return 0;
}

/* One value at p->pos (whitespace already skipped). */
static int jp_value(jp *p, int depth) {
    if (depth > JSON_MAX_DEPTH) return jp_fail(p, "nesting deeper than %d", JSON_MAX_DEPTH);
    if (p->pos >= p->len) return jp_fail(p, "unexpected end of JSON");
    unsigned char c = p->s[p->pos];
    json_type t;
    switch (c) {
    case '{': t = JSON_OBJECT; break;
    case '[': t = JSON_ARRAY; break;
    case '"': t = JSON_STRING; break;
    case 't': t = JSON_TRUE; break;
    case 'f': t = JSON_FALSE; break;
    case 'n': t = JSON_NULL; break;
    default:
        if (c == '-' || isdig(c)) { t = JSON_NUMBER; break; }
        return jp_fail(p, "unexpected character");
    }
    int32_t self = jp_node(p, t);
    if (self < 0) return -1;
    int rc = 0;
    switch (t) {
    case JSON_OBJECT: rc = jp_container(p, self, depth, 1); break;
    case JSON_ARRAY: rc = jp_container(p, self, depth, 0); break;
    case JSON_STRING: {
        uint32_t off, len;
        rc = jp_string(p, &off, &len);
        if (rc == 0) {
            p->doc->node[self].str = off;
            p->doc->node[self].len = len;
        }
        break;
    }
    case JSON_TRUE: rc = jp_lit(p, "true"); break;
    case JSON_FALSE: rc = jp_lit(p, "false"); break;
    case JSON_NULL: rc = jp_lit(p, "null"); break;
    case JSON_NUMBER: rc = jp_number(p, &p->doc->node[self]); break;
    }
    if (rc < 0) return -1;
    p->doc->node[self].end = (uint32_t)p->pos;
    return 0;
}

static _Thread_local const char *sort_pool;   /* qsort has no context argument */
static int key_cmp(const void *a, const void *b) {
    return strcmp(sort_pool + *(const uint32_t *)a, sort_pool + *(const uint32_t *)b);
}

/* Refuse an object with two equal keys: per object, sort its key offsets by text and
 * compare neighbours (one scratch array of the largest member count). */
static int jp_dupes(jp *p) {
    json_doc *d = p->doc;
    int32_t maxc = 0;
    for (int32_t i = 0; i < d->n; i++)
        if (d->node[i].type == JSON_OBJECT && d->node[i].count > maxc) maxc = d->node[i].count;
    if (maxc < 2) return 0;
    uint32_t *keys = cdl_alloc((size_t)maxc * sizeof *keys);
    if (!keys) return jp_fail(p, "out of memory");
    int rc = 0;
    for (int32_t i = 0; i < d->n && rc == 0; i++) {
        json_node *o = &d->node[i];
        if (o->type != JSON_OBJECT || o->count < 2) continue;
        int32_t k = 0;
        for (int32_t c = o->first; c >= 0; c = d->node[c].next) keys[k++] = d->node[c].key;
        if (o->count == 2) {
            if (strcmp(d->pool + keys[0], d->pool + keys[1]) == 0) goto dupe;
            continue;
        }
        sort_pool = d->pool;
        qsort(keys, (size_t)k, sizeof *keys, key_cmp);
        for (int32_t j = 1; j < k; j++)
            if (strcmp(d->pool + keys[j - 1], d->pool + keys[j]) == 0) {
                keys[0] = keys[j];
                goto dupe;
            }
        continue;
    dupe:
        p->pos = o->off;
        rc = jp_fail(p, "duplicate key \"%.80s\" in an object", d->pool + keys[0]);
    }
    cdl_free(keys);
    return rc;
}

int json_parse(json_doc *doc, const char *src, size_t len, int32_t max_nodes, char *err,
               size_t errlen) {
    memset(doc, 0, sizeof *doc);
    jp p = {.doc = doc, .s = (const unsigned char *)src, .len = len, .max_nodes = max_nodes,
            .err = err, .errlen = errlen};
    if (errlen) err[0] = 0;
    if (len >= (size_t)INT32_MAX) return jp_fail(&p, "JSON text too long");
    if (max_nodes < 1) p.max_nodes = 1;
    doc->pool = cdl_alloc(len + 1);
    if (!doc->pool) return jp_fail(&p, "out of memory");
    jp_ws(&p);
    int rc = jp_value(&p, 0);
    if (rc == 0) {
        jp_ws(&p);
        if (p.pos != len) rc = jp_fail(&p, "trailing characters after the JSON value");
    }
    if (rc == 0) rc = jp_dupes(&p);
    if (rc < 0) {
        json_free(doc);
        return -1;
    }
    return 0;
}

void json_free(json_doc *doc) {
    if (!doc) return;
    cdl_free(doc->node);
    cdl_free(doc->pool);
    memset(doc, 0, sizeof *doc);
}

int32_t json_get(const json_doc *doc, int32_t obj, const char *key) {
    if (obj < 0 || obj >= doc->n || doc->node[obj].type != JSON_OBJECT) return -1;
    for (int32_t c = doc->node[obj].first; c >= 0; c = doc->node[c].next)
        if (strcmp(doc->pool + doc->node[c].key, key) == 0) return c;
    return -1;
}

const char *json_key(const json_doc *doc, int32_t i) {
    return doc->node[i].key == UINT32_MAX ? "" : doc->pool + doc->node[i].key;
}

const char *json_str(const json_doc *doc, int32_t i) {
    return doc->node[i].type == JSON_STRING ? doc->pool + doc->node[i].str : "";
}

int json_utf8_valid(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len(u + i, n - i);
        if (k == 0) return 0;
        i += k;
    }
    return 1;
}

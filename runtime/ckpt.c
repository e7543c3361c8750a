/* ckpt.c -- checkpoints and named-tensor dumps in the safetensors layout.
 *
 * File layout (https://github.com/huggingface/safetensors, "format"):
 *   u64 little-endian N | N bytes of JSON header, space-padded so 8 + N is a multiple
 *   of 8 | tensor data, little-endian, contiguous, in header order.
 * The JSON header maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
 * end]} (offsets relative to the data start) and "__metadata__" to string: string pairs.
 *
 * Integrity: every byte of the file is covered by a check.
 *   - "crc32:<name>" in the metadata: CRC-32 (zlib) of that tensor's bytes; tensors
 *     cover the data section exactly, so every data byte is checked.
 *   - "header_crc32": CRC-32 of the N header bytes (padding included) with the 8 hex
 *     digits of this very value replaced by '0'.  A flip in the digits themselves makes
 *     the stored value disagree with the recomputed one.
 *   - the length prefix: 8 + N + (end of the last tensor) must equal the file size, and
 *     a different N frames a different (checksum-failing or unparsable) JSON text.
 * A plain safetensors reader ignores the extra metadata keys.
 *
 * Checkpoints (cdl_ckpt_save/load) are such files with the model's parameters under
 * their dotted names, optimizer slots as "<slot>.<param>" for trainable parameters,
 * and metadata "format": "cdl-ckpt 1", model, fingerprint (16 hex digits), step,
 * epoch, seed, batch_in_epoch (decimal), optimizer ("none", "sgd", "adam", "adamw"),
 * optimizer_t, optimizer_slots (comma-separated slot names, "" for none).
 *
 * Loading reads the file into memory, validates all of it, and only then copies into
 * the net and optimizer; a refused file leaves them untouched.
 */
#include "cdl.h"
#include "json.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ckpt.c writes host memory as little-endian tensor data: add byte swapping for this host"
#endif

#define CKPT_FORMAT "cdl-ckpt 1"
#define CKPT_MAX_HEADER ((uint64_t)100 << 20)   /* 100 MB of JSON */
#define CKPT_CHUNK ((size_t)1 << 20)              /* bytes per write() */
/* Fuzz builds (make fuzz) accept wrong checksums so the fuzzer reaches the checks
 * behind them; the checksum fields must still be present and well-formed. */
#ifdef CDL_FUZZING
#define CKPT_CHECK_CRC_OFF 1
#else
#define CKPT_CHECK_CRC_OFF 0
#endif

void (*cdl_ckpt_test_hook)(int stage, uint64_t bytes);

/* ---------------------------------------------------------------- small helpers */

/* CRC-32 of n bytes continuing crc (zlib's crc32 takes 32-bit lengths). */
static uint32_t crc_bytes(uint32_t crc, const void *p, size_t n) {
    const unsigned char *b = p;
    while (n > 0) {
        uInt k = n > ((size_t)1 << 30) ? (uInt)1 << 30 : (uInt)n;
        crc = (uint32_t)crc32(crc, b, k);
        b += k;
        n -= k;
    }
    return crc;
}

static size_t dtype_size(cdl_dtype t) { return t == CDL_F64 ? 8 : 4; }
static const char *dtype_name(cdl_dtype t) {
    return t == CDL_F64 ? "F64" : t == CDL_I32 ? "I32" : "F32";
}
static int dtype_parse(const char *s, cdl_dtype *t) {
    if (strcmp(s, "F32") == 0) *t = CDL_F32;
    else if (strcmp(s, "F64") == 0) *t = CDL_F64;
    else if (strcmp(s, "I32") == 0) *t = CDL_I32;
    else return -1;
    return 0;
}

/* Elements of a shape, or -1 on a negative dim or overflow past 2^62. */
static int64_t shape_numel(int rank, const int64_t *dims) {
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 0) return -1;
        if (dims[i] && n > ((int64_t)1 << 62) / dims[i]) return -1;
        n *= dims[i];
    }
    return n;
}

/* "[2, 3]" into buf. */
static const char *shape_str(char *buf, size_t n, int rank, const int64_t *dims) {
    size_t k = 0;
    k += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? ", " : "", dims[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

static int is_hex8(const char *s) {
    if (strlen(s) != 8) return 0;
    for (int i = 0; i < 8; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* Strict unsigned decimal (no sign, no spaces, no leading zeros but "0"). */
static int parse_u64(const char *s, uint64_t *out) {
    if (!*s || (s[0] == '0' && s[1])) return -1;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Exactly 16 lowercase hex digits. */
static int parse_hex64(const char *s, uint64_t *out) {
    if (strlen(s) != 16) return -1;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int h = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (h < 0) return -1;
        v = v << 4 | (uint64_t)h;
    }
    *out = v;
    return 0;
}

static const char *optim_kind_name(cdl_optim_kind k) {
    switch (k) {
    case CDL_OPT_SGD: return "sgd";
    case CDL_OPT_ADAM: return "adam";
    case CDL_OPT_ADAMW: return "adamw";
    case CDL_OPT_RMSPROP: return "rmsprop";
    case CDL_OPT_ADAGRAD: return "adagrad";
    }
    return "?";
}

/* A growing string in cdl_alloc memory; oom sticks. */
typedef struct sbuf { char *p; size_t len, cap; int oom; } sbuf;

static void sb_reserve(sbuf *b, size_t extra) {
    if (b->oom) return;
    if (b->len + extra + 1 <= b->cap) return;
    size_t nc = b->cap ? b->cap : 1024;
    while (nc < b->len + extra + 1) nc *= 2;
    char *q = cdl_alloc(nc);
    if (!q) { b->oom = 1; return; }
    if (b->len) memcpy(q, b->p, b->len);
    cdl_free(b->p);
    b->p = q;
    b->cap = nc;
}
static void sb_put(sbuf *b, const char *s, size_t n) {
    sb_reserve(b, n);
    if (b->oom) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
/* s as a JSON string literal (s is valid UTF-8; controls, quote and backslash escaped). */
static void sb_jstr(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            sb_put(b, e, 6);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}
static void sb_i64(sbuf *b, int64_t v) {
    char t[32];
    snprintf(t, sizeof t, "%" PRId64, v);
    sb_puts(b, t);
}

/* ---------------------------------------------------------------- atomic writing */

/* Write n bytes fully (EINTR and short writes retried), calling the test hook with
 * the running total after each chunk. */
static int write_all(int fd, const void *p, size_t n, uint64_t *total) {
    const char *c = p;
    while (n > 0) {
        size_t k = n < CKPT_CHUNK ? n : CKPT_CHUNK;
        ssize_t w = write(fd, c, k);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        c += w;
        n -= (size_t)w;
        *total += (uint64_t)w;
        if (cdl_ckpt_test_hook) cdl_ckpt_test_hook(0, *total);
    }
    return 0;
}

/* fsync the directory holding path so the rename is durable. */
static int fsync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else {
        size_t k = (size_t)(slash - path);
        if (k >= sizeof dir) return cdl_fail("%s: directory name too long", path);
        memcpy(dir, path, k);
        dir[k] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return cdl_fail("%s: cannot open directory %s: %s", path, dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc < 0 && e != EINVAL && e != EROFS)      /* some file systems cannot sync dirs */
        return cdl_fail("%s: fsync of directory %s: %s", path, dir, strerror(e));
    return 0;
}

/* One tensor to write, validated. */
typedef struct st_item {
    const cdl_st_tensor *t;
    size_t bytes;
    uint32_t crc;
} st_item;

/* The writer behind cdl_safetensors_write and cdl_ckpt_save. */
static int st_write(const char *path, int n, const cdl_st_tensor *t, int nmeta,
                    const char *const *kv) {
    if (!path || !*path) return cdl_fail("cdl_safetensors_write: no path");
    if (n < 0 || (n > 0 && !t) || nmeta < 0 || (nmeta > 0 && !kv))
        return cdl_fail("%s: bad tensor or metadata list", path);
    /* Validate names, metadata and sizes. */
    for (int i = 0; i < nmeta; i++) {
        const char *k = kv[2 * i], *v = kv[2 * i + 1];
        if (!k || !v || !*k) return cdl_fail("%s: metadata entry %d: empty key or value", path, i);
        if (!json_utf8_valid(k, strlen(k)) || !json_utf8_valid(v, strlen(v)))
            return cdl_fail("%s: metadata '%s': not UTF-8", path, k);
        if (strcmp(k, "header_crc32") == 0 || strncmp(k, "crc32:", 6) == 0)
            return cdl_fail("%s: metadata key '%s' is reserved", path, k);
        for (int j = 0; j < i; j++)
            if (strcmp(kv[2 * j], k) == 0) return cdl_fail("%s: metadata key '%s' twice", path, k);
    }
    st_item *it = cdl_alloc(sizeof *it * (size_t)(n ? n : 1));
    if (!it) return -1;
    int rc = -1;
    for (int i = 0; i < n; i++) {
        const cdl_st_tensor *x = &t[i];
        const char *nm = x->name;
        if (!nm || !*nm || strcmp(nm, "__metadata__") == 0 || !json_utf8_valid(nm, strlen(nm))) {
            cdl_fail("%s: tensor %d: bad name", path, i);
            goto out;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].name, nm) == 0) {
                cdl_fail("%s: tensor '%s' given twice", path, nm);
                goto out;
            }
        if ((x->dtype != CDL_F32 && x->dtype != CDL_F64 && x->dtype != CDL_I32) || x->rank < 0 ||
            x->rank > CDL_MAXDIM) {
            cdl_fail("%s: tensor '%s': bad dtype or rank", path, nm);
            goto out;
        }
        int64_t ne = shape_numel(x->rank, x->dims);
        if (ne < 0 || (uint64_t)ne > SIZE_MAX / 8) {
            cdl_fail("%s: tensor '%s': bad shape", path, nm);
            goto out;
        }
        it[i].t = x;
        it[i].bytes = (size_t)ne * dtype_size(x->dtype);
        if (it[i].bytes && !x->data) {
            cdl_fail("%s: tensor '%s': no data", path, nm);
            goto out;
        }
        it[i].crc = crc_bytes((uint32_t)crc32(0L, Z_NULL, 0), x->data, it[i].bytes);
    }

    /* The header. */
    sbuf hb = {0};
    sb_puts(&hb, "{\"__metadata__\":{");
    for (int i = 0; i < nmeta; i++) {
        sb_jstr(&hb, kv[2 * i]);
        sb_puts(&hb, ":");
        sb_jstr(&hb, kv[2 * i + 1]);
        sb_puts(&hb, ",");
    }
    for (int i = 0; i < n; i++) {
        char val[16];
        snprintf(val, sizeof val, "\"%08" PRIx32 "\",", it[i].crc);
        /* "crc32:<name>": the name is escaped like any JSON string. */
        sb_puts(&hb, "\"crc32:");
        size_t at = hb.len;
        sb_jstr(&hb, it[i].t->name);
        if (!hb.oom) {                               /* drop the name's opening quote */
            memmove(hb.p + at, hb.p + at + 1, hb.len - at - 1);
            hb.len--;
            hb.p[hb.len] = 0;
        }
        sb_puts(&hb, ":");
        sb_puts(&hb, val);
    }
    sb_puts(&hb, "\"header_crc32\":\"");
    size_t crc_at = hb.len;
    sb_puts(&hb, "00000000\"}");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        sb_puts(&hb, ",");
        sb_jstr(&hb, it[i].t->name);
        sb_puts(&hb, ":{\"dtype\":\"");
        sb_puts(&hb, dtype_name(it[i].t->dtype));
        sb_puts(&hb, "\",\"shape\":[");
        for (int d = 0; d < it[i].t->rank; d++) {
            if (d) sb_puts(&hb, ",");
            sb_i64(&hb, it[i].t->dims[d]);
        }
        sb_puts(&hb, "],\"data_offsets\":[");
        sb_i64(&hb, (int64_t)off);
        sb_puts(&hb, ",");
        off += it[i].bytes;
        sb_i64(&hb, (int64_t)off);
        sb_puts(&hb, "]}");
    }
    sb_puts(&hb, "}");
    while (!hb.oom && (8 + hb.len) % 8) sb_puts(&hb, " ");
    if (hb.oom) {
        cdl_free(hb.p);
        cdl_fail("%s: out of memory building the header", path);
        goto out;
    }
    uint32_t hcrc = crc_bytes((uint32_t)crc32(0L, Z_NULL, 0), hb.p, hb.len);
    char hx[9];
    snprintf(hx, sizeof hx, "%08" PRIx32, hcrc);
    memcpy(hb.p + crc_at, hx, 8);

    /* Write path.tmp.<pid>, fsync, rename, fsync the directory. */
    size_t plen = strlen(path);
    char *tmp = cdl_alloc(plen + 32);
    if (!tmp) {
        cdl_free(hb.p);
        goto out;
    }
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        cdl_fail("%s: cannot create %s: %s", path, tmp, strerror(errno));
    } else {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hb.len >> (8 * i));
        uint64_t total = 0;
        int ok = write_all(fd, len8, 8, &total) == 0 && write_all(fd, hb.p, hb.len, &total) == 0;
        for (int i = 0; ok && i < n; i++) ok = write_all(fd, it[i].t->data, it[i].bytes, &total) == 0;
        if (!ok) cdl_fail("%s: write to %s failed: %s", path, tmp, strerror(errno));
        else if (fsync(fd) < 0) {
            cdl_fail("%s: fsync of %s failed: %s", path, tmp, strerror(errno));
            ok = 0;
        }
        if (close(fd) < 0 && ok) {
            cdl_fail("%s: close of %s failed: %s", path, tmp, strerror(errno));
            ok = 0;
        }
        if (ok && cdl_ckpt_test_hook) cdl_ckpt_test_hook(1, total);
        if (ok && rename(tmp, path) < 0) {
            cdl_fail("%s: rename from %s failed: %s", path, tmp, strerror(errno));
            ok = 0;
        }
        if (!ok) unlink(tmp);
        else {
            if (cdl_ckpt_test_hook) cdl_ckpt_test_hook(2, total);
            if (fsync_dir(path) == 0) rc = 0;
        }
    }
    cdl_free(tmp);
    cdl_free(hb.p);
out:
    cdl_free(it);
    return rc;
}

int cdl_safetensors_write(const char *path, int n, const cdl_st_tensor *t, int nmeta,
                          const char *const *meta_kv) {
    return st_write(path, n, t, nmeta, meta_kv);
}

/* ---------------------------------------------------------------- checkpoints: save */

static int is_trainable(const cdl_tensor *t) { return !(t->flags & CDL_T_STATE); }

/* Check that parameter i of m lies inside the slab (and, if trainable, inside the
 * trainable prefix); its element count in *ne. */
static int param_extent(const cdl_model *m, int i, int64_t *ne) {
    const cdl_tensor *t = &m->params[i];
    const char *nm = t->name ? t->name : "?";
    int64_t n = (t->rank >= 0 && t->rank <= CDL_MAXDIM) ? shape_numel(t->rank, t->dims) : -1;
    size_t lim = is_trainable(t) ? m->train_count : m->param_count;
    if (!t->name || n < 0 || t->offset > lim || (uint64_t)n > lim - t->offset)
        return cdl_fail("model %s: parameter %s: bad table entry (shape or offset)",
                        m->name ? m->name : "?", nm);
    *ne = n;
    return 0;
}

/* Check the optimizer against the net's model: slots present and named. */
static int optim_check(const cdl_optim *opt, const cdl_model *m, const char *what) {
    if (opt->model && opt->model != m)
        return cdl_fail("%s: the optimizer belongs to model %s, not %s", what,
                        opt->model->name ? opt->model->name : "?", m->name ? m->name : "?");
    if (opt->n_slots < 0 || opt->n_slots > 2)
        return cdl_fail("%s: optimizer has %d slots", what, opt->n_slots);
    for (int s = 0; s < opt->n_slots; s++)
        if (!opt->slot_name[s] || !*opt->slot_name[s] || strchr(opt->slot_name[s], ',') ||
            (!opt->slot[s] && m->train_count))
            return cdl_fail("%s: optimizer slot %d is not set up", what, s);
    if (opt->n_slots == 2 && strcmp(opt->slot_name[0], opt->slot_name[1]) == 0)
        return cdl_fail("%s: optimizer slots share the name %s", what, opt->slot_name[0]);
    return 0;
}

/* Save: the parameters, then each optimizer slot's tensors, as one safetensors file. */
int cdl_ckpt_save(const char *path, const cdl_net *net, const cdl_optim *opt,
                  const cdl_ckpt_meta *meta) {
    if (!path || !net || !net->model) return cdl_fail("cdl_ckpt_save: no path or net");
    const cdl_model *m = net->model;
    if ((m->real_size != 4 && m->real_size != 8) || m->n_params < 0)
        return cdl_fail("%s: model %s: bad descriptor", path, m->name ? m->name : "?");
    if (opt && optim_check(opt, m, path) < 0) return -1;
    int nslots = opt ? opt->n_slots : 0, ntrain = 0;
    for (int i = 0; i < m->n_params; i++) {
        int64_t ne;
        if (param_extent(m, i, &ne) < 0) return -1;
        ntrain += is_trainable(&m->params[i]);
    }
    size_t rs = (size_t)m->real_size;
    cdl_dtype dt = rs == 8 ? CDL_F64 : CDL_F32;
    int n = m->n_params + nslots * ntrain;
    cdl_st_tensor *t = cdl_alloc(sizeof *t * (size_t)(n ? n : 1));
    size_t names_cap = 1;
    for (int s = 0; s < nslots; s++)
        for (int i = 0; i < m->n_params; i++)
            names_cap += strlen(opt->slot_name[s]) + 1 + strlen(m->params[i].name) + 1;
    char *names = cdl_alloc(names_cap);
    if (!t || !names) {
        cdl_free(t);
        cdl_free(names);
        return -1;
    }
    int k = 0;
    size_t nk = 0;
    for (int i = 0; i < m->n_params; i++, k++) {
        const cdl_tensor *p = &m->params[i];
        t[k].name = p->name;
        t[k].dtype = dt;
        t[k].rank = p->rank;
        memcpy(t[k].dims, p->dims, sizeof p->dims);
        t[k].data = (const char *)net->param + p->offset * rs;
    }
    for (int s = 0; s < nslots; s++)
        for (int i = 0; i < m->n_params; i++) {
            const cdl_tensor *p = &m->params[i];
            if (!is_trainable(p)) continue;
            int w = snprintf(names + nk, names_cap - nk, "%s.%s", opt->slot_name[s], p->name);
            t[k].name = names + nk;
            nk += (size_t)w + 1;
            t[k].dtype = dt;
            t[k].rank = p->rank;
            memcpy(t[k].dims, p->dims, sizeof p->dims);
            t[k].data = (const char *)opt->slot[s] + p->offset * rs;
            k++;
        }

    cdl_ckpt_meta dm = {.step = net->step, .seed = net->seed};
    if (!meta) meta = &dm;
    char fp[24], step[24], epoch[24], seed[24], bie[24], ot[24], slots[256];
    snprintf(fp, sizeof fp, "%016" PRIx64, m->fingerprint);
    snprintf(step, sizeof step, "%" PRIu64, meta->step);
    snprintf(epoch, sizeof epoch, "%" PRIu64, meta->epoch);
    snprintf(seed, sizeof seed, "%" PRIu64, meta->seed);
    snprintf(bie, sizeof bie, "%" PRIu64, (uint64_t)(meta->batch_in_epoch < 0 ? 0 : meta->batch_in_epoch));
    snprintf(ot, sizeof ot, "%" PRIu64, opt ? opt->t : 0);
    slots[0] = 0;
    for (int s = 0; s < nslots; s++)
        snprintf(slots + strlen(slots), sizeof slots - strlen(slots), "%s%s", s ? "," : "",
                 opt->slot_name[s]);
    const char *kv[] = {
        "format", CKPT_FORMAT,
        "model", m->name ? m->name : "",
        "fingerprint", fp,
        "step", step,
        "epoch", epoch,
        "seed", seed,
        "batch_in_epoch", bie,
        "optimizer", opt ? optim_kind_name(opt->cfg.kind) : "none",
        "optimizer_t", ot,
        "optimizer_slots", slots,
    };
    int rc = st_write(path, n, t, (int)(sizeof kv / sizeof kv[0] / 2), kv);
    cdl_free(t);
    cdl_free(names);
    return rc;
}

/* ---------------------------------------------------------------- checkpoints: load */

/* One tensor entry of the header, as validated. */
typedef struct ck_ent {
    int32_t node;                /* its member node in the JSON root */
    const char *name;
    cdl_dtype dtype;
    int rank;
    int64_t dims[CDL_MAXDIM];
    uint64_t begin, end;
    uint32_t crc;
    int matched;
} ck_ent;

/* The loader's working state; everything it allocates is freed by ck_done. */
typedef struct ck {
    const char *what;
    const unsigned char *buf;
    size_t len;
    const char *hdr;
    uint64_t hlen;
    const unsigned char *data;
    uint64_t data_len;
    json_doc doc;
    int32_t meta;                /* __metadata__ node */
    ck_ent *ent;
    int nent;
    int32_t *order;              /* entries sorted by offset */
} ck;

static void ck_done(ck *c) {
    json_free(&c->doc);
    cdl_free(c->ent);
    cdl_free(c->order);
}

/* The metadata string called key, or NULL. */
static const char *ck_meta(const ck *c, const char *key) {
    int32_t i = json_get(&c->doc, c->meta, key);
    return i < 0 ? NULL : json_str(&c->doc, i);
}

static _Thread_local const ck_ent *sort_ent;   /* qsort has no context argument */
static int ent_cmp(const void *a, const void *b) {
    const ck_ent *x = &sort_ent[*(const int32_t *)a], *y = &sort_ent[*(const int32_t *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Frame, parse and checksum the header; read every tensor entry and check that the
 * entries tile the data section and match their checksums.  Model-independent. */
static int ck_parse(ck *c, int32_t max_nodes) {
    const char *w = c->what;
    if (c->len < 8)
        return cdl_fail("%s: file too short (%zu bytes) for a safetensors header", w, c->len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | c->buf[i];
    if (n > CKPT_MAX_HEADER)
        return cdl_fail("%s: header length %" PRIu64 " exceeds the limit of %" PRIu64 " bytes",
                        w, n, CKPT_MAX_HEADER);
    if (n > c->len - 8)
        return cdl_fail("%s: header length %" PRIu64 " exceeds the file size %zu (truncated?)",
                        w, n, c->len);
    c->hdr = (const char *)c->buf + 8;
    c->hlen = n;
    c->data = c->buf + 8 + n;
    c->data_len = c->len - 8 - n;
    char err[160];
    if (json_parse(&c->doc, c->hdr, (size_t)n, max_nodes, err, sizeof err) < 0)
        return cdl_fail("%s: header JSON: %s", w, err);
    const json_doc *d = &c->doc;
    if (d->node[0].type != JSON_OBJECT) return cdl_fail("%s: header is not a JSON object", w);
    c->meta = json_get(d, 0, "__metadata__");
    if (c->meta < 0 || d->node[c->meta].type != JSON_OBJECT)
        return cdl_fail("%s: header has no __metadata__ object", w);
    for (int32_t i = d->node[c->meta].first; i >= 0; i = d->node[i].next)
        if (d->node[i].type != JSON_STRING)
            return cdl_fail("%s: metadata '%.80s' is not a string", w, json_key(d, i));
    int32_t hc = json_get(d, c->meta, "header_crc32");
    if (hc < 0) return cdl_fail("%s: header has no header_crc32 (not written by cdl?)", w);
    if (!is_hex8(json_str(d, hc)) || d->node[hc].end - d->node[hc].off != 10)
        return cdl_fail("%s: header_crc32 is not 8 hex digits", w);
    /* CRC of the header with the value's digits replaced by '0'. */
    size_t at = d->node[hc].off + 1;
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    crc = crc_bytes(crc, c->hdr, at);
    crc = crc_bytes(crc, "00000000", 8);
    crc = crc_bytes(crc, c->hdr + at + 8, (size_t)n - at - 8);
    char hx[9];
    snprintf(hx, sizeof hx, "%08" PRIx32, crc);
    if (strcmp(hx, json_str(d, hc)) != 0 && !CKPT_CHECK_CRC_OFF)
        return cdl_fail("%s: header checksum mismatch (stored %s, computed %s): the file is corrupt",
                        w, json_str(d, hc), hx);

    /* Tensor entries. */
    int nent = d->node[0].count - 1;
    c->ent = cdl_alloc(sizeof *c->ent * (size_t)(nent > 0 ? nent : 1));
    c->order = cdl_alloc(sizeof *c->order * (size_t)(nent > 0 ? nent : 1));
    if (!c->ent || !c->order) return -1;
    int k = 0;
    for (int32_t i = d->node[0].first; i >= 0; i = d->node[i].next) {
        if (i == c->meta) continue;
        ck_ent *e = &c->ent[k];
        e->node = i;
        e->name = json_key(d, i);
        const char *nm = e->name;
        const json_node *o = &d->node[i];
        if (o->type != JSON_OBJECT) return cdl_fail("%s: tensor '%.80s': entry is not an object", w, nm);
        int32_t dt = json_get(d, i, "dtype"), sh = json_get(d, i, "shape"),
                of = json_get(d, i, "data_offsets");
        if (dt < 0 || sh < 0 || of < 0 || o->count != 3)
            return cdl_fail("%s: tensor '%.80s': entry must have exactly dtype, shape, data_offsets", w, nm);
        if (d->node[dt].type != JSON_STRING || dtype_parse(json_str(d, dt), &e->dtype) < 0)
            return cdl_fail("%s: tensor '%.80s': unsupported dtype", w, nm);
        if (d->node[sh].type != JSON_ARRAY || d->node[sh].count > CDL_MAXDIM)
            return cdl_fail("%s: tensor '%.80s': shape must be an array of at most %d dims", w, nm, CDL_MAXDIM);
        e->rank = d->node[sh].count;
        int r = 0;
        for (int32_t j = d->node[sh].first; j >= 0; j = d->node[j].next, r++) {
            if (d->node[j].type != JSON_NUMBER || !d->node[j].is_uint || d->node[j].u > ((uint64_t)1 << 62))
                return cdl_fail("%s: tensor '%.80s': shape entries must be non-negative integers", w, nm);
            e->dims[r] = (int64_t)d->node[j].u;
        }
        int64_t ne = shape_numel(e->rank, e->dims);
        if (ne < 0) return cdl_fail("%s: tensor '%.80s': shape too large", w, nm);
        if (d->node[of].type != JSON_ARRAY || d->node[of].count != 2)
            return cdl_fail("%s: tensor '%.80s': data_offsets must be [begin, end]", w, nm);
        int32_t b0 = d->node[of].first, b1 = d->node[b0].next;
        if (d->node[b0].type != JSON_NUMBER || !d->node[b0].is_uint || d->node[b1].type != JSON_NUMBER ||
            !d->node[b1].is_uint)
            return cdl_fail("%s: tensor '%.80s': data_offsets must be non-negative integers", w, nm);
        e->begin = d->node[b0].u;
        e->end = d->node[b1].u;
        if (e->begin > e->end || e->end > c->data_len)
            return cdl_fail("%s: tensor '%.80s': data_offsets [%" PRIu64 ", %" PRIu64
                            "] outside the %" PRIu64 " data bytes", w, nm, e->begin, e->end, c->data_len);
        if ((uint64_t)ne > (uint64_t)1 << 60 || e->end - e->begin != (uint64_t)ne * dtype_size(e->dtype))
            return cdl_fail("%s: tensor '%.80s': data_offsets span %" PRIu64
                            " bytes, but shape and dtype need %" PRIu64, w, nm, e->end - e->begin,
                            (uint64_t)ne * dtype_size(e->dtype));
        c->order[k] = k;
        k++;
    }
    c->nent = k;
    /* The entries must tile [0, data_len): sorted by offset, each begins where the
     * previous ends. */
    sort_ent = c->ent;
    qsort(c->order, (size_t)k, sizeof *c->order, ent_cmp);
    uint64_t pos = 0;
    for (int i = 0; i < k; i++) {
        const ck_ent *e = &c->ent[c->order[i]];
        if (e->begin != pos)
            return cdl_fail("%s: tensor '%.80s': data begins at %" PRIu64 ", expected %" PRIu64
                            " (gap or overlap)", w, e->name, e->begin, pos);
        pos = e->end;
    }
    if (pos != c->data_len)
        return cdl_fail("%s: %" PRIu64 " bytes after the last tensor's data (trailing garbage or bad header length)",
                        w, c->data_len - pos);
    /* Checksums: one "crc32:<name>" per tensor and no other. */
    int ncrc = 0;
    for (int32_t i = d->node[c->meta].first; i >= 0; i = d->node[i].next) {
        const char *key = json_key(d, i);
        if (strncmp(key, "crc32:", 6) != 0) continue;
        ncrc++;
        if (json_get(d, 0, key + 6) < 0 || strcmp(key + 6, "__metadata__") == 0)
            return cdl_fail("%s: checksum for a tensor '%.80s' that is not in the file", w, key + 6);
    }
    if (ncrc != k) return cdl_fail("%s: %d tensor checksums for %d tensors", w, ncrc, k);
    char key[300];
    for (int i = 0; i < k; i++) {
        ck_ent *e = &c->ent[i];
        const char *v = NULL;
        if (strlen(e->name) < sizeof key - 8) {
            snprintf(key, sizeof key, "crc32:%s", e->name);
            v = ck_meta(c, key);
        } else {
            for (int32_t j = d->node[c->meta].first; j >= 0; j = d->node[j].next)
                if (strncmp(json_key(d, j), "crc32:", 6) == 0 && strcmp(json_key(d, j) + 6, e->name) == 0)
                    v = json_str(d, j);
        }
        if (!v || !is_hex8(v)) return cdl_fail("%s: tensor '%.80s': no valid crc32", w, e->name);
        uint32_t want = (uint32_t)strtoul(v, NULL, 16);
        uint32_t got = crc_bytes((uint32_t)crc32(0L, Z_NULL, 0), c->data + e->begin,
                                 (size_t)(e->end - e->begin));
        if (got != want && !CKPT_CHECK_CRC_OFF)
            return cdl_fail("%s: tensor '%.80s': checksum mismatch (stored %08" PRIx32 ", computed %08" PRIx32
                            "): the data is corrupt", w, e->name, want, got);
        e->crc = got;
    }
    return 0;
}

/* The entry called name, or NULL. */
static ck_ent *ck_find(ck *c, const char *name) {
    int32_t i = json_get(&c->doc, 0, name);
    if (i < 0) return NULL;
    for (int k = 0; k < c->nent; k++)
        if (c->ent[k].node == i) return &c->ent[k];
    return NULL;
}

/* Check entry e (or its absence) against parameter p of the model. */
static int ck_match(ck *c, ck_ent *e, const char *name, const cdl_tensor *p, cdl_dtype dt) {
    char a[128], b[128];
    if (!e) return cdl_fail("%s: tensor '%s' is missing", c->what, name);
    if (e->dtype != dt)
        return cdl_fail("%s: tensor '%s': dtype %s, the model needs %s", c->what, name,
                        dtype_name(e->dtype), dtype_name(dt));
    if (e->rank != p->rank || memcmp(e->dims, p->dims, sizeof(int64_t) * (size_t)p->rank) != 0)
        return cdl_fail("%s: tensor '%s': shape %s in the file, the model has %s", c->what, name,
                        shape_str(a, sizeof a, e->rank, e->dims), shape_str(b, sizeof b, p->rank, p->dims));
    e->matched = 1;
    return 0;
}

int cdl_ckpt_load_mem(const void *buf, size_t len, const char *what, cdl_net *net,
                      cdl_optim *opt, cdl_ckpt_meta *meta) {
    if (!what) what = "checkpoint";
    if (!net || !net->model || (!buf && len)) return cdl_fail("%s: no net or buffer", what);
    const cdl_model *m = net->model;
    const char *mname = m->name ? m->name : "";
    if ((m->real_size != 4 && m->real_size != 8) || m->n_params < 0)
        return cdl_fail("%s: model %s: bad descriptor", what, mname);
    if (opt && optim_check(opt, m, what) < 0) return -1;
    for (int i = 0; i < m->n_params; i++) {
        int64_t ne;
        if (param_extent(m, i, &ne) < 0) return -1;
    }
    ck c = {.what = what, .buf = buf, .len = len};
    int64_t maxn = 256 + 32 * (int64_t)m->n_params * 3;
    int rc = -1;
    if (ck_parse(&c, maxn > INT32_MAX ? INT32_MAX : (int32_t)maxn) < 0) goto out;

    /* Metadata. */
    const char *fmt = ck_meta(&c, "format"), *model = ck_meta(&c, "model"),
               *fps = ck_meta(&c, "fingerprint"), *okind = ck_meta(&c, "optimizer"),
               *oslots = ck_meta(&c, "optimizer_slots");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0) {
        cdl_fail("%s: not a cdl checkpoint (format '%.40s', expected '%s')", what, fmt ? fmt : "none",
                 CKPT_FORMAT);
        goto out;
    }
    uint64_t fp = 0, step = 0, epoch = 0, seed = 0, bie = 0, ot = 0;
    static const char *const nums[] = {"step", "epoch", "seed", "batch_in_epoch", "optimizer_t"};
    uint64_t *numv[] = {&step, &epoch, &seed, &bie, &ot};
    for (int i = 0; i < 5; i++) {
        const char *v = ck_meta(&c, nums[i]);
        if (!v || parse_u64(v, numv[i]) < 0) {
            cdl_fail("%s: metadata '%s' missing or not a decimal number", what, nums[i]);
            goto out;
        }
    }
    if (bie > INT64_MAX) {
        cdl_fail("%s: metadata 'batch_in_epoch' out of range", what);
        goto out;
    }
    if (!model || !fps || parse_hex64(fps, &fp) < 0 || !okind || !oslots) {
        cdl_fail("%s: metadata model, fingerprint, optimizer or optimizer_slots missing or malformed", what);
        goto out;
    }
    if (strcmp(model, mname) != 0 || fp != m->fingerprint) {
        cdl_fail("%s: checkpoint of model '%.60s' (fingerprint %016" PRIx64 "), not of '%s' (fingerprint %016"
                 PRIx64 ")", what, model, fp, mname, m->fingerprint);
        goto out;
    }
    /* The file's optimizer slots: up to 2 comma-separated names. */
    char sl[2][128];
    int nsl = 0;
    for (const char *s = oslots; *s;) {
        const char *e = strchr(s, ',');
        size_t k = e ? (size_t)(e - s) : strlen(s);
        if (nsl == 2 || k == 0 || k >= sizeof sl[0]) {
            cdl_fail("%s: metadata optimizer_slots '%.80s' malformed", what, oslots);
            goto out;
        }
        memcpy(sl[nsl], s, k);
        sl[nsl++][k] = 0;
        s = e ? e + 1 : s + k;
        if (e && !*s) {
            cdl_fail("%s: metadata optimizer_slots '%.80s' malformed", what, oslots);
            goto out;
        }
    }
    if (nsl == 2 && strcmp(sl[0], sl[1]) == 0) {
        cdl_fail("%s: metadata optimizer_slots names a slot twice", what);
        goto out;
    }
    if (opt) {
        int same = strcmp(okind, optim_kind_name(opt->cfg.kind)) == 0 && nsl == opt->n_slots;
        for (int s = 0; same && s < nsl; s++) same = strcmp(sl[s], opt->slot_name[s]) == 0;
        if (!same) {
            char want[300];
            snprintf(want, sizeof want, "%s", opt->n_slots ? opt->slot_name[0] : "");
            if (opt->n_slots == 2) snprintf(want + strlen(want), sizeof want - strlen(want), ",%s", opt->slot_name[1]);
            cdl_fail("%s: checkpoint holds optimizer '%.20s' state (slots '%.80s'), but the optimizer is '%s' "
                     "(slots '%s'); load without an optimizer to take the parameters only",
                     what, okind, oslots, optim_kind_name(opt->cfg.kind), want);
            goto out;
        }
    }

    /* The exact set of tensors: every parameter, every slot of every trainable one. */
    cdl_dtype dt = m->real_size == 8 ? CDL_F64 : CDL_F32;
    for (int i = 0; i < m->n_params; i++) {
        const cdl_tensor *p = &m->params[i];
        if (ck_match(&c, ck_find(&c, p->name), p->name, p, dt) < 0) goto out;
    }
    char nm[512];
    for (int s = 0; s < nsl; s++)
        for (int i = 0; i < m->n_params; i++) {
            const cdl_tensor *p = &m->params[i];
            if (!is_trainable(p)) continue;
            snprintf(nm, sizeof nm, "%s.%s", sl[s], p->name);
            if (ck_match(&c, ck_find(&c, nm), nm, p, dt) < 0) goto out;
        }
    for (int k = 0; k < c.nent; k++)
        if (!c.ent[k].matched) {
            cdl_fail("%s: unexpected tensor '%.80s' (not a parameter of model %s%s)", what, c.ent[k].name,
                     mname, nsl ? " nor an optimizer slot" : "");
            goto out;
        }

    /* Everything checked: copy. */
    size_t rs = (size_t)m->real_size;
    for (int i = 0; i < m->n_params; i++) {
        const cdl_tensor *p = &m->params[i];
        const ck_ent *e = ck_find(&c, p->name);
        memcpy((char *)net->param + p->offset * rs, c.data + e->begin, (size_t)(e->end - e->begin));
    }
    for (int s = 0; opt && s < nsl; s++)
        for (int i = 0; i < m->n_params; i++) {
            const cdl_tensor *p = &m->params[i];
            if (!is_trainable(p)) continue;
            snprintf(nm, sizeof nm, "%s.%s", sl[s], p->name);
            const ck_ent *e = ck_find(&c, nm);
            memcpy((char *)opt->slot[s] + p->offset * rs, c.data + e->begin, (size_t)(e->end - e->begin));
        }
    if (opt) opt->t = ot;
    net->step = step;
    net->seed = seed;
    if (meta) {
        memset(meta, 0, sizeof *meta);
        meta->step = step;
        meta->epoch = epoch;
        meta->seed = seed;
        meta->batch_in_epoch = (int64_t)bie;
        snprintf(meta->model, sizeof meta->model, "%s", model);
        meta->fingerprint = fp;
    }
    rc = 0;
out:
    ck_done(&c);
    return rc;
}

/* Read the whole file, then validate and load it from memory. */
int cdl_ckpt_load(const char *path, cdl_net *net, cdl_optim *opt, cdl_ckpt_meta *meta) {
    if (!path) return cdl_fail("cdl_ckpt_load: no path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cdl_fail("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return cdl_fail("%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX - 1) {
        close(fd);
        return cdl_fail("%s: file too large", path);
    }
    size_t size = (size_t)st.st_size;
    unsigned char *buf = cdl_alloc(size + 1);
    if (!buf) {
        close(fd);
        return cdl_fail("%s: cannot allocate %zu bytes to read it", path, size);
    }
    size_t got = 0;
    int rc = 0;
    for (;;) {                       /* one byte past the size detects a growing file */
        ssize_t r = read(fd, buf + got, size + 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = cdl_fail("%s: read error: %s", path, strerror(errno));
            break;
        }
        if (r == 0) break;
        got += (size_t)r;
        if (got > size) {
            rc = cdl_fail("%s: file changed while being read", path);
            break;
        }
    }
    close(fd);
    if (rc == 0 && got != size) rc = cdl_fail("%s: file changed while being read", path);
    if (rc == 0) rc = cdl_ckpt_load_mem(buf, size, path, net, opt, meta);
    cdl_free(buf);
    return rc;
}

/* ckpt.c -- checkpoints and named-tensor dumps in the safetensors layout.
 *
 * File layout (https://github.com/huggingface/safetensors, "format"):
 *   u64 little-endian N | N bytes of JSON header, space-padded so 8 + N is a multiple
 *   of 8 | tensor data, little-endian, contiguous, in header order.
 * The JSON header maps each tensor name to {"dtype", "shape", "data_offsets": [begin,
 * end]} (offsets relative to the data start) and "__metadata__" to string: string pairs.
 *
 * Integrity: every byte of a file cdl writes is covered by a check.
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
 * "<layer>.num_batches_tracked" (I64 scalar, PyTorch's batch-norm counter: the step)
 * for each batch-norm layer, and metadata "format": "cdl-ckpt 1", model, fingerprint
 * (16 hex digits), step, epoch, seed, batch_in_epoch (decimal), optimizer ("none",
 * "sgd", "adam", "adamw", "rmsprop", "adagrad"), optimizer_t, optimizer_slots (comma-separated slot names,
 * "" for none).
 *
 * The loader also takes parameter files: any safetensors file whose format is not
 * "cdl-ckpt" (PyTorch's safetensors.torch.save_file writes none or "pt").  They are
 * checked by tensor names, shapes and dtypes, and by whichever checksums they carry
 * (a header_crc32 present is always verified, so a bit flip cannot turn a cdl
 * checkpoint into an unchecked parameter file).  F32 and F64 tensors are converted to
 * the build's precision, for parameter files and for a checkpoint of the same model
 * built in the other precision.  Non-finite values are refused at load and at save.
 *
 * Loading reads the file into memory, validates all of it, and only then copies into
 * the net and optimizer; a refused file leaves them untouched.
 */
#include "cdl.h"
#include "data_int.h"
#include "fingerprint.h"
#include "json.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
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

/* Tensor dtypes in files: cdl_dtype's values, plus I64 (PyTorch's num_batches_tracked). */
enum { ST_F32 = CDL_F32, ST_F64 = CDL_F64, ST_I32 = CDL_I32, ST_I64 = 3 };
static size_t dtype_size(int t) { return t == ST_F64 || t == ST_I64 ? 8 : 4; }
static int dtype_real(int t) { return t == ST_F32 || t == ST_F64; }
static const char *dtype_name(int t) {
    return t == ST_F64 ? "F64" : t == ST_I32 ? "I32" : t == ST_I64 ? "I64" : "F32";
}
static int dtype_parse(const char *s, int *t) {
    static const char *const names[] = {"F32", "F64", "I32", "I64"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *t = i;
            return 0;
        }
    return -1;
}
/* "f32" / "f64": the precision of a real size. */
static const char *prec_name(int real_size) { return real_size == 8 ? "f64" : "f32"; }

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

/* The index of flat element i of a tensor of shape dims, as "[1, 2]". */
static const char *index_str(char *buf, size_t n, int rank, const int64_t *dims, int64_t i) {
    int64_t idx[CDL_MAXDIM];
    for (int d = rank - 1; d >= 0; d--) {
        idx[d] = dims[d] ? i % dims[d] : 0;
        i = dims[d] ? i / dims[d] : 0;
    }
    return shape_str(buf, n, rank, idx);
}

/* Index of the first non-finite of n reals of dtype dt (ST_F32 / ST_F64) at p (any
 * alignment), or -1.  With fit32, an F64 value beyond float's range counts too. */
static int64_t first_bad(const unsigned char *p, int64_t n, int dt, int fit32) {
    for (int64_t i = 0; i < n; i++) {
        if (dt == ST_F32) {
            float v;
            memcpy(&v, p + 4 * i, 4);
            if (!isfinite(v)) return i;
        } else {
            double v;
            memcpy(&v, p + 8 * i, 8);
            if (!isfinite(v) || (fit32 && fabs(v) > FLT_MAX)) return i;
        }
    }
    return -1;
}

/* What element i of n reals at p is, for messages: "nan", "inf", "-inf" or the value. */
static const char *bad_str(char *buf, size_t n, const unsigned char *p, int dt, int64_t i) {
    double v;
    if (dt == ST_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        v = f;
    } else {
        memcpy(&v, p + 8 * i, 8);
    }
    if (isnan(v)) snprintf(buf, n, "nan");
    else if (isinf(v)) snprintf(buf, n, v > 0 ? "inf" : "-inf");
    else snprintf(buf, n, "%g (beyond f32's range)", v);
    return buf;
}

/* n reals of dtype sdt at src (any alignment) into dst as real_size rs (f64 to f32
 * rounds; values were checked to fit). */
static void copy_reals(void *dst, int rs, const unsigned char *src, int sdt, int64_t n) {
    if ((sdt == ST_F64) == (rs == 8)) {
        memcpy(dst, src, (size_t)n * (size_t)rs);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        if (rs == 8) {
            float f;
            memcpy(&f, src + 4 * i, 4);
            ((double *)dst)[i] = f;
        } else {
            double v;
            memcpy(&v, src + 8 * i, 8);
            ((float *)dst)[i] = (float)v;
        }
    }
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

/* ---------------------------------------------------------------- the model's fingerprint */

/* The fingerprint of fingerprint.h, which the compiler writes into the model. */
uint64_t cdl_model_fingerprint(const cdl_model *m, int real_size) {
    uint64_t h = cdl_fp_begin(m->name ? m->name : "", real_size);
    for (int i = 0; i < m->n_params; i++) {
        const cdl_tensor *p = &m->params[i];
        int rank = p->rank < 0 ? 0 : p->rank > CDL_MAXDIM ? CDL_MAXDIM : p->rank;
        h = cdl_fp_param(h, p->name ? p->name : "", rank, p->dims, (p->flags & CDL_T_STATE) != 0);
    }
    return h;
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

/* The directory holding path into dir (cap bytes): "." or "/" when it has no other;
 * *base (NULL ok) receives path's last component.  -1 when too long. */
static int path_dir(const char *path, char *dir, size_t cap, const char **base) {
    const char *slash = strrchr(path, '/');
    if (base) *base = slash ? slash + 1 : path;
    if (!slash) return snprintf(dir, cap, ".") < (int)cap ? 0 : -1;
    if (slash == path) return snprintf(dir, cap, "/") < (int)cap ? 0 : -1;
    size_t k = (size_t)(slash - path);
    if (k >= cap) return -1;
    memcpy(dir, path, k);
    dir[k] = 0;
    return 0;
}

/* fsync the directory holding path so the rename is durable. */
static int fsync_dir(const char *path) {
    char dir[4096];
    if (path_dir(path, dir, sizeof dir, NULL) < 0) return cdl_fail("%s: directory name too long", path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return cdl_fail("%s: cannot open directory %s: %s", path, dir, strerror(errno));
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc < 0 && e != EINVAL && e != EROFS)      /* some file systems cannot sync dirs */
        return cdl_fail("%s: fsync of directory %s: %s", path, dir, strerror(e));
    return 0;
}

/* A save may replace only a regular file (or create a new one): cdl.h. */
int cdl_ckpt_check_target(const char *path) {
    if (!path || !*path) return cdl_fail("checkpoint: no path");
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT) return 0;
        return cdl_fail("%s: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return cdl_fail("%s: is %s; a save replaces only regular files (remove it or save elsewhere)", path,
                        data_path_kind(st.st_mode));
    return 0;
}

/* Remove "<base>.tmp.<pid>" files next to path that a process killed while saving left
 * behind.  A file is stale when its pid is not alive (kill(pid, 0) fails with ESRCH)
 * and no one holds its lock: every writer holds an exclusive flock on its temp file
 * from creation until it is renamed, which covers a writer whose pid this process
 * cannot see (another pid namespace sharing the directory).  Only the temp files of
 * this very path are touched.  Best effort: a failure here never fails a save. */
static void tmp_clean(const char *path) {
    char dir[4096];
    const char *base;
    if (path_dir(path, dir, sizeof dir, &base) < 0) return;
    size_t bl = strlen(base);
    DIR *d = opendir(dir);
    if (!d) return;
    long self = (long)getpid();
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        if (strncmp(nm, base, bl) != 0 || strncmp(nm + bl, ".tmp.", 5) != 0) continue;
        const char *num = nm + bl + 5;
        size_t nd = strlen(num);
        if (nd == 0 || nd > 9 || num[0] == '0' || strspn(num, "0123456789") != nd) continue;
        long pid = strtol(num, NULL, 10);
        if (pid == self || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        int fd = openat(dirfd(d), nm, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0)
            unlinkat(dirfd(d), nm, 0);
        close(fd);
    }
    closedir(d);
}

/* One tensor to write: cdl_st_tensor with the file dtypes (ST_*). */
typedef struct st_tensor {
    const char *name;
    int dtype;
    int rank;
    const int64_t *dims;
    const void *data;
} st_tensor;

/* One tensor to write, validated. */
typedef struct st_item {
    const st_tensor *t;
    size_t bytes;
    uint32_t crc;
} st_item;

/* Write the length prefix, the header hb and the tensors to a fresh path.tmp.<pid>
 * (locked while it exists, see tmp_clean), fsync, rename over path, fsync the
 * directory.  Stale temp files of dead processes are removed first. */
static int st_commit(const char *path, const sbuf *hb, int n, const st_item *it) {
    if (cdl_ckpt_check_target(path) < 0) return -1;
    tmp_clean(path);
    size_t plen = strlen(path);
    char *tmp = cdl_alloc(plen + 32);
    if (!tmp) return -1;
    snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
    unlink(tmp);                    /* a leftover of a dead process that had our pid */
    int rc = -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        cdl_fail("%s: cannot create %s: %s", path, tmp, strerror(errno));
        cdl_free(tmp);
        return -1;
    }
    flock(fd, LOCK_EX | LOCK_NB);   /* a fresh file: only fails where flock is unsupported */
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hb->len >> (8 * i));
    uint64_t total = 0;
    int ok = write_all(fd, len8, 8, &total) == 0 && write_all(fd, hb->p, hb->len, &total) == 0;
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
    cdl_free(tmp);
    return rc;
}

/* Validate the metadata pairs of a write. */
static int st_check_meta(const char *path, int nmeta, const char *const *kv) {
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
    return 0;
}

/* Validate tensor i of a write into it[i]: name, dtype, shape, data; its CRC. */
static int st_check_tensor(const char *path, const st_tensor *t, int i, st_item *it) {
    const st_tensor *x = &t[i];
    const char *nm = x->name;
    if (!nm || !*nm || strcmp(nm, "__metadata__") == 0 || !json_utf8_valid(nm, strlen(nm)))
        return cdl_fail("%s: tensor %d: bad name", path, i);
    for (int j = 0; j < i; j++)
        if (strcmp(t[j].name, nm) == 0) return cdl_fail("%s: tensor '%s' given twice", path, nm);
    if (x->dtype < ST_F32 || x->dtype > ST_I64 || x->rank < 0 || x->rank > CDL_MAXDIM)
        return cdl_fail("%s: tensor '%s': bad dtype or rank", path, nm);
    int64_t ne = shape_numel(x->rank, x->dims);
    if (ne < 0 || (uint64_t)ne > SIZE_MAX / 8) return cdl_fail("%s: tensor '%s': bad shape", path, nm);
    it->t = x;
    it->bytes = (size_t)ne * dtype_size(x->dtype);
    if (it->bytes && !x->data) return cdl_fail("%s: tensor '%s': no data", path, nm);
    it->crc = crc_bytes((uint32_t)crc32(0L, Z_NULL, 0), x->data, it->bytes);
    return 0;
}

/* The writer behind cdl_safetensors_write and cdl_ckpt_save: the header (metadata,
 * one crc32:<name> per tensor, header_crc32, the tensor entries), then st_commit. */
static int st_write(const char *path, int n, const st_tensor *t, int nmeta, const char *const *kv) {
    if (!path || !*path) return cdl_fail("cdl_safetensors_write: no path");
    if (n < 0 || (n > 0 && !t) || nmeta < 0 || (nmeta > 0 && !kv))
        return cdl_fail("%s: bad tensor or metadata list", path);
    if (st_check_meta(path, nmeta, kv) < 0) return -1;
    st_item *it = cdl_alloc(sizeof *it * (size_t)(n ? n : 1));
    if (!it) return -1;
    int rc = -1;
    for (int i = 0; i < n; i++)
        if (st_check_tensor(path, t, i, &it[i]) < 0) goto out;

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
    rc = st_commit(path, &hb, n, it);
    cdl_free(hb.p);
out:
    cdl_free(it);
    return rc;
}

int cdl_safetensors_write(const char *path, int n, const cdl_st_tensor *t, int nmeta,
                          const char *const *meta_kv) {
    if (n < 0 || (n > 0 && !t)) return cdl_fail("%s: bad tensor list", path ? path : "cdl_safetensors_write");
    st_tensor *s = cdl_alloc(sizeof *s * (size_t)(n ? n : 1));
    if (!s) return -1;
    for (int i = 0; i < n; i++) {
        cdl_dtype d = t[i].dtype;
        s[i] = (st_tensor){t[i].name, d == CDL_F32 || d == CDL_F64 || d == CDL_I32 ? (int)d : -1, t[i].rank,
                           t[i].dims, t[i].data};
    }
    int rc = st_write(path, n, s, nmeta, meta_kv);
    cdl_free(s);
    return rc;
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
    if (opt->n_slots < 0 || opt->n_slots > CDL_OPTIM_SLOTS)
        return cdl_fail("%s: optimizer has %d slots", what, opt->n_slots);
    for (int s = 0; s < opt->n_slots; s++)
        if (!opt->slot_name[s] || !*opt->slot_name[s] || strchr(opt->slot_name[s], ',') ||
            (!opt->slot[s] && m->train_count))
            return cdl_fail("%s: optimizer slot %d is not set up", what, s);
    for (int s = 0; s < opt->n_slots; s++)
        for (int t = 0; t < s; t++)
            if (strcmp(opt->slot_name[s], opt->slot_name[t]) == 0)
                return cdl_fail("%s: optimizer slots share the name %s", what, opt->slot_name[s]);
    return 0;
}

/* Batch-norm layers of m: a state tensor "<L>.running_mean" next to a state tensor
 * "<L>.running_var".  Returns 1 for parameter i when it is such a running_mean, with
 * <L>.num_batches_tracked (PyTorch's counter, stored in checkpoints) written to buf. */
static int bn_counter(const cdl_model *m, int i, char *buf, size_t cap) {
    static const char mean[] = ".running_mean", var[] = ".running_var";
    const cdl_tensor *p = &m->params[i];
    size_t n = strlen(p->name), k = sizeof mean - 1;
    if (is_trainable(p) || n <= k || strcmp(p->name + n - k, mean) != 0) return 0;
    if (snprintf(buf, cap, "%.*s%s", (int)(n - k), p->name, var) >= (int)cap) return 0;
    int has_var = 0;
    for (int j = 0; j < m->n_params && !has_var; j++)
        has_var = !is_trainable(&m->params[j]) && strcmp(m->params[j].name, buf) == 0;
    if (!has_var) return 0;
    return snprintf(buf, cap, "%.*s.num_batches_tracked", (int)(n - k), p->name) < (int)cap;
}

/* Refuse to save a non-finite value of x (n reals of size rs, shape of p). */
static int save_finite(const char *path, const char *what, const char *name, const cdl_tensor *p,
                       const void *x, int rs) {
    int64_t ne = shape_numel(p->rank, p->dims);
    int64_t i = first_bad(x, ne, rs == 8 ? ST_F64 : ST_F32, 0);
    if (i < 0) return 0;
    char v[48], ix[128];
    return cdl_fail("%s: not saved: %s '%s' element %" PRId64 " %s is %s (non-finite values are never saved; "
                    "the previous checkpoint is kept)", path, what, name, i,
                    index_str(ix, sizeof ix, p->rank, p->dims, i), bad_str(v, sizeof v, x, rs == 8 ? ST_F64 : ST_F32, i));
}

/* Save: the parameters, each optimizer slot's tensors and the batch-norm counters, as
 * one safetensors file. */
int cdl_ckpt_save(const char *path, const cdl_net *net, const cdl_optim *opt,
                  const cdl_ckpt_meta *meta) {
    if (!path || !net || !net->model) return cdl_fail("cdl_ckpt_save: no path or net");
    const cdl_model *m = net->model;
    if ((m->real_size != 4 && m->real_size != 8) || m->n_params < 0)
        return cdl_fail("%s: model %s: bad descriptor", path, m->name ? m->name : "?");
    if (opt && optim_check(opt, m, path) < 0) return -1;
    int nslots = opt ? opt->n_slots : 0, ntrain = 0, nbn = 0;
    size_t rs = (size_t)m->real_size;
    size_t names_cap = 1;
    char bn[512];
    for (int i = 0; i < m->n_params; i++) {
        int64_t ne;
        if (param_extent(m, i, &ne) < 0) return -1;
        const cdl_tensor *p = &m->params[i];
        ntrain += is_trainable(p);
        if (save_finite(path, "parameter", p->name, p, (const char *)net->param + p->offset * rs, (int)rs) < 0)
            return -1;
        for (int s = 0; s < nslots && is_trainable(p); s++) {
            char nm[512];
            snprintf(nm, sizeof nm, "%s.%s", opt->slot_name[s], p->name);
            if (save_finite(path, "optimizer state", nm, p, (const char *)opt->slot[s] + p->offset * rs, (int)rs) < 0)
                return -1;
            names_cap += strlen(nm) + 1;
        }
        if (bn_counter(m, i, bn, sizeof bn)) {
            nbn++;
            names_cap += strlen(bn) + 1;
        }
    }
    cdl_dtype dt = rs == 8 ? CDL_F64 : CDL_F32;
    cdl_ckpt_meta dm = {.step = net->step, .seed = net->seed};
    if (!meta) meta = &dm;
    int64_t counter = meta->step > INT64_MAX ? INT64_MAX : (int64_t)meta->step;
    int n = m->n_params + nslots * ntrain + nbn;
    st_tensor *t = cdl_alloc(sizeof *t * (size_t)(n ? n : 1));
    char *names = cdl_alloc(names_cap);
    if (!t || !names) {
        cdl_free(t);
        cdl_free(names);
        return -1;
    }
    int k = 0;
    size_t nk = 0;
    for (int i = 0; i < m->n_params; i++) {
        const cdl_tensor *p = &m->params[i];
        t[k++] = (st_tensor){p->name, dt, p->rank, p->dims, (const char *)net->param + p->offset * rs};
    }
    for (int s = 0; s < nslots; s++)
        for (int i = 0; i < m->n_params; i++) {
            const cdl_tensor *p = &m->params[i];
            if (!is_trainable(p)) continue;
            int w = snprintf(names + nk, names_cap - nk, "%s.%s", opt->slot_name[s], p->name);
            t[k++] = (st_tensor){names + nk, dt, p->rank, p->dims, (const char *)opt->slot[s] + p->offset * rs};
            nk += (size_t)w + 1;
        }
    for (int i = 0; i < m->n_params; i++)
        if (bn_counter(m, i, bn, sizeof bn)) {
            int w = snprintf(names + nk, names_cap - nk, "%s", bn);
            t[k++] = (st_tensor){names + nk, ST_I64, 0, NULL, &counter};
            nk += (size_t)w + 1;
        }

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
    const char *kv[] = {         /* vocab and labels, when given, move down over absent ones */
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
        "vocab", meta->vocab,
        "labels", meta->labels,
    };
    int all = (int)(sizeof kv / sizeof kv[0] / 2), nkv = all - 2;
    for (int i = nkv; i < all; i++)           /* vocab and labels when given */
        if (kv[2 * i + 1]) {
            kv[2 * nkv] = kv[2 * i];
            kv[2 * nkv++ + 1] = kv[2 * i + 1];
        }
    int rc = st_write(path, n, t, nkv, kv);
    cdl_free(t);
    cdl_free(names);
    return rc;
}

/* ---------------------------------------------------------------- checkpoints: load */

/* One tensor entry of the header, as validated. */
typedef struct ck_ent {
    int32_t node;                /* its member node in the JSON root */
    const char *name;
    int dtype;                   /* ST_* */
    int rank;
    int64_t dims[CDL_MAXDIM];
    uint64_t begin, end;
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
    int32_t meta;                /* __metadata__ node, -1 when the file has none */
    int cdl;                     /* a cdl checkpoint (format "cdl-ckpt 1"), not a parameter file */
    ck_ent *ent;
    int nent;
    int32_t *order;              /* entries sorted by offset */
    char why[256];               /* prefix of matching errors: why the file may not fit */
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

/* cdl_fail with "<file>: <why><message>". */
static int ck_fail(const ck *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int ck_fail(const ck *c, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cdl_fail("%s: %s%s", c->what, c->why, msg);
}

static _Thread_local const ck_ent *sort_ent;   /* qsort has no context argument */
static int ent_cmp(const void *a, const void *b) {
    const ck_ent *x = &sort_ent[*(const int32_t *)a], *y = &sort_ent[*(const int32_t *)b];
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Frame and parse the header; find the metadata and decide whether this is a cdl
 * checkpoint; verify header_crc32 when present (required in a checkpoint). */
static int ck_header(ck *c, int32_t max_nodes) {
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
    if (c->meta >= 0 && d->node[c->meta].type != JSON_OBJECT)
        return cdl_fail("%s: __metadata__ is not an object", w);
    for (int32_t i = c->meta >= 0 ? d->node[c->meta].first : -1; i >= 0; i = d->node[i].next)
        if (d->node[i].type != JSON_STRING)
            return cdl_fail("%s: metadata '%.80s' is not a string", w, json_key(d, i));
    const char *fmt = ck_meta(c, "format");
    c->cdl = fmt && strcmp(fmt, CKPT_FORMAT) == 0;
    if (fmt && !c->cdl && strncmp(fmt, "cdl-ckpt", 8) == 0)
        return cdl_fail("%s: not a cdl checkpoint this build reads (format '%.40s', expected '%s')", w, fmt,
                        CKPT_FORMAT);
    int32_t hc = json_get(d, c->meta, "header_crc32");
    if (hc < 0)
        return c->cdl ? cdl_fail("%s: header has no header_crc32 (the file is corrupt)", w) : 0;
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
    return 0;
}

/* Read tensor entry i (a member of the root) into e. */
static int ck_entry(ck *c, int32_t i, ck_ent *e) {
    const char *w = c->what;
    const json_doc *d = &c->doc;
    e->node = i;
    e->name = json_key(d, i);
    const char *nm = e->name;
    const json_node *o = &d->node[i];
    if (o->type != JSON_OBJECT) return cdl_fail("%s: tensor '%.80s': entry is not an object", w, nm);
    int32_t dt = json_get(d, i, "dtype"), sh = json_get(d, i, "shape"), of = json_get(d, i, "data_offsets");
    if (dt < 0 || sh < 0 || of < 0 || o->count != 3)
        return cdl_fail("%s: tensor '%.80s': entry must have exactly dtype, shape, data_offsets", w, nm);
    if (d->node[dt].type != JSON_STRING || dtype_parse(json_str(d, dt), &e->dtype) < 0)
        return cdl_fail("%s: tensor '%.80s': unsupported dtype '%.16s' (cdl reads F32, F64, I32, I64)", w, nm,
                        json_str(d, dt));
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
        return cdl_fail("%s: tensor '%.80s': data_offsets [%" PRIu64 ", %" PRIu64 "] outside the %" PRIu64
                        " data bytes", w, nm, e->begin, e->end, c->data_len);
    if ((uint64_t)ne > (uint64_t)1 << 60 || e->end - e->begin != (uint64_t)ne * dtype_size(e->dtype))
        return cdl_fail("%s: tensor '%.80s': data_offsets span %" PRIu64 " bytes, but shape and dtype need %" PRIu64,
                        w, nm, e->end - e->begin, (uint64_t)ne * dtype_size(e->dtype));
    return 0;
}

/* The stored crc32 of tensor e, or NULL when the file has none for it. */
static const char *ck_crc_of(const ck *c, const ck_ent *e) {
    char key[300];
    if (strlen(e->name) < sizeof key - 8) {
        snprintf(key, sizeof key, "crc32:%s", e->name);
        return ck_meta(c, key);
    }
    const json_doc *d = &c->doc;
    for (int32_t j = c->meta >= 0 ? d->node[c->meta].first : -1; j >= 0; j = d->node[j].next)
        if (strncmp(json_key(d, j), "crc32:", 6) == 0 && strcmp(json_key(d, j) + 6, e->name) == 0)
            return json_str(d, j);
    return NULL;
}

/* Frame, parse and checksum the header; read every tensor entry and check that the
 * entries tile the data section and match their checksums (a checkpoint must have one
 * for every tensor, a parameter file those it has).  Model-independent. */
static int ck_parse(ck *c, int32_t max_nodes) {
    const char *w = c->what;
    if (ck_header(c, max_nodes) < 0) return -1;
    const json_doc *d = &c->doc;
    int nent = d->node[0].count - (c->meta >= 0);
    c->ent = cdl_alloc(sizeof *c->ent * (size_t)(nent > 0 ? nent : 1));
    c->order = cdl_alloc(sizeof *c->order * (size_t)(nent > 0 ? nent : 1));
    if (!c->ent || !c->order) return -1;
    int k = 0;
    for (int32_t i = d->node[0].first; i >= 0; i = d->node[i].next) {
        if (i == c->meta) continue;
        if (ck_entry(c, i, &c->ent[k]) < 0) return -1;
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
    /* Checksums: "crc32:<name>" only for tensors in the file; in a checkpoint, all. */
    int ncrc = 0;
    for (int32_t i = c->meta >= 0 ? d->node[c->meta].first : -1; i >= 0; i = d->node[i].next) {
        const char *key = json_key(d, i);
        if (strncmp(key, "crc32:", 6) != 0) continue;
        ncrc++;
        if (json_get(d, 0, key + 6) < 0 || strcmp(key + 6, "__metadata__") == 0)
            return cdl_fail("%s: checksum for a tensor '%.80s' that is not in the file", w, key + 6);
    }
    if (c->cdl && ncrc != k) return cdl_fail("%s: %d tensor checksums for %d tensors", w, ncrc, k);
    for (int i = 0; i < k; i++) {
        const ck_ent *e = &c->ent[i];
        const char *v = ck_crc_of(c, e);
        if (!v && !c->cdl) continue;
        if (!v || !is_hex8(v)) return cdl_fail("%s: tensor '%.80s': no valid crc32", w, e->name);
        uint32_t want = (uint32_t)strtoul(v, NULL, 16);
        uint32_t got = crc_bytes((uint32_t)crc32(0L, Z_NULL, 0), c->data + e->begin, (size_t)(e->end - e->begin));
        if (got != want && !CKPT_CHECK_CRC_OFF)
            return cdl_fail("%s: tensor '%.80s': checksum mismatch (stored %08" PRIx32 ", computed %08" PRIx32
                            "): the data is corrupt", w, e->name, want, got);
    }
    return 0;
}

/* The entry called name, or NULL. */
static ck_ent *ck_find(ck *c, const char *name) {
    int32_t i = json_get(&c->doc, 0, name);
    if (i < 0 || i == c->meta) return NULL;
    for (int k = 0; k < c->nent; k++)
        if (c->ent[k].node == i) return &c->ent[k];
    return NULL;
}

/* Up to three names of file tensors that are no parameter of m, for "missing" messages. */
static const char *ck_strangers(const ck *c, const cdl_model *m, char *buf, size_t cap) {
    size_t k = 0;
    int shown = 0;
    buf[0] = 0;
    for (int i = 0; i < c->nent && shown < 3 && k < cap; i++) {
        int known = c->ent[i].matched;
        for (int j = 0; j < m->n_params && !known; j++) known = strcmp(m->params[j].name, c->ent[i].name) == 0;
        if (!known) {
            k += (size_t)snprintf(buf + k, cap - k, "%s'%.60s'", shown ? ", " : " (the file has ", c->ent[i].name);
            shown++;
        }
    }
    if (shown && k < cap) snprintf(buf + k, cap - k, "%s)", shown == 3 ? ", ..." : "");
    return buf;
}

/* Check entry e (or its absence) against tensor name of shape p: present, real, same shape. */
static int ck_match(ck *c, const cdl_model *m, ck_ent *e, const char *name, const cdl_tensor *p) {
    char a[240], b[128];
    if (!e) return ck_fail(c, "tensor '%s' is missing%s", name, ck_strangers(c, m, a, sizeof a));
    if (!dtype_real(e->dtype))
        return ck_fail(c, "tensor '%s': dtype %s, the model needs a real type (F32 or F64)", name,
                       dtype_name(e->dtype));
    if (e->rank != p->rank || memcmp(e->dims, p->dims, sizeof(int64_t) * (size_t)p->rank) != 0)
        return ck_fail(c, "tensor '%s': shape %s in the file, the model has %s", name,
                       shape_str(a, sizeof a, e->rank, e->dims), shape_str(b, sizeof b, p->rank, p->dims));
    e->matched = 1;
    return 0;
}

/* What a cdl checkpoint's metadata says. */
typedef struct ck_info {
    uint64_t fp, step, epoch, seed, bie, ot;
    const char *model;
    char sl[CDL_OPTIM_SLOTS][128];   /* optimizer slot names */
    int nsl;
} ck_info;

/* Read and check a checkpoint's metadata into f: numbers, model name (must be the
 * model's), optimizer kind and slots (must be opt's when opt is given). */
static int ck_cdl_meta(ck *c, const cdl_model *m, const cdl_optim *opt, ck_info *f) {
    const char *what = c->what, *mname = m->name ? m->name : "";
    const char *fps = ck_meta(c, "fingerprint"), *okind = ck_meta(c, "optimizer"),
               *oslots = ck_meta(c, "optimizer_slots");
    f->model = ck_meta(c, "model");
    static const char *const nums[] = {"step", "epoch", "seed", "batch_in_epoch", "optimizer_t"};
    uint64_t *numv[] = {&f->step, &f->epoch, &f->seed, &f->bie, &f->ot};
    for (int i = 0; i < 5; i++) {
        const char *v = ck_meta(c, nums[i]);
        if (!v || parse_u64(v, numv[i]) < 0)
            return cdl_fail("%s: metadata '%s' missing or not a decimal number", what, nums[i]);
    }
    if (f->bie > INT64_MAX) return cdl_fail("%s: metadata 'batch_in_epoch' out of range", what);
    if (!f->model || !fps || parse_hex64(fps, &f->fp) < 0 || !okind || !oslots)
        return cdl_fail("%s: metadata model, fingerprint, optimizer or optimizer_slots missing or malformed", what);
    if (strcmp(f->model, mname) != 0)
        return cdl_fail("%s: checkpoint of model '%.60s' (fingerprint %016" PRIx64 "), not of '%s' (fingerprint %016"
                        PRIx64 ")", what, f->model, f->fp, mname, m->fingerprint);
    /* The file's optimizer slots: up to CDL_OPTIM_SLOTS comma-separated names. */
    for (const char *s = oslots; *s;) {
        const char *e = strchr(s, ',');
        size_t k = e ? (size_t)(e - s) : strlen(s);
        if (f->nsl == CDL_OPTIM_SLOTS || k == 0 || k >= sizeof f->sl[0])
            return cdl_fail("%s: metadata optimizer_slots '%.80s' malformed", what, oslots);
        memcpy(f->sl[f->nsl], s, k);
        f->sl[f->nsl++][k] = 0;
        s = e ? e + 1 : s + k;
        if (e && !*s) return cdl_fail("%s: metadata optimizer_slots '%.80s' malformed", what, oslots);
    }
    for (int s = 0; s < f->nsl; s++)
        for (int t = 0; t < s; t++)
            if (strcmp(f->sl[s], f->sl[t]) == 0)
                return cdl_fail("%s: metadata optimizer_slots names a slot twice", what);
    if (!opt) return 0;
    int same = strcmp(okind, optim_kind_name(opt->cfg.kind)) == 0 && f->nsl == opt->n_slots;
    for (int s = 0; same && s < f->nsl; s++) same = strcmp(f->sl[s], opt->slot_name[s]) == 0;
    if (same) return 0;
    char want[300] = "";
    for (int s = 0; s < opt->n_slots; s++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%s", s ? "," : "", opt->slot_name[s]);
    return cdl_fail("%s: checkpoint holds optimizer '%.20s' state (slots '%.80s'), but the optimizer is '%s' "
                    "(slots '%s'); load without an optimizer to take the parameters only",
                    what, okind, oslots, optim_kind_name(opt->cfg.kind), want);
}

/* The exact set of tensors: every parameter, every slot of every trainable one, at
 * most one num_batches_tracked (an integer scalar) per batch-norm layer, nothing else. */
static int ck_match_all(ck *c, const cdl_model *m, const ck_info *f) {
    char nm[512];
    for (int i = 0; i < m->n_params; i++) {
        const cdl_tensor *p = &m->params[i];
        if (ck_match(c, m, ck_find(c, p->name), p->name, p) < 0) return -1;
    }
    for (int s = 0; s < f->nsl; s++)
        for (int i = 0; i < m->n_params; i++) {
            const cdl_tensor *p = &m->params[i];
            if (!is_trainable(p)) continue;
            snprintf(nm, sizeof nm, "%s.%s", f->sl[s], p->name);
            if (ck_match(c, m, ck_find(c, nm), nm, p) < 0) return -1;
        }
    for (int i = 0; i < m->n_params; i++) {
        if (!bn_counter(m, i, nm, sizeof nm)) continue;
        ck_ent *e = ck_find(c, nm);
        if (!e) continue;
        if ((e->dtype != ST_I64 && e->dtype != ST_I32) || e->rank != 0)
            return ck_fail(c, "tensor '%s': must be an integer scalar (I64 [] as PyTorch writes it)", nm);
        int64_t v = 0;
        if (e->dtype == ST_I64) memcpy(&v, c->data + e->begin, 8);
        else {
            int32_t v32;
            memcpy(&v32, c->data + e->begin, 4);
            v = v32;
        }
        if (v < 0) return ck_fail(c, "tensor '%s': %" PRId64 " batches tracked", nm, v);
        e->matched = 1;
    }
    for (int k = 0; k < c->nent; k++)
        if (!c->ent[k].matched)
            return ck_fail(c, "unexpected tensor '%.80s' (not a parameter of model %s%s)", c->ent[k].name,
                           m->name ? m->name : "", f->nsl ? " nor an optimizer slot" : "");
    return 0;
}

/* A checkpoint whose fingerprint differs from the model's: say why, or accept it when
 * the only difference is the precision (the model's table hashed at the file's real
 * size gives the file's fingerprint).  The tensors already match by name and shape. */
static int ck_fingerprint(ck *c, const cdl_model *m, const ck_info *f, int file_dt) {
    int mdt = m->real_size == 8 ? ST_F64 : ST_F32, frs = file_dt == ST_F64 ? 8 : 4;
    if (f->fp == m->fingerprint)
        return file_dt == mdt ? 0
             : ck_fail(c, "tensors of dtype %s, but the fingerprint is this %s build's: the file is inconsistent",
                       dtype_name(file_dt), prec_name(m->real_size));
    if (file_dt == mdt)
        return ck_fail(c, "same precision, tensor names and shapes, so the parameter table differs in order or "
                          "in which tensors are state buffers");
    if (m->fingerprint != cdl_model_fingerprint(m, m->real_size))
        return ck_fail(c, "an %s checkpoint for an %s build; this model's fingerprint is not the hash of its "
                          "table (a hand-written descriptor?), so the %s build's cannot be checked",
                       prec_name(frs), prec_name(m->real_size), prec_name(frs));
    if (f->fp != cdl_model_fingerprint(m, frs))
        return ck_fail(c, "an %s checkpoint, and not of this model's %s build either (its tensor names and shapes "
                          "agree: the parameter table differs in order or in which tensors are state buffers)",
                       prec_name(frs), prec_name(frs));
    return 0;                    /* the same model in the other precision: converted */
}

/* Every real tensor the load uses must be finite (and fit f32 when it will be
 * rounded to it); the first offender is named with its index. */
static int ck_finite(ck *c, int rs) {
    char v[48], ix[128];
    for (int k = 0; k < c->nent; k++) {
        const ck_ent *e = &c->ent[k];
        if (!e->matched || !dtype_real(e->dtype)) continue;
        int64_t n = (int64_t)((e->end - e->begin) / dtype_size(e->dtype));
        int64_t i = first_bad(c->data + e->begin, n, e->dtype, rs == 4);
        if (i >= 0)
            return cdl_fail("%s: tensor '%.80s': element %" PRId64 " %s is %s: non-finite weights are refused",
                            c->what, e->name, i, index_str(ix, sizeof ix, e->rank, e->dims, i),
                            bad_str(v, sizeof v, c->data + e->begin, e->dtype, i));
    }
    return 0;
}

/* Everything checked: copy the parameters and (opt) the slots, converting precision. */
static void ck_copy(ck *c, cdl_net *net, cdl_optim *opt, const ck_info *f) {
    const cdl_model *m = net->model;
    int rs = m->real_size;
    char nm[512];
    for (int i = 0; i < m->n_params; i++) {
        const cdl_tensor *p = &m->params[i];
        const ck_ent *e = ck_find(c, p->name);
        copy_reals((char *)net->param + p->offset * (size_t)rs, rs, c->data + e->begin, e->dtype,
                   shape_numel(p->rank, p->dims));
    }
    for (int s = 0; opt && s < f->nsl; s++)
        for (int i = 0; i < m->n_params; i++) {
            const cdl_tensor *p = &m->params[i];
            if (!is_trainable(p)) continue;
            snprintf(nm, sizeof nm, "%s.%s", f->sl[s], p->name);
            const ck_ent *e = ck_find(c, nm);
            copy_reals((char *)opt->slot[s] + p->offset * (size_t)rs, rs, c->data + e->begin, e->dtype,
                       shape_numel(p->rank, p->dims));
        }
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
    ck c = {.what = what, .buf = buf, .len = len, .meta = -1};
    ck_info f = {0};
    int64_t maxn = 256 + 32 * (int64_t)m->n_params * 3;
    int rc = -1;
    if (ck_parse(&c, maxn > INT32_MAX ? INT32_MAX : (int32_t)maxn) < 0) goto out;
    if (c.cdl) {
        if (ck_cdl_meta(&c, m, opt, &f) < 0) goto out;
        if (f.fp != m->fingerprint)
            snprintf(c.why, sizeof c.why, "checkpoint of another build of '%.60s' (fingerprint %016" PRIx64
                     " in the file, %016" PRIx64 " here): ", mname, f.fp, m->fingerprint);
    } else if (opt) {
        cdl_fail("%s: a parameter file (no cdl checkpoint metadata) holds no optimizer state, step or seed to "
                 "resume from; load it as parameters only", what);
        goto out;
    }
    if (ck_match_all(&c, m, &f) < 0) goto out;
    if (c.cdl) {
        int file_dt = -1;
        for (int k = 0; k < c.nent; k++) {
            const ck_ent *e = &c.ent[k];
            if (!dtype_real(e->dtype)) continue;
            if (file_dt >= 0 && e->dtype != file_dt) {
                ck_fail(&c, "tensors of dtypes %s and %s in one checkpoint", dtype_name(file_dt),
                        dtype_name(e->dtype));
                goto out;
            }
            file_dt = e->dtype;
        }
        if (file_dt >= 0 && ck_fingerprint(&c, m, &f, file_dt) < 0) goto out;
    }
    if (ck_finite(&c, m->real_size) < 0) goto out;

    ck_copy(&c, net, opt, &f);
    if (opt) opt->t = f.ot;
    if (c.cdl) {
        net->step = f.step;
        net->seed = f.seed;
    }
    if (meta) {
        memset(meta, 0, sizeof *meta);
        meta->step = f.step;
        meta->epoch = f.epoch;
        meta->seed = f.seed;
        meta->batch_in_epoch = (int64_t)f.bie;
        snprintf(meta->model, sizeof meta->model, "%s", c.cdl ? f.model : "");
        meta->fingerprint = f.fp;
    }
    rc = 0;
out:
    ck_done(&c);
    return rc;
}

int cdl_ckpt_read_meta(const char *path, const char *key, char **value) {
    if (!path || !key || !value) return cdl_fail("cdl_ckpt_read_meta: NULL argument");
    *value = NULL;
    uint64_t fsize;
    int fd = data_open_regular(path, NULL, &fsize);
    if (fd < 0) return -1;
    unsigned char len8[8];
    uint64_t n = 0;
    unsigned char *buf = NULL;
    int rc = -1;
    ssize_t r = read(fd, len8, 8);
    if (r == 8) {
        for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
        if (n > CKPT_MAX_HEADER || n > fsize - 8) r = -2;
    }
    if (r != 8) {
        close(fd);
        return cdl_fail("%s: not a safetensors file (no valid header length)", path);
    }
    if (!(buf = cdl_alloc((size_t)n + 8))) {
        close(fd);
        return -1;
    }
    memcpy(buf, len8, 8);
    size_t got = 0;
    while (got < n && (r = read(fd, buf + 8 + got, (size_t)n - got)) != 0) {
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) break;
        got += (size_t)r;
    }
    close(fd);
    ck c = {.what = path, .buf = buf, .len = 8 + got, .meta = -1};
    if (got != n) cdl_fail("%s: read error or truncated header", path);
    else if (ck_header(&c, 1 << 24) == 0) {
        const char *v = c.meta >= 0 ? ck_meta(&c, key) : NULL;
        rc = 0;
        if (v && (*value = cdl_alloc(strlen(v) + 1))) {
            memcpy(*value, v, strlen(v) + 1);
            rc = 1;
        } else if (v) {
            rc = -1;
        }
    }
    ck_done(&c);
    cdl_free(buf);
    return rc;
}

/* Read the whole file, then validate and load it from memory.  The file is opened by
 * data_open_regular (data_file.c), as datasets are: a FIFO would block the open or the
 * read. */
int cdl_ckpt_load(const char *path, cdl_net *net, cdl_optim *opt, cdl_ckpt_meta *meta) {
    if (!path) return cdl_fail("cdl_ckpt_load: no path");
    uint64_t fsize;
    int fd = data_open_regular(path, NULL, &fsize);
    if (fd < 0) return -1;
    if (fsize > SIZE_MAX - 1) {
        close(fd);
        return cdl_fail("%s: file too large", path);
    }
    size_t size = (size_t)fsize;
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

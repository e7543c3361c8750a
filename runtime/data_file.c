/* data_file.c -- reading data files: the open checks, gzip, and bounded lines.
 *
 * Every dataset file (and every checkpoint, ckpt.c) is opened by data_open_regular:
 * with O_NONBLOCK (opening a FIFO for reading would otherwise wait for a writer
 * forever), then refused unless fstat calls it a regular file.  gzip files are
 * inflated here with zlib's inflate rather than gzread, because gzread silently ignores whatever follows the last gzip
 * member: here the bytes after a member must be another member (gzip -d accepts
 * concatenated members) or nothing.
 *
 * data_lines hands out lines of text with a length bound checked while reading, so a
 * 1 GB line is refused after max + 1 bytes, not after reading and parsing it all.
 */
#include "data_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DF_CHUNK ((size_t)1 << 17)        /* compressed bytes read at a time */
#define DF_GZ_MAX_RATIO 1040              /* deflate expands at most ~1032:1 */

/* data_int.h */
const char *data_path_kind(unsigned mode) {
    mode_t m = (mode_t)mode;
    return S_ISLNK(m) ? "a symbolic link" : S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO"
         : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
         : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

/* data_int.h: the one open check for every file the runtime reads. */
int data_open_regular(const char *path, const char *why, uint64_t *size) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return cdl_fail("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return cdl_fail("%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return cdl_fail("%s: is %s, not a regular file%s%s", path, data_path_kind(st.st_mode), why ? ": " : "",
                        why ? why : "");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
    return fd;
}

int data_file_open(data_file *f, const char *path) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->path = path;
    int fd = data_open_regular(path, "datasets are read from regular files", &f->size);
    if (fd < 0) return -1;
    f->fd = fd;
    unsigned char m[2];
    if (pread(fd, m, 2, 0) == 2 && m[0] == 0x1f && m[1] == 0x8b) {
        f->gz = 1;
        if (!(f->in = cdl_alloc(DF_CHUNK))) {
            data_file_close(f);
            return cdl_fail("%s: out of memory", path);
        }
        f->zs.next_in = f->in;
        if (inflateInit2(&f->zs, 16 + MAX_WBITS) != Z_OK) {
            data_file_close(f);
            return cdl_fail("%s: cannot start zlib", path);
        }
        f->zinit = 1;
    }
    return 0;
}

void data_file_close(data_file *f) {
    if (f->zinit) inflateEnd(&f->zs);
    if (f->fd >= 0) close(f->fd);
    cdl_free(f->in);
    f->fd = -1;
    f->zinit = 0;
    f->in = NULL;
}

uint64_t data_file_size_hint(const data_file *f) {
    unsigned char t[4];
    if (!f->gz || f->size < 18 || pread(f->fd, t, 4, (off_t)(f->size - 4)) != 4) return f->size;
    uint64_t isz = (uint64_t)t[0] | (uint64_t)t[1] << 8 | (uint64_t)t[2] << 16 | (uint64_t)t[3] << 24;
    return isz / DF_GZ_MAX_RATIO <= f->size ? isz : f->size;   /* a lying trailer is ignored */
}

/* read(2) until n bytes or the end; the count or -1 and a message. */
static int64_t df_read_raw(data_file *f, void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(f->fd, (char *)buf + got, n - got > (1u << 30) ? (1u << 30) : n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return cdl_fail("%s: read error: %s", f->path, strerror(errno));
        if (r == 0) break;
        got += (size_t)r;
    }
    return (int64_t)got;
}

/* At least want compressed bytes at zs.next_in unless the file ends first. */
static int df_fill(data_file *f, size_t want) {
    if (f->in_len >= want || f->in_eof) return 0;
    memmove(f->in, f->zs.next_in, f->in_len);
    f->zs.next_in = f->in;
    int64_t r = df_read_raw(f, f->in + f->in_len, DF_CHUNK - f->in_len);
    if (r < 0) return -1;
    if ((size_t)r < DF_CHUNK - f->in_len) f->in_eof = 1;
    f->in_len += (size_t)r;
    return 0;
}

/* Between members: nothing more, or the next member's magic. */
static int df_next_member(data_file *f) {
    if (df_fill(f, 2) < 0) return -1;
    if (f->in_len == 0) return 0;                          /* the end */
    if (f->in_len < 2 || f->zs.next_in[0] != 0x1f || f->zs.next_in[1] != 0x8b)
        return cdl_fail("%s: trailing garbage after the gzip data (%zu%s bytes that are not a gzip member)",
                        f->path, f->in_len, f->in_eof ? "" : " or more");
    if (inflateReset(&f->zs) != Z_OK) return cdl_fail("%s: zlib reset failed", f->path);
    f->member_end = 0;
    return 1;
}

static int64_t df_read_gz(data_file *f, unsigned char *out, size_t n) {
    size_t got = 0;
    while (got < n) {
        if (f->member_end) {
            int r = df_next_member(f);
            if (r <= 0) return r < 0 ? -1 : (int64_t)got;
        }
        if (f->in_len == 0 && df_fill(f, 1) < 0) return -1;
        size_t want = n - got > UINT_MAX ? UINT_MAX : n - got;
        f->zs.next_out = out + got;
        f->zs.avail_out = (uInt)want;
        f->zs.avail_in = (uInt)f->in_len;
        int r = inflate(&f->zs, Z_NO_FLUSH);
        got += want - f->zs.avail_out;
        f->in_len = f->zs.avail_in;
        if (r == Z_STREAM_END) {
            f->member_end = 1;
        } else if (r == Z_BUF_ERROR) {                     /* no progress: input needed */
            if (f->in_len == 0 && f->in_eof) return cdl_fail("%s: truncated gzip data", f->path);
        } else if (r != Z_OK) {
            return cdl_fail("%s: corrupt gzip data: %s", f->path, f->zs.msg ? f->zs.msg : "inflate failed");
        }
    }
    return (int64_t)got;
}

int64_t data_file_read(data_file *f, void *buf, size_t n) {
    return f->gz ? df_read_gz(f, buf, n) : df_read_raw(f, buf, n);
}

/* ---------------------------------------------------------------- lines */

void data_lines_mem(data_lines *L, const char *text, size_t len, const char *path, size_t max) {
    memset(L, 0, sizeof *L);
    L->path = path;
    L->max = max;
    L->p = text ? text : "";
    L->lim = L->p + (text ? len : 0);
}

int data_lines_file(data_lines *L, data_file *f, size_t max) {
    memset(L, 0, sizeof *L);
    L->path = f->path;
    L->max = max;
    L->f = f;
    L->cap = DF_CHUNK < max + 2 ? DF_CHUNK : max + 2;
    if (!(L->buf = cdl_alloc(L->cap))) return cdl_fail("%s: out of memory", f->path);
    return 0;
}

void data_lines_free(data_lines *L) {
    cdl_free(L->buf);
    L->buf = NULL;
}

static int dl_too_long(data_lines *L) {
    return cdl_fail("%s:%ld: a line longer than %zu bytes (the limit for one line of a data file)", L->path,
                    L->line + 1, L->max);
}

/* The line [s, nl) (nl the newline or the end) as a result, or too long. */
static int dl_emit(data_lines *L, const char *s, const char *nl, const char **ps, const char **pe) {
    const char *e = nl > s && nl[-1] == '\r' ? nl - 1 : nl;
    if ((size_t)(e - s) > L->max) return dl_too_long(L);
    L->line++;
    *ps = s;
    *pe = e;
    return 1;
}

/* The next line of a file source: search the buffer; refill (growing the buffer up to
 * max + 2 + a chunk) when no newline is in it. */
static int dl_next_file(data_lines *L, const char **s, const char **e) {
    for (;;) {
        char *b = L->buf + L->beg;
        char *nl = memchr(b, '\n', L->end - L->beg);
        if (nl) {
            L->beg = (size_t)(nl - L->buf) + 1;
            return dl_emit(L, b, nl, s, e);
        }
        if (L->eof) {
            if (L->beg == L->end) return 0;
            L->beg = L->end;
            return dl_emit(L, b, L->buf + L->end, s, e);
        }
        if (L->end - L->beg > L->max + 1) return dl_too_long(L);
        memmove(L->buf, b, L->end - L->beg);
        L->end -= L->beg;
        L->beg = 0;
        if (L->cap - L->end < DF_CHUNK / 2 && L->cap < L->max + 2 + DF_CHUNK) {
            size_t nc = L->cap * 2 > L->max + 2 + DF_CHUNK ? L->max + 2 + DF_CHUNK : L->cap * 2;
            char *nb = cdl_alloc(nc);
            if (!nb) return cdl_fail("%s: out of memory", L->path);
            memcpy(nb, L->buf, L->end);
            cdl_free(L->buf);
            L->buf = nb;
            L->cap = nc;
        }
        int64_t r = data_file_read(L->f, L->buf + L->end, L->cap - L->end);
        if (r < 0) return -1;
        if (r == 0) L->eof = 1;
        L->end += (size_t)r;
    }
}

int data_lines_next(data_lines *L, const char **s, const char **e) {
    if (L->f) return dl_next_file(L, s, e);
    if (L->p >= L->lim) return 0;
    size_t rem = (size_t)(L->lim - L->p), win = rem < L->max + 2 ? rem : L->max + 2;
    const char *b = L->p, *nl = memchr(b, '\n', win);
    if (!nl) {
        if (rem > L->max + 1) return dl_too_long(L);
        nl = L->lim;
    }
    L->p = nl < L->lim ? nl + 1 : L->lim;
    return dl_emit(L, b, nl, s, e);
}

/* data_stream.c -- IDX images read from their file a batch at a time (CDL_COL_FILE).
 *
 * cdl_dataset_open_stream / _load_idx_stream leave the images of an IDX file where
 * they are: the loader preads the bytes of each batch's examples into its own buffer,
 * so a 47 MB training split costs no resident memory (the kernel's page cache holds it,
 * shared by every run, and drops it under pressure).  A raw IDX file is read in place.
 * A gzip one is inflated once into a cache entry: one uncompressed copy of the file,
 * header included, in the cache directory ($CDL_CACHE_DIR, else $XDG_CACHE_HOME/cdl,
 * else $HOME/.cache/cdl), named <file without .gz>-<16 hex digits>, the digits a hash of
 * the source's absolute path, size, modification time, device and inode: a changed or
 * moved source gets a new entry, never a stale one.
 *
 * Safety of the cache: an entry is written under a unique temporary name
 * (<entry>.tmp.<pid>.<n>) and renamed into place only once complete, checked and
 * fsync'd (so a crash cannot leave the name without the data), so a
 * run killed while writing leaves at worst a temporary file, never a bad entry, and
 * two runs building the same entry at once both succeed (the renames are atomic and
 * write the same bytes).  An entry is used only if its size is exactly the header's
 * promise and its header equals the source's (read by inflating the source's first
 * bytes); otherwise it is rebuilt.  Anything that stops the cache being written (no
 * HOME, a directory that cannot be made, a full disk, a read-only file system) is not
 * an error: the caller reads the images into memory instead (IDX_BYTES).  Errors of the
 * source itself (corrupt gzip, truncated, trailing garbage) are errors, with the
 * messages the in-memory reader gives.
 *
 * While a dataset is in use, every batch checks (one fstat) that the file still has the
 * size and modification time it had when opened, and a short read is an error: a file
 * changed under a run fails the batch with a message naming it, never feeds garbage.
 */
#include "data_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DS_CHUNK ((size_t)1 << 18)        /* inflated bytes written at a time */

struct data_stream {
    int fd;
    uint64_t off;                 /* byte of the first value */
    uint64_t size;                /* the file's size and modification time when opened */
    int64_t mtime_s, mtime_ns;
    char path[PATH_MAX];          /* the file read: the IDX file or its cache entry */
    char src[PATH_MAX];           /* a cache entry's source, else "" */
};

static atomic_uint tmp_counter;

/* The cache directory into out; -1 when there is none (no variable set). */
static int cache_dir(char *out, size_t n) {
    const char *e = getenv("CDL_CACHE_DIR"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    int k;
    if (e && *e) k = snprintf(out, n, "%s", e);
    else if (x && *x == '/') k = snprintf(out, n, "%s/cdl", x);
    else if (h && *h) k = snprintf(out, n, "%s/.cache/cdl", h);
    else return -1;
    return k > 0 && (size_t)k < n ? 0 : -1;
}

/* mkdir -p dir (new directories 0700, as XDG asks); 0 when it is a directory after. */
static int make_dirs(char *dir) {
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            int bad = mkdir(dir, 0700) < 0 && errno != EEXIST;
            *p = '/';
            if (bad) return -1;
        }
    struct stat st;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) return -1;
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* The cache entry of source path (st: its stat) into out; -1 when there is no cache
 * directory or it cannot be made. */
static int cache_entry(const char *path, const struct stat *st, char *out, size_t n) {
    char dir[PATH_MAX], abs[PATH_MAX];
    if (cache_dir(dir, sizeof dir) < 0 || make_dirs(dir) < 0) return -1;
    if (!realpath(path, abs)) snprintf(abs, sizeof abs, "%s", path);
    int64_t key[5] = {(int64_t)st->st_size, (int64_t)st->st_mtim.tv_sec, (int64_t)st->st_mtim.tv_nsec,
                      (int64_t)st->st_dev, (int64_t)st->st_ino};
    uint64_t h = fnv(fnv(0xcbf29ce484222325ull, abs, strlen(abs) + 1), key, sizeof key);
    const char *base = data_base_name(path);
    size_t bl = strlen(base);
    if (bl > 3 && !strcmp(base + bl - 3, ".gz")) bl -= 3;
    if (bl > 200) bl = 200;
    int k = snprintf(out, n, "%s/%.*s-%016llx", dir, (int)bl, base, (unsigned long long)h);
    return k > 0 && (size_t)k < n ? 0 : -1;
}

/* The entry at path, open, when it is exactly the header h (hb bytes) and total values;
 * else -1 (absent, wrong size or header: rebuilt). */
static int cache_open(const char *path, const unsigned char *h, size_t hb, uint64_t total) {
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    struct stat st;
    unsigned char got[4 * (CDL_MAXDIM + 2)];
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == hb + total &&
        pread(fd, got, hb, 0) == (ssize_t)hb && memcmp(got, h, hb) == 0)
        return fd;
    close(fd);
    return -1;
}

static int write_all(int fd, const void *b, size_t n) {
    const char *p = b;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The rest of source f (whose header h, hb bytes, promises total values) inflated into
 * a temporary file renamed to entry.  0 and *fd (open on the entry); 1 when the cache
 * cannot be written; -1 and a message when the source is bad. */
static int cache_build(data_file *f, const unsigned char *h, size_t hb, uint64_t total, const char *entry, int *fd) {
    char tmp[PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", entry, (long)getpid(), atomic_fetch_add(&tmp_counter, 1));
    unsigned char *buf = cdl_alloc(DS_CHUNK);
    int t = buf ? open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
    int rc = 1;
    uint64_t got = 0;
    int64_t r = 0;
    if (t < 0 || write_all(t, h, hb) < 0) goto out;
    while ((r = data_file_read(f, buf, DS_CHUNK)) > 0) {
        uint64_t keep = got >= total ? 0 : total - got < (uint64_t)r ? total - got : (uint64_t)r;
        if (keep && write_all(t, buf, (size_t)keep) < 0) goto out;
        got += (uint64_t)r;
    }
    rc = -1;
    if (r < 0) goto out;
    if (got < total) {
        cdl_fail("%s: truncated: %llu data bytes, the header promises %llu", f->path, (unsigned long long)got,
                 (unsigned long long)total);
        goto out;
    }
    if (got > total) {
        cdl_fail("%s: %llu bytes of trailing garbage after the data", f->path, (unsigned long long)(got - total));
        goto out;
    }
    /* The bytes reach the disk before the entry gets its name: after a crash or power
     * loss, a name whose data never landed (right size and header, zeros behind them)
     * would pass the checks above and feed garbage. */
    rc = fsync(t) == 0 && rename(tmp, entry) == 0 ? 0 : 1;
out:
    cdl_free(buf);
    if (rc != 0 && t >= 0) {
        close(t);
        unlink(tmp);
    } else if (rc == 0) {
        *fd = t;
    }
    return rc;
}

/* A stream over fd (taken) at value offset off; path and src name it. */
static int stream_new(int fd, uint64_t off, const char *path, const char *src, data_stream **out) {
    struct stat st;
    data_stream *s = cdl_alloc(sizeof *s);
    if (!s || fstat(fd, &st) < 0) {
        close(fd);
        cdl_free(s);
        return cdl_fail("%s: cannot stat: %s", path, strerror(errno));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    s->fd = fd;
    s->off = off;
    s->size = (uint64_t)st.st_size;
    s->mtime_s = st.st_mtim.tv_sec;
    s->mtime_ns = st.st_mtim.tv_nsec;
    snprintf(s->path, sizeof s->path, "%s", path);
    snprintf(s->src, sizeof s->src, "%s", src);
    *out = s;
    return 0;
}

/* data_int.h */
int data_idx_stream(const char *path, int *nd, int64_t *dims, uint64_t *total, data_stream **out) {
    *out = NULL;
    data_file f;
    if (data_file_open(&f, path) < 0) return -1;
    unsigned char h[4 * (CDL_MAXDIM + 2)];
    if (data_idx_head(&f, path, 0, nd, dims, total, h) < 0) {
        data_file_close(&f);
        return -1;
    }
    size_t hb = 4 + 4 * (size_t)*nd;
    if (!f.gz) {                                /* read in place; the size is exact */
        if (f.size - hb > *total) {
            data_file_close(&f);
            return cdl_fail("%s: %llu bytes of trailing garbage after the data", path,
                            (unsigned long long)(f.size - hb - *total));
        }
        int fd = f.fd;
        f.fd = -1;
        data_file_close(&f);
        return stream_new(fd, hb, path, "", out);
    }
    struct stat st;
    char entry[PATH_MAX];
    int fd = -1, rc = 1;
    if (fstat(f.fd, &st) == 0 && cache_entry(path, &st, entry, sizeof entry) == 0) {
        fd = cache_open(entry, h, hb, *total);
        rc = fd >= 0 ? 0 : cache_build(&f, h, hb, *total, entry, &fd);
    }
    data_file_close(&f);
    return rc != 0 ? rc : stream_new(fd, hb, entry, path, out);
}

/* data_int.h */
int data_stream_read(const data_stream *s, uint64_t at, void *buf, size_t n) {
    char *p = buf;
    uint64_t pos = s->off + at;
    while (n > 0) {
        ssize_t r = pread(s->fd, p, n, (off_t)pos);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return cdl_fail("%s%s%s: read error at byte %llu: %s", s->path, s->src[0] ? ", the cache of " : "",
                                   s->src, (unsigned long long)pos, strerror(errno));
        if (r == 0)
            return cdl_fail("%s%s%s: short read at byte %llu (%zu bytes missing): the file was truncated while in use",
                            s->path, s->src[0] ? ", the cache of " : "", s->src, (unsigned long long)pos, n);
        p += r;
        pos += (uint64_t)r;
        n -= (size_t)r;
    }
    return 0;
}

/* data_int.h */
int data_stream_check(const data_stream *s) {
    struct stat st;
    if (fstat(s->fd, &st) < 0)
        return cdl_fail("%s: cannot stat: %s", s->path, strerror(errno));
    if ((uint64_t)st.st_size != s->size || st.st_mtim.tv_sec != s->mtime_s || st.st_mtim.tv_nsec != s->mtime_ns)
        return cdl_fail("%s%s%s: changed while in use (%llu bytes when opened, %llu now, or a new modification "
                        "time): reopen the dataset", s->path, s->src[0] ? ", the cache of " : "", s->src,
                        (unsigned long long)s->size, (unsigned long long)st.st_size);
    return 0;
}

/* data_int.h */
void data_stream_close(data_stream *s) {
    if (!s) return;
    close(s->fd);
    cdl_free(s);
}

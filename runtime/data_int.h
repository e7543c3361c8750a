/* data_int.h -- runtime-private interface of the data files (data.c: datasets, IDX,
 * named sets, feeds; data_csv.c: CSV; data_file.c: reading files; loader.c: transforms
 * and the batch loader).  Not installed. */
#ifndef CDL_DATA_INT_H
#define CDL_DATA_INT_H

#include "cdl.h"

#include <zlib.h>

/* ---- data.c: building datasets */
#define DATA_MAX_LABEL (1 << 20)          /* class labels are integers in [0, this) */
const char *data_base_name(const char *path);             /* the last path component */
int data_cols(cdl_dataset *d, int cap);                   /* room for cap columns; -1 */
/* Append a column (data_cols made room): nclasses is computed over d->n examples for
 * i32 columns, so set d->n first. */
cdl_column *data_add_col(cdl_dataset *d, const char *name, cdl_dtype dt, int rank, const int64_t *dims,
                         const void *data, int64_t stride, int flags);

/* The floats a CDL_COL_U8 byte v stands for: lut[v] = v / 255.0f (also the IDX
 * readers' widening, so both give the same bits). */
void data_u8_table(float lut[256]);

/* ---- data_file.c: a data file being read, raw or gzip */

/* Every file the runtime reads (datasets, and checkpoints in ckpt.c) is opened by
 * data_open_regular: non-blocking (a FIFO would otherwise wait for a writer forever),
 * then refused unless fstat calls it a regular file ("PATH: is a FIFO, not a regular
 * file: WHY"; why may be NULL).  Returns the descriptor, blocking again, with the
 * file's size in *size; -1 and a message.  data_path_kind names a non-regular file's
 * kind from its st_mode ("a FIFO", "a directory", "a symbolic link", ...). */
int data_open_regular(const char *path, const char *why, uint64_t *size);
const char *data_path_kind(unsigned mode);

/* Opened without blocking and refused unless it is a regular file (a FIFO, a device or
 * a directory would hang or mislead); a file starting with the gzip magic 1f 8b is
 * inflated, member after member (as gzip -d does), and anything after the last
 * member that is not another member is an error, not ignored. */
typedef struct data_file {
    const char *path;             /* for messages */
    int fd;
    int gz;                       /* gzip-compressed */
    int zinit;                    /* zs is initialised */
    int in_eof;                   /* the file has no more compressed bytes */
    int member_end;               /* between members: the next bytes must be another */
    uint64_t size;                /* the file's size in bytes */
    z_stream zs;
    unsigned char *in;            /* compressed input buffer */
    size_t in_len;                /* bytes in it from zs.next_in on */
} data_file;

int data_file_open(data_file *f, const char *path);      /* 0, or -1 and a message */
/* Up to n bytes into buf: the count, 0 at the end, -1 and a message (read error,
 * corrupt, truncated or trailing garbage). */
int64_t data_file_read(data_file *f, void *buf, size_t n);
void data_file_close(data_file *f);
/* Decompressed size estimate for capacity hints: the file size, or gzip's ISIZE
 * trailer (mod 2^32) when it is credible. */
uint64_t data_file_size_hint(const data_file *f);

/* ---- data.c and data_stream.c: IDX images streamed from their file (CDL_COL_FILE) */

/* The header of IDX file f (path names it) into h (4 * (CDL_MAXDIM + 2) bytes):
 * magic, dimensions and their product *total, checked against the file's size; -1 and
 * a message. */
int data_idx_head(data_file *f, const char *path, int labels, int *nd, int64_t *dims, uint64_t *total,
                  unsigned char *h);
/* An open file holding a column's bytes (the dataset's stream). */
typedef struct data_stream data_stream;
/* IDX image file path opened for streaming: a raw file itself, a gzip one through its
 * cache entry (made when missing or bad).  0 and *out; 1 when the cache cannot be
 * written (read the file into memory instead); -1 and a message when the file is bad. */
int data_idx_stream(const char *path, int *nd, int64_t *dims, uint64_t *total, data_stream **out);
/* n bytes from byte `at` of the values into buf; -1 and a message naming the file. */
int data_stream_read(const data_stream *s, uint64_t at, void *buf, size_t n);
/* 0 while the file has the size and modification time it had when opened; else -1
 * and a message naming it. */
int data_stream_check(const data_stream *s);
void data_stream_close(data_stream *s);        /* NULL is fine */

/* Lines of text from memory or from a data file, each at most max bytes (without its
 * "\n" or "\r\n"): a longer line is an error as soon as max + 1 bytes of it are read,
 * so a huge line costs bounded memory and time. */
typedef struct data_lines {
    const char *path;
    long line;                    /* number of the line last returned, 1-based */
    size_t max;
    const char *p, *lim;          /* memory source */
    data_file *f;                 /* file source (else NULL) */
    char *buf;                    /* file source: max + chunk bytes */
    size_t cap, beg, end;
    int eof;
} data_lines;
void data_lines_mem(data_lines *L, const char *text, size_t len, const char *path, size_t max);
int data_lines_file(data_lines *L, data_file *f, size_t max);  /* -1 and a message */
/* The next line in [*s, *e): 1, 0 at the end, -1 and a message "path:line: ..." */
int data_lines_next(data_lines *L, const char **s, const char **e);
void data_lines_free(data_lines *L);

#endif

/* diag.c -- user diagnostics and internal errors.
 *
 *   file:line:col: error: message
 *       the source line
 *       ^
 *
 * Lines and columns are 1-based; a column counts bytes.  Source buffers are
 * registered with diag_source (copied, so the caller may free its buffer).  Errors are
 * counted; the (DIAG_MAX_ERRORS + 1)-th error prints "error: too many errors,
 * stopping" and exits with status 1.  Internal compiler bugs go through die_at, which
 * prints "cdlc: internal error at FILE:LINE: msg" and exits with status 3.
 */
#include "cdlc.h"

#include <stdlib.h>
#include <string.h>

const Loc no_loc = {NULL, 0, 0};

typedef struct Source {
    struct Source *next;
    char *file;
    char *text;
    size_t len;
} Source;

static Source *sources;
static FILE *diag_out;
static int n_errors;

#define QUOTE_MAX 160      /* longest quoted source line; longer ones are windowed */

void diag_set_stream(FILE *f) { diag_out = f; }
static FILE *out(void) { return diag_out ? diag_out : stderr; }

int diag_error_count(void) { return n_errors; }

/* diag_reset: error count back to 0.  Registered sources stay (they are replaced when
 * the same file name is registered again). */
void diag_reset(void) { n_errors = 0; }

void diag_source(const char *file, const char *text, size_t len) {
    if (!file) return;
    Source *s = NULL;
    for (Source *p = sources; p; p = p->next)
        if (strcmp(p->file, file) == 0) s = p;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) die("out of memory (diag)");
        s->file = strdup(file);
        if (!s->file) die("out of memory (diag)");
        s->next = sources;
        sources = s;
    }
    free(s->text);
    s->text = malloc(len + 1);
    if (!s->text) die("out of memory (diag)");
    if (len) memcpy(s->text, text, len);
    s->text[len] = 0;
    s->len = len;
}

/* Print line `line` of the registered source and a caret under column col; long lines
 * are shown as a window around the column.  Nothing when the source is unknown. */
static void quote(Loc loc) {
    if (!loc.file || loc.line <= 0) return;
    Source *s = sources;
    while (s && strcmp(s->file, loc.file) != 0) s = s->next;
    if (!s) return;
    const char *p = s->text, *end = s->text + s->len;
    for (int l = 1; l < loc.line && p < end; p++)
        if (*p == '\n') l++;
    if (p > end) return;
    const char *e = p;
    while (e < end && *e != '\n') e++;
    size_t n = (size_t)(e - p);
    size_t col = loc.col > 0 ? (size_t)loc.col - 1 : 0;
    if (col > n) col = n;
    size_t from = 0, to = n;
    if (n > QUOTE_MAX) {
        from = col > QUOTE_MAX / 2 ? col - QUOTE_MAX / 2 : 0;
        to = from + QUOTE_MAX < n ? from + QUOTE_MAX : n;
    }
    FILE *f = out();
    fputs("    ", f);
    if (from > 0) fputs("...", f);
    for (size_t i = from; i < to; i++) {
        unsigned char c = (unsigned char)p[i];
        fputc(c == '\t' || (c >= 32 && c < 127) || c >= 128 ? c : '?', f);
    }
    if (to < n) fputs("...", f);
    fputs("\n    ", f);
    if (from > 0) fputs("   ", f);
    for (size_t i = from; i < col; i++) fputc(p[i] == '\t' ? '\t' : ' ', f);
    fputs("^\n", f);
}

static void report(Loc loc, const char *kind, const char *fmt, va_list ap) {
    FILE *f = out();
    if (loc.file && loc.line > 0)
        fprintf(f, "%s:%d:%d: %s: ", loc.file, loc.line, loc.col, kind);
    else if (loc.file)
        fprintf(f, "%s: %s: ", loc.file, kind);
    else
        fprintf(f, "cdlc: %s: ", kind);
    vfprintf(f, fmt, ap);
    fputc('\n', f);
    quote(loc);
    fflush(f);
}

void error_at(Loc loc, const char *fmt, ...) {
    if (n_errors >= DIAG_MAX_ERRORS) {
        fprintf(out(), "error: too many errors, stopping\n");
        fflush(out());
        exit(1);
    }
    n_errors++;
    va_list ap;
    va_start(ap, fmt);
    report(loc, "error", fmt, ap);
    va_end(ap);
}

void warning_at(Loc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report(loc, "warning", fmt, ap);
    va_end(ap);
}

void note_at(Loc loc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    report(loc, "note", fmt, ap);
    va_end(ap);
}

_Noreturn void die_at(const char *file, int line, const char *fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "cdlc: internal error at %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(3);
}

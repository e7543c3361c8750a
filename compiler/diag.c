/* diag.c -- user diagnostics and internal errors.
 *
 *   file:line:col: error: message
 *       the source line
 *       ^
 *
 * Lines and columns are 1-based; a column counts bytes.  Source buffers are
 * registered with diag_source (copied, so the caller may free its buffer).  Errors are
 * counted; the (DIAG_MAX_ERRORS + 1)-th error prints "error: too many errors,
 * stopping" and exits with status 1 (or returns to diag_set_recovery's point).  Internal compiler bugs go through die_at, which
 * prints "cdlc: internal error at FILE:LINE: msg" and exits with status 3.
 */
#include "cdlc.h"

#include <ctype.h>
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
static int muted;                  /* diag_mute depth: nothing printed or counted */
static bool muted_error;           /* an error was reported while muted */
static void (*trail_fn)(void *);   /* notes after each error and warning (diag_set_trail) */
static void *trail_ctx;
static jmp_buf *recovery;          /* diag_set_recovery: where user-error exits go */

#define QUOTE_MAX 160      /* longest quoted source line; longer ones are windowed */

void diag_set_stream(FILE *f) { diag_out = f; }
void diag_set_recovery(jmp_buf *j) { recovery = j; }

/* The end of a compilation that cannot go on (the message is out): exit with status 1,
 * or return to the in-process caller's recovery point. */
static _Noreturn void stop(void) {
    if (recovery) longjmp(*recovery, 1);
    exit(1);
}
static FILE *out(void) { return diag_out ? diag_out : stderr; }

int diag_error_count(void) { return n_errors; }

/* diag_reset: error count back to 0, not muted, no trail (a compilation stopped by
 * diag_set_recovery's longjmp left them set).  Registered sources stay (they are
 * replaced when the same file name is registered again). */
void diag_reset(void) {
    n_errors = 0;
    muted = 0;
    muted_error = false;
    trail_fn = NULL;
    trail_ctx = NULL;
}

void diag_source(const char *file, const char *text, size_t len) {
    if (!file) return;
    Source *s = NULL;
    for (Source *p = sources; p; p = p->next)
        if (strcmp(p->file, file) == 0) s = p;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) diag_out_of_memory(len + 1, 0);
        s->file = strdup(file);
        if (!s->file) diag_out_of_memory(len + 1, 0);
        s->next = sources;
        sources = s;
    }
    free(s->text);
    s->text = malloc(len + 1);
    if (!s->text) diag_out_of_memory(len + 1, 0);
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

/* The notes of the current context (block calls), without recursing into them. */
static void trail(void) {
    void (*fn)(void *) = trail_fn;
    if (!fn) return;
    trail_fn = NULL;
    fn(trail_ctx);
    trail_fn = fn;
}

/* One diagnostic (nothing while muted), then the context's notes unless it is a note. */
static void report(Loc loc, const char *kind, const char *fmt, va_list ap) {
    if (muted) return;
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
    if (strcmp(kind, "note") != 0) trail();
}

void diag_mute(bool on) {
    if (on && muted++ == 0) muted_error = false;
    if (!on && muted > 0) muted--;
}

bool diag_muted_error(void) { return muted_error; }

void diag_set_trail(void (*fn)(void *ctx), void *ctx) {
    trail_fn = fn;
    trail_ctx = ctx;
}

void error_at(Loc loc, const char *fmt, ...) {
    if (muted) {
        muted_error = true;
        return;
    }
    if (n_errors >= DIAG_MAX_ERRORS) {
        fprintf(out(), "error: too many errors, stopping\n");
        fflush(out());
        stop();
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

_Noreturn void diag_out_of_memory(size_t bytes, size_t in_use) {
    fflush(stdout);
    fprintf(out(), "cdlc: error: out of memory (%zu more bytes wanted, %zu MiB in use): the model is too large "
                   "to compile on this machine (a model that grows by inlining blocks: lower --max-nodes)\n",
            bytes, in_use >> 20);
    fflush(out());
    stop();
}

/* Optimal string alignment distance between a and b (case-insensitive; 99 past 64
 * characters). */
static int distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 99;
    int d[65][65];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    return d[la][lb];
}

const char *diag_suggest(const char *word, const char *const *cand, int n) {
    if (!word) return NULL;
    size_t len = strlen(word);
    int limit = len <= 2 ? 0 : len <= 5 ? 1 : len <= 8 ? 2 : 3;
    const char *best = NULL;
    int bd = limit + 1;
    for (int i = 0; i < n; i++) {
        if (!cand[i] || strcmp(cand[i], word) == 0) continue;
        int d = distance(word, cand[i]);
        if (d < bd) bd = d, best = cand[i];
    }
    return best;
}

const char *diag_did_you_mean(const char *word, const char *const *cand, int n) {
    const char *s = diag_suggest(word, cand, n);
    return s ? cc_str(" (did you mean '%s'?)", s) : "";
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

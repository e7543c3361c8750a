/* argv.c -- argument vectors for running a program without a shell (argv.h), shared by
 * cdlc --exe (main.c) and tools/cdl-compare.c. */
#include "argv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *argv_oom(void *p) {
    if (!p) {
        fputs("out of memory building a command line\n", stderr);
        exit(1);
    }
    return p;
}

static void argv_add(Argv *a, const char *s, size_t len) {
    if (a->n + 2 > a->cap) {
        int cap = a->cap ? 2 * a->cap : 32;
        a->v = argv_oom(realloc(a->v, sizeof *a->v * (size_t)cap));
        a->cap = cap;
    }
    char *c = argv_oom(malloc(len + 1));
    memcpy(c, s, len);
    c[len] = 0;
    a->v[a->n++] = c;
    a->v[a->n] = NULL;
}

void argv_push(Argv *a, const char *s) { argv_add(a, s, strlen(s)); }

bool argv_split(Argv *a, const char *words, const char *prog, const char *what) {
    for (const char *p = words; *p;) {
        p += strspn(p, " \t\n");
        size_t len = strcspn(p, " \t\n");
        if (!len) break;
        if (memchr(p, '\'', len) || memchr(p, '"', len) || memchr(p, '\\', len)) {
            fprintf(stderr, "%s: %s: quotes and backslashes are not interpreted (no shell runs; words are "
                            "split at blanks, so a flag cannot contain one): %.*s\n", prog, what, (int)len, p);
            return false;
        }
        argv_add(a, p, len);
        p += len;
    }
    return true;
}

void argv_free(Argv *a) {
    for (int i = 0; i < a->n; i++) free(a->v[i]);
    free(a->v);
    *a = (Argv){0};
}

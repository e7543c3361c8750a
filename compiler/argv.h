/* argv.h -- argument vectors for running a program without a shell: cdlc --exe and
 * cdl-compare build their compiler command lines with it (argv.c), so $CC and
 * $CDL_CFLAGS are split, and refused, the same way in both. */
#ifndef CDL_ARGV_H
#define CDL_ARGV_H

#include <stdbool.h>

/* A NULL-terminated argument vector (v[n] == NULL once anything was pushed); it owns
 * copies of its strings.  {0} is empty; argv_free releases it. */
typedef struct Argv { char **v; int n, cap; } Argv;

/* Append a copy of s (out of memory: a message and exit status 1). */
void argv_push(Argv *a, const char *s);
/* Append the words of `words`, split at blanks (spaces, tabs, newlines), as make
 * splits $(CC).  There is no shell: quotes and backslashes would reach the program as
 * they are, which is never what was meant, so they are refused with the message
 * "prog: what: quotes and backslashes are not interpreted ..." on stderr; a word cannot
 * contain a blank.  false after the message (the words before the refused one stay). */
bool argv_split(Argv *a, const char *words, const char *prog, const char *what);
void argv_free(Argv *a);

#endif

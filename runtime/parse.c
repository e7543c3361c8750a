/* parse.c -- the runtime's one strict number parser.
 *
 * Every number the runtime reads from a person or a file goes through here: trainer
 * options and `train {}` defaults, optimizer, schedule and attack specs, cdl-compare's
 * options and CSV fields.  Strict means the whole string is the number: no leading or
 * trailing blanks, no empty string, no "12abc", and for reals no NaN, no infinity and
 * no overflow.  A value too small for a double (1e-400) rounds to the nearest one, as
 * strtod does; that is a representable answer, not an error.
 *
 * Integers are decimal (an optional sign), or hexadecimal after 0x for unsigned ones
 * (seeds are often written so).  There is no octal: "010" is ten.
 */
#include "cdl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

/* Reals: strtod's syntax over the whole of s.  0, CDL_PARSE_BAD (-1: not a number) or
 * CDL_PARSE_RANGE (-2: infinite or beyond a double). */
int cdl_parse_f64(const char *s, double *v) {
    if (!s || !*s || *s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v')
        return CDL_PARSE_BAD;
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end || isnan(x)) return CDL_PARSE_BAD;
    if (isinf(x)) return CDL_PARSE_RANGE;             /* "inf", or ERANGE overflow */
    *v = x;
    return 0;
}

/* The digits of an unsigned integer in base 10 (or 16 after 0x / 0X) into *v, with
 * overflow refused.  s has no sign. */
static int parse_digits(const char *s, uint64_t *v) {
    unsigned base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    if (!*s) return CDL_PARSE_BAD;
    uint64_t x = 0;
    for (; *s; s++) {
        unsigned d;
        if (*s >= '0' && *s <= '9') d = (unsigned)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f') d = (unsigned)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F') d = (unsigned)(*s - 'A' + 10);
        else return CDL_PARSE_BAD;
        if (x > (UINT64_MAX - d) / base) return CDL_PARSE_RANGE;
        x = x * base + d;
    }
    *v = x;
    return 0;
}

/* A non-negative integer in [0, 2^64): decimal or 0x hex, no sign. */
int cdl_parse_u64(const char *s, uint64_t *v) {
    if (!s || !*s) return CDL_PARSE_BAD;
    return parse_digits(s, v);
}

/* A decimal integer with an optional sign, in [lo, hi] (CDL_PARSE_RANGE outside). */
int cdl_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *v) {
    if (!s || !*s) return CDL_PARSE_BAD;
    int neg = *s == '-';
    if (*s == '-' || *s == '+') s++;
    if (!*s || (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))) return CDL_PARSE_BAD;
    uint64_t u;
    int rc = parse_digits(s, &u);
    if (rc < 0) return rc;
    if (u > (uint64_t)INT64_MAX + (uint64_t)neg) return CDL_PARSE_RANGE;
    int64_t x = !neg ? (int64_t)u : u > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)u;
    if (x < lo || x > hi) return CDL_PARSE_RANGE;
    *v = x;
    return 0;
}

/* json.h -- a strict JSON reader for safetensors headers (runtime-private; not
 * installed, not part of the public API in cdl.h).
 *
 * The whole document becomes an array of nodes; containers link their children by
 * index (first, next), object members carry their key.  Strings are decoded into one
 * pool, NUL-terminated.  Strict means RFC 8259 and nothing more: no comments, no
 * trailing commas, no NaN, no control characters or invalid UTF-8 in strings, no
 * \u0000, no duplicate keys in an object, nesting at most JSON_MAX_DEPTH deep, only
 * whitespace after the root value.
 */
#ifndef CDL_JSON_H
#define CDL_JSON_H

#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 64

typedef enum json_type {
    JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT
} json_type;

typedef struct json_node {
    uint8_t type;        /* json_type */
    uint8_t is_uint;     /* number: a plain non-negative integer literal that fits u */
    int32_t first;       /* array / object: first child, -1 if empty */
    int32_t next;        /* next sibling in the parent, -1 for the last */
    int32_t count;       /* array / object: number of children */
    uint32_t key;        /* object member: pool offset of its decoded key; else UINT32_MAX */
    uint32_t str;        /* string: pool offset of the decoded text */
    uint32_t len;        /* string: decoded length in bytes */
    uint32_t off, end;   /* the value's source span [off, end) (quotes included) */
    uint64_t u;          /* number with is_uint */
} json_node;

typedef struct json_doc {
    json_node *node;     /* node[0] is the root */
    int32_t n, cap;
    char *pool;
} json_doc;

/* Parse src[0..len) (len < 2^31) into doc with at most max_nodes nodes.  0 on success;
 * -1 with a message "byte K: reason" in err (errlen bytes) otherwise, doc left empty.
 * Allocation through cdl_alloc; free with json_free. */
int json_parse(json_doc *doc, const char *src, size_t len, int32_t max_nodes, char *err,
               size_t errlen);
void json_free(json_doc *doc);
/* Index of object member `key` of node obj, or -1. */
int32_t json_get(const json_doc *doc, int32_t obj, const char *key);
/* The decoded key of member i / text of string i (NUL-terminated). */
const char *json_key(const json_doc *doc, int32_t i);
const char *json_str(const json_doc *doc, int32_t i);
/* 1 if s[0..n) is valid UTF-8 (no overlongs, surrogates or code points > U+10FFFF). */
int json_utf8_valid(const char *s, size_t n);

#endif /* CDL_JSON_H */

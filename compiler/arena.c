/* arena.c -- bump allocation for the compiler.
 *
 * One arena per compilation (cc_arena), freed whole.  Memory comes from big chunks
 * (64 KiB, or bigger for one large request); every block is zeroed and 16-byte
 * aligned.  Running out of memory is reported as a user error (diag_out_of_memory: the
 * model is too big for the machine), never as an internal error.  A NameMap (names to
 * indices, open addressing in the arena) gives the elaborator's scopes and tables
 * constant-time lookups, so compile time stays linear in the number of names.
 */
#include "cdlc.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_CHUNK ((size_t)64 * 1024)
#define ARENA_ALIGN ((size_t)16)

typedef struct Chunk {
    struct Chunk *next;
    size_t size, used;        /* bytes of data[] */
    _Alignas(16) unsigned char data[];
} Chunk;

struct Arena {
    Chunk *head;              /* the chunk being filled; older chunks behind it */
};

Arena *cc_arena;
static size_t in_use;         /* bytes of all chunks of all arenas */

Arena *arena_new(void) {
    Arena *a = calloc(1, sizeof *a);
    if (!a) diag_out_of_memory(sizeof *a, in_use);
    return a;
}

void arena_free(Arena *a) {
    if (!a) return;
    for (Chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        in_use -= c->size < in_use ? c->size : in_use;
        free(c);
    }
    free(a);
}

static size_t align_up(size_t n) { return (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1); }

/* arena_alloc: n zeroed bytes, 16-byte aligned, valid until arena_free.  n == 0 gives
 * a valid unique pointer.  A request bigger than a chunk gets a chunk of its own that
 * is linked behind the current one, so the current chunk keeps filling. */
void *arena_alloc(Arena *a, size_t n) {
    if (!a) die("arena_alloc: no arena");
    if (n > ((size_t)1 << 40)) die("arena_alloc: absurd request of %zu bytes", n);
    size_t need = align_up(n ? n : 1);
    Chunk *c = a->head;
    if (!c || c->size - c->used < need) {
        size_t size = need > ARENA_CHUNK / 4 ? need : ARENA_CHUNK;
        Chunk *nc = malloc(sizeof(Chunk) + size);
        if (!nc) diag_out_of_memory(size, in_use);
        in_use += size;
        nc->size = size;
        nc->used = 0;
        if (c && size != ARENA_CHUNK) {       /* big block: keep filling the current chunk */
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = c;
            a->head = nc;
        }
        c = nc;
    }
    void *p = c->data + c->used;
    c->used += need;
    memset(p, 0, need);
    return p;
}

/* arena_grow: a block of n bytes holding the first old bytes of p (p may be NULL when
 * old is 0).  Extends in place when p is the last block of the current chunk. */
void *arena_grow(Arena *a, void *p, size_t old, size_t n) {
    if (n <= old) return p;
    Chunk *c = a ? a->head : NULL;
    if (p && c && (unsigned char *)p + align_up(old ? old : 1) == c->data + c->used &&
        (unsigned char *)p >= c->data) {
        size_t off = (size_t)((unsigned char *)p - c->data);
        size_t need = align_up(n);
        if (off + need <= c->size) {
            memset(c->data + c->used, 0, off + need - c->used);
            c->used = off + need;
            return p;
        }
    }
    void *q = arena_alloc(a, n);
    if (p && old) memcpy(q, p, old);
    return q;
}

char *arena_strndup(Arena *a, const char *s, size_t n) {
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *arena_strdup(Arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

char *arena_printf(Arena *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) die("arena_printf: bad format");
    char *p = arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

/* ------------------------------------------------------------------ name maps */

static unsigned name_hash(const char *s) {
    unsigned h = 2166136261u;                  /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The slot of name in m: where it is, or the empty slot where it would go (m->cap > 0). */
static int map_slot(const NameMap *m, const char *name) {
    unsigned mask = (unsigned)m->cap - 1, h = name_hash(name) & mask;
    while (m->key[h] && m->key[h] != name && strcmp(m->key[h], name) != 0) h = (h + 1) & mask;
    return (int)h;
}

int arena_map_get(const NameMap *m, const char *name) {
    if (m->cap == 0) return -1;
    int h = map_slot(m, name);
    return m->key[h] ? m->val[h] : -1;
}

/* arena_map_put: see cdlc.h.  The table doubles (rehashing into fresh arena memory)
 * before it is half full, so probes stay short. */
void arena_map_put(NameMap *m, const char *name, int val) {
    if (2 * (m->n + 1) > m->cap) {
        NameMap big = {.cap = m->cap ? 2 * m->cap : 16};
        big.key = NEWN(const char *, big.cap);
        big.val = NEWN(int, big.cap);
        for (int i = 0; i < m->cap; i++)
            if (m->key[i]) {
                int h = map_slot(&big, m->key[i]);
                big.key[h] = m->key[i];
                big.val[h] = m->val[i];
            }
        big.n = m->n;
        *m = big;
    }
    int h = map_slot(m, name);
    if (!m->key[h]) {
        m->key[h] = name;
        m->n++;
    }
    m->val[h] = val;
}

/* arena.c -- bump allocation for the compiler.
 *
 * One arena per compilation (cc_arena), freed whole.  Small blocks come from 64 KiB
 * chunks, blocks over 16 KiB are malloc blocks of their own (growing by realloc, and
 * given back early by arena_drop); every block is zeroed and 16-byte aligned.  Running out of memory is reported as a user error (diag_out_of_memory: the
 * model is too big for the machine), never as an internal error.  A NameMap (names to
 * indices, open addressing in the arena) gives the elaborator's scopes and tables
 * constant-time lookups, so compile time stays linear in the number of names.
 */
#include "cdlc.h"

#include <stdlib.h>
#include <string.h>

#define ARENA_CHUNK ((size_t)64 * 1024)
#define ARENA_ALIGN ((size_t)16)
#define ARENA_BIG (ARENA_CHUNK / 4)   /* a block of more bytes than this is a Big one */

typedef struct Chunk {
    struct Chunk *next;
    size_t size, used;        /* bytes of data[] */
    _Alignas(16) unsigned char data[];
} Chunk;

/* A block of more than ARENA_BIG bytes is a malloc block of its own, in a doubly linked
 * list, so that growing it is a realloc (pages moved, not copied, and the old block not
 * left behind: a doubling array costs its final size, not twice that). */
typedef struct Big {
    struct Big *prev, *next;
    size_t size;              /* bytes of data[], a multiple of ARENA_ALIGN */
    size_t seq;               /* its number in the arena: the list is by decreasing seq */
    _Alignas(16) unsigned char data[];
} Big;

struct Arena {
    Chunk *head;              /* the chunk being filled; older chunks behind it */
    Big *big;                 /* the Big blocks, newest first */
    size_t nbig;              /* Big blocks made so far (the next one's seq) */
};

Arena *cc_arena;
static size_t in_use;         /* bytes of all chunks and Big blocks of all arenas */

Arena *arena_new(void) {
    Arena *a = calloc(1, sizeof *a);
    if (!a) diag_out_of_memory(sizeof *a, in_use);
    return a;
}

static void unuse(size_t n) { in_use -= n < in_use ? n : in_use; }

void arena_free(Arena *a) {
    if (!a) return;
    for (Chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        unuse(c->size);
        free(c);
    }
    for (Big *g = a->big, *next; g; g = next) {
        next = g->next;
        unuse(g->size);
        free(g);
    }
    free(a);
}

static size_t align_up(size_t n) { return (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1); }

/* A new zeroed Big block of need bytes (aligned), linked first.  calloc, not malloc and
 * memset: fresh pages from the kernel are zero already, so a large block is not written
 * (and made resident) before it is used. */
static void *big_alloc(Arena *a, size_t need) {
    Big *g = calloc(1, sizeof(Big) + need);
    if (!g) diag_out_of_memory(need, in_use);
    in_use += need;
    g->size = need;
    g->seq = a->nbig++;
    g->prev = NULL;
    g->next = a->big;
    if (a->big) a->big->prev = g;
    a->big = g;
    return g->data;
}

/* arena_alloc: n zeroed bytes, 16-byte aligned, valid until arena_free.  n == 0 gives
 * a valid unique pointer.  More than ARENA_BIG bytes make a Big block. */
void *arena_alloc(Arena *a, size_t n) {
    if (!a) die("arena_alloc: no arena");
    if (n > ((size_t)1 << 40)) die("arena_alloc: absurd request of %zu bytes", n);
    size_t need = align_up(n ? n : 1);
    if (need > ARENA_BIG) return big_alloc(a, need);
    Chunk *c = a->head;
    if (!c || c->size - c->used < need) {
        Chunk *nc = malloc(sizeof(Chunk) + ARENA_CHUNK);
        if (!nc) diag_out_of_memory(ARENA_CHUNK, in_use);
        in_use += ARENA_CHUNK;
        nc->size = ARENA_CHUNK;
        nc->used = 0;
        nc->next = c;
        a->head = nc;
        c = nc;
    }
    void *p = c->data + c->used;
    c->used += need;
    memset(p, 0, need);
    return p;
}

/* arena_grow: a block of n bytes holding the first old bytes of p (p may be NULL when
 * old is 0); the new bytes are zero.  old must be the size p was allocated (or last
 * grown) with, or less (then a Big block may be taken for a small one and copied): a
 * Big block is grown by realloc; a small one extends in place when it is the last block
 * of the current chunk, else it is copied. */
static void *grow(Arena *a, void *p, size_t old, size_t n, bool zero) {
    if (n <= old) return p;
    size_t had = align_up(old ? old : 1), need = align_up(n);
    if (p && had > ARENA_BIG) {
        Big *g = (Big *)((unsigned char *)p - offsetof(Big, data));
        if (need <= g->size) {          /* old was short of the block's size: no move */
            if (zero) memset((unsigned char *)p + old, 0, n - old);
            return p;
        }
        Big *q = realloc(g, sizeof(Big) + need);
        if (!q) diag_out_of_memory(need, in_use);
        in_use += need - q->size;
        if (zero) memset(q->data + q->size, 0, need - q->size);
        q->size = need;
        if (q->prev) q->prev->next = q;
        else a->big = q;
        if (q->next) q->next->prev = q;
        return q->data;
    }
    Chunk *c = a ? a->head : NULL;
    if (p && c && need <= ARENA_BIG && (unsigned char *)p + had == c->data + c->used &&
        (unsigned char *)p >= c->data) {
        size_t off = (size_t)((unsigned char *)p - c->data);
        if (off + need <= c->size) {
            if (zero) memset(c->data + c->used, 0, off + need - c->used);
            c->used = off + need;
            return p;
        }
    }
    void *q = arena_alloc(a, n);
    if (p && old) memcpy(q, p, old);
    return q;
}

void *arena_grow(Arena *a, void *p, size_t old, size_t n) { return grow(a, p, old, n, true); }

/* arena_reserve: arena_grow without zeroing the new bytes when the block stays or is
 * moved by realloc (a doubling array whose elements are set as they are taken: the
 * spare capacity of a large one is then never touched, so it costs no resident memory). */
void *arena_reserve(Arena *a, void *p, size_t old, size_t n) { return grow(a, p, old, n, false); }

/* arena_drop: see cdlc.h.  Only a Big block goes back to malloc; a small block stays
 * in its chunk until the arena is freed or released. */
void arena_drop(Arena *a, void *p, size_t n) {
    if (!p || align_up(n ? n : 1) <= ARENA_BIG) return;
    Big *g = (Big *)((unsigned char *)p - offsetof(Big, data));
    if (g->prev) g->prev->next = g->next;
    else a->big = g->next;
    if (g->next) g->next->prev = g->prev;
    unuse(g->size);
    free(g);
}

ArenaMark arena_mark(Arena *a) {
    return (ArenaMark){.chunk = a->head, .used = a->head ? a->head->used : 0, .nbig = a->nbig};
}

/* arena_release: see cdlc.h.  Released bytes that stay in the chunk are filled with
 * 0xA5 (allocation zeroes them again), so a pointer kept past its release reads
 * garbage at once instead of working by chance; released chunks and Big blocks go back
 * to malloc (where ASan catches a late use). */
void arena_release(Arena *a, ArenaMark m) {
    while (a->head && a->head != m.chunk) {
        Chunk *c = a->head;
        a->head = c->next;
        unuse(c->size);
        free(c);
    }
    if (a->head) {
        if (a->head->used < m.used) die("arena_release: the arena shrank below its mark");
        memset(a->head->data + m.used, 0xA5, a->head->used - m.used);
        a->head->used = m.used;
    }
    while (a->big && a->big->seq >= m.nbig) {   /* a Big block may have moved (realloc): by seq */
        Big *g = a->big;
        a->big = g->next;
        if (a->big) a->big->prev = NULL;
        unuse(g->size);
        free(g);
    }
}

char *arena_strndup(Arena *a, const char *s, size_t n) {
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *arena_strdup(Arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

/* Formatted once into a stack buffer and copied; only a string longer than the buffer
 * is formatted a second time (the emitters make millions of short ones). */
char *arena_printf(Arena *a, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) die("arena_printf: bad format");
    if ((size_t)n < sizeof buf) return arena_strndup(a, buf, (size_t)n);
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

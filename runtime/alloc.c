/* alloc.c -- the runtime's single allocation hook and its error message.
 *
 * Every runtime allocation goes through cdl_alloc/cdl_free, which call one hook with
 * Lua's lua_Alloc contract (see cdl.h).  The default hook returns 64-byte aligned
 * blocks.  cdl_alloc always hands out zeroed memory, whatever the hook, so it keeps
 * the block size in a small header in front of the block.  Tests install a counting
 * or failing hook with cdl_set_allocator.
 *
 * With the default hook the block comes from calloc (over-allocated by 63 bytes and
 * aligned here), not posix_memalign + memset: calloc knows when its memory is fresh
 * from the kernel (a large block is a new mmap, already zero) and then skips the
 * clearing, so a large slab costs neither the memset nor touching every page up front
 * (the MLP epoch's set-up spent ~2% of its training thread in that memset).  A hook
 * installed by the user still gets its blocks cleared here.
 *
 * Errors: cdl_fail formats a message into a per-thread buffer and returns -1;
 * cdl_last_error reads it back, cdl_clear_error empties it (the trainer does before a
 * step, so that a message after it is that step's cause).
 */
#include "cdl.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Header before every block: the hook's own pointer and the user size.  64 bytes so
 * that the user block keeps the hook's 64-byte alignment. */
#define CDL_HDR 64
typedef struct alloc_hdr { void *base; size_t n; } alloc_hdr;
_Static_assert(sizeof(alloc_hdr) <= CDL_HDR, "alloc header fits");

/* The default hook: 64-byte aligned via posix_memalign; realloc done as
 * allocate + copy + free since aligned blocks cannot be realloc'ed portably.  The
 * old size is unknown to the hook, so cdl_alloc never asks it to realloc. */
static void *alloc_default(void *ud, void *p, size_t n) {
    (void)ud;
    if (n == 0) {
        free(p);
        return NULL;
    }
    if (p) return NULL;              /* not used by cdl_alloc; refuse rather than guess */
    void *q = NULL;
    if (posix_memalign(&q, 64, n) != 0) return NULL;
    return q;
}

static cdl_alloc_fn alloc_fn = alloc_default;
static void *alloc_ud;
static atomic_uint_fast64_t alloc_n;

/* Install fn (NULL restores the default).  Not thread-safe against concurrent
 * allocation: call it before other threads start. */
void cdl_set_allocator(cdl_alloc_fn fn, void *ud) {
    alloc_fn = fn ? fn : alloc_default;
    alloc_ud = fn ? ud : NULL;
}

/* n zeroed bytes (n == 0 gives a valid, freeable block); NULL and a message on
 * failure or overflow. */
void *cdl_alloc(size_t n) {
    if (n > SIZE_MAX - CDL_HDR) {
        cdl_fail("cdl_alloc: size %zu overflows", n);
        return NULL;
    }
    cdl_alloc_fn fn = alloc_fn;
    void *ud = alloc_ud;
    /* a zero-byte request still gets a byte: a pointer one past the header would not
     * count as a reference to the block (LeakSanitizer would call it leaked) */
    size_t total = n + CDL_HDR + (n == 0);
    char *base, *user;
    if (fn == alloc_default) {          /* zeroed by calloc, only where it must */
        if (total > SIZE_MAX - 63 || !(base = calloc(1, total + 63))) {
            cdl_fail("cdl_alloc: out of memory (%zu bytes)", n);
            return NULL;
        }
        user = base + CDL_HDR + ((64 - (uintptr_t)base % 64) % 64);
    } else {
        if (!(base = fn(ud, NULL, total))) {
            cdl_fail("cdl_alloc: out of memory (%zu bytes)", n);
            return NULL;
        }
        memset(base, 0, total);
        user = base + CDL_HDR;
    }
    atomic_fetch_add(&alloc_n, 1);
    alloc_hdr *h = (alloc_hdr *)(void *)(user - CDL_HDR);
    h->base = base;
    h->n = n;
    return user;
}

/* Free a block from cdl_alloc (NULL is fine).  The block must have been allocated
 * with the hook that is installed now. */
void cdl_free(void *p) {
    if (!p) return;
    alloc_hdr *h = (alloc_hdr *)(void *)((char *)p - CDL_HDR);
    alloc_fn(alloc_ud, h->base, 0);
}

uint64_t cdl_alloc_count(void) { return (uint64_t)atomic_load(&alloc_n); }

/* ---------------------------------------------------------------- errors */

static _Thread_local char err_buf[512];

const char *cdl_last_error(void) { return err_buf; }

/* Formatted apart and then copied: an argument may be cdl_last_error() itself (a
 * message wrapping the one before), which vsnprintf must not write over as it reads. */
int cdl_fail(const char *fmt, ...) {
    char msg[sizeof err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(err_buf, msg, sizeof msg);
    return -1;
}

void cdl_clear_error(void) { err_buf[0] = 0; }

/* fuzz_cdlc.c -- libFuzzer harness for the compiler: the input is CDL source, taken
 * through every pass cdlc runs (parse, elaborate, infer shapes; then, for the static C
 * and the tape targets, clone per function, autodiff, verify, optimise, plan, emit)
 * with the C written to memory.
 *
 * A user error must end as a diagnostic: the compilation stops (the too-many-errors and
 * out-of-memory exits return here through diag_set_recovery) and the next input runs.
 * Anything else that stops the process is a bug the fuzzer reports: an internal error
 * (die() exits with status 3), a sanitizer report, a hang (-timeout), a leak.  A model
 * that elaborates must also pass ir_verify and give C for both targets.
 *
 * The graph-size budget is FUZZ_MAX_NODES nodes (cdlc --max-nodes), so a model that
 * grows by inlining blocks is refused quickly instead of compiled slowly.  Imports are
 * read as cdlc reads them (relative to the current directory: "fuzz.cdl" has none).
 * Diagnostics go to /dev/null; CDL_FUZZ_VERBOSE=1 shows them (to reproduce a case).
 */
#include "cdlc.h"

#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_NODES 20000

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

/* Emit p's C and header into memory; the text must not be empty. */
static void emit_in_memory(const Pipeline *p) {
    char *c = NULL, *h = NULL;
    size_t clen = 0, hlen = 0;
    FILE *cf = open_memstream(&c, &clen), *hf = open_memstream(&h, &hlen);
    if (!cf || !hf) abort();
    (p->tape ? emit_tape : emit_c)(p, cf, hf, true, "fuzz.h");
    if (fclose(cf) || fclose(hf) || clen == 0 || hlen == 0) abort();
    free(c);
    free(h);
}

/* The passes of cdlc's main() on the source text, for both targets. */
static void compile(const unsigned char *data, size_t size) {
    Model *m = elab_text("fuzz.cdl", (const char *)data, size, 0, NULL);
    if (!m || diag_error_count()) return;
    ir_verify(m->g);
    for (int k = 0; k < m->nentries; k++) ir_verify(m->entries[k].g);
    emit_in_memory(pipeline_build(m, 4, false));
    emit_in_memory(pipeline_build(m, 4, true));
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    static FILE *quiet;
    if (!quiet) {
        ops_init();
        elab_set_max_nodes(FUZZ_MAX_NODES);
        const char *v = getenv("CDL_FUZZ_VERBOSE");
        quiet = v && *v == '1' ? stderr : fopen("/dev/null", "w");
        if (!quiet) abort();
        diag_set_stream(quiet);
    }
    cc_arena = arena_new();
    diag_reset();
    jmp_buf stop;
    if (setjmp(stop) == 0) {
        diag_set_recovery(&stop);
        compile(data, size);
    }
    diag_set_recovery(NULL);
    arena_free(cc_arena);
    cc_arena = NULL;
    return 0;
}

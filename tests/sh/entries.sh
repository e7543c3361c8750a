#!/bin/bash
# Entry points in both targets: an entry may be called `step` (the tape program's own
# functions must not take the name), `output k as kk` names the output kk in the
# descriptor, and each entry gives the same numbers as static C and as a tape program.
. "$(dirname "$0")/../lib.sh"
cat >"$t/ent.cdl" <<'CDL'
model ent(B = 4) {
    input x: f32[B, 3]
    y = linear(x, 2)
    output y
    loss mean(y * y)
    entry step(a: f32[B, 3]) {
        k = linear(a, 2, name="linear1")
        output k as kk
        output tanh(k) * 2 as squashed
    }
    entry twice(a: f32[B, 3]) = linear(a, 2, name="linear1") * 2
}
CDL
# Run every entry on fixed inputs and print "<entry> <output name> <values>".
cat >"$t/drv.c" <<'C'
#include <stdio.h>
#include "ent.h"
int main(void) {
    cdl_net *net = ent_new();
    if (!net) return 1;
    ent_init(net, 7);
    const cdl_model *m = net->model;
    float a[4 * 3], out[4][4 * 2];
    for (int i = 0; i < 12; i++) a[i] = 0.25f * (float)i - 1.0f;
    for (int e = 0; e < m->n_entries; e++) {
        const cdl_entry *en = &m->entries[e];
        const void *in[1] = {a};
        void *o[4] = {out[0], out[1], out[2], out[3]};
        en->run(net, 4, in, o);
        for (int k = 0; k < en->n_out; k++) {
            printf("%s %s", en->name, en->out[k].name);
            for (int i = 0; i < 8; i++) printf(" %.6g", out[k][i]);
            printf("\n");
        }
    }
    ent_free(net);
    return 0;
}
C
for target in c tape; do
    "$CDLC" --target=$target "$t/ent.cdl" -o "$t/ent.c" 2>"$t/log" || { echo "FAIL cdlc --target=$target: $(head -3 $t/log)"; fail=1; continue; }
    cc_rt -O1 -Wall -Wextra -Werror -I"$t" "$t/ent.c" "$t/drv.c" -o "$t/drv" 2>"$t/log" || { echo "FAIL build --target=$target: $(head -5 $t/log)"; fail=1; continue; }
    "$t/drv" >"$t/$target.out" || { echo "FAIL run --target=$target"; fail=1; }
done
[ $fail = 0 ] || exit 1
for want in "step kk" "step squashed" "twice twice"; do
    grep -q "^$want " "$t/c.out" || { echo "FAIL: static descriptor lacks output '$want'"; cat "$t/c.out"; exit 1; }
done
cmp -s "$t/c.out" "$t/tape.out" || { echo "FAIL: entries differ between static and tape"; diff "$t/c.out" "$t/tape.out"; exit 1; }
echo "entries: step/as-names ok, static == tape ($(wc -l <"$t/c.out") outputs)"

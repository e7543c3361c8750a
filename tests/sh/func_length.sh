#!/bin/bash
# The size rule of the style guide (DESIGN.md section 7), checked: no source file in
# compiler/ or runtime/ over 1,500 lines, no function over 150 lines.
#
# A function's length runs from the first line of its header to its closing brace.  The
# functions are found by a brace counter (awk below), not by ctags, so that functions
# written through macros (the S(name) bodies of runtime/kernels_*_t.h) are measured too:
# at file level, a block opened by "{" is a function when its header has a "(" and no "="
# (an initializer) and does not start with struct/union/enum/typedef.  Comments, strings,
# character literals and preprocessor lines (with their continuations) are skipped.
#
# Usage: tests/sh/func_length.sh [-v] [FILE...]   (-v lists the ten longest functions)
MAXF=150 MAXL=1500
verbose=0; [ "${1:-}" = -v ] && { verbose=1; shift; }
files=("$@")
[ ${#files[@]} -eq 0 ] && files=(compiler/*.[ch] runtime/*.[ch] runtime/*.def)

# Functions over the limit in files owned by helpers still at work on them; each entry
# is removed by the commit that shortens it (the check fails on a stale entry too).
known=(
)

lengths=$(awk '
FNR == 1 { depth = 0; incom = 0; pp = 0; head = ""; hstart = 0 }
{
    line = $0
    # a preprocessor line and its continuations
    if (pp || (!incom && line ~ /^[ \t]*#/)) { pp = (line ~ /\\$/); next }
    out = ""; i = 1; n = length(line)
    while (i <= n) {
        c = substr(line, i, 1); c2 = substr(line, i, 2)
        if (incom) { if (c2 == "*/") { incom = 0; i += 2 } else i++; continue }
        if (c2 == "/*") { incom = 1; i += 2; continue }
        if (c2 == "//") break
        if (c == "\"" || c == "\047") {          # skip a string or character literal
            q = c; i++
            while (i <= n && substr(line, i, 1) != q) i += (substr(line, i, 1) == "\\") ? 2 : 1
            i++; out = out "_"; continue
        }
        out = out c; i++
    }
    for (i = 1; i <= length(out); i++) {
        c = substr(out, i, 1)
        if (depth == 0 && c !~ /[ \t]/ && head == "") hstart = FNR
        if (c == "{") {
            if (depth == 0) {
                fn = (head ~ /\(/ && head !~ /=/ && head !~ /^[ \t]*(static[ \t]+)?(typedef|struct|union|enum)[ \t]/)
                fstart = hstart; name = head
                if (match(name, /[A-Za-z_0-9]+\([A-Za-z_0-9]+\)[ \t]*\(/)) {   # S(name)(...)
                    name = substr(name, RSTART, RLENGTH); sub(/\)[ \t]*\($/, ")", name)
                } else { sub(/\(.*/, "", name); k = split(name, w, /[ \t*]+/); name = w[k] }
            }
            depth++
        } else if (c == "}") {
            depth--
            if (depth == 0) {
                if (fn) printf "%d %s %s %d\n", FNR - fstart + 1, FILENAME, name, fstart
                fn = 0; head = ""
            }
        } else if (depth == 0) {
            if (c == ";") head = ""; else head = head c
        }
    }
    if (depth == 0 && head != "") head = head " "
}' "${files[@]}" | sort -rn)

fail=0
[ $verbose = 1 ] && echo "$lengths" | head -10
while read -r n f name start; do
    [ "$n" -gt $MAXF ] || continue
    if printf '%s\n' "${known[@]}" | grep -qx "$f:$name"; then continue; fi
    echo "$f:$start: function $name is $n lines (limit $MAXF)"; fail=1
done <<<"$lengths"
for k in "${known[@]}"; do
    f=${k%%:*} name=${k#*:}
    awk -v f="$f" -v nm="$name" -v m=$MAXF '$2==f && $3==nm && $1>m {found=1} END {exit !found}' <<<"$lengths" \
        || { echo "$k is no longer over $MAXF lines: remove it from the known list"; fail=1; }
done
big=$(wc -l "${files[@]}" | awk -v m=$MAXL '$2 != "total" && $1 > m {print $2 " (" $1 " lines)"}')
[ -n "$big" ] && { echo "files over $MAXL lines: $big"; fail=1; }
[ $fail = 0 ] || exit 1
nfn=$(grep -c . <<<"$lengths")
echo "$nfn functions in ${#files[@]} files, the longest $(head -1 <<<"$lengths" | awk '{print $1 " lines (" $3 ")"}'); ${#known[@]} known over $MAXF"

#!/bin/sh
# Install the Debian packages cdl needs, if any are missing.  Quiet and fast when all
# are present.  Runs as root (CI, fresh machines); otherwise says what to install.
# fortunes: the text corpus of models/gpt.cdl (examples/gpt_fortunes.sh, /usr/share/games/fortunes)
# wamerican ... wdutch: the word lists of models/langid.cdl (examples/langid_data.sh, /usr/share/dict)
# `deps.sh lint` adds the static analysers (make lint), `deps.sh coverage` gcovr (make
# coverage), `deps.sh bench` PyTorch for /usr/bin/python3 (make bench's reference rows,
# also the optional oracle of some tests): only those targets need them.
PKGS="flex bison libopenblas-dev libdnnl-dev libcmocka-dev zlib1g-dev dataset-fashion-mnist clang libclang-rt-14-dev openmpi-bin libopenmpi-dev fortunes wamerican wngerman wfrench wspanish witalian wdutch"
case "$1" in
    lint) PKGS="$PKGS cppcheck clang-tidy-14" ;;
    coverage) PKGS="$PKGS gcovr" ;;
    bench) PKGS="$PKGS python3-torch" ;;
esac
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing:$missing"
if [ "$(id -u)" != 0 ]; then
    echo "deps: not root; run: sudo apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null && apt-get install -y -qq $missing >/dev/null || {
    echo "deps: apt-get install failed for:$missing" >&2; exit 1; }

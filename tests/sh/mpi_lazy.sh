#!/bin/bash
# mpi_lazy.sh -- MPI is loaded only by a program started under mpirun (runtime/dist_int.h):
#   plain      a program linked with the runtime, started without mpirun, has no libmpi
#              mapped after cdl_dist_init, and trainer programs (cdlc --exe) do not
#              name libmpi among their libraries
#   mpirun     under mpirun -np 2 the plugin loads libmpi and the ranks sum (1 + 2 = 3),
#              from the build directory and from the copy CDL_MPI_PLUGIN names
#   missing    a launcher's environment with CDL_MPI_PLUGIN naming a missing file or a
#              file that is not a library: exit 1 with a message naming the file
#              (tests/drivers/dist_lazy.c prints what it sees)
#   installed  the runtime names the installed plugin under PREFIX (default /usr/local),
#              not under a PREFIX the Makefile had not set yet ("/lib/...")
# Skipped only where mpicc is missing (scripts/deps.sh installs Open MPI).
. "$(dirname "$0")/../lib.sh"
need_mpi
san_cc
cc_rt -O1 tests/drivers/dist_lazy.c -o "$t/lazy" || { echo "FAIL: tests/drivers/dist_lazy.c does not build"; exit 1; }

out=$("$t/lazy") || bad "plain: exit $?"
[ "$out" = "rank 0 size 1 libmpi 0 sum 1" ] || bad "plain: '$out' (want 'rank 0 size 1 libmpi 0 sum 1')"
"$CDLC" models/mlp.cdl --exe -o "$t/mlp" || bad "cdlc --exe models/mlp.cdl"
if readelf -d "$t/mlp" | grep NEEDED | grep -q libmpi; then bad "plain: the trainer program is linked with libmpi"; fi

out=$($MPIRUN "$t/lazy" | sort) || bad "mpirun: exit $?"
want=$'rank 0 size 2 libmpi 1 sum 3\nrank 1 size 2 libmpi 1 sum 3'
[ "$out" = "$want" ] || bad "mpirun: '$out' (want '$want')"
cp "$(dirname "$CDLRT")/libcdlrt_mpi.so" "$t/moved.so"      # CDL_MPI_PLUGIN names another copy
out=$(CDL_MPI_PLUGIN="$t/moved.so" $MPIRUN "$t/lazy" | sort) || bad "mpirun, CDL_MPI_PLUGIN: exit $?"
[ "$out" = "$want" ] || bad "mpirun, CDL_MPI_PLUGIN: '$out' (want '$want')"

inst="${PREFIX:-/usr/local}/lib/libcdlrt_mpi.so"
grep -aq "$inst" "$CDLRT" || bad "installed: $CDLRT does not name $inst"

echo "not a library" >"$t/text.so"
for p in "$t/missing.so" "$t/text.so"; do
    err=$(OMPI_COMM_WORLD_SIZE=2 CDL_MPI_PLUGIN="$p" "$t/lazy" 2>&1 >/dev/null); rc=$?
    [ $rc -eq 1 ] || bad "missing: $p: exit $rc (want 1)"
    case $err in *"MPI plugin could not be loaded ($p: "*"CDL_MPI_PLUGIN"*) ;;
        *) bad "missing: $p: message '$err'" ;; esac
done
[ $fail -eq 0 ] || exit 1
echo "mpi_lazy: no libmpi without mpirun; two ranks load it and sum; a missing plugin is named; the installed path is PREFIX's"

#!/usr/bin/env bash
# `make test` while another process keeps one CPU core busy (issue 18: the suite must stay
# green under load). The busy loop is this script's own child; it is stopped however
# `make test` ends, and the script exits with make's status.
#   scripts/busy_core_test.sh            # one run
#   RUNS=3 scripts/busy_core_test.sh     # three runs in a row, the load on during the second
set -u
cd "$(dirname "$0")/.."
runs=${RUNS:-1}
busy_run=${BUSY_RUN:-$(( (runs + 1) / 2 ))}
status=0
busy=""
trap '[ -n "$busy" ] && kill "$busy" 2>/dev/null' EXIT INT TERM
for run in $(seq 1 "$runs"); do
    busy=""
    if [ "$run" -eq "$busy_run" ]; then
        ( while :; do :; done ) &
        busy=$!
        echo "run $run/$runs: make test with a busy core (pid $busy)"
    else
        echo "run $run/$runs: make test"
    fi
    make test
    code=$?
    if [ -n "$busy" ]; then
        kill "$busy" 2>/dev/null
        wait "$busy" 2>/dev/null
        busy=""
    fi
    echo "run $run/$runs: exit $code"
    [ "$code" -ne 0 ] && status=$code
done
exit "$status"

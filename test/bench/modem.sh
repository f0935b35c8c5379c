#!/bin/sh
# Benchmarks of the modem sidecar (not run by make check):
#  - latency: COMMIT of sms_send(..., channel => 'modem') to the PDU reaching
#    the simulated modem, sidecar idle; reference: the gammu tool started
#    for one SMS, as a script calling gammu per SMS would do;
#  - throughput: 1,000 queued SMS drained through gammu's dummy phone;
#    reference: pgbench running the same claim + finish calls over one
#    connection (what the database alone allows).
# Usage: PG_CONFIG=... test/bench/modem.sh   (LATENCY_N=100 RUNS=3 by default)
# As root it re-runs itself as an unprivileged user (PostgreSQL refuses root).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
out=${SMSDISPATCH_TEST_DIR:-$top/tmp_check}/bench_modem
if [ "$(id -u)" = 0 ]; then
	user=${SMSDISPATCH_TEST_USER:-postgres}
	mkdir -p "$out"
	chown -R "$user" "$out"
	exec runuser -u "$user" -- env SMSDISPATCH_TEST_DIR="$(dirname "$out")" PATH="$PATH" \
		PG_CONFIG="${PG_CONFIG:-pg_config}" LATENCY_N="${LATENCY_N:-100}" RUNS="${RUNS:-3}" "$0" "$@"
fi
PG_CONFIG=${PG_CONFIG:-pg_config}
export PATH="$($PG_CONFIG --bindir):$PATH"
rm -rf "$out"
mkdir -p "$out"
cd "$top"
rc=0
TESTDIR="$out" PG_REGRESS=/bin/true timeout 1800 \
	perl -I "$($PG_CONFIG --pkglibdir)/pgxs/src/test/perl" -I test/modem test/bench/modem.pl || rc=$?
# the test modules send our output to their log
grep -E '^(latency|reference|throughput|  run)' "$out/tmp_check/log/regress_log_modem" || true
[ $rc = 0 ] || { echo "modem benchmark failed (exit $rc); see $out/tmp_check/log/regress_log_modem" >&2; exit $rc; }

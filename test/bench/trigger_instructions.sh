#!/bin/sh
# What the verification trigger adds to an application's INSERT, counted in
# CPU instructions rather than seconds, so that the machine's other load
# does not move it: a backend in single-user mode under callgrind runs N
# single-row INSERTs into verification.verifications (with the trigger) and
# the same into a copy of the table without it. A first run of N/10 INSERTs
# is subtracted from each, which leaves out start-up and the first calls'
# caches. Prints instructions per INSERT for both and their ratio.
#
# Usage: test/bench/trigger_instructions.sh   (PG_CONFIG, N=2000)
# As root it re-runs itself as the postgres user (PostgreSQL refuses root).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
N=${N:-2000}

if [ "$(id -u)" = 0 ]; then
	exec runuser -u "${SMSDISPATCH_TEST_USER:-postgres}" -- env PATH="$PATH" \
		PG_CONFIG="$PG_CONFIG" N="$N" sh "$0" "$@"
fi
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

bindir=$($PG_CONFIG --bindir)
work=$(mktemp -d "${TMPDIR:-/tmp}/smsdispatch-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
data=$work/data
"$bindir/initdb" -D "$data" --encoding=UTF8 --locale=C -A trust >/dev/null
single() { "$bindir/postgres" --single -D "$data" -c fsync=off postgres 2>/dev/null; }
{
	cat "$top/test/ehealth-verifications.sql"
	echo "CREATE EXTENSION smsdispatch;"
	echo "CREATE SCHEMA bench;"
	echo "CREATE TABLE bench.verifications (LIKE verification.verifications INCLUDING ALL);"
} | sed 's/--.*$//' | tr '\n' ' ' | sed 's/;/;\n/g' | single >/dev/null

# n INSERTs into a table, each its own transaction, a random phone each
inserts() {
	awk -v n="$2" -v t="$1" 'BEGIN { srand(42); for (i = 0; i < n; i++)
		printf "INSERT INTO %s (phone_number, check_digit, code, code_expired_at) VALUES (%c+38050%07d%c, 7, %c481226%c, now() + interval %c5 min%c);\n",
			t, 39, int(rand() * 10000000), 39, 39, 39, 39, 39 }'
}
# instructions callgrind counts for a statement file
count() {
	valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bindir/postgres" \
		--single -D "$data" -c fsync=off postgres < "$1" 2>&1 >/dev/null |
		awk '/Collected/ { print $NF }'
}
per_insert() {
	echo "TRUNCATE verification.sms_log, verification.verifications, bench.verifications;" | single >/dev/null
	inserts "$1" $((N / 10)) > "$work/warm.sql"
	warm=$(count "$work/warm.sql")
	echo "TRUNCATE verification.sms_log, verification.verifications, bench.verifications;" | single >/dev/null
	inserts "$1" "$N" > "$work/full.sql"
	full=$(count "$work/full.sql")
	echo $(((full - warm) / (N - N / 10)))
}

with=$(per_insert verification.verifications)
without=$(per_insert bench.verifications)
echo "instructions per single-row INSERT (callgrind, single-user backend, N=$N)"
echo "  into verification.verifications (trigger): $with"
echo "  into the same table without the trigger:   $without"
awk -v a="$with" -v b="$without" 'BEGIN {
	printf "  added by the trigger: %d; without / with = %.2f\n", a - b, b / a }'

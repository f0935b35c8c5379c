#!/bin/sh
# Runs every test suite against the installed extension: pg_regress,
# isolation, TAP (prove) and the fuzz smoke runs. PostgreSQL refuses to run
# as root, so as root this re-runs itself as an unprivileged user.
#
# Prints each runner's own summary and, last, "N passed, N failed" counting
# the suites.
#
# A maintainer runs a part of it by naming the suite and, for regress and
# tap, its tests:  test/run-checks.sh tap test/t/012_upgrade.pl
#                  test/run-checks.sh regress 09_security
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
out=${SMSDISPATCH_TEST_DIR:-$top/tmp_check}

if [ "$(id -u)" = 0 ]; then
	# the unprivileged user writes the results
	mkdir -p "$out"
	chown -R "${SMSDISPATCH_TEST_USER:-postgres}" "$out"
	. "$top/test/unprivileged.sh"
	run_unprivileged "$0" "$@"
fi

PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$($PG_CONFIG --bindir)
pgxs=$($PG_CONFIG --pkglibdir)/pgxs/src
export PATH="$bindir:$PATH"
mkdir -p "$out/tap"
cd "$top"

only=${1:-}
[ $# -gt 0 ] && shift
selected() {
	[ -z "$only" ] || [ "$only" = "$1" ]
}

passed=0
failed=0
record() {
	if [ "$1" = 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "suite failed: $2"; fi
}

# After a failed prove: each failing test file with prove's reason and, from
# its log, every failed assertion with the diagnostics below it (or, when it
# died first, the log's last lines), so that the end of a long output still
# says what broke.
tap_failures() {
	# 16 and later put a time stamp before each line
	failed_assertion='^(\[[0-9:.]*\]\([0-9.]*s\) )?not ok'
	sed -n '/^Test Summary Report/,/^Files=/p' "$out/tap/prove.out" |
		grep '^test/t/' |
		while read -r file reason; do
			name=$(basename "$file" .pl)
			echo "TAP failed: $file $reason"
			log=$out/tap/tmp_check/log/regress_log_$name
			if grep -Eq "$failed_assertion" "$log" 2>/dev/null; then
				grep -E -A 12 "$failed_assertion" "$log" | head -n 60
			else
				# it died before an assertion failed: its last words
				tail -n 20 "$log" 2>/dev/null
			fi
		done
}

regress_tests=$(ls sql/*.sql 2>/dev/null | sed 's|sql/||; s|\.sql$||')
[ "$only" = regress ] && [ $# -gt 0 ] && regress_tests="$*"
if selected regress && [ -n "$regress_tests" ]; then
	echo "== pg_regress"
	"$pgxs/test/regress/pg_regress" --inputdir=. --outputdir="$out/regress" \
		--bindir="$bindir" --temp-instance="$out/regress/instance" \
		--temp-config=test/regress.conf --encoding=UTF8 --no-locale \
		--dbname=contrib_regression $regress_tests
	rc=$?
	[ $rc = 0 ] || cat "$out/regress/regression.diffs" 2>/dev/null | head -200
	record $rc pg_regress
fi

iso_tests=$(ls test/isolation/specs/*.spec 2>/dev/null | sed 's|.*/||; s|\.spec$||')
if selected isolation && [ -n "$iso_tests" ]; then
	echo "== isolation"
	"$pgxs/test/isolation/pg_isolation_regress" --inputdir=test/isolation \
		--outputdir="$out/isolation" --bindir="$bindir" \
		--temp-instance="$out/isolation/instance" --temp-config=test/regress.conf \
		--encoding=UTF8 --no-locale --dbname=isolation_regression $iso_tests
	rc=$?
	[ $rc = 0 ] || cat "$out/isolation/regression.diffs" 2>/dev/null | head -200
	record $rc isolation
fi

tap_tests=$(ls test/t/*.pl 2>/dev/null)
[ "$only" = tap ] && [ $# -gt 0 ] && tap_tests="$*"
if selected tap && [ -n "$tap_tests" ]; then
	echo "== TAP"
	rm -rf "$out/tap"
	mkdir -p "$out/tap"
	# 15 derives its directories from TESTDIR, 16 and later read
	# TESTDATADIR and TESTLOGDIR: the same layout on every major
	{
		TESTDIR="$out/tap" TESTDATADIR="$out/tap/tmp_check" \
			TESTLOGDIR="$out/tap/tmp_check/log" \
			PG_REGRESS="$pgxs/test/regress/pg_regress" \
			prove -I "$pgxs/test/perl" -I test/perl $tap_tests 2>&1
		echo $? >"$out/tap/prove.rc"
	} | tee "$out/tap/prove.out"
	rc=$(cat "$out/tap/prove.rc")
	record "$rc" TAP
	[ "$rc" = 0 ] || tap_failures
fi

if selected pgxn && [ -x test/pgxn/run.sh ]; then
	echo "== PGXN META.json"
	test/pgxn/run.sh
	record $? pgxn
fi

if selected fuzz && [ -x test/fuzz/run-smoke.sh ]; then
	echo "== fuzz smoke"
	test/fuzz/run-smoke.sh "$out/fuzz"
	record $? fuzz
fi

echo "suites: $passed passed, $failed failed"
[ $failed = 0 ]

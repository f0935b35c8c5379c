#!/bin/sh
# make check-matrix: the whole suite (make check) on each Debian release of
# the matrix, inside a root made with debootstrap from the machine's own
# Debian mirror and cached between runs: Debian 13 "trixie" (PostgreSQL 17)
# and Debian unstable "sid" (PostgreSQL 18). In each root install-deps.sh
# installs what that release has, as on a machine running it. On trixie also
# make demo, pg_upgrade from 15 to 17, and the Debian packages (built, then
# installed into a clean root where make installcheck runs). The roots run
# at the same time; the first one's output shows as it runs.
#
# Prints each root's "suites: N passed, N failed", and last
# "matrix: N passed, N failed" over every suite of every root.
#
# Settings (environment): SMSDISPATCH_MATRIX_CACHE (default
# /var/cache/smsdispatch-matrix), SMSDISPATCH_MATRIX (the suites, default
# "trixie sid"), SMSDISPATCH_MATRIX_MIRROR (default: from the apt sources).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
matrix_cache=${SMSDISPATCH_MATRIX_CACHE:-/var/cache/smsdispatch-matrix}
matrix=${SMSDISPATCH_MATRIX:-trixie sid}
. "$top/test/matrix/chroot.sh"

if [ "$(id -u)" != 0 ]; then
	echo "check-matrix: needs root (debootstrap, chroot, mount)" >&2
	exit 1
fi

# every mount is undone however this ends
trap matrix_cleanup EXIT
trap 'exit 130' INT TERM HUP

# record SUITE-LINE LABEL: adds a "suites: N passed, N failed" line (or its
# absence: one failure) to the results of the root being run ($results).
record() {
	p=$(echo "$1" | sed -n 's/^suites: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
	f=$(echo "$1" | sed -n 's/^suites: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
	if [ -z "$p" ]; then
		p=0
		f=1
		echo "check-matrix: $2 printed no suite summary: counted as one failure"
	fi
	echo "$p $f $2" >>"$results"
}

# one_step LABEL ROOT COMMAND: a command in the root, one suite that
# passes when it exits 0.
one_step() {
	echo "== $1"
	if matrix_run "$2" "$3"; then
		record "suites: 1 passed, 0 failed" "$1"
	else
		record "suites: 0 passed, 1 failed" "$1"
	fi
}

# run_root SUITE: everything the matrix does in the root of one Debian
# release; its results go to $matrix_cache/SUITE.results.
run_root() {
	suite=$1
	results=$matrix_cache/$suite.results
	: >"$results"
	echo "== check-matrix: Debian $suite"
	if ! root=$(matrix_root "$suite") || ! matrix_mount "$root"; then
		record "" "$suite"
		matrix_cleanup
		return
	fi
	matrix_copy_tree "$top" "$root"
	log=$matrix_cache/$suite.check.log
	# as a newcomer on that release does (a new root has no make yet);
	# files an earlier run installed go first: only this tree's are tested
	matrix_run "$root" 'rm -f /usr/share/postgresql/*/extension/smsdispatch*
		cd /build/smsdispatch && ./install-deps.sh && make check' 2>&1 | tee "$log"
	major=$(matrix_run "$root" 'pg_config --version' 2>/dev/null | sed 's/^PostgreSQL \([0-9]*\).*/\1/')
	record "$(grep '^suites: ' "$log" | tail -n 1)" "$suite (PostgreSQL ${major:-?}) make check"

	if [ "$suite" = trixie ]; then
		one_step "$suite: make demo" "$root" 'cd /build/smsdispatch && make demo'
		one_step "$suite: pg_upgrade 15 -> $major" "$root" \
			'cd /build/smsdispatch && test/matrix/pg-upgrade.sh'
	fi
	matrix_cleanup
	if [ "$suite" = trixie ]; then
		# the packages: built in this root, installed into a clean one
		echo "== $suite: Debian packages"
		"$top/test/matrix/deb.sh" "$suite" 2>&1 | tee "$matrix_cache/$suite.deb.log"
		record "$(sed -n 's/^deb: /suites: /p' "$matrix_cache/$suite.deb.log" | tail -n 1 |
			sed 's/^suites: \([0-9]*\) passed, 0 failed$/suites: 1 passed, 0 failed/;
				s/^suites: [0-9]* passed, [1-9][0-9]* failed$/suites: 0 passed, 1 failed/')" \
			"$suite: .deb built, installed with dpkg -i, make installcheck"
	fi
}

# The roots run at once: the suites mostly wait (on servers, timeouts and
# mocks; a whole make check uses a quarter of one core), so two of them
# take little longer than one. The PostgreSQL servers of the tests listen
# on Unix sockets in each root's own /tmp, so their port numbers never
# clash across roots. The first root's output shows as it runs; each other
# root's is shown when it ends.
mkdir -p "$matrix_cache"
first=""
background=""
for suite in $matrix; do
	if [ -z "$first" ]; then
		first=$suite
		continue
	fi
	(
		trap matrix_cleanup EXIT
		run_root "$suite"
	) >"$matrix_cache/$suite.out" 2>&1 &
	background="$background $!"
	echo "check-matrix: Debian $suite runs meanwhile; its output follows at the end"
done
[ -n "$first" ] && run_root "$first"
for pid in $background; do
	wait "$pid"
done
for suite in $matrix; do
	[ "$suite" = "$first" ] || cat "$matrix_cache/$suite.out"
done

passed=0
failed=0
lines=""
for suite in $matrix; do
	while read -r p f label; do
		passed=$((passed + p))
		failed=$((failed + f))
		lines="$lines
$label: suites: $p passed, $f failed"
	done <"$matrix_cache/$suite.results"
done
echo "== check-matrix summary$lines"
echo "matrix: $passed passed, $failed failed"
[ "$failed" = 0 ]

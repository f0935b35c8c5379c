#!/bin/sh
# make check-matrix: the whole suite (make check) on each Debian release of
# the matrix, inside a root made with debootstrap from the machine's own
# Debian mirror and cached between runs: Debian 13 "trixie" (PostgreSQL 17)
# and Debian unstable "sid" (PostgreSQL 18). In each root install-deps.sh
# installs what that release has, as on a machine running it. On trixie also
# make demo, pg_upgrade from 15 to 17, and the Debian packages (built, then
# installed into a clean root where make installcheck runs).
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

passed=0
failed=0
lines=""

# record SUITE-LINE LABEL: adds a "suites: N passed, N failed" line (or its
# absence: one failure) to the totals.
record() {
	p=$(echo "$1" | sed -n 's/^suites: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p')
	f=$(echo "$1" | sed -n 's/^suites: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p')
	if [ -z "$p" ]; then
		p=0
		f=1
		echo "check-matrix: $2 printed no suite summary: counted as one failure"
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	lines="$lines
$2: suites: $p passed, $f failed"
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

for suite in $matrix; do
	echo "== check-matrix: Debian $suite"
	if ! root=$(matrix_root "$suite") || ! matrix_mount "$root"; then
		record "" "$suite"
		matrix_cleanup
		continue
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
done

echo "== check-matrix summary$lines"
echo "matrix: $passed passed, $failed failed"
[ "$failed" = 0 ]

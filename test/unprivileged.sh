# Sourced by the test runner and the demo: when running as root, re-runs the
# calling script as an unprivileged user (PostgreSQL refuses root). If that
# user cannot read the source tree (a clone under /root, say), the tree is
# copied to a temporary directory it can read, and the script runs there.
#
# Usage: run_unprivileged "$0" "$@"   (returns only when not root)
run_unprivileged() {
	[ "$(id -u)" = 0 ] || return 0
	script=$1
	shift
	user=${SMSDISPATCH_TEST_USER:-postgres}
	top=$(cd "$(dirname "$script")/.." && pwd)
	rel=${script#"$(dirname "$script")"/}
	if ! runuser -u "$user" -- test -r "$top/test/$rel"; then
		copy=$(mktemp -d /tmp/smsdispatch.XXXXXX)
		tar -C "$top" --exclude=.git -cf - . | tar -C "$copy" -xf -
		chmod 755 "$copy"
		chown -R "$user" "$copy"
		echo "(running from a copy readable by $user: $copy)"
		top=$copy
	fi
	exec runuser -u "$user" -- env PATH="$PATH" PG_CONFIG="${PG_CONFIG:-pg_config}" \
		SMSDISPATCH_TEST_DIR="${SMSDISPATCH_TEST_DIR:-$top/tmp_check}" \
		SMSDISPATCH_DEMO_DIR="${SMSDISPATCH_DEMO_DIR:-$top/demo}" \
		"$top/test/$rel" "$@"
}

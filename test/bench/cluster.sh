# Sourced by the benchmarks: a private, throwaway PostgreSQL cluster with
# smsdispatch installed, reachable only through a Unix socket in its own
# directory. As root, the calling script re-runs itself as an unprivileged
# user first (PostgreSQL refuses root): call bench_as_user "$0" "$@" first.
#
#   bench_start "extra postgresql.conf lines"   # sets $BENCH_PSQL
#   bench_stop                                  # also on exit
#
# BENCH_POSTGRES, when set, is the server program to start instead of
# postgres (a wrapper that runs it under valgrind, say).
PG_CONFIG=${PG_CONFIG:-pg_config}
BENCH_BIN=$($PG_CONFIG --bindir)

bench_as_user() {
	if [ "$(id -u)" = 0 ]; then
		user=${SMSDISPATCH_TEST_USER:-postgres}
		exec runuser -u "$user" -- env PATH="$PATH" PG_CONFIG="$PG_CONFIG" sh "$@"
	fi
}

bench_start() {
	BENCH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/smsdispatch-bench.XXXXXX")
	trap bench_stop EXIT INT TERM
	"$BENCH_BIN/initdb" -D "$BENCH_DIR/data" -U postgres --encoding=UTF8 \
		--locale=C >"$BENCH_DIR/initdb.log" 2>&1 || { cat "$BENCH_DIR/initdb.log"; exit 1; }
	cat >>"$BENCH_DIR/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$BENCH_DIR'
$1
CONF
	"$BENCH_BIN/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/server.log" \
		${BENCH_POSTGRES:+-p "$BENCH_POSTGRES"} -w -t 300 start >/dev/null ||
		{ cat "$BENCH_DIR/server.log"; exit 1; }
	BENCH_PSQL="$BENCH_BIN/psql -h $BENCH_DIR -U postgres -d postgres -X -q -v ON_ERROR_STOP=1"
	$BENCH_PSQL -c 'CREATE EXTENSION smsdispatch'
}

bench_stop() {
	if [ -n "${BENCH_DIR:-}" ] && [ -d "$BENCH_DIR" ]; then
		# a benchmark may have stopped it already; under set -e a failing
		# stop would end this cleanup (and the caller's) before the rm
		"$BENCH_BIN/pg_ctl" -D "$BENCH_DIR/data" -m immediate stop >/dev/null 2>&1 || true
		rm -rf "$BENCH_DIR"
	fi
	BENCH_DIR=
}

# Sourced by the benchmarks of the channels (ip2sms.sh, kannel.sh): what
# each needs to run as an unprivileged user, on free loopback ports, with a
# throwaway cluster with smsdispatch preloaded, and to print medians.
#
#   bench_unprivileged [VAR=value ...] SCRIPT ARGS...
#                         # as root: runs SCRIPT again as the test user,
#                         # with $BENCH_WORK a directory it owns
#   bench_free_port       # prints a free 127.0.0.1 port
#   bench_pg_start CONF   # initdb and start in $work/data, CONF appended
#                         # to postgresql.conf; sets $pg_port, defines q
#   bench_pg_stop         # stops it, if it runs
#   median, med "A B C"   # the median of numbers on stdin, of a list

bench_unprivileged() {
	[ "$(id -u)" = 0 ] || return 0
	bench_user=${SMSDISPATCH_TEST_USER:-postgres}
	work=$(mktemp -d)
	chown "$bench_user" "$work"
	exec runuser -u "$bench_user" -- env BENCH_WORK="$work" \
		PATH="$PATH" PG_CONFIG="${PG_CONFIG:-pg_config}" "$@"
}

bench_free_port() {
	perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:0")->sockport, "\n"'
}

bench_pg_start() {
	pg_port=$(bench_free_port)
	"$bindir/initdb" -D "$work/data" --encoding=UTF8 --locale=C -A trust >/dev/null
	cat >> "$work/data/postgresql.conf" <<CONF
port = $pg_port
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'smsdispatch'
$1
CONF
	"$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
}

q() { "$bindir/psql" -h "$work" -p "$pg_port" -d postgres -XAtq "$@"; }

bench_pg_stop() {
	[ -f "$work/data/postmaster.pid" ] && "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1
	return 0
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
med() { echo $1 | tr ' ' '\n' | median; }

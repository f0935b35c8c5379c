#!/bin/sh
# Benchmark of many databases on one server: the IP2SMS channel's drain of
# one database alone, then of two databases at once (one worker each,
# started by the launcher, sharing the server's connections), against
# nginx answering a fixed IP2SMS answer on a free 127.0.0.1 port:
#   reference  plain HTTP load generator (test/bench/loadgen.c, libcurl
#              multi) at the server's concurrency, same body, same URL
#   one        N queued SMS in database bench1 drained end to end, from
#              the COMMIT of the INSERT to the last row submitted
#   two        N queued SMS in each of bench1 and bench2, inserted at
#              once: the total SMS/s from the first COMMIT to the last
#              row submitted in either, and each database's own
# Each part runs REPS times (default 3); medians and ratios are printed.
# Two databases share ip2sms_max_connections, so their total should be
# about one database's (a ratio near 1.0), not twice it, and each drains
# at about half.
# Usage: PG_CONFIG=... test/bench/databases.sh [REPS] (N: BENCH_SMS, 20000)
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
reps=${1:-3}
n=${BENCH_SMS:-20000}
conc=16
# beside the bulk's conc, the urgent lane's connections (its default), as in ip2sms.sh
urgent=2

if [ "$(id -u)" = 0 ]; then
	work=$(mktemp -d)
	chown "${SMSDISPATCH_TEST_USER:-postgres}" "$work"
	exec runuser -u "${SMSDISPATCH_TEST_USER:-postgres}" -- env BENCH_WORK="$work" \
		PATH="$PATH" PG_CONFIG="${PG_CONFIG:-pg_config}" BENCH_SMS="$n" "$0" "$@"
fi
work=${BENCH_WORK:-$(mktemp -d)}
PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$($PG_CONFIG --bindir)
. "$top/test/bench/nginx.sh"

cleanup() {
	[ -f "$work/data/postmaster.pid" ] && "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1
	bench_nginx_stop "$work"
	rm -rf "$work"
}
trap cleanup EXIT HUP INT PIPE TERM

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
med() { echo $1 | tr ' ' '\n' | median; }

bench_nginx_start "$work"
pg_port=$(bench_free_port)
"$bindir/initdb" -D "$work/data" --encoding=UTF8 --locale=C -A trust >/dev/null
(umask 077 && echo secret > "$work/ip2sms.password")
cat >> "$work/data/postgresql.conf" <<CONF
port = $pg_port
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'smsdispatch'
smsdispatch.database = 'bench1, bench2'
smsdispatch.ip2sms_url = '$BENCH_SEND_URL'
smsdispatch.ip2sms_status_url = '$BENCH_STATUS_URL'
smsdispatch.ip2sms_login = 'user'
smsdispatch.ip2sms_password_file = '$work/ip2sms.password'
smsdispatch.ip2sms_max_connections = $((conc + urgent))
smsdispatch.ip2sms_urgent_connections = $urgent
smsdispatch.ip2sms_poll_interval = '1h'
smsdispatch.max_per_phone_per_hour = 0
CONF
"$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null
q() { q_db=$1; shift; "$bindir/psql" -h "$work" -p "$pg_port" -d "$q_db" -XAtq "$@"; }
for db in bench1 bench2; do
	q postgres -c "CREATE DATABASE $db"
	q "$db" -c "CREATE EXTENSION smsdispatch"
done

# the epoch of the last update once database $1 has nothing queued or
# sending, probed through the channel's partial indexes
wait_idle() {
	while [ "$(q "$1" -c "SELECT EXISTS (SELECT 1 FROM verification.sms_log
			WHERE channel = 'ip2sms' AND send_state IN ('queued', 'sending'))")" != f ]; do
		sleep 0.1
	done
	ok=$(q "$1" -c "SELECT count(*) FROM verification.sms_log
		WHERE send_state = 'submitted' AND gateway_id IS NOT NULL")
	[ "$ok" = "$n" ] || { echo "$1: only $ok of $n SMS submitted" >&2; exit 1; }
	q "$1" -c "SELECT extract(epoch FROM max(updated_at)) FROM verification.sms_log"
}

# queues $n SMS in database $1 and prints the epoch of the COMMIT
queue() {
	q "$1" -c "INSERT INTO verification.sms_log (phone_number, body, channel)
		SELECT '+38050' || lpad(g::text, 7, '0'), 'Benchmark message ' || g, 'ip2sms'
		  FROM generate_series(1, $n) AS g" -c "SELECT extract(epoch FROM clock_timestamp())"
}

# one database alone: SMS/s
drain_one() {
	q bench1 -c "TRUNCATE verification.sms_log"
	t0=$(queue bench1)
	t1=$(wait_idle bench1)
	echo "$n $t0 $t1" | awk '{printf "%.0f\n", $1 / ($3 - $2)}'
}

# two databases at once: total SMS/s, then each one's
drain_two() {
	q bench1 -c "TRUNCATE verification.sms_log"
	q bench2 -c "TRUNCATE verification.sms_log"
	queue bench1 > "$work/t0.1" &
	queue bench2 > "$work/t0.2"
	wait
	e1=$(wait_idle bench1)
	e2=$(wait_idle bench2)
	echo "$n $(cat "$work/t0.1") $e1 $(cat "$work/t0.2") $e2" | awk '{
		start = ($2 < $4) ? $2 : $4; end = ($3 > $5) ? $3 : $5
		printf "%.0f %.0f %.0f\n", 2 * $1 / (end - start), $1 / ($3 - $2), $1 / ($5 - $4)}'
}

echo "Databases benchmark: $n messages per database, $conc connections for the server, $reps repetitions, nginx at $BENCH_SEND_URL"
cc -O2 -o "$work/loadgen" "$top/test/bench/loadgen.c" -lcurl
body='<message><service id="single" source="Bench"/><to>380500000001</to><body content-type="text/plain">Benchmark message 1</body></message>'
ref=""; one=""; two=""; each=""
for i in $(seq "$reps"); do
	set -- $("$work/loadgen" "$BENCH_SEND_URL" "$body" "$n" "$conc")
	ref="$ref $1"
	one="$one $(drain_one)"
	set -- $(drain_two)
	two="$two $1"; each="$each $2 $3"
done
ref_med=$(med "$ref")
one_med=$(med "$one")
two_med=$(med "$two")
echo "reference HTTP load generator: runs$ref req/s, median $ref_med req/s"
echo "one database:        runs$one SMS/s, median $one_med SMS/s, ratio to reference $(echo "$one_med $ref_med" | awk '{printf "%.2f", $1/$2}')"
echo "two databases total: runs$two SMS/s, median $two_med SMS/s, ratio to reference $(echo "$two_med $ref_med" | awk '{printf "%.2f", $1/$2}'), ratio to one database $(echo "$two_med $one_med" | awk '{printf "%.2f", $1/$2}')"
echo "each of the two:     runs$each SMS/s, median $(med "$each") SMS/s"
# the connection count is the server's: the two workers never held more
echo "server log: $(grep -c 'ERROR\|FATAL\|PANIC' "$work/server.log" || true) ERROR/FATAL/PANIC lines"

#!/bin/sh
# Instructions the IP2SMS worker executes per SMS, counted by valgrind's
# callgrind: a measure that other load on the machine does not move, for
# comparing changes to the send path where timings are too noisy.
#   reference  the INSERT that queues BENCH_N SMS (default 5,000) into
#              verification.sms_log, per row, counted in its backend
#   worker     the worker draining them to nginx (test/bench/nginx.sh) at
#              16 connections, per SMS, counted only in the channel's part
#              of the worker's loop (ip2sms_pump and ip2sms_wait: the
#              exchanges with the database and the transfers), first-use
#              costs (plans, caches) included
# Prints both, their ratio, and the worker's split: the exchanges with the
# database, of which the claim (smsdispatch.claim_sends, PL/pgSQL), and the
# rest (libcurl, sockets, libxml2). Takes about a minute: the server runs
# under valgrind.
# Usage: PG_CONFIG=... test/bench/ip2sms_instructions.sh
set -eu
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/nginx.sh"
bench_as_user "$0" "$@"
n=${BENCH_N:-5000}
command -v valgrind >/dev/null || { echo "ip2sms_instructions: valgrind is not installed" >&2; exit 1; }

counts=$(mktemp -d "${TMPDIR:-/tmp}/smsdispatch-callgrind.XXXXXX")
cat > "$counts/postgres" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --trace-children=yes --collect-atstart=no \\
	--toggle-collect=ip2sms_pump --toggle-collect=ip2sms_wait \\
	--toggle-collect=PortalRun \\
	--callgrind-out-file="$counts/callgrind.%p" "$BENCH_BIN/postgres" "\$@"
EOF
chmod 755 "$counts/postgres"
(umask 077 && echo secret > "$counts/ip2sms.password")
bench_nginx_start "$counts"
BENCH_POSTGRES="$counts/postgres" bench_start "shared_preload_libraries = 'smsdispatch'
smsdispatch.ip2sms_url = '$BENCH_SEND_URL'
smsdispatch.ip2sms_status_url = '$BENCH_STATUS_URL'
smsdispatch.ip2sms_login = 'user'
smsdispatch.ip2sms_password_file = '$counts/ip2sms.password'
smsdispatch.ip2sms_max_connections = 16
smsdispatch.ip2sms_poll_interval = '1h'
smsdispatch.max_per_phone_per_hour = 0"
trap 'bench_stop; bench_nginx_stop "$counts"; rm -rf "$counts"' EXIT INT TERM
q() { $BENCH_PSQL -At "$@"; }

worker=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'")
inserter=$(q -c "SELECT pg_backend_pid()" -c "INSERT INTO verification.sms_log (phone_number, body, channel)
	SELECT '+38050' || lpad(g::text, 7, '0'), 'Benchmark message ' || g, 'ip2sms'
	  FROM generate_series(1, $n) AS g")
until [ "$(q -c "SELECT NOT EXISTS (SELECT 1 FROM verification.sms_log
		WHERE channel = 'ip2sms' AND send_state IN ('queued', 'sending'))")" = t ]; do
	sleep 1
done
sent=$(q -c "SELECT count(*) FROM verification.sms_log WHERE send_state = 'submitted' AND gateway_id IS NOT NULL")
[ "$sent" = "$n" ] || { echo "ip2sms_instructions: only $sent of $n SMS submitted" >&2; exit 1; }
# the counts are written as each process ends
"$BENCH_BIN/pg_ctl" -D "$BENCH_DIR/data" -m fast -w -t 300 stop >/dev/null

# inclusive instructions of a function in a process's counts; fails when
# the counts do not name it. A line is "count (percent) file:function
# [object]", the percent padded with a blank below 10 % and the object
# left out at times: the name is whichever field ends in it.
inclusive() {
	found=$(callgrind_annotate --inclusive=yes --threshold=100 "$counts/callgrind.$1" 2>/dev/null |
		awk -v f=":$2" '$1 ~ /^[0-9,]+$/ {
			for (i = 3; i <= NF; i++)
				if (substr($i, length($i) - length(f) + 1) == f) {
					gsub(",", "", $1); print $1; exit
				}
		}')
	[ -n "$found" ] || { echo "ip2sms_instructions: no count for $2 in process $1" >&2; exit 1; }
	echo "$found"
}
ref=$(inclusive "$inserter" PortalRun)
pump=$(inclusive "$worker" ip2sms_pump)
wait=$(inclusive "$worker" ip2sms_wait)
exchange=$(inclusive "$worker" ip2sms_exchange)
claim=$(inclusive "$worker" plpgsql_call_handler)
echo "$n $ref $pump $wait $exchange $claim" | awk '{
	n = $1; ref = $2 / n; worker = ($3 + $4) / n; db = $5 / n; claim = $6 / n
	printf "reference: the INSERT that queued %d SMS: %.0f instructions per row\n", n, ref
	printf "worker: %.0f instructions per SMS, %.1f times the reference\n", worker, worker / ref
	printf "  exchanges with the database: %.0f (%.0f %%), of which the claim %.0f (%.0f %%)\n", db, 100 * db / worker, claim, 100 * claim / worker
	printf "  transfers and the rest: %.0f (%.0f %%)\n", worker - db, 100 * (worker - db) / worker
}'

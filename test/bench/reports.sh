#!/bin/sh
# Benchmark of the reports and the retention on 1,000,000 sms_log rows
# (100 days x 10,000 SMS):
#  1. delivery_stats for one day, through the view (WHERE day = ...) and
#     through the range function, against a reference measured in the same
#     run (counting that day's rows); medians of 5 runs;
#  2. gateway_stats for one day among 30 days of minute snapshots, and
#     sms_report_html for 7 days;
#  3. CALL smsdispatch.purge() removing 900,000 log rows (and 21 days of
#     snapshots) while pgbench calls sms_send() 50 times a second: sms_send
#     latency during the purge against the same load without it, and the
#     longest lock wait (every wait over deadlock_timeout = 100 ms is logged
#     by log_lock_waits).
# Starts its own server in a temporary directory (Unix socket only) and
# removes it at the end. Usage: PG_CONFIG=... test/bench/reports.sh
set -eu

if [ "$(id -u)" = 0 ]; then
	exec runuser -u "${SMSDISPATCH_TEST_USER:-postgres}" -- env PATH="$PATH" \
		PG_CONFIG="${PG_CONFIG:-pg_config}" "$0" "$@"
fi

bindir=$("${PG_CONFIG:-pg_config}" --bindir)
PATH="$bindir:$PATH"
work=$(mktemp -d)
data="$work/data"
trap 'pg_ctl -D "$data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

initdb -D "$data" --encoding=UTF8 --locale=C >/dev/null
cat >> "$data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'smsdispatch'
smsdispatch.database = 'postgres'
shared_buffers = 256MB
max_wal_size = 4GB
log_lock_waits = on
deadlock_timeout = 100ms
CONF
pg_ctl -D "$data" -l "$work/server.log" -w start >/dev/null
export PGHOST="$work" PGDATABASE=bench
psql -qX -d postgres -c 'CREATE DATABASE bench'
q() { psql -qXAt -v ON_ERROR_STOP=1 "$@"; }

echo "loading 1,000,000 sms_log rows..."
q <<'SQL'
CREATE EXTENSION smsdispatch;
-- 10,000 SMS a day for 100 days; outcomes spread like a real channel
INSERT INTO verification.sms_log (phone_number, type, body, channel, send_state,
	gateway_id, gateway_status, inserted_at, status_changed_at, updated_at, submitted_at)
SELECT '+38050' || lpad((i % 9000000)::text, 7, '0'),
	   (ARRAY['verification', 'medication_request', 'text', '2FA'])[1 + i % 4],
	   'Your verification code: ' || (i % 10000),
	   CASE WHEN i % 10 = 0 THEN 'modem' ELSE 'ip2sms' END,
	   CASE WHEN o < 95 THEN 'submitted' WHEN o < 97 THEN 'failed'
			WHEN o < 98 THEN 'unknown' ELSE 'submitted' END,
	   CASE WHEN o < 95 OR o >= 98 THEN i::text END,
	   CASE WHEN o < 90 THEN 'Delivered' WHEN o < 93 THEN 'Expired'
			WHEN o < 95 THEN 'Undeliverable' WHEN o >= 98 THEN 'Enroute' END,
	   t, t + (i % 300) * interval '1 second', t + (i % 300) * interval '1 second', t
  FROM generate_series(1, 1000000) AS i,
	   LATERAL (SELECT date_trunc('day', now()) - interval '99 days'
					   + (i - 1) / 10000 * interval '1 day'
					   + (i % 10000) * interval '8.64 s' AS t,
					   (i::bigint * 7919) % 100 AS o) AS x;
VACUUM ANALYZE verification.sms_log;
-- median milliseconds of reps runs of a query, every column computed
CREATE FUNCTION bench_ms(query text, reps int DEFAULT 5) RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	ms float8[] := '{}';
	ignored bigint;
BEGIN
	FOR i IN 1..reps LOOP
		t0 := clock_timestamp();
		EXECUTE format('SELECT sum(hashtext(s::text)) FROM (%s) AS s', query) INTO ignored;
		ms := ms || extract(epoch FROM clock_timestamp() - t0) * 1000;
	END LOOP;
	RETURN round((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY m) FROM unnest(ms) AS m)::numeric, 1);
END;
$$;
SQL
q -c "SELECT format('loaded: %s rows, %s', count(*), pg_size_pretty(pg_total_relation_size('verification.sms_log'))) FROM verification.sms_log"

day="date_trunc('day', now()) - interval '5 days'"
q <<SQL
SELECT format('one day (%s rows): reference count(*) of the day %s ms', count(*), bench_ms(format(
	'SELECT count(*) FROM verification.sms_log WHERE inserted_at >= %L AND inserted_at < %L',
	$day, $day + interval '1 day')))
  FROM verification.sms_log WHERE inserted_at >= $day AND inserted_at < $day + interval '1 day';
WITH r AS (SELECT bench_ms(format(
		'SELECT count(*) FROM verification.sms_log WHERE inserted_at >= %L AND inserted_at < %L',
		$day, $day + interval '1 day')) AS ref),
	 a AS (SELECT bench_ms('SELECT count(*) FROM verification.sms_log') AS ref),
	 v AS (SELECT bench_ms(format('SELECT * FROM smsdispatch.delivery_stats WHERE day = %L',
		($day)::date)) AS ms),
	 f AS (SELECT bench_ms(format('SELECT * FROM smsdispatch.delivery_stats(%L, %L)',
		$day, $day + interval '1 day')) AS ms)
SELECT format(E'reference count(*) of the whole log: %s ms\n'
			  'delivery_stats view, WHERE day = ...: %s ms (%sx the whole-log count)\n'
			  'delivery_stats(from, to) for the day: %s ms (%sx the day count)',
			  a.ref, v.ms, round(v.ms / a.ref, 1), f.ms, round(f.ms / r.ref, 1))
  FROM r, a, v, f;
SQL

echo "loading 30 days of counter snapshots, one a minute, 20 counters..."
q <<SQL
INSERT INTO smsdispatch.counter_snapshot (taken_at, server_started_at, name, value)
SELECT date_trunc('minute', now()) - m * interval '1 minute', now() - interval '31 days',
	   n.name, (43200 - m)::bigint * n.k
  FROM generate_series(0, 43199) AS m,
	   (VALUES ('requests_send', 10), ('requests_status', 30), ('answers_Accepted', 10),
			   ('answers_Delivered', 9), ('answers_Expired', 1), ('errors_connect', 0),
			   ('errors_timeout', 1), ('errors_http_5xx', 0), ('errors_http_401', 0),
			   ('errors_http_other', 0), ('errors_parse', 0), ('retries', 1),
			   ('latency_us_sum', 2000000), ('latency_count', 40), ('latency_le_10ms', 5),
			   ('latency_le_50ms', 20), ('latency_le_100ms', 10), ('latency_le_500ms', 5),
			   ('latency_le_1s', 0), ('latency_gt_5s', 0)) AS n(name, k);
ANALYZE smsdispatch.counter_snapshot;
SELECT format(E'gateway_stats(from, to) for one day of %s snapshot rows: %s ms\n'
			  'sms_report_html for 7 days: %s ms',
	(SELECT count(*) FROM smsdispatch.counter_snapshot),
	bench_ms(format('SELECT * FROM smsdispatch.gateway_stats(%L, %L)', $day, $day + interval '1 day')),
	bench_ms(format('SELECT sms_report_html(%L, %L)', $day - interval '6 days', $day + interval '1 day')));
SQL

cat > "$work/send.sql" <<'SQL'
\set n random(1000000, 9999999)
SELECT sms_send('+38067' || :n, 'Your verification code: 1234', 'verification');
SQL
# pgbench at a fixed rate for $1 seconds; its per-transaction log goes to
# $work/latency.log
send_load() {
	rm -f "$work"/pgbench_log.*
	(cd "$work" && pgbench -n -f send.sql -c 2 -j 2 -R 50 -T "$1" -l >/dev/null 2>"$work/pgbench.err")
	cat "$work"/pgbench_log.* > "$work/latency.log"
}
# "N transactions, median, p99, max" of the transactions that ended between
# epoch seconds $1 and $2
latency() {
	awk -v from="$1" -v to="$2" '{ t = $5 + $6 / 1e6; if (t >= from && t <= to) print $3 / 1000 }' \
		"$work/latency.log" | sort -n | awk '
		{ v[NR] = $1 }
		END { printf "%s transactions, median %.1f ms, p99 %.1f ms, max %.1f ms\n",
				NR, v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], v[NR] }'
}

send_load 10
echo "sms_send at 50/s, no purge:     $(latency 0 9999999999)"
before_lines=$(wc -l < "$work/server.log")
# the 900,000 rows of the 90 oldest days
(
	s=$(date +%s.%N)
	q -c "CALL smsdispatch.purge(now() - (date_trunc('day', now()) - interval '9 days'))" \
		> "$work/purge.out"
	echo "$s $(date +%s.%N)" > "$work/purge.time"
) &
purge_pid=$!
send_load 40
wait $purge_pid
read -r purge_start purge_end < "$work/purge.time"
echo "sms_send at 50/s, during purge: $(latency "$purge_start" "$purge_end")"
echo "purge: $(awk -F'|' '{ printf "%s log rows and %s counter snapshots", $2, $4 }' "$work/purge.out") removed in" \
	"$(echo "$purge_start $purge_end" | awk '{ printf "%.1f", $2 - $1 }') s" \
	"(sms_send load ran 40 s from its start);" \
	"$(q -c "SELECT count(*) FROM verification.sms_log WHERE phone_number LIKE '+38050%'") loaded rows left"
waits=$(tail -n +"$((before_lines + 1))" "$work/server.log" | grep -c 'still waiting for' || true)
longest=$(tail -n +"$((before_lines + 1))" "$work/server.log" |
	sed -n 's/.*acquired .* after \([0-9.]*\) ms.*/\1/p' | sort -n | tail -1)
echo "lock waits over 100 ms during the purge: $waits${longest:+, longest $longest ms}"

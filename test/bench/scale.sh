#!/bin/sh
# Done-when 9: a pass over 10,000 open alarms, all due, takes at most 2x
# with 1,000,000 closed alarms in the tables than with no history: the
# escalation finds its work by index (message_check_idx), never by a scan.
#
# Measured without the worker (nothing preloaded), in the same cluster:
# first with no history, then after loading the history. Each measurement
# runs in a transaction that is rolled back (so every repetition sees the
# same 10,000 due alarms) and is the median of REPS repetitions:
#   escalate  smsdispatch.escalate(10000): timeouts + next level, 10,000 alarms
#   run_once  smsdispatch.run_once(): the same plus the loopback channel
#             submitting the 10,000 new level-2 SMS (a whole worker pass)
# The history has what a busy year leaves: acked alarms (their other
# level-1 recipient still NOT_YET_ACK, deadline long past), exhausted
# ones, their recipients, SMS and events. shared_buffers is 1GB and the
# tables are prewarmed before each series, as on a production server whose
# cache holds the tables' hot parts: the comparison is of the work done,
# not of a cold 128MB default cache.
#
#   test/bench/scale.sh              OPEN=10000 CLOSED=1000000 REPS=5
set -eu
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
. "$(dirname "$self")/cluster.sh"
bench_as_user "$self" "$@"

OPEN=${OPEN:-10000}
CLOSED=${CLOSED:-1000000}
REPS=${REPS:-5}

bench_start "smsdispatch.loopback_channel = on
shared_buffers = '1GB'
fsync = off
max_wal_size = '4GB'
maintenance_work_mem = '256MB'"

$BENCH_PSQL <<SQL >/dev/null
SELECT sms_list_create('scale');
SELECT sms_list_add('scale', '+380501000001', 1, '1 min');
SELECT sms_list_add('scale', '+380501000002', 1, '1 min');
SELECT sms_list_add('scale', '+380501000003', 2, '1 min');
SELECT sms_list_add('scale', '+380501000004', 3, '1 min');

-- the open alarms: level 1 submitted an hour ago, every deadline past
INSERT INTO smsdispatch.message (number, body, list, channel, created_at)
SELECT lpad(g::text, 4, '0'), 'open ' || g, 'scale', 'ip2sms', now() - interval '1 hour'
  FROM generate_series(0, $OPEN - 1) g;
INSERT INTO smsdispatch.message_recipient (message_id, phone, name, level, ack_timeout)
SELECT m.id, lm.phone, lm.name, lm.level, lm.ack_timeout
  FROM smsdispatch.message m CROSS JOIN smsdispatch.list_member lm
 WHERE m.state = 'open';
SELECT smsdispatch.start_levels(array_agg(id), array_agg(1)) FROM smsdispatch.message;
UPDATE verification.sms_log
   SET send_state = 'submitted', submitted_at = now() - interval '1 hour';
VACUUM ANALYZE;
SQL

# Median over REPS of the ms one statement takes, rolled back each time.
measure() {
	r=1
	while [ "$r" -le "$REPS" ]; do
		$BENCH_PSQL -At <<SQL
BEGIN;
SELECT clock_timestamp() AS t0 \gset
SELECT $1 \g /dev/null
SELECT round(extract(epoch FROM clock_timestamp() - :'t0') * 1000, 1);
ROLLBACK;
SQL
		$BENCH_PSQL -c 'VACUUM smsdispatch.message, smsdispatch.message_recipient, verification.sms_log, smsdispatch.event'
		r=$((r + 1))
	done | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

prewarm() {
	$BENCH_PSQL -c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname IN ('smsdispatch', 'verification') AND c.relkind IN ('r', 'i')" >/dev/null
}

check_due() {
	due=$($BENCH_PSQL -At -c "SELECT count(*) FROM smsdispatch.message
		WHERE state = 'open' AND check_at <= now()")
	[ "$due" = "$OPEN" ] || { echo "expected $OPEN due alarms, found $due" >&2; exit 1; }
}

$BENCH_PSQL -c 'CREATE EXTENSION pg_prewarm'
prewarm
check_due
esc0=$(measure "smsdispatch.escalate($OPEN)")
run0=$(measure "smsdispatch.run_once()")
processed=$($BENCH_PSQL -At -c "BEGIN" -c "SELECT smsdispatch.run_once()->>'escalated'" -c "ROLLBACK")

echo "loading $CLOSED closed alarms of history ..."
$BENCH_PSQL <<SQL >/dev/null
SET session_replication_role = replica;   -- bulk load: no FK or trigger work
INSERT INTO smsdispatch.message (number, body, list, state, level, level_started_at,
	acked_at, acked_by, closed_at, channel, created_at)
SELECT lpad((g % 10000)::text, 4, '0'), 'old ' || g, 'scale',
	   CASE WHEN g % 4 = 0 THEN 'exhausted' ELSE 'acked' END,
	   1, t, CASE WHEN g % 4 <> 0 THEN t + interval '1 min' END,
	   CASE WHEN g % 4 <> 0 THEN '+380501000001' END,
	   t + interval '2 min', 'ip2sms', t
  FROM generate_series(1, $CLOSED) g,
	   LATERAL (SELECT now() - interval '400 days' + g * interval '30 s' AS t) x;
INSERT INTO smsdispatch.message_recipient (message_id, phone, level, ack_timeout,
	status, sent_at, deadline, acked_at)
SELECT m.id, p.phone, 1, '1 min',
	   CASE WHEN m.state = 'exhausted' THEN 'ACK_TIME_OVER'
			WHEN p.phone = '+380501000001' THEN 'ACK' ELSE 'NOT_YET_ACK' END,
	   m.created_at, m.created_at + interval '1 min', m.acked_at
  FROM smsdispatch.message m
 CROSS JOIN (VALUES ('+380501000001'), ('+380501000002')) AS p(phone)
 WHERE m.state <> 'open';
INSERT INTO verification.sms_log (phone_number, type, body, channel, send_state,
	gateway_id, gateway_status, submitted_at, inserted_at, updated_at, message_id)
SELECT '+380501000001', 'text', '[' || m.number || '] ' || m.body, 'ip2sms', 'submitted',
	   'gw-' || m.id, 'Delivered', m.created_at, m.created_at, m.created_at, m.id
  FROM smsdispatch.message m
 WHERE m.state <> 'open';
INSERT INTO smsdispatch.event (message_id, at, kind, level)
SELECT m.id, m.closed_at, CASE WHEN m.state = 'acked' THEN 'acked' ELSE 'exhausted' END, 1
  FROM smsdispatch.message m
 WHERE m.state <> 'open';
RESET session_replication_role;
VACUUM ANALYZE;
SQL
$BENCH_PSQL -At -c "SELECT 'history: ' || (SELECT count(*) FROM smsdispatch.message WHERE state <> 'open')
	|| ' closed alarms, ' || (SELECT count(*) FROM smsdispatch.message_recipient) || ' recipients, '
	|| (SELECT count(*) FROM verification.sms_log) || ' SMS, '
	|| (SELECT count(*) FROM smsdispatch.message_recipient WHERE status = 'NOT_YET_ACK')
	|| ' recipients still NOT_YET_ACK'"

prewarm
check_due
esc1=$(measure "smsdispatch.escalate($OPEN)")
run1=$(measure "smsdispatch.run_once()")

echo "pass over $OPEN due alarms ($processed escalated per pass), median of $REPS, ms:"
echo "             no history   $CLOSED closed   ratio (limit 2.00)"
awk -v a="$esc0" -v b="$esc1" 'BEGIN { printf "escalate     %10s   %14s   %.2f\n", a, b, b / a }'
awk -v a="$run0" -v b="$run1" 'BEGIN { printf "run_once     %10s   %14s   %.2f\n", a, b, b / a }'
awk -v e0="$esc0" -v e1="$esc1" -v r0="$run0" -v r1="$run1" 'BEGIN {
	if (e1 / e0 <= 2 && r1 / r0 <= 2) print "RESULT: met (both ratios <= 2)";
	else print "RESULT: NOT met";
}'

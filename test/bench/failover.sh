#!/bin/sh
# What the failover duty costs the worker's pass, against the escalation
# step over the same alarms measured in the same run:
#   stuck     OPEN open alarms, their level-1 SMS queued on a channel that
#             is not ok and no other channel: a pass during an outage,
#             after the undeliverable alerts went out
#   healthy   the same alarms, their level-1 SMS submitted: failover()
#             has nothing to do (its index holds no waiting recipient)
#   reference escalate(OPEN) with every one of them due (timeouts and the
#             next level), as test/bench/scale.sh measures it
# Each figure is the median of REPS runs, each in a subtransaction rolled
# back, so every run sees the same alarms. Without preloading, the IP2SMS
# channel reads as down and no modem sidecar has connected.
#
#   test/bench/failover.sh            OPEN=10000 REPS=7
set -eu
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
. "$(dirname "$self")/cluster.sh"
bench_as_user "$self" "$@"

OPEN=${OPEN:-10000}
REPS=${REPS:-7}

bench_start "shared_buffers = '512MB'
fsync = off"

$BENCH_PSQL <<SQL >/dev/null
SELECT sms_list_create('bench');
SELECT sms_list_add('bench', '+380501000001', 1, '1 min');
SELECT sms_list_add('bench', '+380501000005', 2, '1 min');
INSERT INTO smsdispatch.message (number, body, list, channel)
SELECT lpad(g::text, 4, '0'), 'open ' || g, 'bench', 'ip2sms'
  FROM generate_series(0, $OPEN - 1) g;
INSERT INTO smsdispatch.message_recipient (message_id, phone, name, level, ack_timeout)
SELECT m.id, lm.phone, lm.name, lm.level, lm.ack_timeout
  FROM smsdispatch.message m CROSS JOIN smsdispatch.list_member lm;
SELECT smsdispatch.start_levels(array_agg(id), array_agg(1)) FROM smsdispatch.message;
VACUUM ANALYZE;
SQL

# median_ms STATEMENT SETUP: runs SETUP (a plpgsql statement) then STATEMENT
# REPS times, each in a subtransaction rolled back; prints the median of
# STATEMENT's ms
median_ms() {
	$BENCH_PSQL -At <<SQL || echo "median_ms failed: $1" >&2
CREATE TEMP TABLE timing (ms float8);
DO \$\$
DECLARE
	t0 timestamptz;
	ms float8[] := '{}';
BEGIN
	FOR i IN 1..$REPS LOOP
		BEGIN
			$2;
			t0 := clock_timestamp();
			PERFORM $1;
			-- a variable outlives the rollback of the subtransaction
			ms := ms || extract(epoch FROM clock_timestamp() - t0)::float8 * 1000;
			RAISE EXCEPTION USING ERRCODE = 'P0004';
		EXCEPTION WHEN assert_failure THEN
			NULL;
		END;
	END LOOP;
	INSERT INTO timing SELECT unnest(ms);
END;
\$\$;
SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) FROM timing;
SQL
}

# an outage first: every alarm's SMS queued on a channel that is not ok; the
# first passes raise the undeliverable alerts, a batch at a time
$BENCH_PSQL -c "SET client_min_messages = error" -c "DO \$\$ BEGIN
	FOR i IN 1..$OPEN / 1000 + 1 LOOP PERFORM smsdispatch.failover(); END LOOP; END \$\$" \
	-c "VACUUM ANALYZE"
undeliverable=$($BENCH_PSQL -At -c "SELECT count(*) FROM smsdispatch.event WHERE kind = 'undeliverable'")
stuck=$(median_ms "smsdispatch.failover()" "SET LOCAL client_min_messages = error")
# then healthy: every level-1 SMS submitted, every deadline past
$BENCH_PSQL -c "UPDATE verification.sms_log SET send_state = 'submitted', submitted_at = now() - interval '2 min'" \
	-c "UPDATE smsdispatch.message SET check_at = now() - interval '1 s'" -c "VACUUM ANALYZE"
healthy=$(median_ms "smsdispatch.failover()" "NULL")
escalate=$(median_ms "smsdispatch.escalate($OPEN)" "NULL")

echo "pass over $OPEN open alarms, median of $REPS, ms ($undeliverable undeliverable alerts raised first):"
awk -v h="$healthy" -v s="$stuck" -v e="$escalate" 'BEGIN {
	printf "escalate (all due, reference)  %8s\n", e
	printf "failover, channels healthy     %8s   %.3f of the reference\n", h, h / e
	printf "failover, every SMS stuck      %8s   %.3f of the reference\n", s, s / e }'

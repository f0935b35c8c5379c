#!/bin/sh
# Benchmark of the IP2SMS channel against nginx answering a fixed IP2SMS
# answer on a free 127.0.0.1 port (faster than the worker can send):
#   reference  plain HTTP load generator (test/bench/loadgen.c, libcurl
#              multi) at the worker's concurrency, same body, same URL
#   send       20,000 queued SMS drained end to end (row submitted with its
#              gateway_id), from COMMIT of the INSERT to the last update
#   poll       status polling of 20,000 submitted rows (all with the id
#              nginx's fixed answer names: an answer about another id is
#              not applied)
#   alarms     with 100,000 text SMS draining, 100 alarms queued one by one:
#              COMMIT to submitted, median and p99
#   counters   the worker's transport errors and its requests slower than
#              100 ms over the run (smsdispatch.stats()), which would
#              explain an outlier
#   memory     the worker's RSS after 20,000 and after 200,000 SMS
#   CPU        per message, from /proc and getrusage: the worker's per SMS
#              sent, the load generator's and nginx's per request. A
#              process that spends c per SMS sends at most 1/c a second,
#              so against a CPU-bound load generator a ratio of 0.40 needs
#              every process of the worker at no more than 2.5 times its c.
#              And the machine's cores, shared by the worker and nginx, send
#              at most cores / (worker's c + nginx's c) a second, however
#              the worker's work were split: the ceiling line, against the
#              same reference, is the best ratio the present work per SMS
#              allows here (an upper bound: the server's other processes
#              and other load on the machine are not counted).
# Each timed part runs REPS times (default 3); medians and ratios are printed.
# Usage: PG_CONFIG=... test/bench/ip2sms.sh [REPS]
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
reps=${1:-3}
n=20000
conc=${BENCH_CONNECTIONS:-16}
# the urgent lane's connections (its default), beside the conc the bulk
# drains on as the load generator does: the bulk never takes them
urgent=2

. "$top/test/bench/common.sh"
bench_unprivileged BENCH_CONNECTIONS="$conc" "$0" "$@"
work=${BENCH_WORK:-$(mktemp -d)}
PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$($PG_CONFIG --bindir)
. "$top/test/bench/nginx.sh"

cleanup() {
	bench_pg_stop
	bench_nginx_stop "$work"
	rm -rf "$work"
}
trap cleanup EXIT HUP INT PIPE TERM

# CPU clock ticks (user + system) process $1 has used, with its children
# when $2 is "children"; a stat line's fields count after the command
# name, which may hold blanks
hz=$(getconf CLK_TCK)
ticks() {
	cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$1" -v kids="${2:-}" '
		{pid = $1; sub(/^.*\) /, ""); if (pid == p || (kids == "children" && $2 == p)) t += $12 + $13}
		END {print t + 0}'
}
# ticks of nginx: its master and its worker
nginx_ticks() { ticks "$(cat "$work/nginx.pid")" children; }
# microseconds per message of the ticks from $1 to $2 over $n messages
per_message() { echo "$1 $2" | awk -v hz="$hz" -v n="$n" '{printf "%.1f\n", ($2 - $1) * 1e6 / hz / n}'; }

bench_nginx_start "$work"
send_url=$BENCH_SEND_URL
status_url=$BENCH_STATUS_URL

# PostgreSQL with the worker pointed at nginx
(umask 077 && echo secret > "$work/ip2sms.password")
bench_pg_start "smsdispatch.ip2sms_url = '$send_url'
smsdispatch.ip2sms_status_url = '$status_url'
smsdispatch.ip2sms_login = 'user'
smsdispatch.ip2sms_password_file = '$work/ip2sms.password'
smsdispatch.ip2sms_max_connections = $((conc + urgent))
smsdispatch.ip2sms_urgent_connections = $urgent
smsdispatch.ip2sms_poll_interval = '1h'
smsdispatch.max_per_phone_per_hour = 0"
q -c "CREATE EXTENSION smsdispatch"

# waits until the channel has nothing due; prints the last update time. The
# probes go through the channel's partial indexes: a count over the log
# would take CPU from the worker on a small machine.
wait_idle() {
	while [ "$(q -c "SELECT EXISTS (SELECT 1 FROM verification.sms_log
			WHERE channel = 'ip2sms' AND send_state = 'queued')
		OR EXISTS (SELECT 1 FROM verification.sms_log
			WHERE channel = 'ip2sms' AND send_state = 'sending')
		OR EXISTS (SELECT 1 FROM verification.sms_log WHERE next_poll_at <= now())")" != f ]; do
		sleep 0.1
	done
	q -c "SELECT extract(epoch FROM max(updated_at)) FROM verification.sms_log"
}

# one drain of $n queued SMS; prints SMS/s, then the worker's and nginx's
# CPU per SMS in microseconds
drain_send() {
	q -c "TRUNCATE verification.sms_log"
	worker=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'")
	w0=$(ticks "$worker")
	x0=$(nginx_ticks)
	t0=$(q -c "INSERT INTO verification.sms_log (phone_number, body, channel)
		SELECT '+38050' || lpad(g::text, 7, '0'), 'Benchmark message ' || g, 'ip2sms'
		  FROM generate_series(1, $n) AS g" -c "SELECT extract(epoch FROM clock_timestamp())")
	t1=$(wait_idle)
	ok=$(q -c "SELECT count(*) FROM verification.sms_log
		WHERE send_state = 'submitted' AND gateway_id IS NOT NULL")
	[ "$ok" = "$n" ] || { echo "only $ok of $n SMS submitted" >&2; exit 1; }
	echo "$n $t0 $t1 $(per_message "$w0" "$(ticks "$worker")") $(per_message "$x0" "$(nginx_ticks)")" |
		awk '{printf "%.0f %s %s\n", $1 / ($3 - $2), $4, $5}'
}

# one round of $n status polls; prints polls/s
drain_poll() {
	q -c "TRUNCATE verification.sms_log"
	t0=$(q -c "INSERT INTO verification.sms_log (phone_number, body, channel, send_state,
			attempts, gateway_id, gateway_status, submitted_at, next_poll_at)
		SELECT '+38050' || lpad(g::text, 7, '0'), 'Benchmark message ' || g, 'ip2sms',
			   'submitted', 1, '6615134392391', 'Accepted', now(), now()
		  FROM generate_series(1, $n) AS g" -c "SELECT extract(epoch FROM clock_timestamp())")
	t1=$(wait_idle)
	ok=$(q -c "SELECT count(*) FROM verification.sms_log WHERE gateway_status = 'Delivered'")
	[ "$ok" = "$n" ] || { echo "only $ok of $n rows polled" >&2; exit 1; }
	echo "$n $t0 $t1" | awk '{printf "%.0f\n", $1 / ($3 - $2)}'
}

# 100 alarms while 100,000 text SMS drain; prints median and p99 in ms
alarm_latency() {
	q -c "TRUNCATE verification.sms_log"
	q -c "INSERT INTO verification.sms_log (phone_number, body, channel)
		SELECT '+38050' || lpad(g::text, 7, '0'), 'Bulk message ' || g, 'ip2sms'
		  FROM generate_series(1, 100000) AS g"
	for i in $(seq 100); do
		q -c "SELECT sms_enqueue('Bench alarm $i', 'bench')" >/dev/null
	done
	left=$(q -c "SELECT count(*) FROM verification.sms_log WHERE message_id IS NULL AND send_state = 'queued'")
	wait_idle >/dev/null
	q -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' ' ||
				 round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' $left'
			FROM (SELECT extract(epoch FROM submitted_at - inserted_at) * 1000 AS ms
					FROM verification.sms_log WHERE message_id IS NOT NULL) a"
	q -c "SELECT sms_cancel(number) FROM smsdispatch.message WHERE state = 'open'" >/dev/null
}

worker_mem() {
	pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'")
	awk '/^VmRSS|^RssAnon/ {printf "%s %s ", $1, $2} END {print ""}' "/proc/$pid/status"
}

echo "IP2SMS benchmark: $n messages, $conc connections (and $urgent more kept for urgent SMS), $reps repetitions, nginx at $send_url"
cc -O2 -o "$work/loadgen" "$top/test/bench/loadgen.c" -lcurl
body='<message><service id="single" source="Bench"/><to>380500000001</to><body content-type="text/plain">Benchmark message 1</body></message>'
ref=""; send=""; poll=""; cpu_worker=""; cpu_loadgen=""; core_loadgen=""; nginx_worker=""; nginx_loadgen=""
for i in $(seq "$reps"); do
	x0=$(nginx_ticks)
	set -- $("$work/loadgen" "$send_url" "$body" "$n" "$conc")
	ref="$ref $1"; cpu_loadgen="$cpu_loadgen $2"; core_loadgen="$core_loadgen $3"
	nginx_loadgen="$nginx_loadgen $(per_message "$x0" "$(nginx_ticks)")"
	set -- $(drain_send)
	send="$send $1"; cpu_worker="$cpu_worker $2"; nginx_worker="$nginx_worker $3"
	poll="$poll $(drain_poll)"
done
ref_med=$(med "$ref")
send_med=$(med "$send")
poll_med=$(med "$poll")
echo "reference HTTP load generator: runs $ref req/s, median $ref_med req/s"
echo "send end to end:  runs $send SMS/s, median $send_med SMS/s, ratio to reference $(echo "$send_med $ref_med" | awk '{printf "%.2f", $1/$2}') (goal >= 10000 SMS/s and >= 0.40)"
echo "CPU per message (medians): worker $(med "$cpu_worker") us per SMS (runs$cpu_worker), load generator $(med "$cpu_loadgen") us per request at $(med "$core_loadgen") of a core; worker / load generator $(echo "$(med "$cpu_worker") $(med "$cpu_loadgen")" | awk '{printf "%.1f", $1/$2}')x (0.40 needs <= 2.5x in each process); nginx $(med "$nginx_worker") us per request behind the worker, $(med "$nginx_loadgen") behind the load generator"
# the reference stands for what the machine can do only when the load
# generator had a core to itself
echo "$(med "$core_loadgen")" | awk '$1 < 0.9 {printf "warning: the load generator ran at %.2f of a core, so other load held the reference back: the ratios of this run overstate\n", $1}'
cores=$(nproc)
echo "$cores $(med "$cpu_worker") $(med "$nginx_worker") $ref_med" | awk '{
	rate = $1 * 1e6 / ($2 + $3)
	printf "ceiling on the %d cores here: %d / (worker %.1f + nginx %.1f us per SMS) = %.0f SMS/s, ratio %.2f to the reference (0.40 needs the work per SMS at most %.1f us)\n", $1, $1, $2, $3, rate, rate / $4, $1 * 1e6 / (0.40 * $4)
}'
echo "status polling:   runs $poll polls/s, median $poll_med polls/s, ratio to reference $(echo "$poll_med $ref_med" | awk '{printf "%.2f", $1/$2}') (goal >= 10000 polls/s)"
q -c "SELECT sms_list_create('bench'); SELECT sms_list_add('bench', '+380501110001', 1, '1 h')" >/dev/null
set -- $(alarm_latency)
echo "alarms behind a draining 100,000 text backlog: COMMIT to submitted median $1 ms, p99 $2 ms ($3 text SMS still queued when the last alarm was queued; goal p99 <= 100 ms)"
# what disturbed the run, from the worker's counters: transport errors, and
# requests that took more than 100 ms (nginx answers at once)
echo "worker counters over the run: $(q -c "SELECT coalesce(string_agg(name || ' ' || value, ', ' ORDER BY name),
		'no transport error, no retry, no request over 100 ms')
	FROM smsdispatch.stats()
	WHERE value > 0 AND (name LIKE 'errors%' OR name = 'retries'
		OR name IN ('latency_le_500ms', 'latency_le_1s', 'latency_le_5s', 'latency_gt_5s'))")"

# memory: a fresh worker, then 20,000 and 200,000 SMS through it
"$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w restart >/dev/null
drain_send >/dev/null
mem20=$(worker_mem)
for i in $(seq 9); do drain_send >/dev/null; done
mem200=$(worker_mem)
echo "worker memory after  20,000 SMS: $mem20(kB)"
echo "worker memory after 200,000 SMS: $mem200(kB)"
echo "$mem20 $mem200" | awk '{printf "RSS ratio 200k/20k: VmRSS %.3f, RssAnon %.3f (goal <= 1.10)\n", $6/$2, $8/$4}'

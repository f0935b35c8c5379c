#!/bin/sh
# Benchmark of a registered Kannel channel against a real Kannel (bearerbox,
# smsbox and the fake SMSC fakesmsc, on free 127.0.0.1 ports, its store a
# spool as docs/channels.md advises; test/kannel/kannel.conf.in, the tests'
# configuration) and the smsdispatch-http sidecar taking its delivery
# reports:
#   reference  the curl-multi load generator (test/bench/loadgen.c) sending
#              20,000 GETs of smsbox's sendsms at the worker's concurrency
#              (a channel of src/kannel.c keeps 16 on the wire), with the
#              parameters the worker sends (charset, dlr-mask=31, the
#              sendsms-user, to, from, text, a dlr-url to the sidecar),
#              timed to the last "0: Accepted"; its reports go to the
#              sidecar too, for a row that does not exist (answered
#              no_row, one statement each, as a real row's costs)
#   send       20,000 SMS queued on the channel in one INSERT, from COMMIT
#              to the last row submitted (Kannel answered 0: Accepted)
#   DLR        the same SMS, from COMMIT until every row is Delivered
#              through the sidecar (fakesmsc acknowledges each MT and
#              bearerbox reports it: accepted by the SMSC, then delivered)
# Kannel is the bottleneck, so the send's ratio to the reference should be
# close to 1. Each part runs REPS times (default 3); medians are printed.
#   overflows  the machine's TCP listen queue overflows (TcpExtListenOverflows,
#              every process's) during each part: a connection smsbox's
#              listen queue had no room for waits for TCP's retry, 1 s later
# Fails (exit 1) when fewer than 20,000 rows were submitted or Delivered.
# BENCH_KEEP=1 keeps the work directory (Kannel's, the sidecar's and the
# server's logs).
# Usage: PG_CONFIG=... test/bench/kannel.sh [REPS]
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
reps=${1:-3}
n=20000
# KANNEL_WINDOW of src/kannel.c: the requests a channel keeps on the wire
conc=16

. "$top/test/bench/common.sh"
bench_unprivileged "$0" "$@"
work=${BENCH_WORK:-$(mktemp -d)}
PG_CONFIG=${PG_CONFIG:-pg_config}
bindir=$($PG_CONFIG --bindir)
fakesmsc=/usr/lib/kannel/test/fakesmsc

# the pids started here, last started first: stopped in that order
pids=""
# Starts "$@" in the background, its output in log $1; records its pid.
spawn() {
	log=$1
	shift
	"$@" >"$log" 2>&1 &
	pids="$! $pids"
}
# SIGTERM to each pid started here, SIGKILL after 20 s
stop_started() {
	for pid in $pids; do
		kill "$pid" 2>/dev/null || continue
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 200 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -KILL "$pid" 2>/dev/null || true
	done
	pids=""
}
cleanup() {
	stop_started
	bench_pg_stop
	[ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT HUP INT PIPE TERM

# Calls "$@" every 0.1 s until it succeeds, at most $timeout seconds;
# fails loudly with $what.
timeout=60
wait_for() {
	what=$1
	shift
	i=0
	until "$@"; do
		i=$((i + 1))
		[ $i -le $((timeout * 10)) ] || { echo "kannel.sh: $what after $timeout s" >&2; exit 1; }
		sleep 0.1
	done
}
admin_status() {
	curl -s "http://127.0.0.1:$admin_port/status.txt?password=kannel-test"
}
# bearerbox's status has a line matching $1
admin_status_has() { admin_status | grep -q "$1"; }
# the sidecar answers (404 for /)
http_answers() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/")" = 404 ]; }
# Percent-encodes $1 as curl_easy_escape does (all but A-Z a-z 0-9 - _ . ~).
uri_escape() {
	printf '%s' "$1" | perl -pe 's/([^A-Za-z0-9\-_.~])/sprintf("%%%02X", ord($1))/ge'
}

admin_port=$(bench_free_port)
smsbox_port=$(bench_free_port)
smsc_port=$(bench_free_port)
sendsms_port=$(bench_free_port)
http_port=$(bench_free_port)
mkdir "$work/spool"
# the tests' kannel.conf, quieter, with room for max_parts
# the tests' kannel.conf, with less logging and a sendsms-user that takes
# the load generator's batches
sed -e "s|@dir@|$work|g" -e "s/@admin_port@/$admin_port/" -e "s/@smsbox_port@/$smsbox_port/g" \
	-e "s/@smsc_port@/$smsc_port/" -e "s/@sendsms_port@/$sendsms_port/" \
	-e "s/^log-level = 0$/log-level = 2/" -e "s/^max-messages = 3$/max-messages = 10/" \
	"$top/test/kannel/kannel.conf.in" > "$work/kannel.conf"
! grep -n '@[a-z_]*@' "$work/kannel.conf" || { echo "kannel.sh: kannel.conf.in has a name not filled in" >&2; exit 1; }
spawn "$work/bearerbox.out" /usr/sbin/bearerbox "$work/kannel.conf"
wait_for "bearerbox does not answer on its admin port (see bearerbox.log)" admin_status >/dev/null
spawn "$work/smsbox.out" /usr/sbin/smsbox "$work/kannel.conf"
wait_for "smsbox did not connect to bearerbox" admin_status_has '^ *smsbox:'
# fakesmsc reads MOs from its stdin: a FIFO it holds open for writing
# itself never ends
mkfifo "$work/mo.fifo"
spawn "$work/fakesmsc.out" sh -c 'exec "$1" -H 127.0.0.1 -r "$2" -i 0.1 -v 1 <>"$3"' \
	fakesmsc "$fakesmsc" "$smsc_port" "$work/mo.fifo"
wait_for "fakesmsc did not connect to bearerbox" admin_status_has 'fake\[fake\].*(online'

# PostgreSQL with the worker; the channel and the sidecar's role
bench_pg_start "smsdispatch.max_per_phone_per_hour = 0"
q -c "CREATE EXTENSION smsdispatch"
(umask 077 && echo kannel-test > "$work/kannel1.password")
q -c "CREATE ROLE kannel_http LOGIN IN ROLE smsdispatch_admin" \
	-c "SELECT smsdispatch.channel_add('kannel1', 'kannel', jsonb_build_object(
		'url', 'http://127.0.0.1:$sendsms_port/cgi-bin/sendsms', 'username', 'tester',
		'password_file', '$work/kannel1.password', 'from', '+380990000000',
		'callback_url', 'http://127.0.0.1:$http_port'))" >/dev/null
spawn "$work/http.log" "$bindir/smsdispatch-http" --listen "127.0.0.1:$http_port" \
	--db "host=$work port=$pg_port dbname=postgres user=kannel_http"
wait_for "smsdispatch-http does not answer" http_answers

# the delivery reports the sidecar took so far
reports() { grep -c '^.*delivery report for sms_log id' "$work/http.log" || true; }
# the MTs bearerbox sent to fakesmsc so far
sent_to_smsc() { admin_status | sed -n 's/^SMS: received [0-9]* ([0-9]* queued), sent \([0-9]*\) .*/\1/p'; }
# waits until Kannel has handed the sidecar $1 reports and is quiet: the
# previous part's reports do not run into the next one
reports_reach() { [ "$(reports)" -ge "$1" ]; }
settle() {
	timeout=600
	wait_for "fewer than $1 delivery reports reached the sidecar" reports_reach "$1"
	timeout=60
}

# the reference's sendsms URL: the worker's parameters (sendsms_url() of
# src/kannel.c), its reports for row 0, which no row has, with its token
token0=$(q -c "SELECT smsdispatch.callback_token(0)")
ref_url="http://127.0.0.1:$sendsms_port/cgi-bin/sendsms?charset=UTF-8&dlr-mask=31&username=tester&password=kannel-test&to=$(uri_escape +380500000001)&from=$(uri_escape +380990000000)&text=$(uri_escape 'Benchmark message 1')&dlr-url=$(uri_escape "http://127.0.0.1:$http_port/kannel/dlr?id=0&token=$token0&status=%d&answer=%A&at=%T")"

# the machine's TCP listen queue overflows so far
listen_overflows() {
	awk '/^TcpExt:/ {if (!c) {for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i} else print $c}' /proc/net/netstat
}

# one reference run: prints req/s and the listen queue overflows
reference() {
	r0=$(reports)
	o0=$(listen_overflows)
	"$work/loadgen" "$ref_url" - "$n" "$conc" > "$work/loadgen.out"
	set -- $(cat "$work/loadgen.out")
	echo "$1 $(($(listen_overflows) - o0))"
	settle $((r0 + per_sms * n))
}

# nothing of the channel queued or sending (through the partial indexes)?
drained() {
	[ "$(q -c "SELECT NOT EXISTS (SELECT 1 FROM verification.sms_log
			WHERE channel = 'kannel1' AND send_state = 'queued')
		AND NOT EXISTS (SELECT 1 FROM verification.sms_log
			WHERE channel = 'kannel1' AND send_state = 'sending')")" = t ]
}
# the rows of the channel submitted so far
submitted() {
	q -c "SELECT count(*) FROM verification.sms_log WHERE channel = 'kannel1' AND send_state = 'submitted'"
}
# every row Delivered?
all_delivered() {
	[ "$(q -c "SELECT NOT EXISTS (SELECT 1 FROM verification.sms_log
		WHERE channel = 'kannel1' AND gateway_status IS DISTINCT FROM 'Delivered')")" = t ]
}
# one drain of $n SMS on the channel: prints SMS/s to the last submitted,
# rows Delivered a second to the last one, how many seconds the last
# report came after the last submit, and the listen queue overflows
drain() {
	q -c "TRUNCATE verification.sms_log"
	r0=$(reports)
	o0=$(listen_overflows)
	t0=$(q -c "INSERT INTO verification.sms_log (phone_number, body, channel)
		SELECT '+38050' || lpad(g::text, 7, '0'), 'Benchmark message ' || g, 'kannel1'
		  FROM generate_series(1, $n) AS g" -c "SELECT extract(epoch FROM clock_timestamp())")
	# until nothing is queued or sending, or no row was submitted for 60 s
	ok=0; still=0
	until drained || [ $still -ge 60 ]; do
		sleep 1
		before=$ok
		ok=$(submitted)
		if [ "$ok" = "$before" ]; then still=$((still + 1)); else still=0; fi
	done
	o1=$(listen_overflows)
	ok=$(submitted)
	[ "$ok" = "$n" ] || { echo "kannel.sh: only $ok of $n SMS submitted" >&2; exit 1; }
	wait_for "not every SMS was Delivered" all_delivered
	set -- $(q -F ' ' -c "SELECT extract(epoch FROM max(submitted_at)), extract(epoch FROM max(updated_at))
		  FROM verification.sms_log WHERE channel = 'kannel1'")
	settle $((r0 + per_sms * n))
	echo "$n $t0 $1 $2 $((o1 - o0))" | awk '{printf "%.0f %.0f %.2f %d\n", $1 / ($3 - $2), $1 / ($4 - $2), $4 - $3, $5}'
}

cc -O2 -o "$work/loadgen" "$top/test/bench/loadgen.c" -lcurl
echo "Kannel benchmark: $n messages, $conc concurrent sendsms requests (the worker's window), $reps repetitions, Kannel $(dpkg-query -W -f '${Version}' kannel 2>/dev/null || echo '?') with fakesmsc on 127.0.0.1:$sendsms_port"

# how many reports Kannel makes of one SMS to fakesmsc (dlr-mask 31)
"$work/loadgen" "$ref_url" - 1 1 >/dev/null
wait_for "no delivery report reached the sidecar" reports_reach 1
sleep 2
per_sms=$(reports)

ref=""; send=""; dlr=""; lag=""; ref_over=""; send_over=""
# (each part writes its figures to a file: a failure in it ends the script)
for i in $(seq "$reps"); do
	reference > "$work/part.out"
	set -- $(cat "$work/part.out")
	ref="$ref $1"; ref_over="$ref_over $2"
	drain > "$work/part.out"
	set -- $(cat "$work/part.out")
	send="$send $1"; dlr="$dlr $2"; lag="$lag $3"; send_over="$send_over $4"
done
got=$(sent_to_smsc)
[ "$got" = $((2 * reps * n + 1)) ] || { echo "kannel.sh: bearerbox sent $got MTs to fakesmsc, not $((2 * reps * n + 1))" >&2; exit 1; }
ref_med=$(med "$ref")
send_med=$(med "$send")
dlr_med=$(med "$dlr")
echo "reference curl-multi to sendsms: runs$ref req/s, median $ref_med req/s"
echo "send, COMMIT to the last 0: Accepted: runs$send SMS/s, median $send_med SMS/s, ratio to reference $(echo "$send_med $ref_med" | awk '{printf "%.2f", $1/$2}') (Kannel the bottleneck: close to 1)"
echo "delivery reports through smsdispatch-http, COMMIT to every row Delivered: runs$dlr rows/s, median $dlr_med rows/s ($per_sms reports per SMS, $(echo "$dlr_med $per_sms" | awk '{printf "%.0f", $1 * $2}') reports/s); the last report $(med "$lag") s after the last submit (median)"
echo "TCP listen queue overflows on this machine: runs$send_over during the sends, runs$ref_over during the reference (the worker keeps its connections, as the load generator keeps its $conc)"
echo "$send_med $ref_med" | awk '$1 < 0.8 * $2 {print "warning: the worker sent at less than 0.8 of the reference: Kannel was not the bottleneck"}'

#!/bin/sh
# make demo: a throwaway PostgreSQL cluster with smsdispatch preloaded,
# showing the product's main job. As root, re-runs itself as an
# unprivileged user (PostgreSQL refuses root). The cluster is stopped at the
# end; its files stay in the demo directory for a look.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
dir=${SMSDISPATCH_DEMO_DIR:-$top/demo}

if [ "$(id -u)" = 0 ]; then
	rm -rf "$dir"
	mkdir -p "$dir"
	chown -R "${SMSDISPATCH_TEST_USER:-postgres}" "$dir"
	. "$top/test/unprivileged.sh"
	run_unprivileged "$0" "$@"
fi

bindir=$(${PG_CONFIG:-pg_config} --bindir)
export PATH="$bindir:$PATH"
rm -rf "$dir/data" "$dir/socket"
mkdir -p "$dir/socket"
export PGHOST="$dir/socket" PGPORT=5432 PGDATABASE=postgres

mock=
sidecar=
# the Kannel step's processes, stopped in this order
kannel_pids=
cleanup() {
	stop_kannel
	[ -z "$sidecar" ] || stop_pid "$sidecar"
	pg_ctl -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
	[ -z "$mock" ] || stop_pid "$mock"
}
trap cleanup EXIT
# a demo stopped midway stops what it started too (the EXIT trap)
trap 'exit 1' INT TERM

step() {
	printf '\n== %s\n' "$1"
}

# poll WHAT COMMAND...: runs COMMAND until it succeeds, at most 20 s
poll() {
	what=$1
	shift
	n=0
	until "$@"; do
		n=$((n + 1))
		[ $n -lt 100 ] || { echo "timed out waiting for: $what" >&2; return 1; }
		sleep 0.2
	done
}

# sql_true SQL: whether the query returns true
sql_true() {
	[ "$(psql -XAt -c "$1")" = t ]
}

# running PID: whether the child PID has not exited (a zombie has)
running() {
	[ -e "/proc/$1" ] && ! grep -q '^[0-9]* (.*) Z ' "/proc/$1/stat" 2>/dev/null
}

# stop_pid PID: SIGTERM, SIGKILL if it is still there after 20 s; reaps it
stop_pid() {
	kill -TERM "$1" 2>/dev/null || return 0
	n=0
	while running "$1" && [ $n -lt 100 ]; do
		n=$((n + 1))
		sleep 0.2
	done
	! running "$1" || kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# stop_kannel: stops smsdispatch-http, fakesmsc, smsbox and bearerbox, by
# the pids the Kannel step started
stop_kannel() {
	exec 3>&- || true
	for pid in $kannel_pids; do
		stop_pid "$pid"
	done
	kannel_pids=
}

# http_get URL: prints the HTTP status (0: no connection) and the body
http_get() {
	python3 -c '
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(r.status)
        sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print(0)' "$1"
}

# kannel_says PATTERN: whether bearerbox's status page matches PATTERN
kannel_says() {
	http_get "http://127.0.0.1:$admin_port/status.txt?password=kannel-test" | grep -q "$1"
}

# answers PORT: whether smsdispatch-http answers on PORT (404 for /)
answers() {
	[ "$(http_get "http://127.0.0.1:$1/" | head -n 1)" = 404 ]
}

# fakesmsc_got PHONE COUNT: whether fakesmsc received COUNT SMS for PHONE
fakesmsc_got() {
	[ "$(grep -c "Got message [0-9]*: <+380990000000 $1 " "$kannel/fakesmsc.out")" -ge "$2" ]
}

# The Kannel step: Kannel (bearerbox, smsbox, the fake SMSC fakesmsc) with
# test/kannel/kannel.conf.in, the kannel.conf of the Kannel tests, plus the
# sms-service group of docs/channels.md; smsdispatch-http; a channel kannel1
# registered with channel_add; an alarm out and a reply back through them.
kannel_demo() {
	mkdir -p "$kannel/spool"
	# five free ports on 127.0.0.1, held together so that they differ
	set -- $(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
	admin_port=$1 smsbox_port=$2 smsc_port=$3 sendsms_port=$4 http_port=$5
	sed -e "s|@dir@|$kannel|g" -e "s|@admin_port@|$admin_port|g" \
		-e "s|@smsbox_port@|$smsbox_port|g" -e "s|@smsc_port@|$smsc_port|g" \
		-e "s|@sendsms_port@|$sendsms_port|g" "$top/test/kannel/kannel.conf.in" >"$kannel/kannel.conf"
	echo >>"$kannel/kannel.conf"
	sed -n '/^    group = sms-service$/,/^$/s/^    //p' "$top/docs/channels.md" |
		sed "s/127\.0\.0\.1:8089/127.0.0.1:$http_port/" >>"$kannel/kannel.conf"
	if grep -q '@[a-z_]*@' "$kannel/kannel.conf" || ! grep -q '^group = sms-service$' "$kannel/kannel.conf"; then
		echo "kannel.conf was not filled in: $kannel/kannel.conf" >&2
		return 1
	fi

	/usr/sbin/bearerbox "$kannel/kannel.conf" >"$kannel/bearerbox.out" 2>&1 &
	kannel_pids="$! $kannel_pids"
	poll "bearerbox's admin port" kannel_says 'Kannel bearerbox version'
	/usr/sbin/smsbox "$kannel/kannel.conf" >"$kannel/smsbox.out" 2>&1 &
	kannel_pids="$! $kannel_pids"
	poll "smsbox connecting to bearerbox" kannel_says '^ *smsbox:'
	# fakesmsc reads the SMS typed at the SMSC from a FIFO; fd 3, kept open
	# (read-write, so opening it waits for no reader), is the keyboard
	mkfifo "$kannel/mo.fifo"
	exec 3<>"$kannel/mo.fifo"
	"$fakesmsc" -H 127.0.0.1 -r "$smsc_port" -i 0.1 -v 0 <"$kannel/mo.fifo" >"$kannel/fakesmsc.out" 2>&1 &
	kannel_pids="$! $kannel_pids"
	poll "fakesmsc connecting to bearerbox" kannel_says 'fake\[fake\].*(online'
	psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE ROLE kannel_http LOGIN IN ROLE smsdispatch_admin'
	smsdispatch-http --listen "127.0.0.1:$http_port" \
		--db "host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=kannel_http" >"$kannel/http.log" 2>&1 &
	kannel_pids="$! $kannel_pids"
	poll "smsdispatch-http on port $http_port" answers "$http_port"
	echo "-- bearerbox, smsbox and fakesmsc (a fake SMSC) on 127.0.0.1; Kannel's sendsms on port"
	echo "-- $sendsms_port; smsdispatch-http on port $http_port takes Kannel's delivery reports and"
	echo "-- the SMS the SMSC receives (kannel.conf: $kannel/kannel.conf)"

	(umask 077 && echo kannel-test >"$kannel/kannel1.password")
	psql -X -q -v ON_ERROR_STOP=1 <<SQL
\\echo '-- a Kannel channel, registered in the database'
\\o /dev/null
SELECT smsdispatch.channel_add('kannel1', 'kannel', jsonb_build_object(
	'url', 'http://127.0.0.1:$sendsms_port/cgi-bin/sendsms', 'username', 'tester',
	'password_file', '$kannel/kannel1.password', 'from', '+380990000000',
	'callback_url', 'http://127.0.0.1:$http_port'));
SELECT sms_list_create('noc', 'Network on-call, paged through Kannel');
SELECT sms_list_add('noc', '+380503330001', 1, '1 hour', 'Gina');
SELECT sms_list_add('noc', '+380503330005', 1, '1 hour', 'Hal');
SELECT sms_list_add('noc', '+380503330006', 2, '1 hour', 'Ivan');
\\o
SELECT name, dialect, url, sender, callback_url, state FROM smsdispatch.channels;
SQL
	noc=$(psql -XAt -c "SELECT sms_enqueue('Core router down', 'noc', 'kannel1')")
	echo "-- alarm $noc on list noc through kannel1: Gina and Hal are on level 1"
	poll "Gina's alarm at fakesmsc" fakesmsc_got +380503330001 1
	poll "Hal's alarm at fakesmsc" fakesmsc_got +380503330005 1
	echo "-- what the SMSC received (fakesmsc's log: sender, recipient, text):"
	grep 'Got message' "$kannel/fakesmsc.out"
	echo "-- Kannel's delivery reports, through smsdispatch-http, make the rows Delivered"
	# a report may come before the worker has recorded Kannel's answer
	wait_for "SELECT count(*) = 2 AND bool_and(gateway_status = 'Delivered' AND send_state = 'submitted')
	            FROM verification.sms_log l
	            JOIN smsdispatch.message m ON m.id = l.message_id WHERE m.number = '$noc'"
	psql -X -c "SELECT l.id, l.phone_number, r.name, l.channel, l.send_state, l.gateway_status
	              FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
	              JOIN smsdispatch.message_recipient r ON r.message_id = m.id AND r.phone = l.phone_number
	             WHERE m.number = '$noc' ORDER BY l.id"

	echo "-- Gina replies \"OK $noc on my way\" from her phone: typed into fakesmsc"
	echo "+380503330001 +380990000000 text OK $noc on my way" >&3
	wait_for "SELECT state = 'acked' FROM smsdispatch.message WHERE number = '$noc'"
	psql -X -c "SELECT number, state, acked_by FROM smsdispatch.message WHERE number = '$noc'" \
		-c "SELECT sender, body, outcome FROM smsdispatch.inbox ORDER BY id DESC LIMIT 1" \
		-c "SELECT r.level, r.name, r.status FROM smsdispatch.message_recipient r
		      JOIN smsdispatch.message m ON m.id = r.message_id WHERE m.number = '$noc' ORDER BY r.level, r.name"
	echo "-- the confirmations go out through Kannel too: Gina's ack, and Hal told who took it"
	wait_for "SELECT count(*) = 2 AND bool_and(l.send_state = 'submitted') FROM verification.sms_log l
	            JOIN smsdispatch.message m ON m.id = l.confirms WHERE m.number = '$noc'"
	poll "Gina's confirmation at fakesmsc" fakesmsc_got +380503330001 2
	poll "Hal's confirmation at fakesmsc" fakesmsc_got +380503330005 2
	psql -X -c "SELECT l.phone_number, r.name, l.body, l.channel, l.send_state
	              FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.confirms
	              JOIN smsdispatch.message_recipient r ON r.message_id = m.id AND r.phone = l.phone_number
	             WHERE m.number = '$noc' ORDER BY l.id"
	grep 'Got message' "$kannel/fakesmsc.out" | tail -n +3
	stop_kannel
	echo "-- Kannel and smsdispatch-http stopped"
}

# true once the worker has handed every IP2SMS row to the gateway and
# polled its final status
ip2sms_settled="SELECT count(*) = 0 FROM verification.sms_log
                 WHERE channel = 'ip2sms' AND (send_state IN ('queued', 'sending') OR next_poll_at IS NOT NULL)"

# wait_for SQL: polls until the query returns true, at most 20 s
wait_for() {
	poll "$1" sql_true "$1"
}

step "smsdispatch is installed in the PostgreSQL that pg_config names"
# make demo ran make install before this script: say where it went
printf 'library: %s/smsdispatch.so\nextension scripts: %s/extension/\nmodem sidecar: %s/smsdispatch-modem\n' \
	"$(pg_config --pkglibdir)" "$(pg_config --sharedir)" "$bindir"
echo '(make demo and make check install there; make uninstall removes it)'

step "A mock IP2SMS gateway on 127.0.0.1 and a throwaway cluster in $dir, smsdispatch preloaded"
python3 "$top/test/mock/ip2sms_mock.py" --port-file "$dir/mock.port" --log "$dir/mock.log" \
	--login demo --password demo-secret &
mock=$!
poll "the mock gateway's port file" test -s "$dir/mock.port"
gw="http://127.0.0.1:$(cat "$dir/mock.port")"
echo "mock gateway: $gw"
initdb -D "$dir/data" --encoding=UTF8 --locale=C -A trust >/dev/null
(umask 077 && echo demo-secret > "$dir/ip2sms.password")
cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$dir/socket'
shared_preload_libraries = 'smsdispatch'
smsdispatch.database = 'postgres'
smsdispatch.default_country_code = '380'
smsdispatch.ip2sms_url = '$gw/ip2sms/'
smsdispatch.ip2sms_status_url = '$gw/ip2sms-request/'
smsdispatch.ip2sms_login = 'demo'
smsdispatch.ip2sms_password_file = '$dir/ip2sms.password'
smsdispatch.ip2sms_source = 'DEMO'
smsdispatch.ip2sms_poll_interval = '1s'
EOF
pg_ctl -D "$dir/data" -l "$dir/server.log" -w start >/dev/null

psql -X -q -v ON_ERROR_STOP=1 <<'EOF'
\echo '-- the application''s verification table exists before the extension'
CREATE SCHEMA verification;
CREATE TABLE verification.verifications (
	id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
	phone_number text NOT NULL,
	check_digit int,
	status text NOT NULL DEFAULT 'new',
	code text NOT NULL,
	code_expired_at timestamptz,
	active boolean NOT NULL DEFAULT true,
	attempts_count int NOT NULL DEFAULT 0,
	inserted_at timestamptz NOT NULL DEFAULT now()
);
CREATE EXTENSION smsdispatch;

\echo '-- an on-call list on three levels (numbers as people type them)'
\o /dev/null
SELECT sms_list_create('oncall', 'Database on-call');
SELECT sms_list_add('oncall', '050 111 11 11', 1, '15 min', 'Alice');
SELECT sms_list_add('oncall', '+380 50 555 55 55', 2, '15 min', 'Bob');
SELECT sms_list_add('oncall', '0038 050 666 66 66', 3, '15 min', 'Carol');
\o
SELECT list, level, phone, name, ack_timeout FROM smsdispatch.list_member ORDER BY level;

\echo '-- an alarm: its first level is handed to the channel at once'
SELECT sms_enqueue('Disk full on db1', 'oncall') AS number;

\echo '-- a verification: one INSERT queues one SMS, later updates queue none'
INSERT INTO verification.verifications (phone_number, code) VALUES ('+380501234567', '4812');
SELECT 'after the INSERT' AS step, count(*) AS verification_sms
  FROM verification.sms_log WHERE type = 'verification';
UPDATE verification.verifications SET attempts_count = attempts_count + 1;
UPDATE verification.verifications SET attempts_count = attempts_count + 1;
SELECT 'after two UPDATEs' AS step, count(*) AS verification_sms
  FROM verification.sms_log WHERE type = 'verification';

\echo '-- a single SMS, and what it costs in parts'
SELECT sms_send('+380507654321', 'Ваш код: 1234', '2FA') AS sms_log_id;
SELECT * FROM sms_segments('Ваш код: 1234');

EOF
# the worker hands them to the gateway within milliseconds of each COMMIT
wait_for "SELECT count(*) = 0 FROM verification.sms_log WHERE send_state IN ('queued', 'sending')"
psql -X -q -v ON_ERROR_STOP=1 <<'EOF'
\echo '-- the alarm once the worker sent level 1: Alice has until her deadline to ack'
SELECT m.number, m.state, m.level, r.level AS recipient_level, r.name, r.status,
	   l.send_state AS her_sms
  FROM smsdispatch.message m JOIN smsdispatch.message_recipient r ON r.message_id = m.id
  LEFT JOIN verification.sms_log l ON l.message_id = m.id AND l.phone_number = r.phone
 ORDER BY m.id, r.level;

\echo '-- verification.sms_log: every SMS above, handed to the gateway'
SELECT id, phone_number, type, body, channel, send_state, gateway_id FROM verification.sms_log ORDER BY id;
EOF

step "The GSM modem path: smsdispatch-modem with gammu's dummy phone"
phone="$dir/phone"
mkdir -p "$phone"
printf '[gammu]\ndevice = %s\nconnection = none\nmodel = dummy\n' "$phone" >"$dir/phone.gammurc"
smsdispatch-modem --gammurc "$dir/phone.gammurc" --name demo-modem --poll 1 \
	--heartbeat 5 --log "$dir/modem.log" &
sidecar=$!
# its first heartbeat: the modem channel is ok, and takes its own SMS
wait_for "SELECT state = 'ok' AND NOT EXISTS (SELECT 1 FROM smsdispatch.channel_failover f
                                              WHERE f.channel = 'modem')
            FROM smsdispatch.channel_health WHERE channel = 'modem'"
psql -X -q -v ON_ERROR_STOP=1 <<'EOF'
\o /dev/null
SELECT sms_list_create('radio', 'On-call without internet');
SELECT sms_list_add('radio', '+380501111111', 1, '15 min', 'Alice');
SELECT sms_list_add('radio', '+380505555555', 2, '15 min', 'Bob');
\o
SELECT sms_enqueue('Link down on core-sw1', 'radio', channel => 'modem') AS modem_alarm \gset
\echo '-- alarm' :modem_alarm 'handed to the modem sidecar'
EOF
modem_alarm=$(psql -XAt -c "SELECT number FROM smsdispatch.message WHERE list = 'radio'")
wait_for "SELECT bool_and(send_state = 'submitted') FROM verification.sms_log WHERE channel = 'modem'"
psql -X -c "SELECT id, phone_number, body, send_state, gateway_id, gateway_status
              FROM verification.sms_log WHERE channel = 'modem'"
echo "-- Alice replies \"$modem_alarm ack\" to the modem"
python3 "$top/test/modem/dummy_sms.py" --dir "$phone" --number +380501111111 \
	--text "$modem_alarm ack" >/dev/null
wait_for "SELECT state = 'acked' FROM smsdispatch.message WHERE list = 'radio'"
psql -X -c "SELECT number, state, acked_by FROM smsdispatch.message WHERE list = 'radio'" \
	-c "SELECT sender, body, outcome FROM smsdispatch.inbox ORDER BY id DESC LIMIT 1" \
	-c "SELECT name, imei, signal_percent, last_seen IS NOT NULL AS heartbeat FROM smsdispatch.modem"
stop_pid "$sidecar"
sidecar=

step "Live escalation: levels of 3 s, nobody answers level 1, Bob on level 2 does"
psql -X -q -v ON_ERROR_STOP=1 <<'EOF'
\o /dev/null
SELECT sms_list_create('db', 'Database on-call, short timeouts for the demo');
SELECT sms_list_add('db', '+380501111111', 1, '3 s', 'Alice');
SELECT sms_list_add('db', '+380505555555', 2, '3 s', 'Bob');
SELECT sms_list_add('db', '+380506666666', 3, '3 s', 'Carol');
\o
EOF
live=$(psql -XAt -c "SELECT sms_enqueue('Replication lag 300 s on db2', 'db')")
echo "-- alarm $live queued at $(date +%T)"
show_live="SELECT r.level, r.name, r.status, to_char(r.sent_at, 'HH24:MI:SS.MS') AS sent_at
             FROM smsdispatch.message_recipient r JOIN smsdispatch.message m ON m.id = r.message_id
            WHERE m.list = 'db' ORDER BY r.level"
wait_for "SELECT status = 'NOT_YET_ACK' FROM smsdispatch.message_recipient r
            JOIN smsdispatch.message m ON m.id = r.message_id WHERE m.list = 'db' AND r.level = 1"
psql -X -c "$show_live"
echo "-- nobody answers; after Alice's 3 s the alarm escalates to Bob"
wait_for "SELECT status = 'NOT_YET_ACK' FROM smsdispatch.message_recipient r
            JOIN smsdispatch.message m ON m.id = r.message_id WHERE m.list = 'db' AND r.level = 2"
psql -X -c "$show_live"
echo "-- Bob replies \"ok $live on it\""
psql -X -c "SELECT sms_receive('+380505555555', 'ok $live on it') AS outcome"
sleep 4
echo "-- 4 s later: acknowledged, Carol (level 3) was never sent it"
psql -X -c "$show_live" \
	-c "SELECT to_char(e.at, 'HH24:MI:SS.MS') AS at, e.kind, e.level, e.phone
	      FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
	     WHERE m.list = 'db' ORDER BY e.id"

# issue 13 (i13c): confirmations
step "Confirmations: Dan acks at level 2; he is told, and so is Erin, paged at level 1"
psql -X -q -v ON_ERROR_STOP=1 <<'EOF'
\o /dev/null
SELECT sms_list_create('ward', 'Ward on-call, confirmations on (the default)');
SELECT sms_list_add('ward', '+380507777777', 1, '2 s', 'Erin');
SELECT sms_list_add('ward', '+380508888888', 2, '1 min', 'Dan');
\o
EOF
ward=$(psql -XAt -c "SELECT sms_enqueue('Fridge 3 at 9 °C', 'ward')")
wait_for "SELECT status = 'NOT_YET_ACK' FROM smsdispatch.message_recipient r
            JOIN smsdispatch.message m ON m.id = r.message_id WHERE m.list = 'ward' AND r.level = 2"
echo "-- Dan replies \"$ward\""
psql -X -c "SELECT sms_receive('+380508888888', '$ward') AS outcome"
wait_for "SELECT count(*) = 2 FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.confirms
            WHERE m.list = 'ward' AND l.send_state = 'submitted'"
psql -X -c "SELECT l.phone_number, r.name, l.body, l.priority, l.send_state
              FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.confirms
              JOIN smsdispatch.message_recipient r ON r.message_id = m.id AND r.phone = l.phone_number
             WHERE m.list = 'ward' ORDER BY l.id"

step "Kannel: an alarm out through Kannel, acknowledged by a reply through Kannel"
kannel=$dir/kannel
fakesmsc=/usr/lib/kannel/test/fakesmsc
if [ -x /usr/sbin/bearerbox ] && [ -x /usr/sbin/smsbox ] && [ -x "$fakesmsc" ]; then
	kannel_demo
else
	echo "-- Kannel is not installed here (bearerbox and smsbox: Debian kannel; fakesmsc:"
	echo "-- kannel-extras), so this step is skipped; ./install-deps.sh as root installs them"
fi

step "On-call rotation: Ann hands off to Ben in 3 s; an alarm pages whoever is on duty"
# a daily rotation whose hand-off is 3 s from now (UTC): yesterday's turn,
# Ann's, ends then and Ben's begins. Ben's number ends in 5: the mock gateway
# refuses numbers ending in 2 (test/mock/ip2sms_mock.py).
psql -X -q -v ON_ERROR_STOP=1 <<'EOF'
\o /dev/null
SELECT sms_list_create('rota', 'Weekend duty: a rotation on level 1');
SELECT sms_list_add('rota', '+380507000001', 1, '15 min', 'Ann');
SELECT sms_list_add('rota', '+380507000005', 1, '15 min', 'Ben');
SELECT sms_list_add('rota', '+380506666666', 2, '15 min', 'Carol');
SELECT sms_rotation_create('rota', 1, '1 day', ((now() + interval '3 s') AT TIME ZONE 'UTC')::time(0),
						   'UTC', ((now() + interval '3 s') AT TIME ZONE 'UTC')::date - 1);
\o
SELECT level, name, duty FROM sms_oncall('rota');
EOF
# show_paged NUMBER: whom the alarm paged, once its SMS are submitted
show_paged() {
	wait_for "SELECT count(*) > 0 AND bool_and(l.send_state = 'submitted') FROM verification.sms_log l
	            JOIN smsdispatch.message m ON m.id = l.message_id WHERE m.number = '$1'"
	psql -X -c "SELECT m.number AS alarm, r.name AS paged, l.phone_number, l.send_state
	              FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
	              JOIN smsdispatch.message_recipient r ON r.message_id = m.id AND r.phone = l.phone_number
	             WHERE m.number = '$1' ORDER BY l.id"
}
show_paged "$(psql -XAt -c "SELECT sms_enqueue('Backup failed on db3', 'rota')")"
rota_handoff=$(psql -XAt -c "SELECT to_char(handoff_time, 'HH24:MI:SS') FROM smsdispatch.rotation WHERE list = 'rota'")
echo "-- waiting for the hand-off at $rota_handoff UTC"
wait_for "SELECT name = 'Ben' FROM sms_oncall('rota') WHERE level = 1"
psql -X -c "SELECT level, name, duty FROM sms_oncall('rota')"
show_paged "$(psql -XAt -c "SELECT sms_enqueue('Backup failed on db3 again', 'rota')")"
psql -X -q -v ON_ERROR_STOP=1 <<'EOF'
\echo '-- Ben goes on holiday for a week: nobody of the rotation is on duty, level 2 is'
\o /dev/null
SELECT sms_list_pause('rota', '+380507000005', now() + interval '7 days');
\o
SELECT level, name, duty FROM sms_oncall('rota');
\o /dev/null
SELECT sms_cancel(number) FROM smsdispatch.message WHERE list = 'rota' AND state = 'open';
EOF

step "Priorities and failover: an alarm jumps a bulk backlog; the stopped modem fails over to IP2SMS"
psql -X -q -v ON_ERROR_STOP=1 <<'EOF'
\o /dev/null
ALTER SYSTEM SET smsdispatch.ip2sms_max_rate = 20;
ALTER SYSTEM SET smsdispatch.failover_after = '3s';
SELECT pg_reload_conf();
SELECT sms_list_create('plant', 'Plant on-call');
SELECT sms_list_add('plant', '+380507771111', 1, '15 min', 'Dave');
SELECT sms_list_create('plant-radio', 'Plant on-call through the modem');
SELECT sms_list_add('plant-radio', '+380507775555', 1, '15 min', 'Erin');
\o
\echo '-- 300 newsletter SMS queued at the provider''s limit of 20 a second, then an alarm'
SELECT count(sms_send('+3805070' || lpad(g::text, 4, '0') || '1', 'Newsletter ' || g, 'text')) AS text_queued
  FROM generate_series(1, 300) AS g;
EOF
sleep 1
jump=$(psql -XAt -c "SELECT sms_enqueue('Boiler 2 pressure high', 'plant')")
wait_for "SELECT send_state = 'submitted' FROM verification.sms_log WHERE phone_number = '+380507771111'"
psql -X -c "SELECT '$jump' AS alarm, l.priority,
                   round(extract(epoch FROM l.submitted_at - l.inserted_at)::numeric, 2) AS seconds_to_submitted,
                   (SELECT count(*) FROM verification.sms_log q
                     WHERE q.type = 'text' AND q.send_state = 'queued') AS text_still_queued
              FROM verification.sms_log l WHERE l.phone_number = '+380507771111'"
echo "-- the modem sidecar was stopped above and said goodbye: its channel is no_sidecar"
wait_for "SELECT state = 'no_sidecar' FROM smsdispatch.channel_health WHERE channel = 'modem'"
psql -X -c "SELECT channel, state, last_error FROM smsdispatch.channel_health ORDER BY channel"
radio=$(psql -XAt -c "SELECT sms_enqueue('Gas sensor 4 offline', 'plant-radio', channel => 'modem')")
echo "-- alarm $radio queued on the modem channel (smsdispatch.failover_after = 3s)"
wait_for "SELECT count(*) = 1 FROM verification.sms_log
            WHERE phone_number = '+380507775555' AND send_state = 'submitted'"
psql -X -c "SELECT id, channel, send_state, last_error FROM verification.sms_log
              WHERE phone_number = '+380507775555' ORDER BY id" \
	-c "SELECT e.kind, e.phone, e.detail FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
	     WHERE m.number = '$radio' AND e.kind IN ('failover', 'sent') ORDER BY e.id"
psql -X -q -v ON_ERROR_STOP=1 -c "ALTER SYSTEM RESET smsdispatch.ip2sms_max_rate" \
	-c "ALTER SYSTEM RESET smsdispatch.failover_after" -c "SELECT pg_reload_conf()" \
	-c "SELECT sms_cancel('$jump'), sms_cancel('$radio')" >/dev/null
wait_for "$ip2sms_settled"
echo "-- both alarms cancelled; the rate limit lifted, the backlog drained and its statuses polled"

step "Delivery statuses, polled from the gateway into verification.sms_log"
wait_for "SELECT bool_and(gateway_status = 'Delivered') FROM verification.sms_log
            WHERE channel = 'ip2sms' AND type IN ('verification', '2FA')"
psql -X -c "SELECT id, phone_number, type, send_state, gateway_id, gateway_status,
                   to_char(status_changed_at, 'HH24:MI:SS') AS status_changed
              FROM verification.sms_log
             WHERE channel = 'ip2sms' AND body NOT LIKE 'Newsletter %' ORDER BY id" \
	-c "SELECT count(*) AS newsletter_sms, gateway_status FROM verification.sms_log
	     WHERE body LIKE 'Newsletter %' GROUP BY gateway_status" \
	-c "SELECT name, value FROM smsdispatch.stats() WHERE value > 0 AND name NOT LIKE 'latency_le%' AND name NOT LIKE 'latency_gt%'"
printf 'the gateway received %s requests (log: %s)\n' "$(wc -l <"$dir/mock.log")" "$dir/mock.log"

step "Closing what the demo opened"
first=$(psql -XAt -c "SELECT number FROM smsdispatch.message WHERE list = 'oncall' AND state = 'open'")
echo "-- alarm $first went out over IP2SMS, which brings no reply back (replies come"
echo "-- through the modem, or an application calling sms_receive); nobody answered,"
echo "-- so the demo cancels it"
psql -X -c "SELECT sms_cancel('$first') AS cancelled" \
	-c "SELECT count(*) AS open_alarms FROM smsdispatch.message WHERE state = 'open'"
echo "-- those it paged are told it is cancelled"
wait_for "SELECT count(*) > 0 AND bool_and(l.send_state = 'submitted') FROM verification.sms_log l
            JOIN smsdispatch.message m ON m.id = l.confirms WHERE m.number = '$first'"
psql -X -c "SELECT l.phone_number, l.body, l.send_state FROM verification.sms_log l
              JOIN smsdispatch.message m ON m.id = l.confirms
             WHERE m.number = '$first' ORDER BY l.id"

step "The reports, of the final state: delivery per type, the gateway this hour, the HTML report"
wait_for "$ip2sms_settled"
psql -X -c "SELECT type, channel, logged, sent, delivered, failed, pending, delivery_ratio
              FROM smsdispatch.delivery_stats(now() - interval '1 hour', now() + interval '1 minute')
             ORDER BY type, channel" \
	-c "SELECT hour, snapshots, requests_send, requests_status, answers_accepted,
	           answers_delivered, answers_rejected, latency_mean_ms
	      FROM smsdispatch.gateway_stats(date_trunc('hour', now()), now() + interval '1 minute')"
psql -XAtq -c "SELECT sms_report_html(now() - interval '1 hour', now() + interval '1 minute')" \
	>"$dir/report.html"
printf 'report: %s (%s bytes; open it in a browser)\n' "$dir/report.html" \
	"$(wc -c <"$dir/report.html")"

printf '\nDemo done. Server log: %s\n' "$dir/server.log"

#!/bin/sh
# Benchmark of smsdispatch.claim_sends with send windows (issue 13): claims
# of 16 rows per second (pgbench, 1 client, each claim rolled back so that
# the queue stays the same) over 20,000 queued text SMS:
#   reference  the claim of 1.1 before send windows, with its index
#   claim      claim_sends as it is, no row held
#   held       claim_sends with 100,000 medication_request SMS held for their
#              window (more urgent than the text rows, so a claim that had to
#              step over them would), against the reference claim on the same
#              rows, for which they wait in its index by next_attempt_at: what
#              holding would cost without taking held rows out of the index
# Prints medians of REPS runs; the two claims compared run alternately.
# Usage: PG_CONFIG=... test/bench/claim_held.sh [REPS]
set -eu
reps=${1:-3}
secs=${BENCH_SECONDS:-5}

if [ "$(id -u)" = 0 ]; then
	work=$(mktemp -d)
	chown "${SMSDISPATCH_TEST_USER:-postgres}" "$work"
	exec runuser -u "${SMSDISPATCH_TEST_USER:-postgres}" -- env BENCH_WORK="$work" \
		PATH="$PATH" PG_CONFIG="${PG_CONFIG:-pg_config}" BENCH_SECONDS="$secs" "$0" "$@"
fi
work=${BENCH_WORK:-$(mktemp -d)}
bindir=$(${PG_CONFIG:-pg_config} --bindir)
cleanup() {
	[ -f "$work/data/postmaster.pid" ] && "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT HUP INT PIPE TERM
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

"$bindir/initdb" -D "$work/data" -A trust -E UTF8 --no-locale >/dev/null
cat >>"$work/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'smsdispatch'
smsdispatch.database = 'nosuch'
smsdispatch.max_per_phone_per_hour = 0
smsdispatch.timezone = 'UTC'
EOF
"$bindir/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null
export PGHOST="$work" PGDATABASE=postgres
psql="$bindir/psql -X -q -v ON_ERROR_STOP=1"

$psql <<'EOF'
CREATE EXTENSION smsdispatch;
-- the claim before send windows (1.1 as issue 11 left it), and the index it used
CREATE INDEX sms_log_queued_ref_idx ON verification.sms_log
	(channel, priority, next_attempt_at NULLS FIRST, id) WHERE send_state = 'queued';
CREATE FUNCTION public.claim_reference(channel text, n int,
	claimer text DEFAULT NULL, lease interval DEFAULT NULL)
RETURNS TABLE (id bigint, phone_number text, body text, attempts int, message_id bigint)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	WITH due AS (
		SELECT l.id,
			   l.message_id IS NULL
			   AND l.inserted_at + smsdispatch.validity(l.type) < now() AS expired
		  FROM verification.sms_log l
		 WHERE l.channel = claim_reference.channel AND l.send_state = 'queued'
		   AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= now())
		 ORDER BY l.priority, l.next_attempt_at NULLS FIRST, l.id
		 LIMIT n
		 FOR UPDATE SKIP LOCKED
	), claimed AS (
		UPDATE verification.sms_log l
		   SET send_state = CASE WHEN due.expired THEN 'failed' ELSE 'sending' END,
			   attempts = l.attempts + CASE WHEN due.expired THEN 0 ELSE 1 END,
			   last_error = CASE WHEN due.expired THEN
					format('expired before sending: not submitted within %s (smsdispatch.validity_%s)',
						   smsdispatch.validity(l.type), lower(l.type))
					ELSE l.last_error END,
			   claimed_by = CASE WHEN due.expired THEN l.claimed_by ELSE claimer END,
			   lease_until = CASE WHEN due.expired THEN NULL ELSE now() + lease END,
			   updated_at = now()
		  FROM due
		 WHERE l.id = due.id
		RETURNING l.id, l.phone_number, l.body, l.attempts, l.message_id, l.priority, due.expired
	)
	SELECT c.id, c.phone_number, c.body, c.attempts, c.message_id
	  FROM claimed c
	 WHERE NOT c.expired
	 ORDER BY c.priority, c.id
$$;
INSERT INTO verification.sms_log (phone_number, type, body, channel, priority)
SELECT '+38050' || lpad(g::text, 7, '0'), 'text', 'newsletter ' || g, 'modem', 7
  FROM generate_series(1, 20000) g;
VACUUM ANALYZE verification.sms_log;
EOF

# The claim's SQL function is planned without knowing n (a parameter), and
# the planner then joins its UPDATE to the due rows by hashing the whole
# log, which would measure the size of the table rather than the claim:
# joins by key here. Each run starts from a vacuumed table, as the claims
# are rolled back; the two claims compared run alternately, so that other
# load on the machine falls on both.
once() {	# claim statement -> claims per second
	printf 'BEGIN;\nSELECT count(*) FROM %s;\nROLLBACK;\n' "$1" >"$work/claim.sql"
	$psql -c 'VACUUM ANALYZE verification.sms_log'
	PGOPTIONS='-c enable_hashjoin=off -c enable_mergejoin=off' \
		"$bindir/pgbench" -n -c 1 -T "$secs" -f "$work/claim.sql" 2>/dev/null |
		sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
compare() {	# statement a, statement b -> "median_a median_b"
	for r in $(seq "$reps"); do
		echo "a $(once "$1")"
		echo "b $(once "$2")"
	done >"$work/runs"
	echo "$(sed -n 's/^a //p' "$work/runs" | median) $(sed -n 's/^b //p' "$work/runs" | median)"
}
set -- $(compare "public.claim_reference('modem', 16)" "smsdispatch.claim_sends('modem', 16)")
ref=$1 claim=$2

# the held rows wait both ways: out of the claim index until held_until,
# and, for the reference, in its index until next_attempt_at
$psql -c "INSERT INTO verification.sms_log (phone_number, type, body, channel, priority,
		held_until, next_attempt_at)
	SELECT '+38067' || lpad(g::text, 7, '0'), 'medication_request', 'pill ' || g, 'modem', 5,
		   now() + interval '10 hours', now() + interval '10 hours'
	  FROM generate_series(1, 100000) g"
set -- $(compare "public.claim_reference('modem', 16)" "smsdispatch.claim_sends('modem', 16)")
naive=$1 held=$2

printf 'claims of 16 rows per second over 20,000 queued text SMS (median of %s runs of %s s each):\n' "$reps" "$secs"
awk -v ref="$ref" -v claim="$claim" -v held="$held" -v naive="$naive" 'BEGIN {
	printf "  reference (1.1 before send windows)        %8.1f/s\n", ref
	printf "  claim_sends, nothing held                  %8.1f/s  %.2f of the reference\n", claim, claim / ref
	printf "  with 100,000 more urgent rows held:\n"
	printf "    reference, rows waiting in its index     %8.1f/s\n", naive
	printf "    claim_sends, rows held out of the index  %8.1f/s  %.1f times the reference\n", held, held / naive
}'

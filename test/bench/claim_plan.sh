#!/bin/sh
# Benchmark of the plan smsdispatch.claim_sends keeps: claims of 16 rows per
# second (pgbench, 1 client, each claim rolled back so that the queue stays
# the same) over 20,000 queued SMS behind BENCH_HISTORY rows already sent
# (default 20,000), with plans made once for any n, as the IP2SMS worker
# keeps them (plan_cache_mode = force_generic_plan):
#   reference  claim_sends without the array of due ids that keeps its
#              update's scan of the log to the locked rows, with hash and
#              merge joins forbidden: each row looked up by its key
#   joined     the same without the array, the planner free to choose
#   claim      claim_sends as installed, the planner free to choose
# Prints medians of REPS runs; the claims compared run one after the other
# in each run, so that other load on the machine falls on all of them.
# Usage: PG_CONFIG=... test/bench/claim_plan.sh [REPS]
set -eu
. "$(dirname "$0")/cluster.sh"
bench_as_user "$0" "$@"
reps=${1:-3}
secs=${BENCH_SECONDS:-5}
history=${BENCH_HISTORY:-20000}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

bench_start "shared_preload_libraries = 'smsdispatch'
smsdispatch.database = 'nosuch'
smsdispatch.max_per_phone_per_hour = 0"

$BENCH_PSQL -v history="$history" <<'EOF'
-- the reference: the installed claim with its update joined to the locked
-- rows by id alone, as it was before
DO $$
DECLARE
	installed text := pg_get_functiondef(
		'smsdispatch.claim_sends(text, int, text, interval, int)'::regprocedure);
	keep_to_due text := ' AND l.id = ANY (ARRAY(SELECT due.id FROM due))';
BEGIN
	IF strpos(installed, keep_to_due) = 0 THEN
		RAISE EXCEPTION 'claim_sends no longer reads: %', keep_to_due;
	END IF;
	EXECUTE replace(replace(replace(installed, keep_to_due, ''),
							'smsdispatch.claim_sends(', 'public.claim_joined('),
					'claim_sends.', 'claim_joined.');
END;
$$;
-- what was sent before the backlog came, then the backlog
INSERT INTO verification.sms_log (phone_number, type, body, channel, priority,
	send_state, attempts, submitted_at)
SELECT '+38063' || lpad(g::text, 7, '0'), 'text', 'sent ' || g, 'ip2sms', 7,
	   'submitted', 1, now()
  FROM generate_series(1, :history) g;
INSERT INTO verification.sms_log (phone_number, type, body, channel, priority)
SELECT '+38050' || lpad(g::text, 7, '0'), 'text', 'newsletter ' || g, 'ip2sms', 7
  FROM generate_series(1, 20000) g;
VACUUM ANALYZE verification.sms_log;
EOF

once() {	# claim call, extra settings -> claims per second
	printf 'BEGIN;\nSELECT count(*) FROM %s;\nROLLBACK;\n' "$1" >"$BENCH_DIR/claim.sql"
	PGOPTIONS="-c plan_cache_mode=force_generic_plan $2" \
		"$BENCH_BIN/pgbench" -h "$BENCH_DIR" -U postgres -n -c 1 -T "$secs" \
		-f "$BENCH_DIR/claim.sql" postgres 2>/dev/null |
		sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
for r in $(seq "$reps"); do
	echo "ref $(once "public.claim_joined('ip2sms', 16)" '-c enable_hashjoin=off -c enable_mergejoin=off')"
	echo "joined $(once "public.claim_joined('ip2sms', 16)" '')"
	echo "claim $(once "smsdispatch.claim_sends('ip2sms', 16)" '')"
done >"$BENCH_DIR/runs"
ref=$(sed -n 's/^ref //p' "$BENCH_DIR/runs" | median)
joined=$(sed -n 's/^joined //p' "$BENCH_DIR/runs" | median)
claim=$(sed -n 's/^claim //p' "$BENCH_DIR/runs" | median)

printf 'claims of 16 rows per second over 20,000 queued SMS behind %s sent (median of %s runs of %s s each):\n' \
	"$history" "$reps" "$secs"
awk -v ref="$ref" -v joined="$joined" -v claim="$claim" 'BEGIN {
	printf "  reference (joined by id, by key lookups)   %8.1f/s\n", ref
	printf "  joined by id, planner free                 %8.1f/s  %.2f of the reference\n", joined, joined / ref
	printf "  claim_sends, planner free                  %8.1f/s  %.2f of the reference\n", claim, claim / ref
}'

#!/bin/sh
# Benchmarks of the foundation's hot paths, each against a reference
# measured in the same run on the same throwaway cluster:
#   1. SELECT sms_send(...)  vs  INSERT of the same row into a plain table
#      with the same columns (goal: ratio >= 0.8)
#   2. INSERT into verification.verifications with the verification trigger
#      vs the same table without it (goal: ratio >= 0.75)
# pgbench, one client, REPS interleaved runs of SECONDS each; prints the
# median tps of each and the ratios. Every transaction uses a random phone
# number (as a real workload would), so the abuse guard stays on at its
# default (10 per phone per hour) and never refuses. The worker is preloaded
# but serves the database postgres, so what is measured is the application's
# own transaction; sending is the worker's work, on another core.
#
# Usage: test/bench/foundation.sh   (PG_CONFIG, REPS=5, SECONDS_PER_RUN=5, SYNC_COMMIT=on)
# As root it re-runs itself as the postgres user (PostgreSQL refuses root).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
REPS=${REPS:-5}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}

if [ "$(id -u)" = 0 ]; then
	exec runuser -u "${SMSDISPATCH_TEST_USER:-postgres}" -- env PATH="$PATH" \
		PG_CONFIG="$PG_CONFIG" REPS="$REPS" SECONDS_PER_RUN="$SECONDS_PER_RUN" SYNC_COMMIT="${SYNC_COMMIT:-on}" "$0" "$@"
fi

bindir=$($PG_CONFIG --bindir)
work=$(mktemp -d "${TMPDIR:-/tmp}/smsdispatch-bench.XXXXXX")
data=$work/data
port=5432	# the socket lives in $work, so any port number is free there
cleanup() {
	"$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$bindir/initdb" -D "$data" --encoding=UTF8 --locale=C -A trust >/dev/null
cat >> "$data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$work'
port = $port
shared_preload_libraries = 'smsdispatch'
# SYNC_COMMIT=off measures CPU alone; the default is what applications pay
synchronous_commit = ${SYNC_COMMIT:-on}
# no process but the benchmark's backends ends (see server CPU below)
autovacuum = off
CONF
"$bindir/pg_ctl" -D "$data" -l "$work/log" -w start >/dev/null

psql() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p $port "$@"; }
psql -d postgres -c 'CREATE DATABASE bench'
# the eHealth table exists before the extension, so it gets the trigger
psql -d bench -f "$top/test/ehealth-verifications.sql"
psql -d bench <<'SQL'
CREATE EXTENSION smsdispatch;
CREATE SCHEMA bench;
-- references: the same columns (and their domains), defaults, constraints
-- and indexes, no triggers
CREATE TABLE bench.plain_log (LIKE verification.sms_log INCLUDING ALL);
CREATE SEQUENCE bench.plain_log_id_seq OWNED BY bench.plain_log.id;
ALTER TABLE bench.plain_log ALTER id SET DEFAULT nextval('bench.plain_log_id_seq');
-- ... and the bare heap: the same columns and defaults only
CREATE TABLE bench.bare_log (LIKE verification.sms_log INCLUDING DEFAULTS);
ALTER TABLE bench.bare_log ALTER id SET DEFAULT nextval('bench.plain_log_id_seq');
CREATE TABLE bench.verifications (LIKE verification.verifications INCLUDING ALL);
SQL

cat > "$work/sms_send.sql" <<'SQL'
\set n random(1000000, 9999999)
SELECT sms_send('+38050' || :n, 'Your verification code: 4812', 'verification');
SQL
cat > "$work/plain_insert.sql" <<'SQL'
\set n random(1000000, 9999999)
INSERT INTO bench.plain_log (phone_number, type, body, channel) VALUES ('+38050' || :n, 'verification', 'Your verification code: 4812', 'ip2sms');
SQL
sed 's/bench\.plain_log/bench.bare_log/' "$work/plain_insert.sql" > "$work/bare_insert.sql"
cat > "$work/verif_trigger.sql" <<'SQL'
\set n random(1000000, 9999999)
INSERT INTO verification.verifications (phone_number, check_digit, code, code_expired_at) VALUES ('+38050' || :n, 7, '481226', now() + interval '5 min');
SQL
sed 's/verification\.verifications/bench.verifications/' "$work/verif_trigger.sql" > "$work/verif_plain.sql"

names="sms_send plain_insert bare_insert verif_trigger verif_plain"
# One pgbench run of a case: prints its tps and the server CPU time per
# transaction in microseconds. The postmaster's children's CPU time grows by
# what each backend used when it exits, so the difference around a run is
# the CPU of that run's backend: a figure the machine's other load hardly
# moves, unlike tps.
pmpid=$(head -1 "$data/postmaster.pid")
hz=$(getconf CLK_TCK)
children_ticks() { awk '{ print $16 + $17 }' "/proc/$pmpid/stat"; }
run() {
	before=$(children_ticks)
	out=$("$bindir/pgbench" -n -c 1 -T "$SECONDS_PER_RUN" -h "$work" -p $port \
		-f "$work/$1.sql" bench 2>&1)
	sleep 0.5	# the backend exits after pgbench disconnects
	after=$(children_ticks)
	echo "$out" | awk -v t=$((after - before)) -v hz="$hz" '
		/^number of transactions actually processed/ { n = $NF }
		/^tps = / { tps = $3 }
		END { printf "%.0f %.1f\n", tps, t * 1000000 / hz / n }'
}
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "smsdispatch foundation benchmark: pgbench, 1 client, $REPS x ${SECONDS_PER_RUN}s per case, interleaved"
echo "random phone per transaction; smsdispatch.max_per_phone_per_hour = $(psql -d bench -Atc 'SHOW smsdispatch.max_per_phone_per_hour') (guard on); synchronous_commit = ${SYNC_COMMIT:-on}"
echo "each run: tps / server CPU microseconds per transaction"
i=1
while [ $i -le "$REPS" ]; do
	psql -d bench -c 'TRUNCATE verification.sms_log, bench.plain_log, bench.bare_log, verification.verifications, bench.verifications'
	psql -d bench -c 'VACUUM ANALYZE'
	line="run $i:"
	for n in $names; do
		set -- $(run $n)
		echo "$1" >> "$work/$n.tps"
		echo "$2" >> "$work/$n.cpu"
		line="$line $n=$1/$2"
	done
	echo "$line"
	i=$((i + 1))
done

# ratios per run (each pair measured seconds apart), then their median:
# steadier than a ratio of medians when the machine's load drifts. For CPU
# the ratio is reference CPU / case CPU, so that both read "case speed as a
# fraction of the reference".
for m in tps cpu; do
	paste -d' ' "$work/sms_send.$m" "$work/plain_insert.$m" "$work/bare_insert.$m" \
		"$work/verif_trigger.$m" "$work/verif_plain.$m" |
		awk -v m=$m -v d="$work" '{
			if (m == "tps") { a = $1 / $2; b = $1 / $3; c = $4 / $5 }
			else { a = $2 / $1; b = $3 / $1; c = $5 / $4 }
			print a > (d "/r1." m); print b > (d "/r1b." m); print c > (d "/r2." m) }'
	for r in r1 r1b r2; do
		eval "${r}_$m=$(median < "$work/$r.$m")"
	done
done
for n in $names; do
	eval "tps_$n=$(median < "$work/$n.tps")"
	eval "cpu_$n=$(median < "$work/$n.cpu")"
done
# every SMS the trigger queued went out as queued, none refused
psql -d bench -Atc "SELECT 'last run: ' || count(*) || ' SMS in verification.sms_log, ' || count(*) FILTER (WHERE send_state <> 'queued') || ' not queued' FROM verification.sms_log"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

fmt() { awk -v r="$1" 'BEGIN { printf "%.2f", r }'; }
verdict() { awk -v r="$1" -v g="$2" 'BEGIN { print (r >= g) ? "goal met" : "GOAL MISSED" }'; }
echo
printf '%-60s %10s %12s\n' "case (medians)" "tps" "server us/tx"
printf '%-60s %10.0f %12.1f\n' "SELECT sms_send(...)" "$tps_sms_send" "$cpu_sms_send"
printf '%-60s %10.0f %12.1f\n' "INSERT same row, same columns/domains/indexes, no triggers" "$tps_plain_insert" "$cpu_plain_insert"
printf '%-60s %10.0f %12.1f\n' "INSERT same row, same columns and defaults only" "$tps_bare_insert" "$cpu_bare_insert"
printf '%-60s %10.0f %12.1f\n' "INSERT INTO verification.verifications (trigger)" "$tps_verif_trigger" "$cpu_verif_trigger"
printf '%-60s %10.0f %12.1f\n' "INSERT into the same table without the trigger" "$tps_verif_plain" "$cpu_verif_plain"
echo
echo "median of per-run ratios                 tps    server CPU"
echo "  sms_send / plain INSERT:              $(fmt "$r1_tps")   $(fmt "$r1_cpu")   (goal >= 0.8, tps: $(verdict "$r1_tps" 0.8))"
echo "  sms_send / bare-heap INSERT:          $(fmt "$r1b_tps")   $(fmt "$r1b_cpu")   (for information)"
echo "  verifications with / without trigger: $(fmt "$r2_tps")   $(fmt "$r2_cpu")   (goal >= 0.75, tps: $(verdict "$r2_tps" 0.75))"

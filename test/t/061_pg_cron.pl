# smsdispatch.schedule_maintenance(): refused with a hint without pg_cron;
# with it, creates the purge and snapshot jobs, and a run of each succeeds.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsdispatchReports qw(start_node ensure_stats);

my $node = start_node('cron', 'postgres', 'pg_cron',
	"cron.database_name = 'postgres'\n"
	  . "cron.use_background_workers = on\n"
	  . "max_worker_processes = 16\n");

my ($rc, $out, $err) = $node->psql('postgres', 'SELECT smsdispatch.schedule_maintenance()');
isnt($rc, 0, 'refused while pg_cron is not installed in the database');
like($err, qr/ERROR:  pg_cron is not installed in database "postgres"/, 'says what is missing');
like($err, qr/HINT:  .*shared_preload_libraries.*cron\.database_name = 'postgres'.*CREATE EXTENSION pg_cron/,
	'says what to do');

$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
my $stand_in = ensure_stats($node, 'postgres');
note('smsdispatch.stats() is a stand-in: the IP2SMS channel is not built here') if $stand_in;

($rc, $out, $err) = $node->psql('postgres',
	q{SELECT smsdispatch.schedule_maintenance('-1 day')});
like($err, qr/ERROR:  retention "-1 days" must be a non-negative interval/, 'bad retention refused');

# old things for the purge job to remove, and recent ones it must keep
$node->safe_psql('postgres', q{
	INSERT INTO verification.sms_log (phone_number, body, send_state, gateway_status, inserted_at)
	VALUES ('+380500000001', 'old', 'submitted', 'Delivered', now() - interval '200 days'),
		   ('+380500000002', 'recent', 'submitted', 'Delivered', now() - interval '1 day'),
		   ('+380500000003', 'old but queued', 'queued', NULL, now() - interval '200 days');
	INSERT INTO smsdispatch.message (number, body, list, state, created_at, closed_at, channel)
	VALUES ('0001', 'old alarm', 'oncall', 'cancelled', now() - interval '200 days',
			now() - interval '200 days', 'ip2sms');
});

# every minute for both, so that the test sees a run of each
is($node->safe_psql('postgres',
	q{SELECT string_agg(format('%s|%s|%s', jobname, schedule, command), E'\n')
		FROM smsdispatch.schedule_maintenance('90 days', '* * * * *')}),
	"smsdispatch-purge|* * * * *|CALL smsdispatch.purge('90 days')\n"
	  . "smsdispatch-snapshot|* * * * *|SELECT smsdispatch.snapshot_counters()",
	'the two jobs are created');

ok($node->poll_query_until('postgres', q{
	SELECT count(DISTINCT j.jobname) = 2
	  FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	 WHERE j.jobname LIKE 'smsdispatch-%' AND d.status = 'succeeded'}),
	'a run of each job succeeded');
is($node->safe_psql('postgres', q{
	SELECT string_agg(j.jobname || ': ' || d.return_message, E'\n')
	  FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	 WHERE d.status = 'failed'}), '', 'no run failed');

is($node->safe_psql('postgres',
	q{SELECT string_agg(body, ',' ORDER BY id) FROM verification.sms_log}),
	'recent,old but queued', 'the purge job removed the old log row only');
is($node->safe_psql('postgres', q{SELECT count(*) FROM smsdispatch.message}),
	'0', 'the purge job removed the old closed alarm');
cmp_ok($node->safe_psql('postgres',
	q{SELECT count(DISTINCT taken_at) FROM smsdispatch.counter_snapshot}),
	'>=', 1, 'the snapshot job wrote counter snapshots');
is($node->safe_psql('postgres', q{
	SELECT bool_and(s.n = (SELECT count(*) FROM smsdispatch.stats()))
	  FROM (SELECT count(*) AS n FROM smsdispatch.counter_snapshot GROUP BY taken_at) s}),
	't', 'each snapshot holds every counter');

# calling it again updates the jobs instead of adding more
$node->safe_psql('postgres', q{SELECT smsdispatch.schedule_maintenance()});
is($node->safe_psql('postgres',
	q{SELECT string_agg(jobname || '|' || schedule, ',' ORDER BY jobname) FROM cron.job}),
	'smsdispatch-purge|30 3 * * *,smsdispatch-snapshot|* * * * *',
	'scheduling again keeps one job of each, with the new schedule');

$node->stop;
done_testing();

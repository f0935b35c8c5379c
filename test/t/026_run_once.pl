# Done-when 8: smsdispatch.run_once() without the worker preloaded escalates
# and imports like the worker does; a pg_cron job calling it runs and
# succeeds (cron.job_run_details). Spool files move only when run_once()'s
# transaction commits.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SmsWorkerNode;

my $spool = PostgreSQL::Test::Utils::tempdir();
my $node = worker_node(
	'run_once',
	preload => 'pg_cron',
	conf => "smsdispatch.spool_dir = '$spool'\n"
	  . "cron.database_name = 'postgres'\n"
	  . "cron.use_background_workers = on\n"
	  . "max_worker_processes = 16\n"
	  . "max_prepared_transactions = 2\n");
make_list($node, 'oncall', 0,
	[ '+380501000001', 1, '1 s' ], [ '+380501000002', 2, '1 s' ],
	[ '+380501000003', 3, '1 s' ]);

is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'"),
	'0', 'no worker runs: the library is not preloaded');

my $number = $node->safe_psql('postgres', "SELECT sms_enqueue('by run_once', 'oncall')");
is( $node->safe_psql(
		'postgres', "SELECT smsdispatch.run_once()->>'loopback_submitted'"),
	'1', 'the first run_once() hands level 1 to the (loopback) channel');

# run it now and then, as a scheduler would, until the alarm ends
my $end = time() + 15;
while (time() < $end)
{
	last if $node->safe_psql('postgres',
		"SELECT state FROM smsdispatch.message WHERE number = '$number'") ne 'open';
	$node->safe_psql('postgres', 'SELECT smsdispatch.run_once()');
	usleep(200_000);
}
is( $node->safe_psql(
		'postgres', "SELECT string_agg(e.kind || coalesce(e.level::text, ''), ',' ORDER BY e.id)
		  FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
		 WHERE m.number = '$number'
		   AND e.kind IN ('level_started', 'timed_out', 'escalated', 'exhausted')"),
	'level_started1,timed_out1,escalated2,level_started2,timed_out2,escalated3,'
	  . 'level_started3,timed_out3,exhausted3',
	'run_once() escalates through every level to exhausted, as the worker does');
is( $node->safe_psql(
		'postgres', "SELECT bool_and(l2.submitted_at >= l1.submitted_at + interval '1 s')::text
		  FROM verification.sms_log l1 JOIN verification.sms_log l2
			ON l2.message_id = l1.message_id AND l2.id = l1.id + 1"),
	'true', 'each level only after the previous level timed out');

# spool import through run_once(); nothing moves when the transaction rolls back
open(my $fh, '>', "$spool/.alarm.tmp") or die;
print $fh '<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>from the spool</MSG></SMS>';
close($fh);
rename("$spool/.alarm.tmp", "$spool/alarm.xml") or die;

$node->safe_psql('postgres', 'BEGIN; SELECT smsdispatch.run_once(); ROLLBACK;');
ok(-e "$spool/alarm.xml" && !-e "$spool/processed/alarm.xml",
	'a rolled back run_once() leaves the file where it was');
$node->safe_psql('postgres',
	'BEGIN; SAVEPOINT s; SELECT smsdispatch.run_once(); ROLLBACK TO s; COMMIT;');
ok(-e "$spool/alarm.xml", 'so does one rolled back to a savepoint');
is($node->safe_psql('postgres', "SELECT count(*) FROM smsdispatch.message WHERE source = 'spool'"),
	'0', 'and no alarm is left behind');

my ($ret, $out, $err) = $node->psql('postgres',
	"BEGIN; SELECT smsdispatch.run_once(); PREPARE TRANSACTION 'spool'");
like($err, qr/cannot PREPARE a transaction that imported spool files/,
	'a transaction that imported spool files cannot be prepared');
ok(-e "$spool/alarm.xml", 'and the file stays');

is( $node->safe_psql(
		'postgres', "SELECT smsdispatch.run_once() - 'alarms_checked'"),
	'{"retried": 0, "repeated": 0, "escalated": 0, "exhausted": 0, "timed_out": 0, '
	  . '"failed_over": 0, "spool_failed": 0, "undeliverable": 0, "spool_imported": 1, '
	  . '"loopback_submitted": 1}',
	'run_once() imports the file and sends its level 1 in the same pass');
ok(-e "$spool/processed/alarm.xml" && !-e "$spool/alarm.xml",
	'the imported file moved to processed/ at commit');
is($node->safe_psql('postgres', "SELECT count(*) FROM smsdispatch.message WHERE source = 'spool'"),
	'1', 'the file became one alarm');

# pg_cron runs it
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
my $cron_alarm = $node->safe_psql('postgres', "SELECT sms_enqueue('by pg_cron', 'oncall')");
$node->safe_psql('postgres',
	"SELECT cron.schedule('smsdispatch', '* * * * *', 'SELECT smsdispatch.run_once()')");
ok( wait_until(
		$node,
		"SELECT count(*) > 0 FROM cron.job_run_details WHERE status = 'succeeded'",
		't', 75),
	'the pg_cron job calling run_once() succeeds');
is( $node->safe_psql(
		'postgres', "SELECT l.send_state FROM verification.sms_log l
		  JOIN smsdispatch.message m ON m.id = l.message_id WHERE m.number = '$cron_alarm'"),
	'submitted', 'the job sent the alarm queued before it ran');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM cron.job_run_details WHERE status <> 'succeeded'"),
	'0', 'no job run failed');

$node->stop;
done_testing();

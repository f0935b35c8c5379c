# Done-when 5: a streaming standby of a primary with open alarms runs no
# worker duties; after promotion it continues the escalations with no
# duplicate sends.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsWorkerNode;

my $primary = worker_node('primary', allows_streaming => 1);

# level 1 waits long enough for the standby to be set up and promoted
make_list($primary, 'oncall', 0,
	[ '+380501000001', 1, '6 s' ], [ '+380501000002', 2, '1 s' ],
	[ '+380501000003', 3, '1 s' ]);
$primary->safe_psql('postgres',
	"SELECT sms_enqueue('alarm ' || g, 'oncall') FROM generate_series(1, 20) g");
ok( wait_until(
		$primary,
		"SELECT count(*) FROM verification.sms_log WHERE send_state = 'submitted'",
		'20', 10),
	'the primary sends level 1');

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

is( $standby->safe_psql(
		'postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'"),
	'0', 'no worker runs on the standby');
is( $standby->safe_psql(
		'postgres', "SELECT count(*) FROM smsdispatch.message WHERE state = 'open' AND level = 1"),
	'20', 'the standby has the open alarms');
my ($ret, $out, $err) =
  $standby->psql('postgres', 'SELECT smsdispatch.run_once()');
like($err, qr/smsdispatch.run_once\(\) cannot run during recovery/,
	'run_once() refuses to run on a standby, with a clear error');

# the primary goes away before level 1 times out; the standby takes over
is( $primary->safe_psql(
		'postgres', "SELECT count(*) FROM smsdispatch.message WHERE state = 'open' AND level = 1"),
	'20', 'the primary stops while every alarm still waits on level 1');
$primary->stop('fast');
$standby->promote;
ok( wait_until(
		$standby,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'",
		'1', 10),
	'the worker starts after promotion');
ok( wait_until(
		$standby,
		"SELECT count(*) FROM smsdispatch.message WHERE state = 'exhausted'",
		'20', 30),
	'the promoted standby escalates every alarm to the end');

is(repeated_sends($standby),
	'0', 'no duplicate sends across the promotion');
is( $standby->safe_psql(
		'postgres', "SELECT count(*) FROM verification.sms_log WHERE confirms IS NULL"),
	'60', 'each level sent once to each alarm');
is( $standby->safe_psql(
		'postgres', "SELECT count(*) || ' ' || count(DISTINCT (confirms, phone_number))
		  FROM verification.sms_log WHERE confirms IS NOT NULL"),
	'60 60', 'each phone paged is told of the exhaustion once across the promotion');
is( $standby->safe_psql(
		'postgres', "SELECT count(*) FROM (
			SELECT message_id FROM smsdispatch.event WHERE kind = 'level_started'
			 GROUP BY 1 HAVING string_agg(level::text, ',' ORDER BY id) <> '1,2,3') s"),
	'0', 'no level skipped or repeated');

$standby->stop;
done_testing();

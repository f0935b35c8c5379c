# Done-when 4: kill -9 of the worker in the middle of escalating 500 alarms:
# it comes back, no recipient gets a second SMS for the same level, no level
# is skipped, and every alarm ends in a state DESIGN.md allows.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use SmsWorkerNode;

my $node = worker_node('crash', conf => "restart_after_crash = on\n");

make_list($node, 'oncall', 0,
	[ '+380501000001', 1, '1 s' ], [ '+380501000002', 1, '1 s' ],
	[ '+380501000003', 2, '1 s' ], [ '+380501000004', 3, '1 s' ]);

# 500 alarms in ten waves, so that escalation passes keep coming
for my $wave (1 .. 10)
{
	$node->safe_psql('postgres',
		"SELECT sms_enqueue('wave $wave alarm ' || g, 'oncall') FROM generate_series(1, 50) g");
	usleep(150_000);
}

# Waits until the worker is inside the given duty and returns its pid.
sub worker_busy_in
{
	my ($duty) = @_;
	return $node->safe_psql(
		'postgres', qq{
		DO \$\$
		BEGIN
			FOR i IN 1 .. 20000 LOOP
				PERFORM pg_stat_clear_snapshot();
				PERFORM 1 FROM pg_stat_activity
				 WHERE backend_type = 'smsdispatch worker' AND state = 'active'
				   AND query LIKE '%$duty%';
				EXIT WHEN FOUND;
				PERFORM pg_sleep(0.0005);
			END LOOP;
		END
		\$\$;
		SELECT pid FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'});
}

my $kills = 0;
for my $duty ('escalating', 'loopback', 'escalating')
{
	my $pid = worker_busy_in($duty);
	next unless $pid;
	crash_worker($node, $pid);
	$kills++;
	$node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity
		  WHERE backend_type = 'smsdispatch worker' AND pid <> $pid", '1')
	  or die 'the worker did not come back';
	pass("the worker came back after kill $kills");
}
is($kills, 3, 'the worker was killed three times mid-pass');

ok( $node->poll_query_until(
		'postgres', "SELECT count(*) FROM smsdispatch.message WHERE state = 'exhausted'", '500'),
	'all 500 alarms end exhausted (nobody acked)');

is(repeated_sends($node),
	'0', 'no recipient got a second SMS for the same level');
is($node->safe_psql('postgres', "SELECT count(*) FROM verification.sms_log WHERE confirms IS NULL"),
	'2000', 'every recipient of every alarm got exactly one SMS');
# each exhaustion told every phone its alarm paged, once, kills or not
is( $node->safe_psql(
		'postgres', "SELECT (SELECT count(*) FROM verification.sms_log WHERE confirms IS NOT NULL)
		  || ' ' || (SELECT count(*) FROM (SELECT DISTINCT confirms, phone_number
		                                     FROM verification.sms_log WHERE confirms IS NOT NULL) c)
		  || ' ' || (SELECT count(*) FROM (SELECT DISTINCT message_id, phone_number
		                                     FROM verification.sms_log WHERE message_id IS NOT NULL) p)"),
	'2000 2000 2000', 'every phone paged got one exhaustion confirmation, none twice');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM (
			SELECT message_id FROM smsdispatch.event WHERE kind = 'level_started'
			 GROUP BY 1 HAVING string_agg(level::text, ',' ORDER BY id) <> '1,2,3') s"),
	'0', 'no level was skipped or started twice');
is( $node->safe_psql(
		'postgres', "SELECT string_agg(DISTINCT send_state, ',') FROM verification.sms_log"),
	'submitted', 'no SMS is left queued or sending');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM smsdispatch.message_recipient WHERE status <> 'ACK_TIME_OVER'"),
	'0', 'every recipient timed out');

$node->stop;
done_testing();

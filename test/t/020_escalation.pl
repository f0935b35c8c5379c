# Done-when 1: with no ack, the levels of a three-level list are sent in
# order, each after the previous level's longest timeout, then the alarm is
# exhausted; with repeat = 1 the whole escalation runs twice first.
# Deadlines count from submission, not from queueing.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsWorkerNode;

my $node = worker_node('escalation');

make_list($node, 'noack', 0,
	[ '+380501000001', 1, '1 s' ], [ '+380501000002', 1, '2 s' ],
	[ '+380501000003', 2, '1 s' ], [ '+380501000004', 3, '1 s' ]);
make_list($node, 'twice', 1,
	[ '+380502000001', 1, '1 s' ], [ '+380502000002', 2, '1 s' ],
	[ '+380502000003', 3, '1 s' ]);

my $a = $node->safe_psql('postgres', "SELECT sms_enqueue('no ack', 'noack')");
my $b = $node->safe_psql('postgres', "SELECT sms_enqueue('twice', 'twice')");

ok( wait_until(
		$node,
		"SELECT count(*) FROM smsdispatch.message WHERE state = 'exhausted'",
		'2', 30),
	'both alarms end exhausted');

# the level of each phone is its last digit group's position in the list
my $levels = "(VALUES ('+380501000001', 1), ('+380501000002', 1), ('+380501000003', 2),
	('+380501000004', 3), ('+380502000001', 1), ('+380502000002', 2),
	('+380502000003', 3)) AS lv(phone, level)";

# alarm a: one SMS per recipient, levels in order
is( $node->safe_psql(
		'postgres', "SELECT string_agg(l.phone_number, ',' ORDER BY l.phone_number)
		  FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
		 WHERE m.number = '$a'"),
	'+380501000001,+380501000002,+380501000003,+380501000004',
	'without repeat every recipient is sent the alarm once');

my $gaps = $node->safe_psql(
	'postgres', "WITH s AS (
		SELECT lv.level, min(l.submitted_at) AS first, max(l.submitted_at) AS last
		  FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
		  JOIN $levels ON lv.phone = l.phone_number
		 WHERE m.number = '$a' GROUP BY lv.level)
	SELECT string_agg(round(extract(epoch FROM
			s2.first - (SELECT max(r.sent_at + r.ack_timeout) FROM smsdispatch.message_recipient r
						  JOIN smsdispatch.message m ON m.id = r.message_id
						 WHERE m.number = '$a' AND r.level = s1.level))::numeric, 1)::text, ',' ORDER BY s1.level)
	  FROM s s1 JOIN s s2 ON s2.level = s1.level + 1");
my @gaps = split /,/, $gaps;
is(scalar @gaps, 2, 'levels 2 and 3 followed levels 1 and 2');
for my $i (0 .. $#gaps)
{
	cmp_ok($gaps[$i], '>=', 0,
		"level @{[$i + 2]} starts only after the previous level's longest timeout");
	cmp_ok($gaps[$i], '<', 1.5,
		"level @{[$i + 2]} starts promptly after that timeout ($gaps[$i] s late)");
}
is( $node->safe_psql(
		'postgres', "SELECT (extract(epoch FROM
			(SELECT min(l.submitted_at) FROM verification.sms_log l
			  JOIN smsdispatch.message m ON m.id = l.message_id
			 WHERE m.number = '$a' AND l.phone_number = '+380501000003')
		  - (SELECT min(l.submitted_at) FROM verification.sms_log l
			  JOIN smsdispatch.message m ON m.id = l.message_id
			 WHERE m.number = '$a' AND l.phone_number = '+380501000001')) >= 2)::text"),
	'true',
	'the longest timeout of level 1 (2 s) governs, not the shortest');

is( $node->safe_psql(
		'postgres', "SELECT string_agg(e.kind || e.level, ',' ORDER BY e.id)
		  FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
		 WHERE m.number = '$a' AND e.kind IN ('level_started', 'escalated', 'exhausted')"),
	'level_started1,escalated2,level_started2,escalated3,level_started3,exhausted3',
	'the event trail of alarm a');
is( $node->safe_psql(
		'postgres', "SELECT string_agg(DISTINCT r.status, ',')
		  FROM smsdispatch.message_recipient r JOIN smsdispatch.message m ON m.id = r.message_id
		 WHERE m.number = '$a'"),
	'ACK_TIME_OVER',
	'every recipient of an exhausted alarm is ACK_TIME_OVER');
is( $node->safe_psql(
		'postgres', "SELECT bool_and(r.sent_at = l.submitted_at
			AND r.deadline = l.submitted_at + r.ack_timeout)::text
		  FROM smsdispatch.message_recipient r
		  JOIN verification.sms_log l ON l.id = r.sms_log_id
		  JOIN smsdispatch.message m ON m.id = r.message_id WHERE m.number = '$a'"),
	'true',
	'deadlines count from submission');

# alarm b: the whole escalation twice, in order
is( $node->safe_psql(
		'postgres', "SELECT string_agg(lv.level::text, ',' ORDER BY l.submitted_at, l.id)
		  FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
		  JOIN $levels ON lv.phone = l.phone_number
		 WHERE m.number = '$b'"),
	'1,2,3,1,2,3',
	'with repeat = 1 the levels are sent in order twice');
is( $node->safe_psql(
		'postgres', "SELECT string_agg(e.kind || coalesce(e.level::text, ''), ',' ORDER BY e.id)
		  FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
		 WHERE m.number = '$b' AND e.kind IN ('level_started', 'repeated', 'exhausted')"),
	'level_started1,level_started2,level_started3,repeated1,level_started1,'
	  . 'level_started2,level_started3,exhausted3',
	'the event trail of alarm b');
is($node->safe_psql('postgres', "SELECT round FROM smsdispatch.message WHERE number = '$b'"),
	'2', 'alarm b ended in round 2');

# deadlines count from submission: with no channel submitting, nothing times out
$node->append_conf('postgresql.conf', "smsdispatch.loopback_channel = off\n");
$node->reload;
ok( wait_until(
		$node,
		"SELECT setting FROM pg_settings WHERE name = 'smsdispatch.loopback_channel'",
		'off', 10),
	'reloaded');
# the worker reloads on SIGHUP before its next pass; give it that pass
sleep 1;
my $c = $node->safe_psql('postgres', "SELECT sms_enqueue('queued only', 'noack')");
sleep 3;
is( $node->safe_psql(
		'postgres', "SELECT m.level || ' ' || string_agg(r.status, ',' ORDER BY r.phone)
		  FROM smsdispatch.message m JOIN smsdispatch.message_recipient r ON r.message_id = m.id
		 WHERE m.number = '$c' AND r.level = 1 GROUP BY m.level"),
	'1 NOT_SENT,NOT_SENT',
	'a level nobody has been sent yet does not time out, however long it waits');

# SIGHUP turns the channel back on: the alarm is submitted and escalates
$node->append_conf('postgresql.conf', "smsdispatch.loopback_channel = on\n");
$node->reload;
ok( wait_until(
		$node,
		"SELECT level FROM smsdispatch.message WHERE number = '$c'",
		'2', 10),
	'after the reload the level is submitted and escalates on its own timeout');

$node->stop;
done_testing();

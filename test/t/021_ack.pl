# Done-when 2: an ack at level 2 through sms_receive ("ok 0042 on it") ends
# the alarm and level 3 is never sent; an ack from a level-1 recipient after
# escalation also ends it; a stranger's reply is not_recipient; a second ack
# is duplicate_ack; sms_cancel stops the escalation.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsWorkerNode;

my $node = worker_node('ack');

# level 2 waits long enough to be acked while it runs; level 3 is quick
make_list($node, 'oncall', 0,
	[ '+380501000001', 1, '1 s' ], [ '+380501000002', 2, '1 min' ],
	[ '+380501000003', 3, '1 s' ]);

my $first = $node->safe_psql('postgres', "SELECT sms_enqueue('ack at level 2', 'oncall')");
my $second = $node->safe_psql('postgres', "SELECT sms_enqueue('ack from level 1', 'oncall')");
my $third = $node->safe_psql('postgres', "SELECT sms_enqueue('cancelled', 'oncall')");

# the third is cancelled while level 1 waits for its ack
ok( wait_until(
		$node,
		"SELECT r.status FROM smsdispatch.message_recipient r
		   JOIN smsdispatch.message m ON m.id = r.message_id
		  WHERE m.number = '$third' AND r.level = 1",
		'NOT_YET_ACK', 10),
	'level 1 of the third alarm is sent');
is($node->safe_psql('postgres', "SELECT sms_cancel('$third')"), 't', 'sms_cancel says true');

ok( wait_until(
		$node,
		"SELECT count(*) FROM smsdispatch.message
		  WHERE number IN ('$first', '$second') AND level = 2",
		'2', 10),
	'both other alarms escalate to level 2');
ok( wait_until(
		$node,
		"SELECT count(*) FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
		  WHERE m.number IN ('$first', '$second') AND l.phone_number = '+380501000002'
		    AND l.send_state = 'submitted'",
		'2', 10),
	'level 2 is submitted');

is( $node->safe_psql(
		'postgres', "SELECT sms_receive('+380509999999', 'ok $first on it')"),
	'not_recipient',
	"a stranger's reply is not_recipient");
is( $node->safe_psql(
		'postgres', "SELECT sms_receive('+38 (050) 100-00-02', 'ok $first on it')"),
	'ack',
	'the level-2 recipient acks with the number in a sentence');
is( $node->safe_psql(
		'postgres', "SELECT sms_receive('+380501000002', 'ok $first on it')"),
	'duplicate_ack',
	'a second ack is duplicate_ack');
is( $node->safe_psql(
		'postgres', "SELECT sms_receive('+380501000001', '$second seen')"),
	'ack',
	'a level-1 recipient acks after the escalation to level 2');

# give the escalation well past level 3's timeout to (wrongly) go on
sleep 3;
is( $node->safe_psql(
		'postgres', "SELECT string_agg(number || ' ' || state || ' ' || coalesce(acked_by, '-'), ', ' ORDER BY number)
		  FROM smsdispatch.message"),
	"$first acked +380501000002, $second acked +380501000001, $third cancelled -",
	'acked and cancelled alarms are closed, by the right phone');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM verification.sms_log WHERE phone_number = '+380501000003'"),
	'0', 'level 3 is never sent');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
		  WHERE m.number = '$third' AND l.phone_number <> '+380501000001'"),
	'0', 'the cancelled alarm never reaches level 2');
is( $node->safe_psql(
		'postgres', "SELECT string_agg(m.number || ':' || e.kind, ',' ORDER BY m.number, e.id)
		  FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
		 WHERE e.kind IN ('acked', 'duplicate_ack', 'cancelled', 'escalated', 'exhausted')"),
	"$first:escalated,$first:acked,$first:duplicate_ack,$second:escalated,$second:acked,$third:cancelled",
	'the event trail records the acks and the cancel, and nothing after them');
is( $node->safe_psql(
		'postgres', "SELECT string_agg(r.phone || ' ' || r.status, ', ' ORDER BY r.phone)
		  FROM smsdispatch.message_recipient r JOIN smsdispatch.message m ON m.id = r.message_id
		 WHERE m.number = '$first'"),
	'+380501000001 ACK_TIME_OVER, +380501000002 ACK, +380501000003 NOT_SENT',
	'the acking recipient is ACK, level 3 was never sent');
is( $node->safe_psql(
		'postgres', "SELECT string_agg(outcome, ',' ORDER BY id) FROM smsdispatch.inbox"),
	'not_recipient,ack,duplicate_ack,ack',
	'every reply is in the inbox with its outcome');

$node->stop;
done_testing();

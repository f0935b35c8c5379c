# Issue 13, Done when 4: an ack at level 2 sends "acknowledged" to the acker
# and "taken by" to the level-1 recipients, and nothing to level 3; a
# cancel notifies those paged; no confirmation is escalated or sent twice,
# a kill -9 of the worker in the middle of an exhaustion's confirmations
# included.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use SmsWorkerNode;

my $node = worker_node('confirm', conf => "restart_after_crash = on\n");

$node->safe_psql('postgres', q{
	SELECT sms_list_create('oncall');
	SELECT sms_list_add('oncall', '+380501000001', 1, '1 s', 'Alice');
	SELECT sms_list_add('oncall', '+380501000011', 1, '1 s', 'Ann');
	SELECT sms_list_add('oncall', '+380501000002', 2, '1 min', 'Ben');
	SELECT sms_list_add('oncall', '+380501000003', 3, '1 s', 'Carol');
	SELECT sms_list_create('slow');
	SELECT sms_list_add('slow', '+380501000001', 1, '1 min', 'Alice');
	SELECT sms_list_add('slow', '+380501000011', 1, '1 min', 'Ann');
	SELECT sms_list_add('slow', '+380501000002', 2, '1 min', 'Ben')});

# every confirmation of an alarm: phone, text, state, priority, channel
sub confirmations
{
	my ($number) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT string_agg(l.phone_number || ' ' || l.body || ' ' || l.send_state
						  || ' p' || l.priority || ' ' || l.channel, E'\n' ORDER BY l.id)
		  FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.confirms
		 WHERE m.number = '$number'});
}

my $first = $node->safe_psql('postgres', "SELECT sms_enqueue('ack at level 2', 'oncall')");
my $second = $node->safe_psql('postgres', "SELECT sms_enqueue('cancelled at level 1', 'slow')");

ok( wait_until(
		$node,
		"SELECT count(*) FROM smsdispatch.message_recipient r JOIN smsdispatch.message m ON m.id = r.message_id
		  WHERE m.number = '$second' AND r.level = 1 AND r.status = 'NOT_YET_ACK'",
		'2', 10),
	'level 1 of the second alarm is paged');
is($node->safe_psql('postgres', "SELECT sms_cancel('$second')"), 't', 'the second alarm is cancelled');

ok( wait_until(
		$node,
		"SELECT r.status FROM smsdispatch.message_recipient r JOIN smsdispatch.message m ON m.id = r.message_id
		  WHERE m.number = '$first' AND r.level = 2",
		'NOT_YET_ACK', 10),
	'the first alarm reaches level 2');
is($node->safe_psql('postgres', "SELECT sms_receive('+380501000002', 'ok $first')"),
	'ack', 'Ben acks at level 2');

ok( wait_until(
		$node,
		"SELECT count(*) FROM verification.sms_log WHERE confirms IS NOT NULL AND send_state = 'submitted'",
		'5', 10),
	'the five confirmations are submitted');
is( confirmations($first),
	"+380501000002 [$first] acknowledged submitted p1 ip2sms\n"
	  . "+380501000001 [$first] taken by Ben submitted p1 ip2sms\n"
	  . "+380501000011 [$first] taken by Ben submitted p1 ip2sms",
	'the acker is told acknowledged, level 1 taken by Ben, at alarm priority on their channel');
is( confirmations($second),
	"+380501000001 [$second] cancelled submitted p1 ip2sms\n"
	  . "+380501000011 [$second] cancelled submitted p1 ip2sms",
	'the cancel is told to those paged');

# well past every timeout: nothing more is sent, nothing escalates
sleep 3;
is($node->safe_psql('postgres', "SELECT count(*) FROM verification.sms_log WHERE phone_number = '+380501000003'"),
	'0', 'level 3 is sent nothing, neither the alarm nor a confirmation');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM verification.sms_log WHERE confirms IS NOT NULL}),
	'5', 'no confirmation is sent twice');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(m.number || ':' || e.kind, ',' ORDER BY e.id)
		  FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
		 WHERE e.kind IN ('escalated', 'timed_out', 'send_failed', 'exhausted', 'sent')
		   AND e.at > (SELECT max(at) FROM smsdispatch.event WHERE kind = 'acked')}),
	'', 'after the ack, no confirmation was taken for a page: nothing sent, timed out or escalated');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(r.phone || ' ' || r.status, ', ' ORDER BY r.level, r.phone)
		  FROM smsdispatch.message_recipient r JOIN smsdispatch.message m ON m.id = r.message_id
		 WHERE m.number = '$second'}),
	'+380501000001 CLOSED, +380501000011 CLOSED, +380501000002 NOT_SENT',
	'recipients waiting on the cancelled alarm leave NOT_YET_ACK: CLOSED');

# kill -9 of the worker while the exhaustion's confirmations are being
# queued: inside the worker's transaction, the trigger waits while the
# flag row is there, and the test removes it only after the crash
$node->safe_psql('postgres', q{
	SELECT sms_list_create('short');
	SELECT sms_list_add('short', '+380501000021', 1, '1 s', 'Dan');
	SELECT sms_list_add('short', '+380501000022', 1, '1 s', 'Eve');
	CREATE TABLE public.hold_confirmations (held boolean);
	INSERT INTO public.hold_confirmations VALUES (true);
	CREATE FUNCTION public.slow_confirmation() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		WHILE NEW.confirms IS NOT NULL AND EXISTS (SELECT 1 FROM public.hold_confirmations) LOOP
			PERFORM pg_sleep(0.1);
		END LOOP;
		RETURN NEW;
	END $$;
	CREATE TRIGGER slow_confirmation BEFORE INSERT ON verification.sms_log
		FOR EACH ROW EXECUTE FUNCTION public.slow_confirmation()});
my $third = $node->safe_psql('postgres', "SELECT sms_enqueue('nobody answers', 'short')");
ok( wait_until(
		$node,
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker' AND wait_event = 'PgSleep'",
		'1', 15),
	'the worker is inside the exhaustion, queueing its confirmations');
my $pid = worker_pid($node);
crash_worker($node, $pid);
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'")
  or die 'the worker did not come back';
is($node->safe_psql('postgres', q{
		SELECT count(*) FROM verification.sms_log WHERE phone_number IN ('+380501000021', '+380501000022')
		   AND confirms IS NOT NULL}),
	'0', 'the killed transaction left no confirmation');
$node->safe_psql('postgres', 'DELETE FROM public.hold_confirmations');
ok( wait_until(
		$node,
		"SELECT count(*) FROM verification.sms_log WHERE confirms IS NOT NULL AND send_state = 'submitted'
		   AND phone_number IN ('+380501000021', '+380501000022')",
		'2', 30),
	'after the crash and restart, the exhaustion confirmations are submitted');
sleep 2;
is( confirmations($third),
	"+380501000021 [$third] exhausted: nobody acknowledged it submitted p1 ip2sms\n"
	  . "+380501000022 [$third] exhausted: nobody acknowledged it submitted p1 ip2sms",
	'each person paged is told once: none lost, none doubled');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
		 WHERE m.number = '$third' AND e.kind = 'exhausted'}),
	'1', 'the alarm was exhausted once');
is(repeated_sends($node), '0', 'no alarm page was sent twice');

$node->stop;
done_testing();

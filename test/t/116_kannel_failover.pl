# Failover from a registered Kannel channel, which on-call staff rely on
# when the SMSC link behind Kannel is gone: with failover_to => 'ip2sms',
# once kannel1 has not been ok for smsdispatch.failover_after (its smsbox
# stopped), a new alarm on it leaves through IP2SMS at once, sent once,
# its kannel1 row failed "failed over"; a channel without failover_to keeps
# its alarms waiting and says so (undeliverable). Once smsbox is back and
# kannel1 has been ok for smsdispatch.failback_after, alarms go out through
# Kannel again.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;
use KannelTest;
use SmsWorkerNode;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('kannel_failover',
	"smsdispatch.failover_after = '3s'\nsmsdispatch.failback_after = '5s'\n");
my $kannel = kannel_start();
my $password = "${PostgreSQL::Test::Utils::tmp_check}/kannel_failover.password";
append_to_file($password, "kannel-test\n");
chmod 0600, $password;
for ([ 'kannel1', q{, 'failover_to', 'ip2sms'} ], [ 'kannel2', '' ])
{
	$node->safe_psql('postgres', qq{
		SELECT smsdispatch.channel_add('$_->[0]', 'kannel', jsonb_build_object(
			'url', 'http://127.0.0.1:$kannel->{sendsms_port}/cgi-bin/sendsms', 'username', 'tester',
			'password_file', '$password', 'from', '+380990000000',
			'callback_url', 'http://127.0.0.1:1'$_->[1]))});
}
make_list($node, 'noc', 0, [ '+380501116001', 1, '1 hour' ]);
make_list($node, 'yard', 0, [ '+380501116002', 1, '1 hour' ]);

# the state of a channel and for how long it has been in it, in seconds
sub state_for
{
	my ($channel) = @_;
	return $node->safe_psql('postgres', qq{SELECT state || ' ' || (now() - since > interval '4 s')
		FROM smsdispatch.channel_health WHERE channel = '$channel'});
}

# smsbox down: the queued text SMS find both channels down
$kannel->stop_smsbox;
$node->safe_psql('postgres', q{SELECT sms_send('+380501116010', 'probe 1', channel => 'kannel1'),
	sms_send('+380501116011', 'probe 2', channel => 'kannel2')});
ok(wait_until($node, q{SELECT string_agg(channel, ',' ORDER BY channel) FROM smsdispatch.channel_failover
		WHERE channel LIKE 'kannel%'}, 'kannel1', 30),
	'kannel1, down for longer than failover_after, failed over; kannel2 has nowhere to go')
  or diag(state_for('kannel1') . ' / ' . state_for('kannel2'));
like(state_for('kannel2'), qr/^down /, 'kannel2 is down too');

my $number = $node->safe_psql('postgres', q{SELECT sms_enqueue('core router down', 'noc', 'kannel1')});
ok(wait_until($node, q{SELECT string_agg(channel || ' ' || send_state, ', ' ORDER BY id)
		FROM verification.sms_log WHERE phone_number = '+380501116001'},
	'kannel1 failed, ip2sms submitted', 15),
	'the alarm on kannel1 leaves through IP2SMS');
my $took = $node->safe_psql('postgres', qq{SELECT extract(epoch FROM l.submitted_at - m.created_at)
	FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
	WHERE m.number = '$number' AND l.channel = 'ip2sms'});
cmp_ok($took, '<', 3, "within 3 s of its COMMIT ($took s), not failover_after later");
like($node->safe_psql('postgres', q{SELECT last_error FROM verification.sms_log
		WHERE phone_number = '+380501116001' AND channel = 'kannel1'}),
	qr/^failed over to ip2sms as sms_log \d+: channel kannel1 is down$/, 'the kannel1 row says where it went');
is(scalar(grep { $_->{kind} eq 'send' && $_->{text} eq "[$number] core router down" } $mock->log_entries),
	1, 'the gateway got it once');

my $number2 = $node->safe_psql('postgres', q{SELECT sms_enqueue('gate open', 'yard', 'kannel2')});
ok(wait_until($node, qq{SELECT count(*) FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
		WHERE m.number = '$number2' AND e.kind = 'undeliverable'
		  AND e.detail LIKE '%channel kannel2 is down%it fails over to no other%'}, '1', 15),
	'the alarm on kannel2, which fails over nowhere, is undeliverable, with the reason');
is($node->safe_psql('postgres', q{SELECT send_state FROM verification.sms_log WHERE phone_number = '+380501116002'}),
	'queued', 'and its SMS waits for kannel2');

# smsbox back: after failback_after kannel1 takes its alarms again
$kannel->start_smsbox;
ok(wait_until($node, q{SELECT count(*) FROM smsdispatch.channel_failover WHERE channel = 'kannel1'}, '0', 30),
	'kannel1 takes its SMS back once ok for failback_after');
my $number3 = $node->safe_psql('postgres', q{SELECT sms_enqueue('boiler low', 'noc', 'kannel1')});
ok(poll_until(sub { grep { /boiler low/ } $kannel->received }, 20),
	'an alarm on kannel1 reaches the SMSC through Kannel again');
is(scalar(grep { $_->{kind} eq 'send' && $_->{text} eq "[$number3] boiler low" } $mock->log_entries),
	0, 'not through IP2SMS');

$kannel->stop;
$node->stop;
$mock->stop;
done_testing();

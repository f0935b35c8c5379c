# A Kannel that takes a request and never answers: the SMS becomes unknown
# after smsdispatch.kannel_timeout (it may have been sent, so it is never
# sent again), the channel is down, and the other Kannel channel's SMS
# queued in the same COMMIT leaves without waiting for it (within that
# timeout plus margin here; test/t/117 holds the tighter bound).
use strict;
use warnings;
use Time::HiRes qw(time);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use KannelTest;
use SmsWorkerNode;

my $node = worker_node('kannel_hang',
	conf => "smsdispatch.loopback_channel = off\nsmsdispatch.kannel_timeout = '1s'\n");
my $kannel = kannel_start();

# the hanging gateway: accepts, reads the request, never answers
my ($hang_port, $hang_requests) = hanging_gateway();

my $password_file = "${PostgreSQL::Test::Utils::tmp_check}/kannel.password";
append_to_file($password_file, "kannel-test\n");
chmod 0600, $password_file;
for ([ 'hang1', $hang_port ], [ 'kannel1', $kannel->{sendsms_port} ])
{
	$node->safe_psql('postgres', qq{
		SELECT smsdispatch.channel_add('$_->[0]', 'kannel', jsonb_build_object(
			'url', 'http://127.0.0.1:$_->[1]/cgi-bin/sendsms', 'username', 'tester',
			'password_file', '$password_file', 'from', '+380990000000',
			'callback_url', 'http://127.0.0.1:1'))});
}

my $start = time();
my ($hung, $ok) = split /\|/, $node->safe_psql('postgres', q{
	SELECT sms_send('+380501000001', 'into the void', channel => 'hang1') || '|' ||
		   sms_send('+380501000002', 'meanwhile', channel => 'kannel1')});
ok(wait_until($node, "SELECT send_state FROM verification.sms_log WHERE id = $ok", 'submitted', 30),
	'the SMS of the channel that works left');
my $took = time() - $start;
cmp_ok($took, '<', 1 + 4, "within kannel_timeout (1 s) plus margin of its COMMIT (took ${took}s)");
ok(poll_until(sub { grep { /\+380501000002 text meanwhile$/ } $kannel->received }, 30),
	'and reached the SMSC');

ok(wait_until($node,
		"SELECT send_state || ' ' || attempts FROM verification.sms_log WHERE id = $hung",
		'unknown 1', 30),
	'the SMS the hanging gateway took is unknown, its attempt counted');
like($node->safe_psql('postgres', "SELECT last_error FROM verification.sms_log WHERE id = $hung"),
	qr/^no answer from Kannel after the request was written \(.*\); it may have been sent: not re-sent$/,
	'last_error says why');
is($node->safe_psql('postgres', "SELECT state FROM smsdispatch.channel_health WHERE channel = 'hang1'"),
	'down', 'the hanging channel is down');

# several more passes: an unknown row is never sent again
$node->safe_psql('postgres', "SELECT sms_send('+380501000003', 'after', channel => 'kannel1')");
ok(poll_until(sub { grep { /\+380501000003 text after$/ } $kannel->received }, 30), 'later passes ran');
sleep 2;
is(join(',', $hang_requests->()), 'into the void', 'the hanging gateway got the SMS once');
is($node->safe_psql('postgres', "SELECT send_state FROM verification.sms_log WHERE id = $hung"),
	'unknown', 'still unknown');

$kannel->stop;
done_testing();

# Faults of a registered Kannel channel: while smsbox is down its SMS stay
# queued with their attempts untouched, channel_health says the channel is
# not ok and a WARNING says so; once smsbox is back they leave, each once.
# A wrong password (Kannel's 403) makes the channel auth_failed, loudly, and
# its SMS stay queued with their attempts untouched. An SMS Kannel refuses
# (400) spends its attempts and fails with Kannel's answer.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use KannelTest;
use SmsWorkerNode;

my $node = worker_node('kannel_faults',
	conf => "smsdispatch.loopback_channel = off\nsmsdispatch.max_attempts = 2\n");
my $kannel = kannel_start();

my $good = "${PostgreSQL::Test::Utils::tmp_check}/kannel1.password";
append_to_file($good, "kannel-test\n");
chmod 0600, $good;
my $wrong = "${PostgreSQL::Test::Utils::tmp_check}/kannel2.password";
append_to_file($wrong, "not-the-password\n");
chmod 0600, $wrong;
for ([ 'kannel1', $good ], [ 'kannel2', $wrong ])
{
	$node->safe_psql('postgres', qq{
		SELECT smsdispatch.channel_add('$_->[0]', 'kannel', jsonb_build_object(
			'url', 'http://127.0.0.1:$kannel->{sendsms_port}/cgi-bin/sendsms', 'username', 'tester',
			'password_file', '$_->[1]', 'from', '+380990000000', 'callback_url', 'http://127.0.0.1:1'))});
}

sub rows
{
	my ($channel) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(send_state || ' ' || attempts, ',' ORDER BY id)
		   FROM verification.sms_log WHERE channel = '$channel'");
}

sub health
{
	my ($channel) = @_;
	return $node->safe_psql('postgres',
		"SELECT state FROM smsdispatch.channel_health WHERE channel = '$channel'");
}

# smsbox down
$kannel->stop_smsbox;
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres',
	"SELECT sms_send('+38050100000' || i, 'fault ' || i, channel => 'kannel1') FROM generate_series(1, 3) i");
ok(wait_until($node, "SELECT state FROM smsdispatch.channel_health WHERE channel = 'kannel1'", 'down', 30),
	'with smsbox stopped, channel_health says kannel1 is down');
ok($node->wait_for_log(qr/WARNING:  smsdispatch: channel kannel1 is down: Kannel cannot be reached/, $log_offset),
	'a WARNING says so');
# a few more passes: the probes fail too (a probe on the wire is 'sending'
# for a moment: the rows are looked at between probes)
sleep 3;
ok(wait_until($node,
		"SELECT string_agg(send_state || ' ' || attempts, ',' ORDER BY id)
		   FROM verification.sms_log WHERE channel = 'kannel1'",
		'queued 0,queued 0,queued 0', 10),
	'its SMS stay queued, attempts untouched');
is(scalar($kannel->received), 0, 'nothing reached the SMSC');

$kannel->start_smsbox;
ok(wait_until($node, "SELECT count(*) FROM verification.sms_log WHERE channel = 'kannel1' AND send_state = 'submitted'",
		'3', 60),
	'once smsbox is back they leave');
ok(poll_until(sub { $kannel->received == 3 }, 30), 'the SMSC received three SMS');
sleep 2;
my %seen;
$seen{$_}++ for $kannel->received;
is(join(',', sort values %seen), '1,1,1', 'each of them once');
is(health('kannel1'), 'ok', 'kannel1 is ok again');

# wrong password: 403
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT sms_send('+380502000001', 'auth', channel => 'kannel2')");
ok(wait_until($node, "SELECT state FROM smsdispatch.channel_health WHERE channel = 'kannel2'", 'auth_failed', 30),
	'a wrong password makes kannel2 auth_failed');
ok($node->wait_for_log(qr/WARNING:  smsdispatch: channel kannel2 is auth_failed: HTTP 403 from Kannel/, $log_offset),
	'loudly');
like($node->safe_psql('postgres', "SELECT last_error FROM smsdispatch.channel_health WHERE channel = 'kannel2'"),
	qr/check the username and password_file of channel kannel2/, 'channel_health says what to check');
is(rows('kannel2'), 'queued 0', 'its SMS stays queued, attempts untouched');
is(health('kannel1'), 'ok', 'the other channel is not affected');
unlike(slurp_file($node->logfile), qr/not-the-password|kannel-test/, 'no password reached the server log');

# an SMS Kannel refuses: no sender (400)
$node->safe_psql('postgres', qq{
	SELECT smsdispatch.channel_add('kannel3', 'kannel', jsonb_build_object(
		'url', 'http://127.0.0.1:$kannel->{sendsms_port}/cgi-bin/sendsms', 'username', 'tester',
		'password_file', '$good', 'callback_url', 'http://127.0.0.1:1'))});
my $refused = $node->safe_psql('postgres', "SELECT sms_send('+380502000002', 'no sender', channel => 'kannel3')");
ok(wait_until($node, "SELECT send_state || ' ' || attempts FROM verification.sms_log WHERE id = $refused",
		'failed 2', 30),
	'an SMS Kannel refuses (400) fails after smsdispatch.max_attempts (2)');
is($node->safe_psql('postgres', "SELECT last_error FROM verification.sms_log WHERE id = $refused"),
	'gave up after 2 attempts: Kannel refused the SMS: HTTP 400 Sender missing and no global set, rejected',
	'with Kannel\'s answer in last_error');
is(health('kannel3'), 'ok', 'a refused SMS is not the channel\'s failure');

$kannel->stop;
done_testing();

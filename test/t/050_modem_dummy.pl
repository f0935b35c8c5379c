# The modem sidecar end to end through gammu's dummy phone: an alarm's SMS
# reaches the phone, a reply placed in the phone's inbox acknowledges the
# alarm and escalation stops; multipart replies are joined, a message read
# twice is handled once, the heartbeat row and SIGTERM behave.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../modem";
use ModemTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = modem_node('modem_dummy');
my $dir = "${PostgreSQL::Test::Utils::tmp_check}/dummy_phone";
my $rc = dummy_gammurc($dir);
my $log = "${PostgreSQL::Test::Utils::tmp_check}/sidecar_dummy.log";
my $dsn = $node->connstr('postgres');

$node->safe_psql('postgres', q{
	SELECT sms_list_create('oncall');
	SELECT sms_list_add('oncall', '+380501111111', 1, '1 hour', 'Alice');
	SELECT sms_list_add('oncall', '+380502222222', 2, '1 hour', 'Bob');
});

my $pid = start_sidecar(dsn => $dsn, gammurc => $rc, name => 'dummy1', log => $log);

my $number = $node->safe_psql('postgres',
	q{SELECT sms_enqueue('Disk full on db1', 'oncall', channel => 'modem')});
like($number, qr/^\d{4}$/, 'alarm queued for the modem channel');

is(wait_for_value($node,
		q{SELECT send_state || ' ' || gateway_id || ' ' || gateway_status
		    FROM verification.sms_log WHERE phone_number = '+380501111111'},
		'submitted 255 Accepted'),
	'submitted 255 Accepted', 'level-1 SMS submitted with the dummy phone\'s message reference');

my $phone_log = slurp_file("$dir.log");
like($phone_log, qr/Recipient number "\+380501111111"/, 'the dummy phone was asked to send to Alice');
like($phone_log, qr/\Q[$number] Disk full on db1\E/, 'with the alarm text and its number');

is($node->safe_psql('postgres', q{
	SELECT status FROM smsdispatch.message_recipient WHERE level = 1}),
	'NOT_YET_ACK', 'Alice now waits for her ack timeout');

# the reply, split across two parts so that only the joined text names the alarm
my $n1 = substr($number, 0, 2);
my $n2 = substr($number, 2);
put_dummy_sms($dir, 1, number => '+380501111111', text => "ack $n1",
	udh => '0500030A0201', date => '20261122T050000Z');
put_dummy_sms($dir, 2, number => '+380501111111', text => "$n2 on it",
	udh => '0500030A0202', date => '20261122T050001Z');

is(wait_for_value($node, q{SELECT state FROM smsdispatch.message}, 'acked'),
	'acked', 'the reply from the dummy inbox acknowledged the alarm');
is($node->safe_psql('postgres', q{SELECT sender || '|' || body || '|' || outcome FROM smsdispatch.inbox}),
	"+380501111111|ack $number on it|ack", 'both parts were joined into one reply');
ok(wait_until(sub { dummy_inbox_count($dir) == 0 }),
	'the reply was deleted from the phone after the database committed it');

# escalation stopped: Bob is never handed the alarm
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM verification.sms_log WHERE phone_number = '+380502222222'}),
	'0', 'no level-2 SMS exists');
is($node->safe_psql('postgres', q{
	SELECT status || ' ' || (sms_log_id IS NULL) FROM smsdispatch.message_recipient WHERE level = 2}),
	'NOT_SENT true', 'Bob stays NOT_SENT');
is($node->safe_psql('postgres', q{
	SELECT status FROM smsdispatch.message_recipient WHERE level = 1}),
	'ACK', 'Alice is ACK');

# the same message read again (a delete lost, a notification and a poll)
put_dummy_sms($dir, 3, number => '+380501111111', text => "ack $n1",
	udh => '0500030A0201', date => '20261122T050000Z');
put_dummy_sms($dir, 4, number => '+380501111111', text => "$n2 on it",
	udh => '0500030A0202', date => '20261122T050001Z');
ok(wait_until(sub { dummy_inbox_count($dir) == 0 }), 'the repeated message left the phone');
is($node->safe_psql('postgres', q{SELECT count(*) FROM smsdispatch.inbox}),
	'1', 'and was handed to sms_receive only once');

# a reply nobody expects is recorded, not lost
put_dummy_sms($dir, 5, number => '+380509999999', text => 'hello there',
	date => '20261122T050100Z');
is(wait_for_value($node, q{SELECT outcome FROM smsdispatch.inbox WHERE sender = '+380509999999'},
		'no_number'), 'no_number', 'an unrelated SMS goes to the inbox as no_number');

# Alice's ack is confirmed to her on the channel that paged her
is(wait_for_value($node, q{
	SELECT channel || ' ' || body || ' ' || send_state FROM verification.sms_log
	 WHERE confirms IS NOT NULL}, "modem [$number] acknowledged submitted"),
	"modem [$number] acknowledged submitted", 'the ack is confirmed to Alice through the modem');

# the heartbeat row
is(wait_for_value($node, q{
	SELECT imei || ' ' || imsi || ' ' || signal_percent || ' ' || sent || ' ' || received
	  FROM smsdispatch.modem WHERE name = 'dummy1'},
		'999999999999999 994299429942994 42 2 2'),
	'999999999999999 994299429942994 42 2 2',
	'heartbeat: IMEI, IMSI, signal, two sent (the alarm, then its confirmation to Alice), two received');
is($node->safe_psql('postgres', q{SELECT count(*) FROM smsdispatch.modem_stale}),
	'0', 'a live modem is not stale');

# SIGHUP reopens the log (logrotate moved it)
rename($log, "$log.1") or die "rename: $!";
kill 'HUP', $pid;
ok(wait_until(sub { -e $log && slurp_file($log) =~ /log reopened/ }),
	'SIGHUP reopens the log file under its name');

# a plain SMS through the modem channel, in Cyrillic
$node->safe_psql('postgres',
	q{SELECT sms_send('+380503333333', 'Код: 4812', 'verification', channel => 'modem')});
is(wait_for_value($node, q{
	SELECT send_state FROM verification.sms_log WHERE phone_number = '+380503333333'}, 'submitted'),
	'submitted', 'sms_send(..., channel => modem) is sent by the sidecar');
like(slurp_file($log), qr/submitted, reference 255/, 'and logged in the reopened file');

# SIGTERM: exit 0, the heartbeat stops, the view shows it once stale
is(stop_sidecar($pid), 0, 'SIGTERM stops the sidecar with exit status 0');
like(slurp_file($log), qr/stopped/, 'the log says it stopped');
$node->safe_psql('postgres',
	q{UPDATE smsdispatch.modem SET last_seen = now() - interval '10 min'});
is($node->safe_psql('postgres', q{SELECT name FROM smsdispatch.modem_stale}),
	'dummy1', 'a modem silent for three heartbeats shows in modem_stale');

# command-line errors
my $prog = sidecar_program();
my ($stdout, $stderr);
my $rc2 = system("$prog --dsn '$dsn' >/dev/null 2>&1") >> 8;
is($rc2, 2, 'a missing --gammurc is a usage error (exit 2)');
$rc2 = system("$prog --gammurc $rc --heartbeat 0 >/dev/null 2>&1") >> 8;
is($rc2, 2, 'a heartbeat of 0 seconds is refused (exit 2)');
$rc2 = system("$prog --gammurc $dir/no-such-file --log $log.bad >/dev/null 2>&1") >> 8;
is($rc2, 1, 'an unreadable gammurc stops it at start (exit 1)');
like(slurp_file("$log.bad"), qr/could not read gammurc/, 'and the log names the file');

$node->stop;
done_testing();

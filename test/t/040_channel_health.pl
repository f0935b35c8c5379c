# Channel health and no silent loss (issue 11, Done when 4; Build 5 and 7):
# - a gateway answering 401 and no other channel: within 20 s the alarm has
#   an 'undeliverable' event, a LISTENing session got NOTIFY smsdispatch_alarm,
#   the server log has the WARNING (without the password); after 20 s the
#   alarm is still open on level 1, its SMS queued with no attempt burnt, and
#   smsdispatch.channel_health says auth_failed; after the right password
#   and a reload the SMS leaves, escalation goes on from level 1 to level 2,
#   and the verification SMS queued meanwhile are sent, not failed;
# - a gateway nobody listens on: after three connection failures the channel
#   is 'down' and paused (the row's attempts stop counting), one WARNING names
#   smsdispatch.ip2sms_url; back to the right URL and a reload, it drains.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use IO::Socket::INET;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use Ip2smsMock;

my $wrong = 'wrong-Pa55word-41';
my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('channel_health', "smsdispatch.max_attempts = 5\n");
my $pwfile = $mock->password_file($wrong);
$node->reload;

$node->safe_psql('postgres', q{
	SELECT sms_list_create('oncall');
	SELECT sms_list_add('oncall', '+380504441001', 1, '3 s', 'Alice');
	SELECT sms_list_add('oncall', '+380504441005', 2, '1 hour', 'Bob')});

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN smsdispatch_alarm');
my $log_offset = -s $node->logfile;
my $t0 = time;
$node->safe_psql('postgres', q{
	SELECT sms_send('+38050444200' || g, 'code ' || g, 'verification') FROM unnest(ARRAY[1, 5, 6]) AS g});
my $number = $node->safe_psql('postgres', q{SELECT sms_enqueue('pump 3 stopped', 'oncall')});
like($number, qr/^\d{4}$/, 'alarm queued on the IP2SMS channel');

my $undeliverable = q{SELECT count(*) FROM smsdispatch.event e JOIN smsdispatch.message m
	ON m.id = e.message_id WHERE m.number = '} . $number . q{' AND e.kind = 'undeliverable'};
ok($node->poll_query_until('postgres', "SELECT ($undeliverable) = 1"), 'an undeliverable event is written');
my $took = time - $t0;
cmp_ok($took, '<', 20, sprintf('within 20 s of the enqueue (%.1f s)', $took));

# psql prints notifications after the next command it runs
my $out = $listener->query_safe('SELECT 1');
$out .= $listener->{stderr} // '';
my ($payload) = $out =~ /Asynchronous notification "smsdispatch_alarm" with payload "(.*)" received/;
ok(defined $payload, 'the LISTENing session got NOTIFY smsdispatch_alarm') or diag("psql said: $out");
my $json = eval { JSON::PP->new->decode($payload // '') } // {};
is($json->{number}, $number, 'the payload names the alarm');
is($json->{state}, 'undeliverable', 'the payload says undeliverable');
like($json->{reason} // '', qr/channel ip2sms is auth_failed.*HTTP 401.*no other channel is ok/,
	'the payload says why: the channel refuses the credentials and nothing else can send');
$listener->quit;

sleep(20 - (time - $t0)) if time - $t0 < 20;
is($node->safe_psql('postgres', qq{SELECT state || ' ' || level FROM smsdispatch.message WHERE number = '$number'}),
	'open 1', 'after 20 s the alarm is still open, on level 1');
# (a probe, every 5 s, holds the row 'sending' for a moment)
ok($node->poll_query_until('postgres', q{SELECT r.status || ' ' || l.send_state || ' ' || l.attempts
	FROM smsdispatch.message_recipient r JOIN verification.sms_log l ON l.id = r.sms_log_id
	WHERE r.phone = '+380504441001'}, 'NOT_SENT queued 0'),
	'Alice still waits for her SMS, which is queued with no attempt burnt');
is($node->safe_psql('postgres', q{SELECT count(*) FROM verification.sms_log WHERE phone_number = '+380504441005'}),
	'0', 'level 2 was not started: level 1 does not count as tried');
is($node->safe_psql('postgres', $undeliverable), '1', 'one undeliverable event for the level, not one a pass');
is($node->safe_psql('postgres', q{SELECT state || ' ' || (since IS NOT NULL) || ' ' || last_error
	FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
	'auth_failed true HTTP 401 from the IP2SMS gateway: check smsdispatch.ip2sms_login and the password in smsdispatch.ip2sms_password_file',
	'channel_health: ip2sms auth_failed, since when, and the last error');
is($node->safe_psql('postgres', q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'modem'}),
	'no_sidecar', 'channel_health: the modem has no sidecar');

my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/WARNING:  smsdispatch: alarm $number is undeliverable: nobody on level 1 can be sent it: channel ip2sms is auth_failed/,
	'the server log has a WARNING naming the alarm and why');
my @auth_warnings = $log =~ /refused the credentials/g;
is(scalar @auth_warnings, 1, 'and one WARNING (a minute) of the channel naming the settings to fix');
unlike($log, qr/\Q$wrong\E/, 'the log never shows the password');

# the right password and a reload: the queue drains, escalation goes on
$mock->password_file;
$node->reload;
ok($node->poll_query_until('postgres', q{SELECT send_state = 'submitted' FROM verification.sms_log
	WHERE phone_number = '+380504441001'}), 'after the right password and a reload the alarm SMS leaves');
ok($node->poll_query_until('postgres', q{SELECT count(*) = 3 FROM verification.sms_log
	WHERE type = 'verification' AND send_state = 'submitted'}),
	'the verification SMS queued meanwhile are sent, not failed');
is($node->safe_psql('postgres', q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
	'ok', 'channel_health: ip2sms ok again');
ok($node->poll_query_until('postgres', q{SELECT send_state = 'submitted' FROM verification.sms_log
	WHERE phone_number = '+380504441005'}), 'Alice\'s timeout passes and level 2 (Bob) is sent');
is($node->safe_psql('postgres', qq{SELECT string_agg(e.kind || ':' || e.level, ' ' ORDER BY e.id)
	FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
	WHERE m.number = '$number' AND e.kind IN ('undeliverable', 'sent', 'timed_out', 'escalated')}),
	'undeliverable:1 sent:1 timed_out:1 escalated:2 sent:2', 'escalation went on from level 1');
is($node->safe_psql('postgres', qq{SELECT state FROM smsdispatch.message WHERE number = '$number'}),
	'open', 'the alarm is still open, waiting for Bob');
my %seen;
my @dups = grep { $seen{"$_->{to}|$_->{text}"}++ }
  grep { $_->{kind} eq 'send' && $_->{outcome} eq 'Accepted' } $mock->log_entries;
is(scalar @dups, 0, 'no (number, text) pair was accepted twice');

# a gateway that cannot be reached pauses the channel too
my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
  or die "socket: $!";
my $dead_port = $sock->sockport;
close $sock;
$node->append_conf('postgresql.conf', "smsdispatch.ip2sms_url = 'http://127.0.0.1:$dead_port/ip2sms/'\n");
$node->reload;
$log_offset = -s $node->logfile;
my $id = $node->safe_psql('postgres', q{SELECT sms_send('+380504443001', 'into the void', 'text')});
ok($node->poll_query_until('postgres', q{SELECT state = 'down' AND last_error LIKE 'connection failed%'
	FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
	'connection failures on every request: channel_health says down');
sleep(12);
is($node->safe_psql('postgres', qq{SELECT send_state || ' ' || (attempts < 5) FROM verification.sms_log WHERE id = $id}),
	'queued true', 'the row stays queued: the paused channel does not burn its attempts');
$log = slurp_file($node->logfile, $log_offset);
my @down_warnings = $log =~ /WARNING:  smsdispatch: channel ip2sms is down: the gateway cannot be reached \(connect_error/g;
is(scalar @down_warnings, 1, 'one WARNING while down');
like($log, qr/HINT:  Check smsdispatch\.ip2sms_url/, 'naming the setting to fix');
$node->append_conf('postgresql.conf', "smsdispatch.ip2sms_url = '" . $mock->send_url . "'\n");
$node->reload;
ok($node->poll_query_until('postgres', qq{SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $id}),
	'back to the right URL and a reload, the row is sent');
is($node->safe_psql('postgres', q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
	'ok', 'and the channel is ok');

$node->stop;
$mock->stop;
done_testing();

# pg_ctl restart -m fast (a switchover, a package upgrade) while 16 IP2SMS
# requests are on the wire and the gateway answers each a second later: the
# worker, told to stop, claims nothing more, waits for the answers
# (smsdispatch.shutdown_grace, 2 s by default) and records them before it
# exits. No row ends 'unknown': all 16 are 'submitted' with the gateway's id
# after one attempt, and the gateway received each SMS once (nothing is sent
# again after the restart).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use List::Util qw(min);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
# 18 connections, 2 of them kept for urgent SMS: the 16 text SMS take the rest
my $node = $mock->node('graceful',
	"smsdispatch.ip2sms_max_connections = 18\nsmsdispatch.ip2sms_urgent_connections = 2\n"
	  . "smsdispatch.ip2sms_timeout = '30s'\n"
	  . "smsdispatch.ip2sms_poll_interval = '1h'\n");

# numbers ending in 1: the mock accepts them
$mock->control(mode => 'slow', delay_ms => 1000, count => 16, kind => 'send');
$node->safe_psql('postgres', q{
	SELECT sms_send('+3805070' || lpad(g::text, 4, '0') || '1', 'restart ' || g)
	  FROM generate_series(1, 16) AS g});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 16 FROM verification.sms_log WHERE send_state = 'sending'"),
	'16 requests are on the wire');

my $stop_began = time();
PostgreSQL::Test::Utils::system_or_bail('pg_ctl', '-w', '-D', $node->data_dir,
	'-l', $node->logfile, '-m', 'fast', 'restart');
$node->_update_pid(1);

my @sends = $mock->wait_sends(16);
is(scalar @sends, 16, 'the gateway received the 16 requests');
# the mock logs each arrival time; it answers a second after it
cmp_ok(min(map { $_->{t} } @sends) + 1, '>', $stop_began,
	'every answer came after the restart began');

ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM verification.sms_log WHERE send_state = 'sending'"),
	'the restarted worker left no row sending');
is($node->safe_psql('postgres', q{
	SELECT send_state || ' ' || attempts || ' ' || (gateway_id IS NOT NULL), count(*)
	  FROM verification.sms_log GROUP BY 1}),
	'submitted 1 true|16',
	'no row ended unknown: all 16 are submitted with the gateway id, after one attempt');
ok($node->log_contains(
		'terminating background worker "smsdispatch worker" due to administrator command'),
	'the worker ended as at any stop');

# once a new SMS went out, a re-send of the 16 would have gone before it
my $id = $node->safe_psql('postgres', "SELECT sms_send('+380507999991', 'after the restart')");
ok($node->poll_query_until('postgres',
	"SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $id"),
	'the restarted worker sends');
my %sent;
$sent{ $_->{to} }++ for grep { $_->{kind} eq 'send' } $mock->log_entries;
is(join(',', map { $sent{ sprintf('3805070%04d1', $_) } // 0 } 1 .. 16),
	join(',', (1) x 16), 'the gateway received each of the 16 once');

$node->stop;
$mock->stop;
done_testing();

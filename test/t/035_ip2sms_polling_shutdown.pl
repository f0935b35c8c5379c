# IP2SMS status polling and shutdown: the poll schedule backs off (10 s,
# 30 s, 1 min, 2 min, 5 min for a 10 s interval); a row still en route after
# smsdispatch.ip2sms_status_window becomes Terminated and is no longer
# polled; SIGTERM ends the worker promptly while a request hangs: the row on
# the wire becomes unknown, the rows behind it were never claimed (a row is
# claimed only when a connection is free for it); an operator can re-queue
# an unknown row.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('polling',
	"smsdispatch.ip2sms_poll_interval = '1s'\nsmsdispatch.ip2sms_status_window = '6s'\n"
	  . "smsdispatch.ip2sms_timeout = '60s'\nsmsdispatch.ip2sms_max_connections = 1\n");

is($node->safe_psql('postgres', q{
	SELECT string_agg(smsdispatch.ip2sms_poll_delay(e * interval '1 s', '10 s')::text, ',' ORDER BY e)
	  FROM unnest(ARRAY[0, 10, 40, 100, 220, 520, 5000]) AS e}),
	'00:00:10,00:00:30,00:01:00,00:02:00,00:05:00,00:05:00,00:05:00',
	'poll delays back off from the poll interval');

my $id = $node->safe_psql('postgres', "SELECT sms_send('+380505000004', 'stays en route')");
ok($node->poll_query_until('postgres',
	"SELECT gateway_status = 'Terminated' FROM verification.sms_log WHERE id = $id"),
	'an SMS en route past the status window becomes Terminated');
is($node->safe_psql('postgres', "SELECT send_state, next_poll_at IS NULL,
	status_changed_at >= submitted_at + interval '6 s', updated_at >= status_changed_at
	FROM verification.sms_log WHERE id = $id"),
	'submitted|t|t|t', 'Terminated: no more polls, change time set');
my $polls = grep { $_->{kind} eq 'status' } $mock->log_entries;
cmp_ok($polls, '>=', 2, "it was polled ($polls times) before");
cmp_ok($polls, '<=', 3, 'with backoff (1 s, 3 s...), not on every pass');
sleep 2;
is(scalar(grep { $_->{kind} eq 'status' } $mock->log_entries), $polls,
	'a Terminated row is not polled again');

# SIGTERM while a request hangs, two more waiting behind it (one connection)
$mock->control(mode => 'hang', count => 1, kind => 'send');
$node->safe_psql('postgres', q{
	SELECT sms_send('+38050500001' || g, 'hangs ' || g) FROM generate_series(5, 7) AS g});
ok($node->poll_query_until('postgres', "SELECT string_agg(send_state, ',' ORDER BY id)
	FROM verification.sms_log WHERE phone_number LIKE '+38050500001_'",
	'sending,queued,queued'),
	'only the row the connection carries is claimed; the others wait queued');
sleep 1;
my $start = time();
$node->stop('fast');
my $took = time() - $start;
cmp_ok($took, '<', 10, sprintf('the server stopped in %.1f s despite a 60 s request timeout', $took));
$node->start;
ok($node->poll_query_until('postgres', "SELECT string_agg(send_state || ' ' || attempts, ',' ORDER BY id)
	FROM verification.sms_log WHERE phone_number LIKE '+38050500001_'",
	'unknown 1,submitted 1,submitted 1'),
	'the request on the wire became unknown; the two never claimed were sent once');
my %sent;
$sent{ $_->{to} }++ for grep { $_->{kind} eq 'send' } $mock->log_entries;
is(join(',', map { $sent{"38050500001$_"} } 5 .. 7), '1,1,1', 'the gateway saw each once');

# an operator re-queues the unknown one: it is sent again
$id = $node->safe_psql('postgres',
	"SELECT id FROM verification.sms_log WHERE phone_number = '+380505000015'");
$node->safe_psql('postgres', "UPDATE verification.sms_log SET send_state = 'queued' WHERE id = $id");
ok($node->poll_query_until('postgres',
	"SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $id"),
	'a re-queued unknown row is sent');
is(scalar(grep { $_->{kind} eq 'send' && $_->{to} eq '380505000015' } $mock->log_entries), 2,
	'the gateway saw it a second time only because the operator asked');

$node->stop;
$mock->stop;
done_testing();

# A lane for the urgent, which on-call staff and people waiting for a code
# rely on when the gateway is slow with bulk SMS: of the IP2SMS connections
# (ip2sms_max_connections = 16), smsdispatch.ip2sms_urgent_connections (2)
# carry only priority 1-3 SMS. With every bulk request hanging and 40 text
# SMS queued, the text SMS hold at most 14 connections, and an alarm and a
# 2FA code queued then are each submitted within 2 s of their COMMIT.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('urgent_lane',
	"smsdispatch.ip2sms_timeout = '60s'\nsmsdispatch.ip2sms_poll_interval = '1h'\n");
$node->safe_psql('postgres', q{
	SELECT sms_list_create('duty');
	SELECT sms_list_add('duty', '+380509980001', 1, '1 h')});

# Seconds from COMMIT (the row's inserted_at is its transaction's start, a
# few milliseconds before) to submitted_at, once the row is submitted; 99
# when it is not.
sub latency
{
	my ($where) = @_;
	$node->poll_query_until('postgres',
		"SELECT bool_and(send_state = 'submitted') FROM verification.sms_log WHERE $where")
	  or return 99;
	return $node->safe_psql('postgres',
		"SELECT extract(epoch FROM max(submitted_at - inserted_at)) FROM verification.sms_log WHERE $where");
}

# the first 16 bulk requests hang (the gateway's timeout is a minute away)
$mock->hang_first(16, match => '^newsletter');
$node->safe_psql('postgres', q{
	SELECT sms_send('+38050' || lpad(g::text, 7, '1'), 'newsletter ' || g)
	  FROM generate_series(1, 40) AS g});
ok($node->poll_query_until('postgres', q{SELECT count(*) >= 14 FROM verification.sms_log
	WHERE body LIKE 'newsletter%' AND send_state = 'sending'}),
	'the bulk SMS are on the wire, hanging');

my $number = $node->safe_psql('postgres', "SELECT sms_enqueue('boiler pressure', 'duty')");
my $code = $node->safe_psql('postgres', "SELECT sms_send('+380509980005', 'login 4711', '2FA')");
my $alarm_s = latency("message_id IS NOT NULL");
ok($alarm_s < 2, "the alarm behind 14 hanging bulk requests was submitted $alarm_s s after COMMIT");
my $code_s = latency("id = $code");
ok($code_s < 2, "the 2FA code was submitted $code_s s after COMMIT");
is($node->safe_psql('postgres', q{SELECT count(*) FROM verification.sms_log
	WHERE body LIKE 'newsletter%' AND send_state = 'sending'}),
	'14', 'the bulk holds 14 connections of 16, not all of them');
is(scalar(grep { $_->{kind} eq 'send' && $_->{outcome} eq 'hang' } $mock->log_entries),
	14, 'the gateway has 14 bulk requests hanging');
is(scalar(grep { $_->{kind} eq 'send' && $_->{text} eq "[$number] boiler pressure" } $mock->log_entries),
	1, 'the gateway got the alarm once');

$node->stop('immediate');
$mock->stop;
done_testing();

# Priorities and the continuous pipeline (issue 11, Done when 1 and 2):
# - at ip2sms_max_rate = 20 with 600 text SMS queued, an alarm and a 2FA SMS
#   queued a second later are both submitted within 1 s of their COMMIT, and
#   the bulk still drains at the limit;
# - one request that hangs among 50 holds only its own connection: an alarm
#   queued a second later is submitted within 1 s, the other 49 complete
#   without waiting for the hanging one.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use List::Util qw(max min);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('priority',
	"smsdispatch.ip2sms_max_rate = 20\nsmsdispatch.ip2sms_poll_interval = '1h'\n"
	  . "smsdispatch.ip2sms_timeout = '20s'\n");
$node->safe_psql('postgres', q{
	SELECT sms_list_create('duty');
	SELECT sms_list_add('duty', '+380509990001', 1, '1 h')});

# Seconds from COMMIT (the row's inserted_at is its transaction's start, a
# few milliseconds before) to submitted_at, once the row is submitted; 99
# when it is not. (The mock refuses numbers ending in 2, 3 expire, 4 stay
# en route: the test's own numbers end in other digits.)
sub latency
{
	my ($where) = @_;
	$node->poll_query_until('postgres',
		"SELECT bool_and(send_state = 'submitted') FROM verification.sms_log WHERE $where")
	  or return 99;
	return $node->safe_psql('postgres',
		"SELECT extract(epoch FROM max(submitted_at - inserted_at)) FROM verification.sms_log WHERE $where");
}

$node->safe_psql('postgres', q{
	SELECT sms_send('+38050' || lpad(g::text, 7, '1'), 'newsletter ' || g)
	  FROM generate_series(1, 600) AS g});
sleep 1;
my $number = $node->safe_psql('postgres', "SELECT sms_enqueue('boiler pressure', 'duty')");
my $code = $node->safe_psql('postgres', "SELECT sms_send('+380509990005', 'login 4711', '2FA')");

my $alarm_s = latency("message_id IS NOT NULL");
cmp_ok($alarm_s, '<', 1, sprintf('the alarm behind 600 bulk SMS was submitted %.3f s after COMMIT', $alarm_s));
my $code_s = latency("id = $code");
cmp_ok($code_s, '<', 1, sprintf('the 2FA SMS behind 600 bulk SMS was submitted %.3f s after COMMIT', $code_s));
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT priority::text, ',' ORDER BY priority::text)
	FROM verification.sms_log WHERE message_id IS NOT NULL OR type = '2FA'}), '1,3',
	'alarm SMS have priority 1, 2FA 3');

# the bulk drains at the limit: 4 s of arrivals at the gateway
sleep 4;
my @t = map { $_->{t} } grep { $_->{kind} eq 'send' && $_->{text} =~ /^newsletter/ } $mock->log_entries;
my $last = max(@t);
my $window = grep { $_ > $last - 4 } @t;
cmp_ok($window, '>=', 60, "$window bulk SMS in the last 4 s: the bulk goes on at the limit");
cmp_ok($window, '<=', 88, "and no faster than 20/s (and jitter)");

# the hanging request: no rate limit, 16 connections, 50 SMS
$node->safe_psql('postgres', q{
	UPDATE verification.sms_log SET send_state = 'failed', last_error = 'test: bulk withdrawn'
	 WHERE send_state = 'queued'});
$node->append_conf('postgresql.conf', "smsdispatch.ip2sms_max_rate = 0\n");
$node->reload;
sleep 0.5;
$mock->control(mode => 'hang', count => 1, kind => 'send');
my $t0 = time();
$node->safe_psql('postgres', q{
	SELECT sms_send('+3805' || lpad(g::text, 7, '0') || '1', 'hang batch ' || g)
	  FROM generate_series(1, 50) AS g});
sleep 1;
$node->safe_psql('postgres', "SELECT sms_cancel('$number')");
my $number2 = $node->safe_psql('postgres', "SELECT sms_enqueue('second alarm', 'duty')");
my $id2 = $node->safe_psql('postgres', "SELECT max(id) FROM verification.sms_log");
my $alarm2_s = latency("id = $id2");
cmp_ok($alarm2_s, '<', 1,
	sprintf('an alarm queued 1 s after 50 SMS, one of them hanging, was submitted %.3f s after COMMIT', $alarm2_s));
ok($node->poll_query_until('postgres', q{SELECT count(*) = 49 FROM verification.sms_log
	WHERE body LIKE 'hang batch %' AND send_state = 'submitted'}),
	'49 of the 50 were submitted');
my $all49 = time() - $t0;
cmp_ok($all49, '<', 10, sprintf('the 49 completed %.1f s after queueing, within the 20 s the hanging one takes', $all49));
is($node->safe_psql('postgres', q{SELECT send_state FROM verification.sms_log
	WHERE body LIKE 'hang batch %' AND send_state <> 'submitted'}), 'sending',
	'the hanging one still holds its own connection');

$node->stop;
$mock->stop;
done_testing();

# pg_ctl stop -m fast while 16 IP2SMS requests are on the wire and the
# gateway is slow: the stop waits for answers at most
# smsdispatch.shutdown_grace (2 s by default), plus 1 s for the rest of the
# shutdown, however long the gateway takes. The 8 answers that come within
# the grace (a second after each request) are recorded 'submitted'; only the
# 8 whose answers take 10 s become 'unknown' (at most the 16 on the wire),
# saying why, and are not sent again after the start. -m immediate waits for
# nothing: all 16 on the wire become 'unknown'.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use Ip2smsMock;

my $grace = 2;    # the default of smsdispatch.shutdown_grace
my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
# 18 connections, 2 of them kept for urgent SMS: the 16 text SMS take the rest
my $node = $mock->node('grace_bound',
	"smsdispatch.ip2sms_max_connections = 18\nsmsdispatch.ip2sms_urgent_connections = 2\n"
	  . "smsdispatch.ip2sms_timeout = '60s'\n"
	  . "smsdispatch.ip2sms_poll_interval = '1h'\n");

# sends 16 SMS (numbers ending in 1: the mock accepts them) and waits until
# they are all on the wire
my $batch = 0;
sub send_16
{
	$batch++;
	$node->safe_psql('postgres', qq{
		SELECT sms_send('+38050$batch' || lpad(g::text, 5, '0') || '1', 'batch $batch')
		  FROM generate_series(1, 16) AS g});
	$node->poll_query_until('postgres',
		"SELECT count(*) = 16 FROM verification.sms_log WHERE send_state = 'sending'")
	  or die 'the 16 requests did not go on the wire';
	return;
}

# the rows of a batch by state, after the start left none 'sending'
sub states
{
	my ($b) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM verification.sms_log WHERE send_state = 'sending'")
	  or die 'rows stayed sending';
	return $node->safe_psql('postgres', qq{
		SELECT string_agg(send_state || ' ' || n, ',' ORDER BY send_state)
		  FROM (SELECT send_state, count(*) AS n FROM verification.sms_log
		         WHERE body = 'batch $b' GROUP BY 1) s});
}

# the first 8 requests to arrive are answered after 1 s, the next 8 after 10 s
$mock->control(mode => 'slow', delay_ms => 1000, count => 8, kind => 'send');
$mock->control(then => 1, mode => 'slow', delay_ms => 10000, count => 8, kind => 'send');
send_16();
my $log_offset = -s $node->logfile;
my $start = time();
$node->stop('fast');
my $took = time() - $start;
cmp_ok($took, '<=', $grace + 1,
	sprintf('pg_ctl stop -m fast took %.1f s: at most the grace plus 1 s', $took));
ok($node->log_contains(
		qr/8 IP2SMS requests were still unanswered after smsdispatch.shutdown_grace \(2000 ms\); their rows become unknown/,
		$log_offset),
	'the log says how many requests were left unanswered');

$node->start;
is(states(1), 'submitted 8,unknown 8',
	'the 8 answered within the grace are submitted, the 8 still unanswered unknown');
cmp_ok($node->safe_psql('postgres',
	"SELECT count(*) FROM verification.sms_log WHERE send_state = 'unknown'"),
	'<=', 16, 'at most the 16 requests on the wire are unknown');
is($node->safe_psql('postgres', q{
	SELECT DISTINCT last_error FROM verification.sms_log WHERE send_state = 'unknown'}),
	'the worker stopped while the request was in flight; not re-sent',
	'the unknown rows say why');

# once a new SMS went out, a re-send of the unknown ones would have gone before it
my $id = $node->safe_psql('postgres', "SELECT sms_send('+380507999991', 'after the stop')");
ok($node->poll_query_until('postgres',
	"SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $id"),
	'the started worker sends');
my %sent;
$sent{ $_->{to} }++ for $mock->wait_sends(17);
is(join(',', map { $sent{ sprintf('380501%05d1', $_) } // 0 } 1 .. 16),
	join(',', (1) x 16), 'the gateway received each of the 16 once');

# -m immediate: the worker is not asked, nothing is awaited or recorded
$mock->control(mode => 'slow', delay_ms => 1000, count => 16, kind => 'send');
send_16();
$node->stop('immediate');
$node->start;
is(states(2), 'unknown 16', 'after -m immediate the 16 on the wire are unknown');

is($node->safe_psql('postgres', 'SHOW smsdispatch.shutdown_grace'), "${grace}s",
	'the grace waited for was the default of smsdispatch.shutdown_grace');

$node->stop;
$mock->stop;
done_testing();

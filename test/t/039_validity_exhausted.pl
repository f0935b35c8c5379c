# Validity before sending and loud exhausted alarms (issue 11, Done when 7
# and 5):
# - with smsdispatch.validity_verification = 5s, verification SMS queued while
#   the gateway is down become failed "expired before sending" and never
#   reach the gateway once it is back; a text SMS of the same time is sent;
# - an alarm nobody acknowledges becomes exhausted with an event, a WARNING
#   naming it in the server log, and NOTIFY smsdispatch_alarm with a JSON
#   payload (number, state, reason) that a LISTENing session receives.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('validity',
	"smsdispatch.validity_verification = '5s'\nsmsdispatch.ip2sms_poll_interval = '1h'\n"
	  . "smsdispatch.max_attempts = 10\n");

$mock->control(mode => '5xx', count => 1000000, kind => 'send');
$node->safe_psql('postgres', q{
	SELECT sms_send('+38050888000' || g, 'code ' || g, 'verification') FROM generate_series(1, 3) AS g;
	SELECT sms_send('+380508880009', 'newsletter', 'text')});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 3 FROM verification.sms_log
	WHERE type = 'verification' AND send_state = 'failed'}),
	'the verification SMS fail while the gateway is down');
is($node->safe_psql('postgres', q{SELECT DISTINCT last_error FROM verification.sms_log
	WHERE type = 'verification'}),
	'expired before sending: not submitted within 00:00:05 (smsdispatch.validity_verification)',
	'last_error says they expired before sending, and which setting');
cmp_ok($node->safe_psql('postgres', q{SELECT max(attempts) FROM verification.sms_log
	WHERE type = 'verification'}), '<', 10, 'before their attempts ran out');
$mock->control(mode => 'normal');
ok($node->poll_query_until('postgres', q{SELECT send_state = 'submitted' FROM verification.sms_log
	WHERE type = 'text'}), 'the text SMS of the same time is sent once the gateway is back');
is(scalar(grep { $_->{kind} eq 'send' && $_->{text} =~ /^code/ && $_->{outcome} eq 'Accepted' }
	  $mock->log_entries), 0, 'no expired code reached the gateway');

# an exhausted alarm is loud
$node->safe_psql('postgres', q{
	SELECT sms_list_create('nobody');
	SELECT sms_list_add('nobody', '+380508881001', 1, '1 s')});
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN smsdispatch_alarm');
my $log_offset = -s $node->logfile;
my $number = $node->safe_psql('postgres', "SELECT sms_enqueue('tank overflow', 'nobody')");
ok($node->poll_query_until('postgres',
	"SELECT state = 'exhausted' FROM smsdispatch.message WHERE number = '$number'"),
	'the alarm nobody acknowledges is exhausted');
is($node->safe_psql('postgres', "SELECT count(*) FROM smsdispatch.event e
	JOIN smsdispatch.message m ON m.id = e.message_id WHERE m.number = '$number' AND e.kind = 'exhausted'"),
	'1', 'an exhausted event is written');
like(slurp_file($node->logfile, $log_offset),
	qr/WARNING:  smsdispatch: alarm $number is exhausted: nobody on list "nobody" acknowledged it in 1 round\(s\)/,
	'the server log has a WARNING naming the alarm and why');
# psql prints notifications after the next command it runs
my $out = $listener->query_safe('SELECT 1');
$out .= $listener->{stderr} // '';
my ($payload) = $out =~ /Asynchronous notification "smsdispatch_alarm" with payload "(.*)" received/;
ok(defined $payload, 'the LISTENing session got NOTIFY smsdispatch_alarm')
  or diag("psql said: $out");
my $json = eval { JSON::PP->new->decode($payload // '') } // {};
is_deeply($json, { number => $number, state => 'exhausted',
		reason => 'nobody on list "nobody" acknowledged it in 1 round(s)' },
	'its JSON payload has the number, the state and the reason');
$listener->quit;

$node->stop;
$mock->stop;
done_testing();

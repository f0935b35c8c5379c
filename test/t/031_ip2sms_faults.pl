# IP2SMS answer forms and transport faults against the mock: the aggregate
# answer form is understood; garbage, 5xx and a hang are the channel's
# failures: retried until the mock recovers, with no attempt spent; a
# refusal of the request itself (HTTP 400) spends attempts and stops at
# smsdispatch.max_attempts; 401 pauses the channel (the SMS waits) with a
# WARNING naming the settings; no SMS reaches the mock twice.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('faults',
	"smsdispatch.max_attempts = 3\nsmsdispatch.ip2sms_timeout = '1500ms'\n");

# Sends one SMS and waits until it leaves the queue for good.
sub send_and_wait
{
	my ($phone, $text) = @_;
	my $id = $node->safe_psql('postgres', "SELECT sms_send('$phone', '$text')");
	$node->poll_query_until('postgres',
		"SELECT send_state IN ('submitted', 'failed') FROM verification.sms_log WHERE id = $id")
	  or diag("SMS $id did not leave the queue");
	return $node->safe_psql('postgres',
		"SELECT send_state, attempts, gateway_status, coalesce(gateway_id, ''), coalesce(last_error, '')
		   FROM verification.sms_log WHERE id = $id");
}

sub accepted_count
{
	my ($to) = @_;
	return scalar grep { $_->{kind} eq 'send' && $_->{to} eq $to && $_->{outcome} eq 'Accepted' }
	  $mock->log_entries;
}

# the aggregate form: id in detail/id, state in detail/state
$mock->control(mode => 'normal', form => 'aggregate');
like(send_and_wait('+380502000001', 'aggregate form'),
	qr/^submitted\|1\|(Accepted|Delivered)\|\d{13}\|$/, 'aggregate answer: submitted with its id');
my ($sent) = grep { $_->{to} eq '380502000001' } $mock->log_entries;
is($node->safe_psql('postgres', "SELECT gateway_id FROM verification.sms_log WHERE phone_number = '+380502000001'"),
	$sent->{id}, 'gateway_id is the id from detail/id');
$mock->control(mode => 'normal', form => 'single');

for my $fault ([ 'garbage', '+380502000011', 2 ], [ '5xx', '+380502000021', 2 ],
	[ 'hang', '+380502000031', 1 ])
{
	my ($mode, $phone, $count) = @$fault;
	$mock->control(mode => $mode, count => $count, kind => 'send');
	like(send_and_wait($phone, "after $mode"), qr/^submitted\|1\|/,
		"$mode: retried without spending an attempt, then submitted once the mock recovered");
	is(accepted_count(substr($phone, 1)), 1, "$mode: the SMS reached the mock once");
}

# a gateway that keeps refusing the request: failed after max_attempts, with the reason
$mock->control(mode => '400', count => 3, kind => 'send');
is(send_and_wait('+380502000041', 'never gets through'),
	'failed|3|||gave up after 3 attempts: HTTP 400 from the IP2SMS gateway',
	'400 past max_attempts: failed with the reason');
is(accepted_count('380502000041'), 0, 'the failed SMS never reached the mock');

# bad credentials: the channel pauses, the SMS stays queued (its attempt not
# counted) with the reason, one WARNING names the settings; once the gateway
# takes the credentials again (the next probe) it is sent
my $log_offset = -s $node->logfile;
$mock->control(mode => '401', count => 1, kind => 'send');
my $id = $node->safe_psql('postgres', "SELECT sms_send('+380502000051', 'bad credentials')");
ok($node->poll_query_until('postgres',
	"SELECT last_error LIKE 'HTTP 401%' FROM verification.sms_log WHERE id = $id"),
	'401: the reason is recorded');
is($node->safe_psql('postgres',
	"SELECT send_state, attempts, last_error FROM verification.sms_log WHERE id = $id"),
	'queued|0|HTTP 401 from the IP2SMS gateway: check smsdispatch.ip2sms_login and the password in smsdispatch.ip2sms_password_file',
	'401: the SMS stays queued, the attempt not counted');
like(slurp_file($node->logfile, $log_offset),
	qr/WARNING:.*channel ip2sms is auth_failed: the gateway refused the credentials.*SMS stay queued.*\n.*DETAIL:.*HTTP 401.*\n.*HINT:.*smsdispatch\.ip2sms_login and the password in smsdispatch\.ip2sms_password_file/,
	'401: WARNING in the server log names the settings');
ok($node->poll_query_until('postgres',
	"SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $id"),
	'401: sent once the gateway takes the credentials again');

my %seen;
my @dups = grep { $seen{"$_->{to}|$_->{text}"}++ }
  grep { $_->{kind} eq 'send' && $_->{outcome} eq 'Accepted' } $mock->log_entries;
is(scalar @dups, 0, 'no (number, text) pair was accepted twice');

my %stats = map { split /\|/ } split /\n/,
  $node->safe_psql('postgres', 'SELECT name, value FROM smsdispatch.stats()');
is($stats{errors_parse}, 2, 'stats: two garbage answers');
is($stats{errors_http_5xx}, 2, 'stats: two 5xx answers');
is($stats{errors_http_other}, 3, 'stats: three 400 answers');
is($stats{errors_timeout}, 1, 'stats: one timeout');
is($stats{errors_http_401}, 1, 'stats: one 401');
is($stats{retries}, 8, 'stats: eight retries (the 401 one included)');

$node->stop;
$mock->stop;
done_testing();

# A gateway that fails on its side for a while loses no SMS. While the mock
# IP2SMS gateway answers HTTP 500 (for 20 s), HTTP 503, unparseable answers,
# or never answers (timeouts), verification codes queued in that spell stay
# 'queued' with no attempt spent however long it lasts, the channel is not
# 'ok' in smsdispatch.channel_health, the server log has a WARNING naming
# the channel, the failure class and the last error, and only a few probe
# requests reach the gateway; within 10 s of the gateway healing every code
# is 'submitted', each accepted once, and the channel is 'ok' again.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('circuit', "smsdispatch.ip2sms_timeout = '1500ms'\n");

# The spells: mock mode, its length in seconds, the failure class the
# WARNING names, and the last_error the codes show. HTTP 500 and 503 are
# apart so that each opens the circuit with a class other than the last
# one's (a class that reopens within a minute is not warned again).
my @spells = (
	[ '500', 20, 'http_5xx', qr/^HTTP 500 from the IP2SMS gateway$/ ],
	[ 'garbage', 8, 'garbage', qr/^unreadable answer: / ],
	[ '503', 8, 'http_5xx', qr/^HTTP 503 from the IP2SMS gateway$/ ],
	[ 'hang', 12, 'timeout', qr/^timeout: / ]);

# Polls a query until it returns true or the deadline (a time()) passes.
sub true_before
{
	my ($sql, $deadline) = @_;
	while (time < $deadline)
	{
		return 1 if $node->safe_psql('postgres', $sql) eq 't';
		sleep(0.1);
	}
	return 0;
}

my $n = 0;
for my $spell (@spells)
{
	my ($mode, $seconds, $class, $error) = @$spell;
	my $prefix = sprintf('+38050%d00', 7100 + 10 * $n++);
	my $log_offset = -s $node->logfile;
	my $t0 = time;
	$mock->control(mode => $mode, seconds => $seconds, kind => 'send');
	my $healed_at = $t0 + $seconds;
	my $ids = $node->safe_psql('postgres', qq{
		SELECT string_agg(sms_send('$prefix' || g, 'code ' || g, 'verification')::text, ',')
		  FROM unnest(ARRAY[1, 5, 6]) AS g});
	my $codes = "FROM verification.sms_log WHERE id IN ($ids)";

	ok(true_before(q{SELECT state <> 'ok' FROM smsdispatch.channel_health WHERE channel = 'ip2sms'},
			$healed_at),
		"$mode: channel_health says ip2sms is not ok during the spell");

	# near the end of the spell: every code waits, none spent an attempt
	# (a probe holds one 'sending' for a moment)
	my $check_from = $healed_at - 2.5;
	sleep($check_from - time) if time < $check_from;
	ok(true_before(qq{SELECT count(*) = 3 AND bool_and(send_state = 'queued' AND attempts = 0
			AND last_error IS NOT NULL) $codes}, $healed_at - 0.3),
		"$mode: ${seconds} s into the spell the codes are queued, no attempt spent")
	  or diag($node->safe_psql('postgres', "SELECT id, send_state, attempts, last_error $codes"));
	like($node->safe_psql('postgres', "SELECT last_error $codes ORDER BY id LIMIT 1"), $error,
		"$mode: last_error says what the gateway did");
	is($node->safe_psql('postgres', q{SELECT state FROM smsdispatch.channel_health
		WHERE channel = 'ip2sms'}), 'down', "$mode: the circuit is open: the channel is down");
	my $log = slurp_file($node->logfile, $log_offset);
	like($log, qr/WARNING:  smsdispatch: channel ip2sms is down: [^\n]*\($class, \d+ failures in a row\)[^\n]*\n[^\n]*DETAIL:  The last error: (?:HTTP $mode|unreadable answer|timeout)/,
		"$mode: a WARNING names the channel, the class $class and the last error");
	my @warnings = $log =~ /WARNING:  smsdispatch: channel ip2sms is/g;
	is(scalar @warnings, 1, "$mode: one WARNING in the spell");
	my @requests = grep { $_->{kind} eq 'send' && $_->{to} =~ /^\Q${\substr($prefix, 1)}\E/ }
	  $mock->log_entries;
	cmp_ok(scalar @requests, '<=', 12,
		sprintf('%s: one probe at a time: %d requests in the %d s spell for 3 codes',
			$mode, scalar @requests, $seconds));

	# the gateway heals: the codes leave
	my $submitted = true_before("SELECT bool_and(send_state = 'submitted') $codes", $healed_at + 10);
	ok($submitted, sprintf('%s: the codes are submitted within 10 s of the gateway healing (%.1f s)',
			$mode, time - $healed_at))
	  or diag($node->safe_psql('postgres', "SELECT id, send_state, attempts, last_error $codes"));
	is($node->safe_psql('postgres', "SELECT max(attempts) $codes"), '1',
		"$mode: each submitted at its first counted attempt");
	is(scalar(grep { $_->{kind} eq 'send' && $_->{outcome} eq 'Accepted'
			  && $_->{to} =~ /^\Q${\substr($prefix, 1)}\E/ } $mock->log_entries),
		3, "$mode: each code accepted once");
	is($node->safe_psql('postgres', q{SELECT state || ' ' || coalesce(last_error, '-')
		FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
		'ok -', "$mode: the channel is ok again, with no last error");
}

$node->stop;
$mock->stop;
done_testing();

# The gateway counters outlive a clean restart: a restart between two
# counter snapshots loses no request in smsdispatch.gateway_stats. After a
# crash they start at zero with a new stats_since(), which the statistics
# read as a reset, not as a drop. gateway_stats shows the current hour from
# the live counters before any snapshot was taken.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;
use SmsWorkerNode qw(crash_worker);

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('counters',
	"smsdispatch.ip2sms_poll_interval = '1h'\nrestart_after_crash = on\n");

# sends n SMS and waits until all of them were submitted (numbers ending in
# 1: the mock delivers them)
my $sent = 0;
sub send_sms
{
	my ($n) = @_;
	$node->safe_psql('postgres', qq{
		SELECT sms_send('+3805' || lpad((g + $sent)::text, 7, '0') || '1', 'counter test')
		  FROM generate_series(1, $n) AS g});
	$sent += $n;
	$node->poll_query_until('postgres', qq{
		SELECT count(*) = $sent FROM verification.sms_log WHERE send_state = 'submitted'})
	  or die "the SMS were not submitted";
	return;
}

# the send requests gateway_stats counts over all time
sub counted
{
	return $node->safe_psql('postgres',
		'SELECT coalesce(sum(requests_send), 0) FROM smsdispatch.gateway_stats');
}

send_sms(3);
is(counted(), '3', 'before any snapshot, the current hour shows the live counters');
is($node->safe_psql('postgres', 'SELECT count(*) FROM smsdispatch.counter_snapshot'), '0',
	'no snapshot was taken');

$node->safe_psql('postgres', 'SELECT smsdispatch.snapshot_counters()');
my $since = $node->safe_psql('postgres', 'SELECT smsdispatch.stats_since()');
send_sms(2);
$node->restart;
is($node->safe_psql('postgres', 'SELECT smsdispatch.stats_since()'), $since,
	'a clean restart keeps the counters and their start');
is($node->safe_psql('postgres', q{SELECT value FROM smsdispatch.stats() WHERE name = 'requests_send'}),
	'5', 'the requests before the restart are still counted');
send_sms(1);
$node->safe_psql('postgres', 'SELECT smsdispatch.snapshot_counters()');
is(counted(), '6', 'a restart between two snapshots loses no request');
my @sends = grep { $_->{kind} eq 'send' } $mock->log_entries;
is(scalar(@sends), 6, 'the gateway received as many send requests');

# a crash: the counters start at zero, and a later value below the last
# snapshot's is a reset, not a loss
send_sms(2);
$node->safe_psql('postgres', 'SELECT smsdispatch.snapshot_counters()');
crash_worker($node);
isnt($node->safe_psql('postgres', 'SELECT smsdispatch.stats_since()'), $since,
	'after a crash the counters count from a new start');
send_sms(1);
$node->safe_psql('postgres', 'SELECT smsdispatch.snapshot_counters()');
is(counted(), '9', 'the crash is read as a reset: every request counted once');

$node->stop;
$mock->stop;
done_testing();

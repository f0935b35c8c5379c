# smsdispatch.ip2sms_max_rate holds: 200 SMS at 50/s take at least 3.5 s from
# the first request the gateway sees to the last.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use List::Util qw(min max);
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('rate',
	"smsdispatch.ip2sms_max_rate = 50\nsmsdispatch.ip2sms_poll_interval = '1h'\n");

$node->safe_psql('postgres', q{
	SELECT sms_send('+38050' || lpad(g::text, 7, '1'), 'rate ' || g)
	  FROM generate_series(1, 200) AS g});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 200 FROM verification.sms_log WHERE send_state IN ('submitted', 'failed')"),
	'all 200 SMS were sent');

my @t = map { $_->{t} } grep { $_->{kind} eq 'send' } $mock->log_entries;
is(scalar @t, 200, 'the gateway saw 200 send requests');
my $span = max(@t) - min(@t);
cmp_ok($span, '>=', 3.5, sprintf('200 SMS at 50/s took %.2f s at the gateway', $span));
cmp_ok($span, '<', 10, 'and the limit does not slow sending far below the rate');

# no second in which clearly more than the rate arrived (arrival times at a
# Python mock jitter by a few milliseconds, so allow a few at the edges)
my %per_second;
$per_second{ int($_ - min(@t)) }++ for @t;
cmp_ok(max(values %per_second), '<=', 55, 'no second carried more than 50 SMS and jitter');

$node->stop;
$mock->stop;
done_testing();

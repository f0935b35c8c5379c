# Alarms behind a backlog that grew after the worker planned its duties
# (issue 11, Done when 1 and 8). The worker keeps its statements' plans
# until something invalidates them, and a plan is made for the tables'
# sizes at that moment. When 100,000 SMS are queued at once into a log the
# plans were made for when it was tiny, and no ANALYZE follows (autovacuum
# is off here; it would come after its naptime, and on a large log 100,000
# rows are too few to make it analyze), 30 alarms queued behind them must
# still each be submitted within 1 s of its COMMIT: no duty may walk the
# backlog on every pass (the failover duty did, for each waiting
# recipient: 13.7 s), nor may the channel's exchanges.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('grown',
	"autovacuum = off\nplan_cache_mode = force_generic_plan\nsmsdispatch.ip2sms_max_rate = 20\n"
	  . "smsdispatch.ip2sms_poll_interval = '1h'\n");
$node->safe_psql('postgres', q{
	SELECT sms_list_create('duty');
	SELECT sms_list_add('duty', '+380509990001', 1, '1 h')});

# A young installation: its first alarm is on a log of one page, and
# autovacuum analyzes the alarm tables after their first rows (done here by
# hand), which makes the worker plan its duties again while the log is
# tiny. plan_cache_mode makes those plans the generic ones at once, as
# they become after five uses when a custom plan is no cheaper.
my $first = $node->safe_psql('postgres', "SELECT sms_enqueue('first alarm', 'duty')");
ok($node->poll_query_until('postgres', q{SELECT bool_and(send_state = 'submitted')
	FROM verification.sms_log WHERE message_id IS NOT NULL}), 'the first alarm was submitted');
$node->safe_psql('postgres', 'ANALYZE smsdispatch.message, smsdispatch.message_recipient');
sleep 1;
$node->safe_psql('postgres', "SELECT sms_cancel('$first')");

# then a campaign queues 100,000 at once, and no ANALYZE follows
$node->safe_psql('postgres', q{
	INSERT INTO verification.sms_log (phone_number, body, channel)
	SELECT '+38050' || lpad(g::text, 7, '1'), 'newsletter ' || g, 'ip2sms'
	  FROM generate_series(1, 100000) AS g});
sleep 1;

# the channel drains the backlog (at the rate limit) without scanning the
# log: each exchange reaches its rows through an index, and a scan of
# 100,000 rows for every claim or record would hold every SMS behind it
my $seq_scans = q{SELECT seq_scan FROM pg_stat_user_tables
	WHERE schemaname = 'verification' AND relname = 'sms_log'};
my $scans0 = $node->safe_psql('postgres', $seq_scans);
sleep 3;
my $scans = $node->safe_psql('postgres', $seq_scans) - $scans0;
cmp_ok($scans, '<=', 2, "the worker scanned the log $scans times in 3 s of draining the backlog");

# then 30 alarms, one transaction each, ten a second: within the provider's
# 20 a second, so that no alarm waits for the limit behind the alarms
# before it (30 queued at once must take 1.5 s at 20 a second, which says
# nothing of the plans)
for my $i (1 .. 30)
{
	$node->safe_psql('postgres', "SELECT sms_enqueue('boiler pressure $i', 'duty')");
	sleep 0.1;
}
ok($node->poll_query_until('postgres', q{SELECT bool_and(send_state = 'submitted')
	FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
	WHERE m.state = 'open'}), 'the 30 alarms were submitted');
my ($n, $worst) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*), round(extract(epoch FROM max(submitted_at - inserted_at))::numeric, 3)
	  FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
	 WHERE m.state = 'open'});
is($n, 30, 'one SMS for each of the 30 alarms');
cmp_ok($worst, '<', 1,
	"behind 100,000 SMS queued after the plans were made, the slowest of 30 alarms was submitted $worst s after COMMIT");
cmp_ok($node->safe_psql('postgres', q{SELECT count(*) FROM verification.sms_log
	WHERE message_id IS NULL AND send_state = 'queued'}), '>', 90000,
	'the backlog was still there behind the alarms');

$node->stop;
$mock->stop;
done_testing();

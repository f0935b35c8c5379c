# The IP2SMS connections are the server's when many databases are served,
# and so is the lane kept for urgent SMS: with one database's bulk SMS
# hanging on every connection bulk may take (14 of 16), an alarm of another
# database still leaves within 2 s, and the other database's bulk SMS wait
# instead of taking the urgent lane. A worker that finds every connection
# held by other databases' requests looks again in a moment; it does not
# spin on a core meanwhile.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('shared_connections',
	"smsdispatch.database = 'postgres, db2'\n"
	  . "smsdispatch.ip2sms_timeout = '60s'\nsmsdispatch.ip2sms_poll_interval = '1h'\n");
$node->safe_psql('postgres', 'CREATE DATABASE db2');
$node->safe_psql('db2', 'CREATE EXTENSION smsdispatch');
ok($node->poll_query_until('postgres', q{
		SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'}),
	'one worker in each database');
$node->safe_psql('db2', q{
	SELECT sms_list_create('duty');
	SELECT sms_list_add('duty', '+380509980001', 1, '1 h')});

# requests on the wire of both databases, of SMS whose body matches $like
sub sending
{
	my ($like) = @_;
	my $n = 0;
	$n += $node->safe_psql($_, "SELECT count(*) FROM verification.sms_log
		WHERE body LIKE '$like' AND send_state = 'sending'") for qw(postgres db2);
	return $n;
}

# the first 16 bulk requests and the 2FA codes of postgres hang
$mock->hang_first(16, match => '^(newsletter|login)');
$node->safe_psql('postgres', q{
	SELECT sms_send('+38050' || lpad(g::text, 7, '1'), 'newsletter ' || g)
	  FROM generate_series(1, 40) AS g});
ok($node->poll_query_until('postgres', q{SELECT count(*) >= 14 FROM verification.sms_log
	WHERE body LIKE 'newsletter%' AND send_state = 'sending'}),
	'the bulk SMS of postgres are on the wire, hanging');
$node->safe_psql('db2', q{
	SELECT sms_send('+38050' || lpad(g::text, 7, '2'), 'digest ' || g)
	  FROM generate_series(1, 20) AS g});

my $number = $node->safe_psql('db2', "SELECT sms_enqueue('boiler pressure', 'duty')");
my $start = time();
my $alarm = $node->poll_query_until('db2', q{
	SELECT send_state = 'submitted' FROM verification.sms_log WHERE message_id IS NOT NULL});
my $took = $node->safe_psql('db2', q{
	SELECT extract(epoch FROM submitted_at - inserted_at) FROM verification.sms_log
	 WHERE message_id IS NOT NULL});
ok($alarm && $took < 2,
	"the db2 alarm behind 14 hanging bulk requests of postgres was submitted $took s after COMMIT");
is(sending('newsletter%') + sending('digest%'), 14,
	'the bulk of both databases holds 14 connections of 16, not the urgent lane');
is($node->safe_psql('db2', q{SELECT count(*) FROM verification.sms_log
	WHERE body LIKE 'digest%' AND send_state = 'queued'}),
	'20', 'the bulk SMS of db2 wait for a connection');

# two 2FA codes of postgres hang on the urgent lane: every connection held
$node->safe_psql('postgres', q{
	SELECT sms_send('+380509980005', 'login 4711', '2FA');
	SELECT sms_send('+380509980006', 'login 4712', '2FA')});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM verification.sms_log
	WHERE body LIKE 'login%' AND send_state = 'sending'}),
	'the codes hang on the two urgent connections: all 16 are held');

# CPU clock ticks (user + system) of the db2 worker over 3 s
my $pid = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity
	WHERE backend_type = 'smsdispatch worker' AND datname = 'db2'});
my $hz = `getconf CLK_TCK` + 0 || 100;
sub ticks
{
	my @f = split ' ', (slurp_file("/proc/$pid/stat") =~ s/^.*\) //r);
	return $f[11] + $f[12];
}
my ($t0, $c0) = (time(), ticks());
sleep(3);
my $cpu = (ticks() - $c0) / $hz / (time() - $t0);
cmp_ok($cpu, '<', 0.25,
	sprintf('the db2 worker, short of connections, used %.0f%% of a core while it waited', 100 * $cpu));
is($node->safe_psql('db2', q{SELECT count(*) FROM verification.sms_log
	WHERE body LIKE 'digest%' AND send_state = 'queued'}),
	'20', 'and sent nothing beyond the server\'s connections');

$node->stop('immediate');
$mock->stop;
done_testing();

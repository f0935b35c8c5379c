# A Kannel channel whose gateway takes a request and never answers holds
# only its own request, never the worker: an alarm queued on the IP2SMS
# channel meanwhile is submitted within 1 s of its COMMIT although
# smsdispatch.kannel_timeout is 5 s. The hung SMS still ends unknown after
# kannel_timeout, sent once. A fast stop while a Kannel request hangs takes
# at most smsdispatch.shutdown_grace plus 1 s and leaves that SMS unknown.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use Time::HiRes qw(time);
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;
use KannelTest;
use SmsWorkerNode;

my $grace = 2;    # the default of smsdispatch.shutdown_grace
my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('kannel_hang_isolated', "smsdispatch.kannel_timeout = '5s'\n");
my ($hang_port, $hang_requests) = hanging_gateway();

my $password_file = "${PostgreSQL::Test::Utils::tmp_check}/kannel.password";
append_to_file($password_file, "kannel-test\n");
chmod 0600, $password_file;
$node->safe_psql('postgres', qq{
	SELECT smsdispatch.channel_add('hang1', 'kannel', jsonb_build_object(
		'url', 'http://127.0.0.1:$hang_port/cgi-bin/sendsms', 'username', 'tester',
		'password_file', '$password_file', 'from', '+380990000000',
		'callback_url', 'http://127.0.0.1:1'))});
make_list($node, 'oncall', 0, [ '+380501000001', 1, '1 hour' ]);

# The worker's CPU time in clock ticks (utime + stime of /proc/PID/stat).
sub worker_ticks
{
	my $stat = slurp_file('/proc/' . worker_pid($node) . '/stat');
	my @f = split / /, ($stat =~ /\) (.*)$/)[0];
	return $f[11] + $f[12];
}
# the worker's CPU, idle and while the request hangs: figures, not a bar
my $ticks = worker_ticks();
my $idle_from = time();
sleep 2;
diag(sprintf('CPU of the idle worker: %d ticks in %.1f s',
		worker_ticks() - $ticks, time() - $idle_from));

my $hung_at = time();
my $hung = $node->safe_psql('postgres',
	"SELECT sms_send('+380501000009', 'into the void', channel => 'hang1')");
ok(poll_until(sub { grep { $_ eq 'into the void' } $hang_requests->() }, 30),
	'the hanging gateway read the request');

$ticks = worker_ticks();
my $busy_from = time();
my $alarm = $node->safe_psql('postgres', "SELECT sms_enqueue('Disk full on db1', 'oncall', 'ip2sms')");
ok(wait_until($node, q{
	SELECT send_state FROM verification.sms_log WHERE phone_number = '+380501000001'},
		'submitted', 30),
	"the IP2SMS alarm $alarm was submitted");
my $took = $node->safe_psql('postgres', q{
	SELECT extract(epoch FROM submitted_at - inserted_at)
	  FROM verification.sms_log WHERE phone_number = '+380501000001'});
cmp_ok($took, '<', 1, "within 1 s of its COMMIT while the Kannel request hangs (took ${took} s)");
is($node->safe_psql('postgres', "SELECT send_state FROM verification.sms_log WHERE id = $hung"),
	'sending', 'the Kannel request was still hanging then');

ok(wait_until($node, "SELECT send_state FROM verification.sms_log WHERE id = $hung",
		'unknown', 30),
	'the hung SMS ends unknown');
diag(sprintf('CPU of the worker while a Kannel request hangs: %d ticks in %.1f s',
		worker_ticks() - $ticks, time() - $busy_from));
cmp_ok(time() - $hung_at, '>=', 5, 'after kannel_timeout (5 s)');
like($node->safe_psql('postgres',
		"SELECT attempts || ' ' || last_error FROM verification.sms_log WHERE id = $hung"),
	qr/^1 no answer from Kannel after the request was written \(.*\); it may have been sent: not re-sent$/,
	'its attempt counted, last_error says why');
is($node->safe_psql('postgres', "SELECT state FROM smsdispatch.channel_health WHERE channel = 'hang1'"),
	'down', 'the hanging channel is down');

# the channel's next SMS is its probe, and hangs too: the unknown one never
# went again before it
my $probe = $node->safe_psql('postgres',
	"SELECT sms_send('+380501000019', 'the probe', channel => 'hang1')");
ok(poll_until(sub { grep { $_ eq 'the probe' } $hang_requests->() }, 30),
	'the probe reached the hanging gateway');
is(join(',', $hang_requests->()), 'into the void,the probe',
	'the hung SMS was sent once');

my $log_offset = -s $node->logfile;
my $start = time();
$node->stop('fast');
my $stop_took = time() - $start;
cmp_ok($stop_took, '<=', $grace + 1,
	sprintf('pg_ctl stop -m fast took %.1f s: at most the grace plus 1 s', $stop_took));
ok($node->log_contains(
		qr/1 Kannel requests were still unanswered after smsdispatch.shutdown_grace \(2000 ms\); their rows become unknown/,
		$log_offset),
	'the log says the request was left unanswered');
$node->start;
is($node->safe_psql('postgres',
		"SELECT send_state || ' ' || last_error FROM verification.sms_log WHERE id = $probe"),
	'unknown the worker stopped while the request was in flight; not re-sent',
	'the SMS hanging at the stop is unknown, saying why');
$node->stop;
done_testing();

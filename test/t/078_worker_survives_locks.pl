# The worker survives a lock on its tables: a member of
# smsdispatch_admin (not a superuser) takes
#   LOCK TABLE verification.sms_log IN ACCESS EXCLUSIVE MODE
# for 6 s
# - while 16 IP2SMS requests are on the wire: the worker's lock waits time
#   out, are logged and retried every moment (not blocked for the whole
#   lock, not dead of the error); the answers it holds are recorded once
#   the lock goes: every row submitted, the gateway saw each SMS once,
#   none 'unknown', the worker's pid unchanged;
# - while an alarm's level is due: it escalates once the lock goes;
# - while a row is being polled: its status is recorded once the lock goes.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use Ip2smsMock;
use SmsWorkerNode qw(worker_pid);

my $hold_s = 6;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
# the gateway's answers must not time out while the worker waits for locks
# (each wait is bounded at 1 s): the default ip2sms_timeout
my $node = $mock->node('survive',
	"smsdispatch.ip2sms_poll_interval = '1s'\n"
	  . "smsdispatch.ip2sms_max_connections = 18\nsmsdispatch.ip2sms_urgent_connections = 2\n"
	  . "smsdispatch.ip2sms_timeout = '10s'\n");
$node->safe_psql('postgres', q{
	CREATE ROLE locker LOGIN;
	GRANT smsdispatch_admin TO locker;
	SELECT sms_list_create('due');
	SELECT sms_list_add('due', '+380507780101', 1, '3 s');
	SELECT sms_list_add('due', '+380507780201', 2, '1 h')});

# how many times the server log has a line matching re past offset
sub log_count
{
	my ($offset, $re) = @_;
	my @hits = slurp_file($node->logfile, $offset) =~ /$re/g;
	return scalar @hits;
}

# Holds the exclusive lock on sms_log as the admin role for $hold_s seconds;
# returns when it was released (the server's clock).
sub hold_sms_log
{
	my $locker = $node->background_psql('postgres',
		extra_params => [ '-U', 'locker' ]);
	$locker->query_safe(
		'BEGIN; LOCK TABLE verification.sms_log IN ACCESS EXCLUSIVE MODE');
	my $from = time();
	sleep 0.2 while time() - $from < $hold_s;
	$locker->query_safe('COMMIT');
	my $released = $node->safe_psql('postgres',
		'SELECT extract(epoch FROM clock_timestamp())');
	$locker->quit;
	return $released;
}

my $pid = worker_pid($node);
ok($pid =~ /^\d+$/, 'the worker runs');

# 16 sends on the wire, the gateway answering after 2 s
$mock->control(mode => 'slow', delay_ms => 2000, count => 16, kind => 'send');
$node->safe_psql('postgres', q{
	SELECT sms_send('+3805077' || lpad(g::text, 4, '0') || '1', 'on the wire ' || g)
	  FROM generate_series(1, 16) AS g});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 16 FROM verification.sms_log WHERE send_state = 'sending'"),
	'16 requests are on the wire');
my $offset = -s $node->logfile;
my $released = hold_sms_log();

is(worker_pid($node), $pid, 'the worker lived through the lock');
cmp_ok(log_count($offset, qr/ERROR:  canceling statement due to lock timeout/), '>=', 2,
	'its lock waits timed out and were tried again during the lock');
like(slurp_file($node->logfile, $offset),
	qr/WARNING:.*could not record its results or claim work; 16 results are kept and tried again in \d+ ms/,
	'a WARNING says the 16 answers are kept and retried');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 16 FROM verification.sms_log
	  WHERE body LIKE 'on the wire %' AND send_state = 'submitted'"),
	'the 16 are recorded submitted once the lock goes');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM verification.sms_log WHERE send_state = 'unknown'"),
	'0', 'no row ended unknown');
cmp_ok($node->safe_psql('postgres',
	"SELECT extract(epoch FROM max(updated_at)) - $released
	   FROM verification.sms_log WHERE body LIKE 'on the wire %'"),
	'<', 5, 'within seconds of the release');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM verification.sms_log
	  WHERE body LIKE 'on the wire %' AND attempts = 1"),
	'16', 'each on its first attempt');
my %seen;
$seen{ $_->{text} }++
  for grep { $_->{kind} eq 'send' && $_->{text} =~ /^on the wire / } $mock->log_entries;
is(scalar(keys %seen), 16, 'the gateway received each of the 16');
is(scalar(grep { $_ != 1 } values %seen), 0, 'and none of them twice');
is(worker_pid($node), $pid, 'the same worker sent them');

# an alarm's level 1 times out during the lock
my $alarm = $node->safe_psql('postgres', "SELECT sms_enqueue('due during the lock', 'due')");
ok($node->poll_query_until('postgres',
	"SELECT send_state = 'submitted' FROM verification.sms_log
	  WHERE phone_number = '+380507780101'"),
	'the alarm\'s level 1 SMS is sent');
$offset = -s $node->logfile;
$released = hold_sms_log();
cmp_ok(log_count($offset, qr/ERROR:  canceling statement due to lock timeout/), '>=', 1,
	'the lock made the worker\'s statements time out');
ok($node->poll_query_until('postgres',
	"SELECT send_state = 'submitted' FROM verification.sms_log
	  WHERE phone_number = '+380507780201'"),
	'the alarm escalates, its level 2 SMS is sent');
cmp_ok($node->safe_psql('postgres', qq{SELECT extract(epoch FROM e.at) - $released
	FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
	WHERE m.number = '$alarm' AND e.kind = 'escalated'}),
	'<', 5, 'within seconds of the release');
is(worker_pid($node), $pid, 'the worker lived through the lock during the escalation');
is(scalar(grep { $_->{kind} eq 'send' && ($_->{to} // '') eq '380507780201' } $mock->log_entries),
	1, 'the level 2 SMS reached the gateway once');

# a row being polled (Enroute stays pollable), its poll slow to answer
my $polled = $node->safe_psql('postgres', "SELECT sms_send('+380507780304', 'polled')");
ok($node->poll_query_until('postgres',
	"SELECT gateway_status = 'Enroute' FROM verification.sms_log WHERE id = $polled"),
	'a row is submitted and polled');
my $polls = sub {
	my ($gid) = @_;
	return scalar(grep { $_->{kind} eq 'status' && $_->{id} eq $gid } $mock->log_entries);
};
my $gid = $node->safe_psql('postgres', "SELECT gateway_id FROM verification.sms_log WHERE id = $polled");
$mock->control(mode => 'slow', delay_ms => 1500, count => 1000, kind => 'status');
$offset = -s $node->logfile;
$released = hold_sms_log();
my $polls_then = $polls->($gid);
is(worker_pid($node), $pid, 'the worker lived through the lock during polling');
ok($node->poll_query_until('postgres',
	"SELECT updated_at > to_timestamp($released) FROM verification.sms_log WHERE id = $polled"),
	'the row\'s poll is recorded once the lock goes');
$mock->control(mode => 'normal');
my $end = time() + 60;
sleep 0.2 while $polls->($gid) <= $polls_then && time() < $end;
cmp_ok($polls->($gid), '>', $polls_then, 'and polling goes on');
is(worker_pid($node), $pid, 'still the same worker');

$node->stop;
$mock->stop;
done_testing();

# A primary cut off from its synchronous standby sends nothing even when
# its worker's wait for the standby is cut short: a cancel of the worker
# (pg_cancel_backend, which ends the wait of a commit with a WARNING and
# leaves the commit on this server only) does not let the claimed SMS
# leave, and the worker goes back to waiting; a fast stop ends the wait and
# the server stops at once instead of hanging, still with nothing sent.
# What was claimed then is in doubt (unknown) at the next start, never
# sent again by itself.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use Ip2smsMock;
use SmsWorkerNode;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = worker_node('sync_cut_short', allows_streaming => 1,
	conf => $mock->conf . "smsdispatch.loopback_channel = off\n"
	  . "smsdispatch.naptime = '200ms'\nsmsdispatch.max_per_phone_per_hour = 0\n"
	  . "smsdispatch.ip2sms_poll_interval = '1h'\n");

# a synchronous standby that never comes: every commit that writes waits
# for it; the application's own commits are told not to wait
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET synchronous_standby_names = 'standby1';
	ALTER DATABASE postgres SET synchronous_commit = local});
$node->reload;
$node->safe_psql('postgres', "SELECT sms_send('+380501000021', 'cut short')");

my $worker_waits = q{SELECT query || ' | ' || wait_event FROM pg_stat_activity
	WHERE backend_type = 'smsdispatch worker'};
my $claim_waits = 'smsdispatch: IP2SMS claims and results | SyncRep';
# the first pass after the reload may write elsewhere (the failover duty
# notes the modem channel it never saw), and that commit waits first: such
# a wait is let go with a cancel, which costs it nothing, until the claim's
my $claim_waiting = 0;
my $until = time() + 30;
while (!$claim_waiting && time() < $until)
{
	my $now = $node->safe_psql('postgres', $worker_waits);
	$claim_waiting = $now eq $claim_waits;
	$node->safe_psql('postgres', q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity
		WHERE backend_type = 'smsdispatch worker'})
	  if !$claim_waiting && $now =~ /\| SyncRep$/;
	usleep(100_000) unless $claim_waiting;
}
ok($claim_waiting, "the worker's claim waits for the standby");
is($node->safe_psql('postgres', 'SELECT send_state FROM verification.sms_log'),
	'queued', 'the claim is not visible to others while its commit waits');

my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity
	WHERE backend_type = 'smsdispatch worker'});
ok( $node->wait_for_log(qr/canceling wait for synchronous replication/, $log_offset),
	'the cancel ended the wait (WARNING)');
ok( wait_until(
		$node, $worker_waits,
		'smsdispatch: waiting for the synchronous standbys to have a claim | SyncRep', 10),
	'the worker waits for the standby again');
usleep(2_000_000);
is(scalar(grep { $_->{kind} eq 'send' } $mock->log_entries), 0,
	'the claimed SMS did not leave after the cancel');
like(slurp_file($node->logfile, $log_offset),
	qr/a cancel ended the wait of a commit for the synchronous standbys; nothing it claimed leaves/,
	'the worker says why it waits again');

my $start = time();
$node->stop('fast');
my $took = time() - $start;
cmp_ok($took, '<', 10, sprintf('a fast stop during the wait took %.1f s, it did not hang', $took));
is(scalar(grep { $_->{kind} eq 'send' } $mock->log_entries), 0,
	'and the claimed SMS did not leave at the stop');

# without the standby requirement, the claim is in doubt: never sent again
$node->append_conf('postgresql.conf', "synchronous_standby_names = ''\n");
$node->start;
$node->safe_psql('postgres', 'ALTER SYSTEM RESET synchronous_standby_names');
$node->reload;
ok(wait_until($node, 'SELECT send_state FROM verification.sms_log', 'unknown', 10),
	'at the next start the claimed row is unknown, in doubt');
usleep(1_000_000);
is(scalar(grep { $_->{kind} eq 'send' } $mock->log_entries), 0,
	'and it is not sent by itself');

$node->stop;
$mock->stop;
done_testing();

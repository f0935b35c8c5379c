# A primary cut off from its synchronous standby sends nothing, even where
# the cluster, the database and the role set synchronous_commit = off for
# the applications: the worker's claim waits for the standby before a
# request leaves. Once the standby is back, every queued SMS leaves once.
# A fast stop (a switchover) while a claim waits for a standby that lags
# lets the wait go on for smsdispatch.shutdown_grace: the claim confirmed
# then leaves once and is recorded submitted, not left in doubt.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use Ip2smsMock;
use SmsWorkerNode;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $primary = worker_node('primary', allows_streaming => 1,
	conf => $mock->conf . "smsdispatch.loopback_channel = off\n"
	  . "smsdispatch.naptime = '200ms'\nsmsdispatch.max_per_phone_per_hour = 0\n"
	  . "smsdispatch.ip2sms_poll_interval = '1h'\n");
$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby1');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;

# the applications' commits do not wait for the standby, at every level
# a DBA may set it; the worker is restarted so that its session reads them
$primary->safe_psql('postgres', q{
	ALTER SYSTEM SET synchronous_standby_names = 'standby1';
	ALTER SYSTEM SET synchronous_commit = off;
	ALTER DATABASE postgres SET synchronous_commit = off;
	ALTER ROLE CURRENT_USER SET synchronous_commit = off});
$primary->restart;
$primary->wait_for_catchup($standby);
is($primary->safe_psql('postgres', 'SHOW synchronous_commit'), 'off',
	'an application session does not wait for the standby');
is($primary->safe_psql('postgres',
	"SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'"),
	'sync', 'the standby is synchronous');

$standby->stop('fast');
$primary->safe_psql('postgres',
	"SELECT sms_send('+3805010000' || g, 'fenced ' || g) FROM unnest(ARRAY[11, 13, 15, 17, 19]) g");
is($primary->safe_psql('postgres', 'SELECT count(*) FROM verification.sms_log'),
	'5', 'the application queued five SMS without waiting');

# three seconds are fifteen naptimes
usleep(3_000_000);
my @sent = grep { $_->{kind} eq 'send' } $mock->log_entries;
is(scalar @sent, 0, 'the primary cut off from its synchronous standby sent nothing');

$standby->start;
ok(wait_until($primary,
	"SELECT count(*) = 5 FROM verification.sms_log WHERE send_state = 'submitted'", 't', 30),
	'once the standby is back, every SMS is submitted')
  or diag($primary->safe_psql('postgres',
	"SELECT send_state, attempts, last_error FROM verification.sms_log ORDER BY id")
	  . "\n" . $primary->safe_psql('postgres',
	"SELECT backend_type, wait_event_type, wait_event, state, query FROM pg_stat_activity"));
my %seen;
@sent = grep { $_->{kind} eq 'send' } $mock->log_entries;
is(scalar @sent, 5, 'the mock received the five SMS');
is(scalar(grep { $seen{ $_->{text} }++ } @sent), 0, 'none of them twice');

# a fast stop (a switchover) while the claim waits for a standby that
# lags: the standby confirms within smsdispatch.shutdown_grace (2 s), so
# the claim leaves and its answer is recorded before the server is down
my $walreceiver = $standby->safe_psql('postgres', 'SELECT pid FROM pg_stat_wal_receiver');
kill 'STOP', $walreceiver;
$primary->safe_psql('postgres', "SELECT sms_send('+380501000021', 'lagging standby')");
ok(wait_until($primary, q{SELECT wait_event FROM pg_stat_activity
		WHERE backend_type = 'smsdispatch worker' AND query = 'smsdispatch: IP2SMS claims and results'},
	'SyncRep', 10), "the worker's claim waits for the lagging standby");
system_or_bail('pg_ctl', '-D', $primary->data_dir, '-m', 'fast', '-W', 'stop');
usleep(500_000);
kill 'CONT', $walreceiver;
my $until = time() + 20;
usleep(100_000) while -e $primary->data_dir . '/postmaster.pid' && time() < $until;
ok(!-e $primary->data_dir . '/postmaster.pid', 'the primary stopped');
$primary->_update_pid(0);
is(scalar(grep { $_->{kind} eq 'send' && $_->{text} eq 'lagging standby' } $mock->log_entries),
	1, 'the claim confirmed during the grace left once');
$primary->start;
is($primary->safe_psql('postgres',
	"SELECT send_state FROM verification.sms_log WHERE body = 'lagging standby'"),
	'submitted', 'and it is submitted, not in doubt');

$standby->stop;
$primary->stop;
$mock->stop;
done_testing();

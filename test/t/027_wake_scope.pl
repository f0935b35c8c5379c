# The wake-up at COMMIT reaches the worker only from the database it serves
# (smsdispatch.database): SMS queued in another database are not its work,
# and waking it for them would cost a pass per commit there. From its own
# database a commit still wakes it long before the naptime.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SmsWorkerNode;

my $node = worker_node('wake_scope', conf => "smsdispatch.naptime = '60s'\n");
$node->safe_psql('postgres', 'CREATE DATABASE app');
$node->safe_psql('app', 'CREATE EXTENSION smsdispatch');

# Transactions committed in postgres (the worker's database) so far, read
# from the app database so that reading adds none.
sub worker_db_commits
{
	return $node->safe_psql('app',
		"SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'");
}

# let the worker finish its first passes and flush their statistics
wait_until($node,
	"SELECT state FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'",
	'idle', 20);
sleep 2;
my $before = worker_db_commits();

# 300 commits that queue SMS in the other database
$node->safe_psql(
	'app', q{
	DO $$
	BEGIN
		FOR i IN 1 .. 300 LOOP
			PERFORM sms_send('+38050' || (1000000 + i), 'elsewhere');
			COMMIT;
			PERFORM pg_sleep(0.005);
		END LOOP;
	END
	$$});
sleep 2;
my $after = worker_db_commits();
cmp_ok($after - $before, '<', 20,
	"300 commits in another database cost the worker's database "
	  . ($after - $before) . ' transactions');

# its own database: one commit wakes it, the loopback channel marks the SMS
# sent well before the 60 s naptime
my $start = time();
$node->safe_psql('postgres', "SELECT sms_send('+380501234567', 'here')");
ok( wait_until(
		$node,
		"SELECT send_state FROM verification.sms_log WHERE body = 'here'",
		'submitted', 10),
	'a commit in the served database wakes the worker');
cmp_ok(time() - $start, '<', 10, 'woken, not waiting for the naptime');

$node->stop;
done_testing();

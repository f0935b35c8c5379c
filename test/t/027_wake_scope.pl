# The wake-up at COMMIT reaches the worker only from the database it serves
# (smsdispatch.database): SMS queued in another database are not its work,
# and waking it for them would cost a pass per commit there. From its own
# database a commit still wakes it long before the naptime. A delivery
# report wakes it for an alarm's SMS only.
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

# Delivery reports, each its own commit as smsdispatch-http makes them, at
# about 50 a second: the worker's database's transactions while they come,
# and after them until its statistics are flushed, less the reports' own.
sub commits_during_reports
{
	my ($rows) = @_;
	my $reports = $node->safe_psql('postgres',
		"SELECT count(*) FROM verification.sms_log WHERE $rows");
	wait_until($node,
		"SELECT count(*) FROM verification.sms_log WHERE $rows AND send_state <> 'submitted'",
		'0', 20);
	sleep 2;
	my $before = worker_db_commits();
	$node->safe_psql(
		'postgres', qq{
		DO \$\$
		DECLARE
			r bigint;
		BEGIN
			FOR r IN SELECT id FROM verification.sms_log WHERE $rows LOOP
				PERFORM smsdispatch.delivery_report(r, smsdispatch.callback_token(r), 1,
													'delivered', now());
				COMMIT;
				PERFORM pg_sleep(0.02);
			END LOOP;
		END
		\$\$});
	sleep 2;
	return worker_db_commits() - $before - $reports;
}

# a report on a text SMS changes nothing the worker acts on (two come for
# every SMS through Kannel): it does not wake the worker
$node->safe_psql('postgres', q{
	SELECT sms_send('+38050' || (2000000 + g), 'report me') FROM generate_series(1, 100) g});
my $text_commits = commits_during_reports("body = 'report me'");
cmp_ok($text_commits, '<', 20,
	"100 delivery reports on text SMS cost the worker's database $text_commits transactions");

# a report on an alarm's SMS wakes it: the escalation reads it
make_list($node, 'reports', 0, [ '+380502999999', 1, '1 hour' ]);
$node->safe_psql('postgres', q{
	SELECT sms_enqueue('alarm ' || g, 'reports') FROM generate_series(1, 100) g});
my $alarm_commits = commits_during_reports('message_id IS NOT NULL');
cmp_ok($alarm_commits, '>=', 50,
	"100 delivery reports on alarms' SMS wake the worker: $alarm_commits transactions");

$node->stop;
done_testing();

# Done-when 6: DROP DATABASE of another database while the worker is busy
# finishes in under 5 s; pg_ctl stop -m fast with the worker mid-pass
# finishes in under 5 s. Also: the worker shows itself in pg_stat_activity,
# idles while the extension is not installed and starts work once it is.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use SmsWorkerNode;

my $node = worker_node('signals', no_extension => 1);

ok( wait_until(
		$node,
		"SELECT backend_type || ' | ' || datname || ' | ' || application_name || ' | ' || query
		   FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'",
		'smsdispatch worker | postgres | smsdispatch worker | smsdispatch: extension not installed',
		10),
	'the worker shows in pg_stat_activity, idle while the extension is missing');

$node->safe_psql('postgres', 'CREATE EXTENSION smsdispatch');
make_list($node, 'oncall', 0,
	[ '+380501000001', 1, '1 s' ], [ '+380501000002', 2, '1 s' ],
	[ '+380501000003', 3, '1 s' ]);
$node->safe_psql('postgres', "SELECT sms_enqueue('first', 'oncall')");
ok( wait_until(
		$node,
		"SELECT send_state FROM verification.sms_log WHERE phone_number = '+380501000001'",
		'submitted', 10),
	'once the extension exists the worker serves it');

$node->safe_psql('postgres', 'CREATE DATABASE other1');
$node->safe_psql('postgres', 'CREATE DATABASE other2');

# busy: 1000 alarms whose levels escalate together
$node->safe_psql('postgres',
	"SELECT sms_enqueue('busy ' || g, 'oncall') FROM generate_series(1, 1000) g");
my $active = $node->safe_psql(
	'postgres', q{
	DO $$
	BEGIN
		FOR i IN 1 .. 20000 LOOP
			PERFORM pg_stat_clear_snapshot();
			PERFORM 1 FROM pg_stat_activity
			 WHERE backend_type = 'smsdispatch worker' AND state = 'active'
			   AND query LIKE '%escalating%'
			   AND now() - query_start < interval '1 s';
			EXIT WHEN FOUND;
			PERFORM pg_sleep(0.0005);
		END LOOP;
	END
	$$;
	SELECT state FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'});
my $start = time();
$node->safe_psql('postgres', 'DROP DATABASE other1');
my $elapsed = time() - $start;
note("worker was '$active' when DROP DATABASE began");
cmp_ok($elapsed, '<', 5, sprintf('DROP DATABASE while the worker escalates: %.2f s', $elapsed));

ok( wait_until(
		$node,
		"SELECT count(*) FROM smsdispatch.message WHERE state = 'open'", '0', 30),
	'the busy alarms end');

# mid-pass for sure: the loopback channel waits for an alarm we hold locked
$node->append_conf('postgresql.conf', "smsdispatch.loopback_channel = off\n");
$node->reload;
sleep 1;
my $number = $node->safe_psql('postgres', "SELECT sms_enqueue('locked', 'oncall')");
my $holder = $node->background_psql('postgres');
$holder->query_safe(
	"BEGIN; SELECT 1 FROM smsdispatch.message WHERE number = '$number' FOR UPDATE");
$node->append_conf('postgresql.conf', "smsdispatch.loopback_channel = on\n");
$node->reload;
ok( wait_until(
		$node,
		"SELECT query || ' | ' || wait_event_type FROM pg_stat_activity
		  WHERE backend_type = 'smsdispatch worker'",
		'smsdispatch: loopback channel | Lock', 10),
	'the worker is stuck mid-pass on a lock');

$start = time();
$node->safe_psql('postgres', 'DROP DATABASE other2');
$elapsed = time() - $start;
cmp_ok($elapsed, '<', 5,
	sprintf('DROP DATABASE while the worker waits mid-pass: %.2f s', $elapsed));

$start = time();
my $log_offset = -s $node->logfile;
$node->stop('fast');
$elapsed = time() - $start;
cmp_ok($elapsed, '<', 5, sprintf('pg_ctl stop -m fast mid-pass: %.2f s', $elapsed))
  or diag('the server log of the stop: ' . substr(slurp_file($node->logfile), $log_offset));
$holder->quit;

done_testing();

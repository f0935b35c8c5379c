# Many databases on one server: with smsdispatch.database = '*' every
# database that has the extension gets its own worker, so each one's alarms
# escalate and its verification SMS leave; a database given the extension
# while the server runs is served at once (within two naptimes); DROP
# EXTENSION ends that database's worker within a naptime; a served database
# dropped ends its worker with no crash and no FATAL loop; the others go on.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use SmsWorkerNode;

my $naptime = 1;
my $node = worker_node('launcher', no_extension => 1,
	conf => "smsdispatch.database = '*'\nsmsdispatch.naptime = '${naptime}s'\n"
	  . "max_worker_processes = 16\n");

# workers by database, as pg_stat_activity shows them
sub workers
{
	return $node->safe_psql('postgres', q{
		SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity
		 WHERE backend_type = 'smsdispatch worker'});
}

# a database with the extension, a verification table and an on-call list
# whose level 1 times out at once
sub make_database
{
	my ($db) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, q{
		CREATE SCHEMA verification;
		CREATE TABLE verification.verifications (phone_number text, code text);
		CREATE EXTENSION smsdispatch;
		SELECT sms_list_create('oncall', NULL, 0);
		SELECT sms_list_add('oncall', '+380501000001', 1, '1 s');
		SELECT sms_list_add('oncall', '+380501000002', 2, '1 h');
	});
}

is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'smsdispatch launcher' AND datname IS NULL"),
	'1', 'one launcher runs, connected to no database');

make_database($_) for qw(db1 db2 db3);
ok($node->poll_query_until('postgres', q{
		SELECT string_agg(datname, ',' ORDER BY datname) = 'db1,db2,db3' FROM pg_stat_activity
		 WHERE backend_type = 'smsdispatch worker'}),
	'one worker per database with the extension, none in postgres, which has none');

# each database's alarm escalates to level 2 and its verification SMS leaves
for my $db (qw(db1 db2 db3))
{
	$node->safe_psql($db, q{
		SELECT sms_enqueue('disk full', 'oncall');
		INSERT INTO verification.verifications VALUES ('+380501000009', '4812');
	});
}
for my $db (qw(db1 db2 db3))
{
	ok( $node->poll_query_until($db, q{
			SELECT count(*) = 2 FROM verification.sms_log
			 WHERE send_state = 'submitted'
			   AND phone_number IN ('+380501000002', '+380501000009')}),
		"$db: the alarm escalated to level 2 and the verification SMS left");
}

# a fourth database given the extension while the server runs
$node->safe_psql('postgres', 'CREATE DATABASE db4');
my $created = time();
$node->safe_psql('db4', 'CREATE EXTENSION smsdispatch');
my $served = wait_until($node, q{
	SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type = 'smsdispatch worker' AND datname = 'db4'}, '1', 2 * $naptime);
ok($served, sprintf('db4 is served within two naptimes (%.1f s)', time() - $created));
my $id = $node->safe_psql('db4', q{SELECT sms_send('+380501000004', 'hello db4')});
ok($node->poll_query_until('db4',
		"SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $id"),
	'db4 sends');

# DROP EXTENSION in db2 ends its worker within a naptime (plus a margin
# for a loaded machine); the others go on
$node->safe_psql('db2',
	'ALTER EXTENSION smsdispatch DROP SCHEMA verification; DROP EXTENSION smsdispatch CASCADE');
ok(wait_until($node, q{
	SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type = 'smsdispatch worker' AND datname = 'db2'}, '0', $naptime + 2),
	'DROP EXTENSION ends the worker of db2');
# and it is not started again (three naptimes later)
sleep(3 * $naptime);
is(workers(), 'db1,db3,db4', 'no worker comes back in db2');

# a served database dropped: its worker ends, no crash, no FATAL loop
my $log_offset = -s $node->logfile;
$node->safe_psql('db3', q{SELECT sms_enqueue('db3 alarm', 'oncall')});
$node->safe_psql('postgres', 'DROP DATABASE db3 WITH (FORCE)');
ok(wait_until($node, q{
	SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity
	 WHERE backend_type = 'smsdispatch worker'}, 'db1,db4', $naptime + 2),
	'the worker of the dropped db3 ended');
for my $db (qw(db1 db4))
{
	my $sms = $node->safe_psql($db, qq{SELECT sms_send('+380501000005', 'after the drop')});
	ok($node->poll_query_until($db,
			"SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $sms"),
		"$db goes on sending after db3 was dropped");
}
sleep(3 * $naptime);
my $log = substr(slurp_file($node->logfile), $log_offset);
my $fatal = () = $log =~ /FATAL:  (?!terminating background worker "smsdispatch worker" due to administrator command)/g;
is($fatal, 0, 'no FATAL in three naptimes but the dropped worker being told to end');
unlike($log, qr/terminated by signal|server process .* was terminated/, 'no crash');
is(workers(), 'db1,db4', 'nothing restarts in the dropped database');

# channel_health in postgres, which has no extension worker: created there
# now, the worker starts (postgres is a database like the others)
$node->safe_psql('postgres', 'CREATE EXTENSION smsdispatch');
ok($node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE backend_type = 'smsdispatch worker' AND datname = 'postgres'}),
	'CREATE EXTENSION in postgres starts its worker');

$node->stop;
done_testing();

# Before smsdispatch.database exists the worker waits quietly: one FATAL
# from the first connection attempt, one LOG saying it waits, then nothing
# while it checks every naptime; once the database and the extension exist
# it serves them. SIGTERM ends the waiting worker.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use PostgreSQL::Test::Utils;
use Test::More;
use SmsWorkerNode;
use Time::HiRes qw(usleep);

my $node = worker_node('nodb', no_extension => 1,
	conf => "smsdispatch.database = 'app'\nsmsdispatch.naptime = '200ms'\n");

ok( $node->wait_for_log(qr/smsdispatch worker is waiting for database "app" to exist/),
	'the worker says it waits for its database');
my $logged = slurp_file($node->logfile);
like($logged, qr/HINT:  Create the database or change smsdispatch.database/, 'with a hint');

# 12 s: the postmaster would have restarted a failing worker twice by then
sleep 12;
my $log = slurp_file($node->logfile);
my $fatal = () = $log =~ /FATAL:  database "app" does not exist/g;
cmp_ok($fatal, '<=', 1, "at most one FATAL in 12 s ($fatal)");
my $waiting = () = $log =~ /is waiting for database "app"/g;
is($waiting, 1, 'said once');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_stat_activity
	   WHERE backend_type = 'smsdispatch worker' AND query = 'smsdispatch: waiting for its database'}),
	'1', 'pg_stat_activity shows it waiting');

# SIGTERM ends the waiting worker (a pg_ctl stop would otherwise hang); the
# postmaster starts another one, which waits again
my $waiting_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($waiting_pid)");
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE backend_type = 'smsdispatch worker' AND pid <> $waiting_pid
		   AND query = 'smsdispatch: waiting for its database'}),
	'SIGTERM ends the waiting worker; the next one waits too');

$node->safe_psql('postgres', 'CREATE DATABASE app');
ok($node->wait_for_log(qr/database "app" exists now; the smsdispatch worker restarts to serve it/),
	'the new database is noticed');
ok($node->wait_for_log(qr/smsdispatch worker started in database "app"/), 'the worker serves it');
$node->safe_psql('app', 'CREATE EXTENSION smsdispatch');
my $id = $node->safe_psql('app', q{SELECT sms_send('+380501234561', 'hello')});
ok( $node->poll_query_until('app',
		"SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $id"),
	'an SMS queued in it is handled (loopback channel)');
$log = slurp_file($node->logfile);
$fatal = () = $log =~ /FATAL:  database "app" does not exist/g;
cmp_ok($fatal, '<=', 1, 'no more FATAL');

$node->stop;
done_testing();

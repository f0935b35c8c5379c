# An admin of one database sees and changes nothing of another database
# through the extension: stats(), stats_reset() and channel_health are the
# calling database's own and say so (a database column). A database that
# has the extension but no worker says so: a WARNING at CREATE EXTENSION
# and an 'unserved' row in channel_health, whether smsdispatch.database
# does not name it or smsdispatch.max_databases others are served (a
# WARNING in the server log names it).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use lib "$FindBin::RealBin/../perl";
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;
use SmsWorkerNode;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('isolation',
	"smsdispatch.database = 'postgres, dba, dbb, dbc'\nsmsdispatch.max_databases = 3\n"
	  . "smsdispatch.ip2sms_poll_interval = '1h'\n");

for my $db (qw(dba dbb))
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION smsdispatch');
}
$node->safe_psql('postgres', q{
	CREATE ROLE alice LOGIN IN ROLE smsdispatch_admin;
	REVOKE CONNECT ON DATABASE dbb FROM PUBLIC;
});
ok($node->poll_query_until('postgres', q{
		SELECT string_agg(datname, ',' ORDER BY datname) = 'dba,dbb,postgres'
		  FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'}),
	'three workers, one per database');

# traffic in dbb only: five sends, then a gateway that fails
$node->safe_psql('dbb', q{
	SELECT sms_send('+38050' || lpad((g * 10 + 1)::text, 7, '3'), 'dbb ' || g) FROM generate_series(1, 5) AS g});
ok($node->poll_query_until('dbb',
		"SELECT count(*) = 5 FROM verification.sms_log WHERE send_state = 'submitted'"),
	'dbb sent its five SMS')
  or diag($node->safe_psql('dbb', 'SELECT phone_number, send_state, last_error FROM verification.sms_log'));
$mock->control(mode => '5xx');
$node->safe_psql('dbb', q{SELECT sms_send('+380502222229', 'dbb failing')});
ok($node->poll_query_until('dbb',
		"SELECT state <> 'ok' FROM smsdispatch.channel_health WHERE channel = 'ip2sms'"),
	"dbb's channel is not ok");

sub alice
{
	my ($sql) = @_;
	return $node->safe_psql('dba', "SET ROLE alice; $sql");
}

is(alice(q{SELECT value || ' ' || database FROM smsdispatch.stats() WHERE name = 'requests_send'}),
	'0 dba', "dba's stats() shows dba's counters, none of dbb's sends");
is(alice(q{SELECT string_agg(DISTINCT database, ',') FROM smsdispatch.stats()}),
	'dba', 'every row of stats() in dba is of dba');
is(alice(q{SELECT state || ' ' || database FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
	'ok dba', "dba's channel_health is dba's own channel, not dbb's failing one");
is(alice(q{SELECT string_agg(DISTINCT database, ',') FROM smsdispatch.channel_health}),
	'dba', 'every row of channel_health in dba is of dba');
is($node->safe_psql('dbb',
		q{SELECT database FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
	'dbb', "dbb's channel_health names dbb");

# alice's reset in dba changes nothing of dbb
my $dbb_sends = $node->safe_psql('dbb',
	q{SELECT value FROM smsdispatch.stats() WHERE name = 'requests_send'});
cmp_ok($dbb_sends, '>=', 5, "dbb counted its sends ($dbb_sends)");
alice('SELECT smsdispatch.stats_reset()');
is($node->safe_psql('dbb',
		q{SELECT value FROM smsdispatch.stats() WHERE name = 'requests_send'}),
	$dbb_sends, "stats_reset() in dba leaves dbb's counters alone");
my ($rc, $out, $err) = $node->psql('dbb', 'SELECT 1', extra_params => [ '-U', 'alice' ]);
isnt($rc, 0, 'alice cannot connect to dbb at all');
$mock->control(mode => 'normal');

# a database smsdispatch.database does not name: a WARNING, and 'unserved'
$node->safe_psql('postgres', 'CREATE DATABASE dbz');
($rc, $out, $err) = $node->psql('dbz', 'CREATE EXTENSION smsdispatch');
is($rc, 0, 'CREATE EXTENSION in an unnamed database works');
like($err, qr/WARNING:  no smsdispatch worker serves database "dbz": its SMS stay queued/,
	'with a WARNING that nothing serves it');
# the query of docs/operations.md, Many databases
is($node->safe_psql('dbz',
		q{SELECT channel, state, last_error, database FROM smsdispatch.channel_health WHERE channel = 'ip2sms';}),
	q{ip2sms|unserved|no smsdispatch worker serves this database: smsdispatch.database is 'postgres, dba, dbb, dbc'|dbz},
	'channel_health in dbz says it is unserved and why');

# dbc is named, but max_databases = 3 workers run already
$node->safe_psql('postgres', 'CREATE DATABASE dbc');
($rc, $out, $err) = $node->psql('dbc', 'CREATE EXTENSION smsdispatch');
unlike($err, qr/WARNING/, 'no WARNING at CREATE EXTENSION in a named database');
ok($node->wait_for_log(qr/WARNING:  smsdispatch: smsdispatch.max_databases \(3\) databases are served already; database\(s\) "dbc" are not/),
	'the launcher warns that max_databases is reached, naming dbc');
ok($node->poll_query_until('dbc', q{
		SELECT state = 'unserved' AND last_error LIKE '%smsdispatch.max_databases (3) others are served%'
		  FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
	'channel_health in dbc says it is unserved: max_databases');
is($node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'}),
	'3', 'still three workers');
my $log = slurp_file($node->logfile);
my $warned = () = $log =~ /max_databases \(3\) databases are served already; database\(s\) "dbc"/g;
is($warned, 1, 'the WARNING is said once, not every naptime');

# dbb renamed out of the list (its worker ended first: it is connected to
# it): no worker serves dbb_old, and its slot goes to dbc, which was left out
$node->safe_psql('postgres', q{
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity
	 WHERE backend_type = 'smsdispatch worker' AND datname = 'dbb'});
$node->safe_psql('postgres', 'ALTER DATABASE dbb RENAME TO dbb_old');
ok($node->poll_query_until('postgres', q{
		SELECT string_agg(datname, ',' ORDER BY datname) = 'dba,dbc,postgres'
		  FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'}),
	'a database renamed out of the list loses its worker; the slot serves dbc now');
ok($node->wait_for_log(qr/max_databases \(3\) databases are served already; database\(s\) "dbb" are not/),
	'and the WARNING names what is left out now: the name dbb');

$node->stop;
$mock->stop;
done_testing();

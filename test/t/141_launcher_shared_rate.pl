# What is per server stays per server when many databases are served:
# smsdispatch.ip2sms_max_rate is the server's, so two databases with a
# backlog together send at the limit, not twice it, and an alarm of either
# database still leaves within a second; a served database dropped while
# its SMS are on the wire ends its worker, and the other goes on.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use lib "$FindBin::RealBin/../perl";
use List::Util qw(min max);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use Ip2smsMock;
use SmsWorkerNode;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('shared_rate',
	"smsdispatch.database = 'postgres, db2'\n"
	  . "smsdispatch.ip2sms_max_rate = 20\nsmsdispatch.ip2sms_poll_interval = '1h'\n");
$node->safe_psql('postgres', 'CREATE DATABASE db2');
$node->safe_psql('db2', 'CREATE EXTENSION smsdispatch');
ok($node->poll_query_until('postgres', q{
		SELECT string_agg(datname, ',' ORDER BY datname) = 'db2,postgres'
		  FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'}),
	'one worker in each database');

for my $db (qw(postgres db2))
{
	$node->safe_psql($db, qq{
		SELECT sms_list_create('oncall');
		SELECT sms_list_add('oncall', '+380509999999', 1, '1 h');
		SELECT sms_send('+38050' || lpad(g::text, 7, '1'), '$db text ' || g)
		  FROM generate_series(1, 600) AS g});
}

# while both backlogs drain, an alarm in each database, one after the other
my %alarm_at;
for my $db (qw(db2 postgres))
{
	my @before = $mock->wait_sends(0, 0);
	ok($mock->wait_sends(@before + 20, 10) >= @before + 20, "the backlogs are draining before the $db alarm");
	$alarm_at{$db} = time();
	$node->safe_psql($db, "SELECT sms_enqueue('$db alarm', 'oncall')");
	my $end = time() + 10;
	my ($sent) = ();
	while (!$sent && time() < $end)
	{
		($sent) = grep { $_->{kind} eq 'send' && ($_->{text} // '') =~ /\Q$db\E alarm/ }
		  $mock->log_entries;
		Time::HiRes::usleep(20_000) unless $sent;
	}
	ok($sent, "the $db alarm reached the gateway");
	my $took = $sent ? $sent->{t} - $alarm_at{$db} : 99;
	cmp_ok($took, '<', 1, sprintf('the %s alarm left within 1 s of its enqueue (%.2f s)', $db, $took));
}

# the rate is the server's: over every second of the run, at most 20 sends
# (and a little for the jitter of arrival times at the mock)
my @sends = $mock->wait_sends(300, 60);
my @t = map { $_->{t} } @sends;
for my $db (qw(postgres db2))
{
	my $n = grep { ($_->{text} // '') =~ /^\Q$db\E / } @sends;
	cmp_ok($n, '>=', @sends / 4, "$db had its share of the sends ($n of " . @sends . ')');
}
my $start = min(@t);
my %per_second;
$per_second{ int($_ - $start) }++ for @t;
delete $per_second{ int(max(@t) - $start) };	# the last, partial second
cmp_ok(max(values %per_second), '<=', 22,
	'no second carried more than 20 sends of the two databases together');
my $span = max(@t) - $start;
cmp_ok(scalar(@t) / $span, '<=', 21,
	sprintf('%d sends in %.1f s: the two databases share 20/s', scalar @t, $span));
cmp_ok(scalar(@t) / $span, '>=', 12, 'and the limit is not split into less than it allows');

# db2 dropped while its SMS are on the wire: the gateway answers slowly
$mock->control(mode => 'slow', delay_ms => 1500);
my $on_wire = $node->poll_query_until('db2',
	"SELECT count(*) > 0 FROM verification.sms_log WHERE send_state = 'sending'");
ok($on_wire, 'db2 has SMS on the wire');
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', 'DROP DATABASE db2 WITH (FORCE)');
$mock->control(mode => 'normal');
ok($node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE backend_type = 'smsdispatch worker' AND datname = 'postgres'}),
	'the worker of postgres still runs');
my $id = $node->safe_psql('postgres', q{SELECT sms_enqueue('after the drop', 'oncall')});
ok($node->poll_query_until('postgres', qq{
		SELECT send_state = 'submitted' FROM verification.sms_log l
		  JOIN smsdispatch.message m ON m.id = l.message_id WHERE m.number = '$id'}),
	'postgres goes on: its alarm after the drop is sent');
sleep(3);
my $log = substr(slurp_file($node->logfile), $log_offset);
unlike($log, qr/terminated by signal|server process .* was terminated/, 'no crash');
my $fatal = () = $log =~ /FATAL:  (?!terminating background worker "smsdispatch worker" due to administrator command)/g;
is($fatal, 0, 'no FATAL but the dropped worker being told to end');

$node->stop;
$mock->stop;
done_testing();

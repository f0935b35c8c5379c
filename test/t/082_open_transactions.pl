# A session left idle in a transaction after sms_send or
# sms_enqueue blocks nobody. Beside it the application's verification INSERT
# for the same phone and another sms_enqueue complete within 2 s, the
# abuse guard still counts the open transaction's SMS, and spool files to
# that phone and spool alarms are imported, not sent to failed/. A spool
# file that meets a lock another session still holds stays in the spool
# directory, is retried with a WARNING and is imported once the lock ends.
# Concurrent senders never exceed smsdispatch.max_per_phone_per_hour, and
# concurrent enqueues never share a number (pgbench).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);
use SmsSpool;
use SmsWorkerNode;

my $spool = PostgreSQL::Test::Utils::tempdir();
my $node = worker_node('open_transactions',
	conf => "smsdispatch.spool_dir = '$spool'\n"
	  . "smsdispatch.naptime = '200ms'\n"
	  . "smsdispatch.max_per_phone_per_hour = 3\n");
make_list($node, 'oncall', 0, [ '+380501000001', 1, '1 h' ]);
$node->safe_psql('postgres', q{
	CREATE TABLE verification.verifications (id serial PRIMARY KEY,
		phone_number text NOT NULL, code text NOT NULL);
	SELECT smsdispatch.watch_verifications('verification.verifications');});

# Runs $sql in a new session whose statements may take at most 5 s (so
# that a wait fails the test instead of hanging it); returns whether it
# succeeded, how long it took, and its output.
sub timed_psql
{
	my ($sql) = @_;
	my $start = time();
	my ($ret, $out, $err) = $node->psql('postgres', "SET statement_timeout = '5s';\n$sql");
	my $took = time() - $start;
	diag("failed: $err") if $ret != 0;
	return ($ret == 0, $took, $out);
}

# Waits (at most 20 s) until $name has left the spool directory; returns
# where it went: processed, failed or '' (still there).
sub spool_outcome
{
	my ($name) = @_;
	my $end = time() + 20;
	while (time() < $end)
	{
		return 'processed' if -e "$spool/processed/$name";
		return 'failed' if -e "$spool/failed/$name";
		usleep(50_000);
	}
	return '';
}

my $phone = '+380509990001';

# 1. An idle transaction that sent an SMS to the phone, and another that
# enqueued an alarm.
my $sender = $node->background_psql('postgres');
$sender->query_safe("BEGIN; SELECT sms_send('$phone', 'x')");
my $enqueuer = $node->background_psql('postgres');
my $held_number = $enqueuer->query_safe(
	"BEGIN; SELECT sms_enqueue('held alarm', 'oncall')");
$held_number =~ s/\s+//g;

my ($ok, $took) = timed_psql(
	"INSERT INTO verification.verifications (phone_number, code) VALUES ('$phone', '4812')");
ok($ok, 'the verification INSERT for the phone succeeds beside the open sms_send');
cmp_ok($took, '<', 2, sprintf('and completes within 2 s (%.2f s)', $took));

my $number;
($ok, $took, $number) = timed_psql("SELECT sms_enqueue('another alarm', 'oncall')");
ok($ok, 'another sms_enqueue succeeds beside the open sms_enqueue');
cmp_ok($took, '<', 2, sprintf('and completes within 2 s (%.2f s)', $took));
like($number, qr/^[0-9]{4}$/, "it gets a number ($number)");
isnt($number, $held_number, "of its own (the open one has $held_number)");

# The guard counts the open transaction's SMS: with the limit at 3, the
# open one and the verification make two, one more passes, the next fails.
($ok) = timed_psql("SELECT sms_send('$phone', 'third')");
ok($ok, 'a third SMS to the phone is accepted');
($ok, $took) = timed_psql("SELECT sms_send('$phone', 'fourth')");
is( $node->safe_psql('postgres', "SELECT send_state || ': ' || last_error FROM verification.sms_log
		WHERE phone_number = '$phone' AND body = 'fourth'"),
	"failed: abuse guard: 3 SMS to $phone in the last hour reached smsdispatch.max_per_phone_per_hour",
	'the fourth is refused by the guard: the open transaction\'s SMS counts');

# Spool files to the phone and to the list are imported while both
# transactions stay open.
$sender->query_safe("SELECT sms_send('+380509990002', 'y')");
drop_spool_file($spool, 'to-phone-held.xml', "<SMS><TO>+380509990002</TO><MSG>spool SMS</MSG></SMS>");
drop_spool_file($spool, 'alarm.xml',
	'<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>spool alarm</MSG></SMS>');
is(spool_outcome('to-phone-held.xml'), 'processed',
	'a spool file to a phone an open transaction sent to is imported');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM verification.sms_log WHERE body = 'spool SMS' AND send_state <> 'failed'"),
	'1', 'and its SMS is queued');
is(spool_outcome('alarm.xml'), 'processed',
	'a spool alarm beside an open sms_enqueue is imported');
is( $node->safe_psql('postgres', "SELECT count(DISTINCT number) FROM smsdispatch.message"),
	'2', 'the committed alarms have two numbers');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM smsdispatch.message WHERE number = '$held_number'"),
	'0', 'none of them the open enqueue\'s number');

$sender->query_safe('COMMIT');
$enqueuer->query_safe('COMMIT');
$sender->quit;
$enqueuer->quit;
is( $node->safe_psql('postgres',
		"SELECT count(*) = count(DISTINCT number) FROM smsdispatch.message WHERE state = 'open'"),
	't', 'after the commits every open alarm has its own number');

# 2. A lock that still stops the import (the list row, held as sms_list_drop
# holds it): the file stays, the retry is logged, and it is imported once
# the lock ends.
my $holder = $node->background_psql('postgres');
$holder->query_safe(
	"BEGIN; SELECT 1 FROM smsdispatch.recipient_list WHERE name = 'oncall' FOR UPDATE");
my $log_offset = -s $node->logfile;
drop_spool_file($spool, 'locked-list.xml',
	'<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>behind a lock</MSG></SMS>');
my $retried = qr/WARNING:  smsdispatch: spool file "locked-list.xml" stays in the spool directory and is tried again on a later pass: canceling statement due to lock timeout/;
my $end = time() + 20;
usleep(50_000)
  until time() > $end
  || -e "$spool/failed/locked-list.xml"
  || slurp_file($node->logfile, $log_offset) =~ $retried;
like(slurp_file($node->logfile, $log_offset), $retried,
	'the import that met the lock is logged as retried later');
ok(-e "$spool/locked-list.xml" && !-e "$spool/failed/locked-list.xml",
	'the file is still in the spool directory, not in failed/');
$holder->query_safe('COMMIT');
$holder->quit;
is(spool_outcome('locked-list.xml'), 'processed', 'once the lock ends, the file is imported');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM smsdispatch.message WHERE body = 'behind a lock'"),
	'1', 'as one alarm');
is($node->safe_psql('postgres', 'SELECT count(*) FROM smsdispatch.spool_failure'),
	'0', 'no spool file was refused');

# 3. Concurrency: 6 clients at once, each transaction an SMS to one phone
# and an alarm, half of them cancelled (their numbers stay in quarantine).
my $script = "$spool/../bench.sql";
open(my $fh, '>', $script) or die;
print $fh "SELECT sms_send('+380509990003', 'bench');\n"
  . "BEGIN;\n"
  . "SELECT sms_enqueue('bench alarm', 'oncall')::int AS n \\gset\n"
  . "SELECT CASE WHEN :n % 2 = 0 THEN sms_cancel(lpad(:n::text, 4, '0')) END;\n"
  . "COMMIT;\n";
close($fh);
my ($out, $err);
my $bench_ok = IPC::Run::run(
	[ $node->config_data('--bindir') . '/pgbench', '-n', '-c', '6', '-j', '2', '-t', '40',
		'-f', $script, '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$out, '2>', \$err);
ok($bench_ok, 'pgbench ran') or diag($err);
like($out, qr/number of failed transactions: 0 /, 'no transaction failed');
is( $node->safe_psql('postgres', "SELECT count(*) FILTER (WHERE send_state <> 'failed')
		|| ' ' || count(*) FROM verification.sms_log WHERE phone_number = '+380509990003'"),
	'3 240', 'of 240 concurrent SMS to one phone, exactly the limit of 3 were accepted');
is( $node->safe_psql('postgres',
		"SELECT count(*) || ' ' || count(DISTINCT number) FROM smsdispatch.message"),
	'244 244', '244 alarms, open or in quarantine, have 244 numbers');

done_testing();

# kill -9 of the worker while 2,000 IP2SMS messages are queued at
# ip2sms_max_connections = 16: rows are claimed only for free connections,
# so at most the 16 requests in flight and one recording batch (64) end
# 'unknown' (never silently re-sent); every other row is submitted after the
# restart, and the mock gateway received no (number, text) pair twice.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;
use SmsWorkerNode qw(crash_worker);

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('crash',
	"smsdispatch.ip2sms_poll_interval = '1h'\nrestart_after_crash = on\n"
	  . "smsdispatch.ip2sms_max_connections = 16\n");

# slow answers keep many requests on the wire when the worker dies
$mock->control(mode => 'slow', delay_ms => 20, count => 1000000, kind => 'send');
$node->safe_psql('postgres', q{
	SELECT sms_send('+38050' || lpad(g::text, 7, '0'), 'crash test ' || g)
	  FROM generate_series(1, 2000) AS g});

ok($node->poll_query_until('postgres',
	"SELECT count(*) >= 100 FROM verification.sms_log WHERE send_state = 'submitted'"),
	'sending is under way');
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'smsdispatch%' LIMIT 1");
ok($pid =~ /^\d+$/, 'found the worker');
my $before = $node->safe_psql('postgres',
	"SELECT count(*) FROM verification.sms_log WHERE send_state = 'sending'");
ok($before > 0, "$before rows were being sent when the worker was killed");
# the postmaster restarts after the crash; the worker comes back
crash_worker($node, $pid);
$mock->control(mode => 'normal');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM verification.sms_log WHERE send_state IN ('queued', 'sending')"),
	'the queue drained after the restart');

is($node->safe_psql('postgres',
	"SELECT count(*) FROM verification.sms_log WHERE send_state NOT IN ('submitted', 'failed', 'unknown')"),
	'0', 'every row is submitted, failed or unknown');
my $unknown = $node->safe_psql('postgres',
	"SELECT count(*) FROM verification.sms_log WHERE send_state = 'unknown'");
ok($unknown > 0, "$unknown rows in flight became unknown");
cmp_ok($unknown, '<=', 16 + 64, 'at most the 16 in flight and one recording batch are in doubt');
cmp_ok($before, '<=', 16 + 64, "$before rows were 'sending' when the worker was killed");
is($node->safe_psql('postgres',
	"SELECT count(*) FROM verification.sms_log
	  WHERE send_state = 'submitted' OR gateway_status = 'Rejected'"),
	2000 - $unknown, 'every other row was sent: submitted, or refused by the gateway for its number');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM verification.sms_log WHERE send_state = 'unknown'
	    AND last_error NOT LIKE '%in flight; not re-sent'"),
	'0', 'unknown rows say why');

my %seen;
my @sent = grep { $_->{kind} eq 'send' } $mock->log_entries;
my @dups = grep { $seen{"$_->{to}|$_->{text}"}++ } @sent;
is(scalar @dups, 0, 'the mock received no (number, text) pair twice');
my $submitted = $node->safe_psql('postgres',
	"SELECT count(*) FROM verification.sms_log WHERE send_state = 'submitted'");
cmp_ok(scalar(@sent), '>=', $submitted, 'every submitted row reached the mock');

# An operator who knows that an 'unknown' row did not leave re-queues it with
# the statement of docs/channels.md, as printed: it is sent, once more (a
# row whose number the mock accepts: one ending in 2 it refuses).
my ($requeue) = slurp_file("$FindBin::RealBin/../../docs/channels.md")
  =~ /re-queues it:\n\n```sql\n(UPDATE verification\.sms_log [^\n]*WHERE id = )42;\n```/
  or die 'docs/channels.md shows no re-queueing statement';
my ($id, $text) = split /\|/, $node->safe_psql('postgres',
	"SELECT id, body FROM verification.sms_log WHERE send_state = 'unknown'
	    AND phone_number NOT LIKE '%2' ORDER BY id LIMIT 1");
my $times = grep { $_->{text} eq $text } @sent;
$node->safe_psql('postgres', "$requeue$id;");
ok($node->poll_query_until('postgres',
	"SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $id"),
	'the re-queued row is submitted');
is(scalar(grep { $_->{kind} eq 'send' && $_->{text} eq $text } $mock->log_entries),
	$times + 1, 'and reached the mock once more');

$node->stop;
$mock->stop;
done_testing();

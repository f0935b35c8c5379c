# A long list name does not stop the escalation. A list
# whose name has 100,000 characters (made the 1.1 way, by a direct INSERT
# as the owner: 1.2's sms_list_create refuses it) has an alarm that
# exhausts; NOTIFY's payload has at most 8000 bytes, and a reason carrying
# the whole name failed every escalation pass, so that no other alarm
# escalated. Here the other alarm, enqueued once the long one is due to
# exhaust, escalates to its level 2; the long one is exhausted, announced
# with a payload that fits and a WARNING that cuts the name.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsWorkerNode;

my $node = worker_node('long_list_name');
my $long = "repeat('L', 100000)";

my ($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT sms_list_create($long)");
like($stderr, qr/ERROR:  recipient list name "L{20}\.\.\." is 100000 characters long\nHINT:  Give at most 63 characters/,
	'1.2 refuses a 100,000-character list name');
$node->safe_psql('postgres', qq{
	INSERT INTO smsdispatch.recipient_list (name) VALUES ($long) ON CONFLICT DO NOTHING;
	SELECT sms_list_add($long, '+380508700001', 1, '1 s');});
make_list($node, 'other', 0, [ '+380508700011', 1, '1 s' ], [ '+380508700012', 2, '1 hour' ]);

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN smsdispatch_alarm');
my $log_offset = -s $node->logfile;

my $long_number = $node->safe_psql('postgres', "SELECT sms_enqueue('long name', $long)");
ok(wait_until($node, qq{SELECT count(*) FROM smsdispatch.message_recipient r
	JOIN smsdispatch.message m ON m.id = r.message_id
	WHERE m.number = '$long_number' AND r.deadline <= now()}, '1', 30),
	'the long-named alarm\'s only recipient is past the deadline: the alarm is due to exhaust');

my $other = $node->safe_psql('postgres', "SELECT sms_enqueue('other alarm', 'other')");
ok(wait_until($node, q{SELECT send_state FROM verification.sms_log WHERE phone_number = '+380508700012'},
	'submitted', 60),
	'the other alarm escalates to its level 2 meanwhile');
is($node->safe_psql('postgres', qq{SELECT state FROM smsdispatch.message WHERE number = '$long_number'}),
	'exhausted', 'the long-named alarm is exhausted');
is($node->safe_psql('postgres', qq{SELECT state || ' ' || level FROM smsdispatch.message WHERE number = '$other'}),
	'open 2', 'the other alarm is open on level 2');

# psql prints notifications after the next command it runs
my $out = $listener->query_safe('SELECT 1');
$out .= $listener->{stderr} // '';
my ($payload) = $out =~ /Asynchronous notification "smsdispatch_alarm" with payload "(.*)" received/;
ok(defined $payload, 'NOTIFY smsdispatch_alarm announced the exhausted alarm')
  or diag("psql said: " . substr($out, 0, 2000));
my $json = eval { JSON::PP->new->decode($payload // '') } // {};
is($json->{number} // '', $long_number, 'the payload names the alarm');
like($json->{reason} // '', qr/^nobody on list "L{63}\.\.\." acknowledged it in 1 round\(s\)$/,
	'the reason quotes the list name cut after 63 characters');
$listener->quit;

my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/WARNING:  smsdispatch: alarm $long_number is exhausted: nobody on list "L{63}\.\.\." acknowledged/,
	'the server log has the WARNING with the name cut');
unlike($log, qr/payload string too long/, 'no escalation pass failed on the payload');

$node->stop;
done_testing();

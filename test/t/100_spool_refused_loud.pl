# A spool file that names a list would raise an alarm; when the importer
# refuses it (an unknown list, XML that is not well-formed, a file older
# than smsdispatch.spool_max_age), nobody has been sent that alarm, and
# that is as loud as an alarm nobody can receive: a WARNING in the server
# log naming the file, the list and why, a row in smsdispatch.spool_failure
# naming the list, and NOTIFY smsdispatch_alarm with a JSON payload (state
# "refused", the list, the file, the row's id, the reason without the values
# it quotes) that a LISTENing session receives. A refused file of <TO>
# recipients is a WARNING too, and no alarm notification.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SmsSpool;
use SmsWorkerNode;

my $spool = PostgreSQL::Test::Utils::tempdir();
my $node = worker_node('spool_loud',
	conf => "smsdispatch.spool_dir = '$spool'\nsmsdispatch.naptime = '200ms'\n");
make_list($node, 'oncall', 0, [ '+380501000001', 1, '1 min' ]);

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN smsdispatch_alarm');
my $log_offset = -s $node->logfile;

drop_spool_file($spool, 'unknown-list.xml',
	'<SMS><RECIPIENT_LIST>nobody</RECIPIENT_LIST><MSG>Pump 7 down</MSG></SMS>');
# an unescaped & is the usual mistake of a monitoring tool's template
drop_spool_file($spool, 'malformed-alarm.xml',
	'<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>Disk full & db1 down</MSG></SMS>');
drop_spool_file($spool, 'old-alarm.xml',
	'<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>Fan failed</MSG></SMS>',
	mtime => time() - 7200);
drop_spool_file($spool, 'bad-phone.xml',
	'<SMS><TO>+38050123456789</TO><MSG>Pump down</MSG></SMS>');

ok(wait_until($node, 'SELECT count(*) FROM smsdispatch.spool_failure', '4', 20),
	'the four files are refused');

# the server log
my $log = slurp_file($node->logfile, $log_offset);
like($log,
	qr/WARNING:  smsdispatch: spool file "unknown-list\.xml" raised no alarm for list "nobody" and goes to failed\/: recipient list "nobody" does not exist/,
	'a WARNING names the file refused for its unknown list, the list and why');
like($log,
	qr/WARNING:  smsdispatch: spool file "malformed-alarm\.xml" raised no alarm for list "oncall" and goes to failed\/: malformed XML: line 1: /,
	'a WARNING names the malformed file and the list it named');
like($log,
	qr/WARNING:  smsdispatch: spool file "old-alarm\.xml" raised no alarm for list "oncall" and goes to failed\/: the file was last modified .*longer ago than smsdispatch.spool_max_age/,
	'a WARNING names the file too old to be sent and the list it named');
like($log, qr/HINT:  Nobody has been sent this alarm\./,
	'the WARNING says that nobody has been sent the alarm');
like($log,
	qr/WARNING:  smsdispatch: spool file "bad-phone\.xml" goes to failed\/: invalid phone number/,
	'a refused file of <TO> recipients is a WARNING naming it');
unlike($log, qr/LOG:  smsdispatch: spool file/, 'no refusal is only a LOG line');

# what a LISTENing session receives: psql prints notifications after the
# next command it runs, and they come at the COMMIT of the importing pass
my %payload;
my $end = time() + 20;
while (keys %payload < 3 && time() < $end)
{
	my $out = $listener->query_safe('SELECT 1');
	$out .= $listener->{stderr} // '';
	for my $p ($out =~ /Asynchronous notification "smsdispatch_alarm" with payload "(.*)" received/g)
	{
		my $json = eval { JSON::PP->new->decode($p) } // { unparsed => $p };
		$payload{ $json->{file} // 'unparsed' } = $json;
	}
	usleep(100_000) if keys %payload < 3;
}
$listener->quit;
is(join(',', sort keys %payload), 'malformed-alarm.xml,old-alarm.xml,unknown-list.xml',
	'NOTIFY smsdispatch_alarm told of each refused alarm file, and of nothing else');

# the records
my %row = map { my ($name, $id, $list) = split /\|/, $_, -1; ($name => [ $id, $list ]) }
  split /\n/, $node->safe_psql('postgres',
	'SELECT name, id, list FROM smsdispatch.spool_failure ORDER BY name');
is_deeply({ map { $_ => $row{$_}[1] } keys %row },
	{ 'unknown-list.xml' => 'nobody', 'malformed-alarm.xml' => 'oncall',
		'old-alarm.xml' => 'oncall', 'bad-phone.xml' => '' },
	'spool_failure names the list of each refused alarm file, and none for the <TO> file');

# the query of docs/operations.md that lists the refused alarms
is($node->safe_psql('postgres', q{
	SELECT string_agg(name || ' ' || list, ', ' ORDER BY id DESC) FROM (
	SELECT id, name, list, reason, failed_at FROM smsdispatch.spool_failure
	 WHERE list IS NOT NULL ORDER BY id DESC LIMIT 10) AS f}),
	'unknown-list.xml nobody, old-alarm.xml oncall, malformed-alarm.xml oncall',
	'the refused alarms, newest first');

my ($ret, $out, $err) = $node->psql('postgres',
	'SET ROLE smsdispatch_reader; SELECT list FROM smsdispatch.spool_failure');
like($err, qr/permission denied/, 'the reader is not granted the list a refused file named');

is_deeply($payload{'unknown-list.xml'},
	{ number => undef, state => 'refused', list => 'nobody', file => 'unknown-list.xml',
		spool_failure_id => $row{'unknown-list.xml'}[0] + 0,
		reason => 'recipient list "..." does not exist (Create it with sms_list_create() and add members with sms_list_add().)' },
	'the payload: no number, state refused, the list, the file, the row\'s id and the redacted reason');
for my $name ('malformed-alarm.xml', 'old-alarm.xml')
{
	my $p = $payload{$name} // {};
	is(join(' ', map { $_ // 'null' } @$p{qw(number state list spool_failure_id)}),
		"null refused oncall $row{$name}[0]",
		"the payload of $name names the list and the row");
}
like($payload{'malformed-alarm.xml'}{reason} // '', qr/^malformed XML: line #: /,
	'the payload gives the reason of the malformed file');
like($payload{'old-alarm.xml'}{reason} // '',
	qr/^the file was last modified [#: +-]+, longer ago than smsdispatch\.spool_max_age \(# s\); it is not sent$/,
	'the payload gives the reason of the old file, without its numbers');

is($node->safe_psql('postgres',
	'SELECT (SELECT count(*) FROM smsdispatch.message) + (SELECT count(*) FROM verification.sms_log)'),
	'0', 'none of the refused files sent anything');
ok(-e "$spool/failed/$_", "$_ is in failed/")
  for qw(unknown-list.xml malformed-alarm.xml old-alarm.xml bad-phone.xml);

$node->stop;
done_testing();

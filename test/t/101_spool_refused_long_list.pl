# A refused spool file can hold a list name of tens of kilobytes, and the
# notification of its alarm must still fit in NOTIFY's 8000 bytes: the
# importer keeps going (a good file beside it becomes an alarm in the same
# pass), the LISTENing session gets the refusal with the list cut after 100
# characters, the row in smsdispatch.spool_failure holds the same cut name,
# and the server log's WARNING quotes no more of it.
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
my $node = worker_node('spool_long_list',
	conf => "smsdispatch.spool_dir = '$spool'\nsmsdispatch.naptime = '200ms'\n");
make_list($node, 'oncall', 0, [ '+380501000001', 1, '1 min' ]);

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN smsdispatch_alarm');
my $log_offset = -s $node->logfile;

# a backslash takes two bytes in JSON: 60,000 of them would make a payload
# of 120 kB; the file stays under the 64 kB a spool file may have
my $long = '\\' x 60000;
drop_spool_file($spool, 'a-long-list.xml',
	"<SMS><RECIPIENT_LIST>$long</RECIPIENT_LIST><MSG>Pump 7 down</MSG></SMS>");
drop_spool_file($spool, 'b-good.xml',
	'<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>Disk full on db1</MSG></SMS>');

ok(wait_until($node, q{SELECT count(*) FROM smsdispatch.message WHERE source = 'spool'}, '1', 20),
	'the good file beside the refused one becomes an alarm');
is($node->safe_psql('postgres', q{SELECT name || ' ' || length(list) || ' ' || (list = repeat(E'\\\\', 100))
	FROM smsdispatch.spool_failure}),
	'a-long-list.xml 100 true', 'the refused file\'s row holds its list cut after 100 characters');

my $json;
my $end = time() + 20;
while (!defined $json && time() < $end)
{
	my $out = $listener->query_safe('SELECT 1');
	$out .= $listener->{stderr} // '';
	my ($p) = $out =~ /Asynchronous notification "smsdispatch_alarm" with payload "(.*)" received/;
	$json = eval { JSON::PP->new->decode($p) } if defined $p;
	usleep(100_000) unless defined $json;
}
$listener->quit;
is(join(' ', map { $_ // 'null' } @{ $json // {} }{qw(state file)}),
	'refused a-long-list.xml', 'the LISTENing session got the refusal of the alarm file');
is($json->{list} // '', '\\' x 100, 'its payload holds the list cut after 100 characters');

my $log = slurp_file($node->logfile, $log_offset);
like($log, qr/WARNING:  smsdispatch: spool file "a-long-list\.xml" raised no alarm for list "\\{100}" and goes to failed\//,
	'the WARNING quotes the list cut after 100 characters');
unlike($log, qr/ERROR/, 'no pass of the importer failed');

$node->stop;
done_testing();

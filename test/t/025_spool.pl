# Done-when 7: a good spool file becomes an alarm; malformed XML, an unknown
# list, an empty text, a file over the cap, a symlink, a file older than
# spool_max_age, an external entity pointing at a local file and a billion
# laughs each go to failed/ with a reason, leak nothing and take under 1 s;
# a file being written under a temporary name is not read.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SmsSpool;
use SmsWorkerNode;

my $spool = PostgreSQL::Test::Utils::tempdir();
my $outside = PostgreSQL::Test::Utils::tempdir();
my $node = worker_node('spool',
	conf => "smsdispatch.spool_dir = '$spool'\nsmsdispatch.naptime = '200ms'\n");
make_list($node, 'oncall', 0, [ '+380501000001', 1, '1 min' ]);

# Writes a spool file the way writers must: under another name, renamed in.

my $good = '<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>Disk full on db1</MSG></SMS>';
my $laughs = qq{<?xml version="1.0"?>\n<!DOCTYPE SMS [\n <!ENTITY lol "lol">\n};
$laughs .= sprintf(qq{ <!ENTITY lol%d "%s">\n}, $_,
	join('', map { $_ == 1 ? '&lol;' : '&lol' . ($_ - 1) . ';' } ($_) x 10))
  for 1 .. 9;
$laughs .= qq{]>\n<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>&lol9;</MSG></SMS>\n};

# each bad file and the reason its .reason file must give
my %bad = (
	'malformed.xml' => [ '<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>x</SMS>',
		qr/^malformed XML: line 1: / ],
	'unknown-list.xml' => [ '<SMS><RECIPIENT_LIST>nobody</RECIPIENT_LIST><MSG>x</MSG></SMS>',
		qr/recipient list "nobody" does not exist/ ],
	'empty-text.xml' => [ '<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>  </MSG></SMS>',
		qr/<MSG>\) is missing or empty/ ],
	'too-big.xml' => [ '<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>'
		  . ('x' x 70000) . '</MSG></SMS>',
		qr/more than the 65536 a spool file may have/ ],
	'xxe.xml' => [ qq{<?xml version="1.0"?>\n<!DOCTYPE SMS [<!ENTITY pw SYSTEM "file:///etc/passwd">]>\n}
		  . '<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>&pw;</MSG></SMS>',
		qr/DOCTYPE; DTDs and entity declarations are not allowed/ ],
	'laughs.xml' => [ $laughs, qr/DOCTYPE; DTDs and entity declarations are not allowed/ ],
	'two-lists.xml' => [ '<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>x</MSG></SMS>',
		qr/<RECIPIENT_LIST> appears more than once/ ],
	'bad-phone.xml' => [ '<SMS><TO>not a phone</TO><MSG>x</MSG></SMS>', qr/not a phone/ ],
	'wrong-root.xml' => [ '<ALARM><MSG>x</MSG></ALARM>', qr/root element is <ALARM>, not <SMS>/ ],);

# a file being written is not read, under its temporary name
open(my $partial, '>', "$spool/incoming.xml.part") or die;
print $partial '<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>still being wri';
$partial->flush;

my $start = time();
drop_spool_file($spool, 'good.xml', $good);
drop_spool_file($spool, 'direct.xml',
	'<SMS><TO>+380 50 700 00 01</TO><TO>+380507000002</TO><TYPE>2FA</TYPE><MSG>Code 1234</MSG></SMS>');
drop_spool_file($spool, $_, $bad{$_}[0]) for sort keys %bad;
drop_spool_file($spool, 'old.xml', $good, mtime => time() - 7200);
open(my $t, '>', "$outside/target.xml") or die;
print $t $good;
close($t);
symlink("$outside/target.xml", "$spool/symlink.xml") or die "symlink: $!";

my @expected_failed = ((sort keys %bad), 'old.xml', 'symlink.xml');
my $moved = 0;
while (time() - $start < 10)
{
	$moved = grep { -e "$spool/failed/$_" || -l "$spool/failed/$_" } @expected_failed;
	$moved += grep { -e "$spool/processed/$_" } ('good.xml', 'direct.xml');
	last if $moved == @expected_failed + 2;
	usleep(20_000);
}
my $took = time() - $start;
is($moved, @expected_failed + 2, 'every file was moved');
cmp_ok($took, '<', 1, sprintf('all %d files were handled in %.2f s', $moved, $took));

for my $name (sort keys %bad)
{
	my $reason = slurp_file("$spool/failed/$name.reason");
	like($reason, $bad{$name}[1], "$name goes to failed/ with its reason");
}
like(slurp_file("$spool/failed/old.xml.reason"),
	qr/longer ago than smsdispatch.spool_max_age \(3600 s\); it is not sent/,
	'a file older than spool_max_age goes to failed/');
like(slurp_file("$spool/failed/symlink.xml.reason"),
	qr/symbolic link/, 'a symlink goes to failed/ and is not followed');
ok(-l "$spool/failed/symlink.xml" && -e "$outside/target.xml",
	'the symlink itself was moved, its target left alone');
ok(!-e "$spool/$_", "$_ left the spool directory") for @expected_failed;

is( $node->safe_psql(
		'postgres', "SELECT source || ' ' || body || ' ' || list FROM smsdispatch.message"),
	'spool Disk full on db1 oncall',
	'only the good file became an alarm, with source spool');
is( $node->safe_psql(
		'postgres', "SELECT string_agg(phone_number || ' ' || type || ' ' || body, ', ' ORDER BY phone_number)
		  FROM verification.sms_log WHERE message_id IS NULL"),
	'+380507000001 2FA Code 1234, +380507000002 2FA Code 1234',
	'<TO> recipients get one SMS each, of the <TYPE> given');
is( $node->safe_psql(
		'postgres', "SELECT string_agg(name, ',' ORDER BY name) FROM smsdispatch.spool_file"),
	'direct.xml,good.xml', 'the imports are recorded');
ok(-e "$spool/incoming.xml.part", 'the file being written was not touched');

# the writer finishes and renames it in
print $partial 'tten</MSG></SMS>';
close($partial);
rename("$spool/incoming.xml.part", "$spool/incoming.xml") or die;
ok( wait_until(
		$node,
		"SELECT count(*) FROM smsdispatch.message WHERE body = 'still being written'",
		'1', 5),
	'once renamed to *.xml, the complete file is imported');

# no leaks: private memory and open files of the worker stay flat over
# hundreds of hostile files
my $pid = worker_pid($node);

sub worker_footprint
{
	my ($anon) = slurp_file("/proc/$pid/status") =~ /^RssAnon:\s+(\d+) kB/m;
	opendir(my $d, "/proc/$pid/fd") or die;
	my $fds = grep { !/^\./ } readdir($d);
	closedir($d);
	return ($anon, $fds);
}

sub hostile_round
{
	my ($round, $count) = @_;
	my @names = sort keys %bad;
	for my $i (1 .. $count)
	{
		my $name = $names[ $i % @names ];
		drop_spool_file($spool, "r$round-$i-$name", $bad{$name}[0]);
	}
	my $end = time() + 60;
	while (time() < $end)
	{
		opendir(my $d, $spool) or die;
		my $left = grep { /\.xml$/ } readdir($d);
		closedir($d);
		return 1 if $left == 0;
		usleep(50_000);
	}
	return 0;
}

ok(hostile_round(1, 200), 'warm-up round of 200 hostile files handled');
my ($anon_before, $fds_before) = worker_footprint();
ok(hostile_round(2, 800), '800 more hostile files handled');
my ($anon_after, $fds_after) = worker_footprint();
is($pid, worker_pid($node), 'the same worker handled them all');
cmp_ok($anon_after - $anon_before, '<', 512,
	"private memory of the worker stays flat ($anon_before kB -> $anon_after kB)");
# relation files opened lazily may add one or two; a leak would add 800
cmp_ok($fds_after - $fds_before, '<', 10,
	"no file descriptor leaks ($fds_before -> $fds_after open)");
is( $node->safe_psql('postgres', 'SELECT count(*) FROM smsdispatch.message'),
	'2', 'no hostile file became an alarm');

# a spool directory that is gone: a WARNING, and the other duties go on
$node->append_conf('postgresql.conf', "smsdispatch.spool_dir = '$spool/missing'\n");
$node->reload;
my $log_offset = -s $node->logfile;
my $n = $node->safe_psql('postgres', "SELECT sms_enqueue('after the spool went', 'oncall')");
ok( $node->wait_for_log(
		qr/WARNING:  smsdispatch: could not open spool directory ".*missing": No such file or directory/,
		$log_offset),
	'a missing spool directory is reported');
ok( wait_until(
		$node,
		"SELECT l.send_state FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
		  WHERE m.number = '$n'", 'submitted', 10),
	'and the worker still sends alarms');

$node->stop;
done_testing();

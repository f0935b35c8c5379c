# The spool as docs/operations.md describes it: its example files import as printed; a
# file with two <SMS> says to write one file per message; processed/,
# failed/ and the .reason files follow the spool directory's group and
# group rights; an unreadable file names the user that must read it;
# refused files are rows of smsdispatch.spool_failure; <CHANNEL> picks the
# channel per file.
use strict;
use warnings;
use File::Basename;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsSpool;
use SmsWorkerNode;

my $spool = PostgreSQL::Test::Utils::tempdir();
# the directory a writing program shares with the server: group rights and
# setgid, as docs/operations.md recommends
chmod(02770, $spool) or die "chmod $spool: $!";
my $node = worker_node('spool14',
	conf => "smsdispatch.spool_dir = '$spool'\nsmsdispatch.naptime = '200ms'\n"
	  . "smsdispatch.max_per_phone_per_hour = 0\n");
make_list($node, 'oncall', 0, [ '+380501000001', 1, '1 min' ]);

# Writes a spool file the way writers must: under another name, renamed in.

sub wait_moved
{
	my ($name) = @_;
	for (1 .. 300)
	{
		return 'processed' if -e "$spool/processed/$name";
		return 'failed' if -e "$spool/failed/$name";
		select(undef, undef, undef, 0.1);
	}
	return 'still there';
}

# the documented example, as printed: each <SMS> line of its spool block is a file
my $doc = slurp_file(dirname(__FILE__) . '/../../docs/operations.md');
my ($block) = $doc =~ /^## Spool directory\n.*?```xml\n(.*?)```/ms;
ok(defined $block, "docs/operations.md's spool example found");
my @examples = grep { /^<SMS>/ } split /\n/, $block // '';
is(scalar(@examples), 2, 'two example files');
my $i = 0;
for my $example (@examples)
{
	$i++;
	drop_spool_file($spool, "readme-$i.xml", "$example\n");
	is(wait_moved("readme-$i.xml"), 'processed', "the documented example $i is imported");
}
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM smsdispatch.message WHERE source = 'spool' AND body = 'Disk full on db1'}),
	'1', 'the first example became an alarm');
is($node->safe_psql('postgres',
	q{SELECT string_agg(phone_number || ':' || type || ':' || channel, ',' ORDER BY phone_number)
		FROM verification.sms_log WHERE body = 'Code 4812'}),
	'+380501234567:2FA:ip2sms,+380507654321:2FA:ip2sms', 'the second one two SMS');

# the group of the spool directory may read what the importer created
my $gid = (stat $spool)[5];
for my $sub ('processed', 'failed')
{
	my @st = stat "$spool/$sub";
	is(sprintf('%04o', $st[2] & 07777), '2770', "$sub/ has the spool directory's group rights and setgid");
	is($st[5], $gid, "$sub/ has the spool directory's group");
}

# two <SMS> in one file
drop_spool_file($spool, 'two.xml', "<SMS><TO>+380501234567</TO><MSG>a</MSG></SMS>\n<SMS><TO>+380501234567</TO><MSG>b</MSG></SMS>\n");
is(wait_moved('two.xml'), 'failed', 'a file with two <SMS> is refused');
like(slurp_file("$spool/failed/two.xml.reason"),
	qr/Extra content at the end of the document.*write one file per message/,
	'its reason says to write one file per message');
my @st = stat "$spool/failed/two.xml.reason";
is(sprintf('%04o', $st[2] & 07777), '0660', 'the .reason file is readable by the group');
is($st[5], $gid, 'and has its group');

# a file the server cannot read
drop_spool_file($spool, 'unreadable.xml', '<SMS><TO>+380501234567</TO><MSG>x</MSG></SMS>', mode => 0);
is(wait_moved('unreadable.xml'), 'failed', 'an unreadable file is refused');
my $user = getpwuid($>);
like(slurp_file("$spool/failed/unreadable.xml.reason"),
	qr/Permission denied; the server runs as user "\Q$user\E", which must be able to read it/,
	'its reason names the user that must read it');

# <CHANNEL>
drop_spool_file($spool, 'modem.xml', '<SMS><TO>+380501112221</TO><CHANNEL>modem</CHANNEL><MSG>by radio</MSG></SMS>');
is(wait_moved('modem.xml'), 'processed', 'a file with <CHANNEL> is imported');
is($node->safe_psql('postgres', q{SELECT channel FROM verification.sms_log WHERE body = 'by radio'}),
	'modem', 'its SMS goes on that channel');
drop_spool_file($spool, 'alarm-modem.xml',
	'<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><CHANNEL>modem</CHANNEL><MSG>radio alarm</MSG></SMS>');
is(wait_moved('alarm-modem.xml'), 'processed', 'an alarm file with <CHANNEL> is imported');
is($node->safe_psql('postgres', q{SELECT channel FROM smsdispatch.message WHERE body = 'radio alarm'}),
	'modem', 'its alarm goes on that channel');
drop_spool_file($spool, 'bad-channel.xml', '<SMS><TO>+380501112221</TO><CHANNEL>pigeon</CHANNEL><MSG>x</MSG></SMS>');
is(wait_moved('bad-channel.xml'), 'failed', 'an unknown channel is refused');
like(slurp_file("$spool/failed/bad-channel.xml.reason"), qr/pigeon/, 'its reason names the channel');

# every refusal is a row
is($node->safe_psql('postgres',
	q{SELECT string_agg(name || ':' || (reason <> '')::text || ':' || (size IS NOT NULL)::text, ','
						ORDER BY name)
		FROM smsdispatch.spool_failure}),
	'bad-channel.xml:true:true,two.xml:true:true,unreadable.xml:true:true',
	'smsdispatch.spool_failure lists the refused files');
is($node->safe_psql('postgres',
	q{SELECT reason FROM smsdispatch.spool_failure WHERE name = 'bad-channel.xml'}),
	slurp_file("$spool/failed/bad-channel.xml.reason") =~ s/\n\z//r,
	'with the reason of the .reason file');

$node->stop;
done_testing();

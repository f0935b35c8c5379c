# The reasons of refused spool files that
# smsdispatch_reader can read hold neither the phone number nor the text
# they quote; smsdispatch_admin reads the whole reason.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use SmsSpool;
use SmsWorkerNode;

my $spool = PostgreSQL::Test::Utils::tempdir();
my $node = worker_node('spool_reader',
	conf => "smsdispatch.spool_dir = '$spool'\nsmsdispatch.naptime = '200ms'\n");
make_list($node, 'oncall', 0, [ '+380501000001', 1, '1 min' ]);

# a number too long for E.164, and a text with a byte that is not UTF-8
# (libxml2 before 2.14 quotes it and the bytes after it; later ones name
# only the line)
drop_spool_file($spool, 'bad-number.xml',
	'<SMS><TO>+38050123456789</TO><MSG>Pump down</MSG></SMS>');
drop_spool_file($spool, 'bad-text.xml',
	"<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>Pump 7 caf\xE9 4711 down</MSG></SMS>");
ok( wait_until(
		$node, 'SELECT count(*) FROM smsdispatch.spool_failure', '2', 20),
	'both files are refused');

# What $role reads of the reason column $column of file $name.
sub reason_as
{
	my ($role, $column, $name) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SET ROLE $role; SELECT $column FROM smsdispatch.spool_failure WHERE name = '$name'");
	return $ret == 0 ? $out : "ERROR: $err";
}

my $admin_number = reason_as('smsdispatch_admin', 'reason', 'bad-number.xml');
my $admin_text = reason_as('smsdispatch_admin', 'reason', 'bad-text.xml');
like($admin_number, qr/"\+38050123456789"/, 'the admin reads the number in the full reason');
like($admin_text, qr/^malformed XML: line [0-9]+: /, 'and the line of the text');
like($admin_text, qr/0xE9 0x20 0x34 0x37/, 'and the bytes of the text, where libxml2 quotes them')
  if $admin_text =~ /Bytes:/;

like(reason_as('smsdispatch_reader', 'reason', 'bad-number.xml'),
	qr/permission denied for table spool_failure/, 'the reader cannot read the full reason');

my $reader_number = reason_as('smsdispatch_reader', 'redacted_reason', 'bad-number.xml');
my $reader_text = reason_as('smsdispatch_reader', 'redacted_reason', 'bad-text.xml');
like($reader_number, qr/^invalid phone number in phone: "\.\.\."/,
	"the reader reads what was wrong with the number: $reader_number");
unlike($reader_number, qr/[0-9]/, 'but no digit of it');
like($reader_text, qr/^malformed XML: line #: (Input is not proper UTF-#|Invalid bytes in character encoding)/,
	"the reader reads what was wrong with the text: $reader_text");
unlike($reader_text, qr/[0-9]|0x[0-9A-F]|Pump|caf/i, 'but no byte of it');

done_testing();

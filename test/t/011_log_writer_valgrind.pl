# The log writer (src/log_writer.c) keeps compiled defaults and predicates
# for the session and frees them when the catalogs change. A trigger on the
# log may change the catalogs in the middle of a write and write a row of
# its own; the write in progress must go on with memory that is still its
# own. A backend in single-user mode under valgrind runs that, sms_send and
# the verification trigger, and a default changed between rows: no invalid
# read, write or free.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run qw(run);

if (system('valgrind --version >/dev/null 2>&1') != 0)
{
	plan skip_all => 'valgrind is not installed';
}

my $node = PostgreSQL::Test::Cluster->new('log_writer_valgrind');
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION smsdispatch;
	CREATE TABLE otp (phone text, code text);
	SELECT smsdispatch.watch_verifications('otp', 'phone', 'code');});
$node->safe_psql('postgres', slurp_file('test/log-writer-nested-trigger.sql'));
$node->stop;

my $statements = join("\n",
	"SELECT count(sms_send('+38050' || (1000000 + g), 'warm ' || g)) FROM generate_series(1, 50) g;",
	"SELECT sms_send('+380501230013', 'outer');",
	"INSERT INTO otp SELECT '+38067' || (1000000 + g), g::text FROM generate_series(1, 50) g;",
	"ALTER TABLE verification.sms_log ALTER attempts SET DEFAULT 3;",
	"SELECT sms_send('+380501230013', 'outer');",
	"SELECT sms_send('+380501230014', 'after');",
	"SELECT 'rows=' || count(*) || ' inner=' || count(*) FILTER (WHERE body = 'inner')"
	  . " || ' attempts3=' || count(*) FILTER (WHERE attempts = 3) AS summary FROM verification.sms_log;",
	'');
my $vglog = $PostgreSQL::Test::Utils::tmp_check . '/log_writer_valgrind.log';
my ($out, $err);
run([ 'valgrind', '--trace-children=no', "--log-file=$vglog",
		$node->config_data('--bindir') . '/postgres', '--single',
		'-D', $node->data_dir, '-c', 'fsync=off', 'postgres' ],
	'<', \$statements, '>', \$out, '2>', \$err);

like($out, qr/summary = "rows=105 inner=2 attempts3=3"/,
	'every row written: 51 sent, 50 by the trigger, two nested ones, the changed default used');
my $report = slurp_file($vglog);
my @invalid = $report =~ /(Invalid (?:read|write|free)[^\n]*)/g;
is(scalar(@invalid), 0, 'valgrind: no invalid read, write or free')
  or diag(join("\n", @invalid[ 0 .. ($#invalid < 5 ? $#invalid : 5) ]));

done_testing();

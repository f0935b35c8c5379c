# No memory leak in the modem sidecar: 1,000 SMS sent and 100 received
# through gammu's dummy phone under valgrind, then a clean SIGTERM exit.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../modem";
use ModemTest;
use PostgreSQL::Test::Utils;
use Test::More;

if (system('valgrind --version >/dev/null 2>&1') != 0)
{
	plan skip_all => 'valgrind is not installed';
}

my $node = modem_node('modem_valgrind', 'smsdispatch.max_per_phone_per_hour' => 0);
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $dir = "$tmp/valgrind_phone";
my $rc = dummy_gammurc($dir);
my $log = "$tmp/sidecar_valgrind.log";
my $vglog = "$tmp/valgrind.log";

# no per-call tracing: 1,000 SMS would make a large gammu log
open(my $fh, '>', $rc) or die;
print $fh "[gammu]\ndevice = $dir\nconnection = none\nmodel = dummy\n";
close $fh;

$node->safe_psql('postgres', q{
	SELECT sms_send('+38050' || lpad(g::text, 7, '0'), 'Leak check message number ' || g,
					channel => 'modem')
	  FROM generate_series(1, 1000) AS g});

my $pid = start_sidecar(dsn => $node->connstr('postgres'), gammurc => $rc,
	name => 'valgrind', log => $log, heartbeat => 2, poll => 1,
	prefix => ['valgrind', '--leak-check=full', '--show-leak-kinds=definite,indirect',
		'--errors-for-leak-kinds=definite,indirect', '--error-exitcode=99',
		"--log-file=$vglog"]);

for my $i (1 .. 100)
{
	put_dummy_sms($dir, $i, number => '+380501111111', text => "reply number $i",
		date => sprintf('20261122T05%02d%02dZ', int($i / 60), $i % 60));
}

is(wait_for_value($node, q{SELECT count(*) FROM verification.sms_log WHERE send_state = 'submitted'},
		'1000', 600), '1000', '1,000 SMS sent under valgrind');
is(wait_for_value($node, q{SELECT count(*) FROM smsdispatch.inbox}, '100', 300),
	'100', '100 SMS received under valgrind');
is(stop_sidecar($pid, 120), 0, 'clean exit on SIGTERM, no valgrind error');

my $report = slurp_file($vglog);
like($report, qr/ERROR SUMMARY: 0 errors/, 'valgrind reports no errors');
unlike($report, qr/definitely lost: [1-9]/, 'nothing definitely lost');
unlike($report, qr/indirectly lost: [1-9]/, 'nothing indirectly lost');
my ($reachable) = $report =~ /still reachable: ([\d,]+) bytes/;
$reachable //= '0';
$reachable =~ s/,//g;
cmp_ok($reachable, '<', 65536,
	'what is still reachable at exit does not grow with 1,100 messages (under 64 kB)');
note(join("\n", grep { /lost:|reachable:|in use at exit/ } split(/\n/, $report)));

$node->stop;
done_testing();

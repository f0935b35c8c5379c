# Two sidecars, each with its own simulated AT modem, on one database
# share 200 SMS: every SMS leaves exactly once and none is left behind.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../modem";
use ModemTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = modem_node('modem_two', 'smsdispatch.max_per_phone_per_hour' => 0);
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $dsn = $node->connstr('postgres');
my @sims = map { start_simulator("$tmp/two_modem_$_") } (0, 1);

my @pids = map {
	start_sidecar(dsn => $dsn, gammurc => $sims[$_]{rc}, name => "modem_$_",
		log => "$tmp/sidecar_two_$_.log")
} (0, 1);

# queued in several transactions while both are running
for my $batch (0 .. 9)
{
	$node->safe_psql('postgres', qq{
		SELECT sms_send('+38050' || lpad(g::text, 7, '0'), 'Shared load ' || g, channel => 'modem')
		  FROM generate_series($batch * 20 + 1, $batch * 20 + 20) AS g});
}

is(wait_for_value($node, q{SELECT count(*) FROM verification.sms_log WHERE send_state = 'submitted'},
		'200', 400), '200', 'all 200 SMS submitted');
is(stop_sidecar($pids[0]), 0, 'first sidecar stops cleanly');
is(stop_sidecar($pids[1]), 0, 'second sidecar stops cleanly');

is($node->safe_psql('postgres', q{
	SELECT count(*) FROM verification.sms_log WHERE send_state <> 'submitted' OR attempts <> 1}),
	'0', 'none left behind, each claimed once');

# what the modems received
my %sent;
for my $i (0, 1)
{
	$sent{ $_->{number} }++ for sim_events($sims[$i]);
	stop_simulator($sims[$i]);
}
is(scalar(keys %sent), 200, 'the modems sent to 200 different numbers');
is(scalar(grep { $sent{$_} != 1 } keys %sent), 0, 'none of them twice');

my $split = $node->safe_psql('postgres', q{
	SELECT string_agg(claimed_by || '=' || n, ' ' ORDER BY claimed_by)
	  FROM (SELECT claimed_by, count(*) AS n FROM verification.sms_log GROUP BY 1) s});
note("work split: $split");
like($split, qr/^modem_0=\d+ modem_1=\d+$/, 'both sidecars took part');

$node->stop;
done_testing();

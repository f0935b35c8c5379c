# The modem sidecar's benchmarks; run through test/bench/modem.sh.
use strict;
use warnings;

use List::Util qw(sum);
use ModemTest;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time usleep);

my $latency_n = $ENV{LATENCY_N} // 100;
my $runs = $ENV{RUNS} // 3;
my $tmp = $PostgreSQL::Test::Utils::tmp_check;

sub median { my @s = sort { $a <=> $b } @_; return $s[$#s / 2]; }
sub pct { my ($p, @v) = @_; my @s = sort { $a <=> $b } @v; return $s[int($p * $#s + 0.5)]; }

my $node = modem_node('bench_modem', 'smsdispatch.max_per_phone_per_hour' => 0);
my $dsn = $node->connstr('postgres');

# --- latency through the simulated AT modem
my $sim = start_simulator("$tmp/bench_sim");
open(my $fh, '>', $sim->{rc}) or die;	# no libgammu trace while measuring
print $fh "[gammu]\ndevice = $sim->{tty}\nconnection = at\nmodel = at\n";
close $fh;

# reference: gammu started for one SMS
my @ref;
for my $i (1 .. 5)
{
	my $before = scalar(sim_events($sim));
	my $t0 = time();
	system("timeout 60 gammu -c $sim->{rc} sendsms TEXT +380501000000 -text 'reference $i' >/dev/null 2>&1");
	my @ev = sim_events($sim);
	die "gammu sendsms failed" unless @ev > $before;
	push @ref, $ev[-1]{pdu_at} - $t0;
}

my $pid = start_sidecar(dsn => $dsn, gammurc => $sim->{rc}, name => 'bench_at',
	log => "$tmp/bench_at.log", heartbeat => 60, poll => 60);
wait_until(sub { $node->safe_psql('postgres', q{SELECT count(*) FROM smsdispatch.modem}) eq '1' }, 60)
  or die "sidecar did not start";
sleep 1;
my (@pdu, @done);
for my $i (1 .. $latency_n)
{
	my $before = scalar(sim_events($sim));
	my $committed = $node->safe_psql('postgres', qq{
		SELECT extract(epoch FROM clock_timestamp())
		  FROM (SELECT sms_send('+38050' || lpad('$i', 7, '0'), 'Latency probe $i', channel => 'modem')) s});
	wait_until(sub { scalar(sim_events($sim)) > $before }, 30) or die "SMS $i never reached the modem";
	my @ev = sim_events($sim);
	push @pdu, $ev[-1]{pdu_at} - $committed;
	push @done, $ev[-1]{done_at} - $committed;
	usleep(200_000);	# idle again
}
stop_sidecar($pid);
stop_simulator($sim);

printf "latency, COMMIT to PDU at the simulated modem, %d SMS: p50 %.0f ms, p90 %.0f ms (target p50 <= 200 ms)\n",
	$latency_n, 1000 * median(@pdu), 1000 * pct(0.9, @pdu);
printf "latency, COMMIT to +CMGS complete (Ctrl-Z after libgammu's fixed 0.5 s pause): p50 %.0f ms\n",
	1000 * median(@done);
printf "reference, gammu sendsms started per SMS to PDU: median %.0f ms over 5; ratio sidecar/reference %.2f\n",
	1000 * median(@ref), median(@pdu) / median(@ref);

# --- throughput through the dummy phone
my $dir = "$tmp/bench_dummy";
my $rc = dummy_gammurc($dir);
open($fh, '>', $rc) or die;
print $fh "[gammu]\ndevice = $dir\nconnection = none\nmodel = dummy\n";
close $fh;

my @rates;
for my $run (1 .. $runs)
{
	$node->safe_psql('postgres', q{
		TRUNCATE verification.sms_log CASCADE;
		SELECT sms_send('+38050' || lpad(g::text, 7, '0'), 'Throughput run message ' || g, channel => 'modem')
		  FROM generate_series(1, 1000) AS g});
	my $p = start_sidecar(dsn => $dsn, gammurc => $rc, name => "bench_dummy",
		log => "$tmp/bench_dummy.log", heartbeat => 60, poll => 60);
	wait_for_value($node, q{SELECT count(*) FROM verification.sms_log WHERE send_state = 'submitted'},
		'1000', 600) eq '1000' or die "run $run did not drain";
	stop_sidecar($p);
	my $secs = $node->safe_psql('postgres', q{
		SELECT extract(epoch FROM max(submitted_at) - min(submitted_at)) FROM verification.sms_log});
	push @rates, 999 / $secs;
	printf "  run %d: 1,000 SMS in %.2f s\n", $run, $secs;
}

# reference: the same claim + finish calls from pgbench, one connection
$node->safe_psql('postgres', q{
	TRUNCATE verification.sms_log CASCADE;
	SELECT sms_send('+38050' || lpad(g::text, 7, '0'), 'Reference message ' || g, channel => 'modem')
	  FROM generate_series(1, 3000) AS g});
my $script = "$tmp/claim_finish.sql";
open($fh, '>', $script) or die;
print $fh "SELECT id AS sms_id FROM smsdispatch.modem_claim('pgbench', '5 min') \\gset\n"
  . "SELECT smsdispatch.modem_finish(:sms_id, 'pgbench', 'submitted', '1');\n";
close $fh;
my @ref_rates;
for my $run (1 .. $runs)
{
	my $out = `pgbench -n -c 1 -t 1000 -f $script '$dsn' 2>&1`;
	my ($tps) = $out =~ /tps = ([\d.]+)/ or die "pgbench: $out";
	push @ref_rates, $tps;
}
printf "throughput, 1,000 queued SMS through the dummy phone: median %.0f SMS/s over %d runs (target >= 50)\n",
	median(@rates), $runs;
printf "reference, pgbench claim + finish over one connection: median %.0f per s; ratio sidecar/reference %.2f\n",
	median(@ref_rates), median(@rates) / median(@ref_rates);

$node->stop;

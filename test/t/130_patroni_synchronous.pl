# Under Patroni in synchronous mode (docs/operations.md, "High
# availability"), users rely on no SMS sent twice and none lost across a
# switchover, a crash of the leader and a leader cut off from the cluster:
# - patronictl switchover while 2,000 SMS drain and an alarm escalates:
#   every SMS reaches the gateway once, the alarm's next level is paged by
#   the new leader within its ack_timeout + 10 s, and the old leader's
#   worker is gone within smsdispatch.shutdown_grace of the stop;
# - kill -9 of the leader's postmaster with requests on the wire and a
#   claim waiting for the standby: nothing twice (the claim the standby
#   never received is not sent by the dying leader), nothing lost, the rows
#   in doubt at most those on the wire, each 'unknown' with its reason;
# - the leader's Patroni frozen (SIGSTOP: the leader lock expires, the node
#   is not demoted): once the standby is promoted, the isolated leader sends
#   nothing, not even what its applications queue there;
# - the modem sidecar with a two-host connection string
#   (target_session_attrs=read-write) sends through the new leader within
#   15 s of a switchover, and no PDU leaves twice; a lease the standby
#   never received (the leader dies while the claim waits for it, the
#   database set to synchronous_commit = off) is not honoured.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use lib "$FindBin::RealBin/../modem";
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX ();
use Time::HiRes qw(time usleep);
use Ip2smsMock;
use ModemTest qw(start_sidecar stop_sidecar start_simulator stop_simulator sim_events);
use PatroniCluster;
use SmsWorkerNode;

my $grace = 2;
my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $ha = PatroniCluster->new(mock => $mock, synchronous_mode => 1,
	parameters => {
		'smsdispatch.ip2sms_max_rate' => '250',
		'smsdispatch.ip2sms_max_connections' => '16',
		'smsdispatch.ip2sms_timeout' => '30s',
		'smsdispatch.ip2sms_poll_interval' => '1h' });
my $started = time();

# the send requests the mock received whose text holds $text
sub sends_of
{
	my ($text) = @_;
	return grep { $_->{kind} eq 'send' && index($_->{text} // '', $text) >= 0 }
	  $mock->log_entries;
}

# the (number, text) pairs the mock received more than once
sub twice
{
	my %n;
	$n{"$_->{to} $_->{text}"}++ for grep { $_->{kind} eq 'send' } $mock->log_entries;
	return grep { $n{$_} > 1 } sort keys %n;
}

# the last time (epoch seconds) a server log line matching $re was written
sub last_log_time
{
	my ($file, $re) = @_;
	my $t;
	for (split /\n/, slurp_file($file))
	{
		next unless /$re/;
		my ($y, $mo, $d, $h, $mi, $s) =
		  /^(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+\.\d+)/ or next;
		$t = POSIX::mktime(0, $mi, $h, $d, $mo - 1, $y - 1900) + $s;
	}
	return $t;
}

# a. switchover while 2,000 SMS drain and an alarm escalates
my $old = $ha->leader;
my $db = $old->{pg};
make_list($db, 'ha', 0, [ '+380501110001', 1, '10s' ], [ '+380501110011', 2, '10s' ]);
$db->safe_psql('postgres', q{
	SELECT sms_send('+3805' || lpad(g::text, 7, '0') || '1', 'ha-a ' || g)
	  FROM generate_series(1, 2000) AS g});
ok($ha->poll(sub { sends_of('ha-a ') >= 200 }, 60), 'the backlog drains');
my $number = $db->safe_psql('postgres', q{SELECT sms_enqueue('ha alarm', 'ha')});
ok($ha->poll(sub { grep { $_->{to} eq '380501110001' } sends_of('ha alarm') }, 30),
	'the alarm paged its level 1');
my ($level1) = grep { $_->{to} eq '380501110001' } sends_of('ha alarm');

my $switch_began = time();
my ($rc, $out) = $ha->switchover;
is($rc, 0, 'patronictl switchover succeeded') or diag($out);
my $new = $ha->wait_new_leader($old, 60);
ok($new, 'the standby is the new leader');
$new //= $ha->replica($old);
note(sprintf('switchover: new leader %s writable %.1f s after patronictl began',
	$new->{name}, time() - $switch_began));
my $drained_at = sends_of('ha-a ');
note("the gateway had $drained_at of the 2,000 when the switchover began");

ok(wait_until($new->{pg},
	q{SELECT count(*) FROM verification.sms_log WHERE body LIKE 'ha-a %' AND send_state = 'submitted'},
	'2000', 120), 'every SMS of the backlog is submitted on the new leader');
is($new->{pg}->safe_psql('postgres',
	q{SELECT count(*) FROM verification.sms_log WHERE send_state NOT IN ('submitted', 'queued')}),
	'0', 'no row ended unknown or failed');
my %texts = map { $_->{text} => 1 } sends_of('ha-a ');
is(scalar(keys %texts), 2000, 'the gateway received each of the 2,000');

ok($ha->poll(sub { grep { $_->{to} eq '380501110011' } sends_of('ha alarm') }, 60),
	'the alarm paged its level 2');
my ($level2) = grep { $_->{to} eq '380501110011' } sends_of('ha alarm');
SKIP:
{
	skip 'level 2 never paged', 2 unless $level2 && $level1;
	my $after = $level2->{t} - $level1->{t};
	note(sprintf('level 2 paged %.1f s after level 1 (ack_timeout 10 s)', $after));
	cmp_ok($after, '<=', 10 + 10, 'within its ack_timeout + 10 s');
	cmp_ok($level2->{t}, '>', $switch_began, 'after the switchover began: by the new leader');
}
is($new->{pg}->safe_psql('postgres',
	"SELECT state || ' ' || level FROM smsdispatch.message WHERE number = '$number'"),
	'open 2', 'the new leader holds the alarm at level 2');

my $stop_at = last_log_time($old->{log}, qr/received fast shutdown request/);
my $gone_at = last_log_time($old->{log},
	qr/terminating background worker "smsdispatch worker" due to administrator command/);
ok(defined $stop_at && defined $gone_at, "the old leader's log shows the stop and the worker's end");
SKIP:
{
	skip 'no stop in the log', 1 unless defined $stop_at && defined $gone_at;
	note(sprintf("the old leader's worker ended %.2f s after the fast shutdown request",
		$gone_at - $stop_at));
	cmp_ok($gone_at - $stop_at, '<=', $grace + 1, 'within smsdispatch.shutdown_grace (+1 s)');
}
is(join(', ', twice()), '', 'no (number, text) reached the gateway twice');
ok($ha->wait_healthy(120), 'the old leader rejoined as the synchronous standby');

# b. kill -9 of the leader's postmaster with requests on the wire
$old = $ha->leader;
$db = $old->{pg};
$mock->control(mode => 'slow', delay_ms => 1500, kind => 'send');
$db->safe_psql('postgres', q{
	SELECT sms_send('+3806' || lpad(g::text, 7, '0') || '1', 'ha-b ' || g)
	  FROM generate_series(1, 200) AS g});
ok(wait_until($db,
	q{SELECT count(*) >= 48 FROM verification.sms_log WHERE body LIKE 'ha-b %' AND send_state = 'submitted'},
	't', 60), 'the leader sends');
# its walsender frozen, the next claim's commit waits for the standby: the
# crash comes while it waits, so that claim reached no standby
my $walsender = $db->safe_psql('postgres', 'SELECT pid FROM pg_stat_replication');
kill 'STOP', $walsender;
ok(wait_until($db, q{SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type = 'smsdispatch worker' AND wait_event = 'SyncRep'}, '1', 30),
	'a claim waits for the standby');
my $on_wire = $db->safe_psql('postgres',
	q{SELECT count(*) FROM verification.sms_log WHERE body LIKE 'ha-b %' AND send_state = 'sending'});
my $kill_at = time();
$ha->kill_postmaster($old);
kill 'KILL', $walsender;
note("kill -9 of $old->{name}'s postmaster with about $on_wire requests on the wire");
$new = $ha->wait_new_leader($old, 60);
ok($new, 'Patroni failed over to the standby');
$new //= $ha->replica($old);
note(sprintf('failover: new leader %s writable %.1f s after the kill', $new->{name}, time() - $kill_at));
$mock->control(mode => 'normal');

ok(wait_until($new->{pg},
	q{SELECT count(*) FROM verification.sms_log WHERE body LIKE 'ha-b %' AND send_state IN ('queued', 'sending')},
	'0', 120), 'the new leader settles every row');
my %state = split /[|\n]/, $new->{pg}->safe_psql('postgres',
	q{SELECT send_state, count(*) FROM verification.sms_log WHERE body LIKE 'ha-b %' GROUP BY 1});
my $unknown = $state{unknown} // 0;
note("after the crash: " . join(', ', map { "$_ $state{$_}" } sort keys %state));
is(($state{submitted} // 0) + $unknown, 200, 'none lost: each of the 200 is submitted or unknown');
cmp_ok($unknown, '<=', 16, 'the rows in doubt are at most the 16 requests on the wire');
is($new->{pg}->safe_psql('postgres', q{
	SELECT count(*) FROM verification.sms_log
	 WHERE body LIKE 'ha-b %' AND send_state = 'unknown'
	   AND last_error IS DISTINCT FROM 'the worker stopped while the request was in flight; not re-sent'}),
	'0', 'each is reported unknown with its reason');
my %at_gateway = map { $_->{text} => 1 } sends_of('ha-b ');
my @submitted = split /\n/, $new->{pg}->safe_psql('postgres',
	q{SELECT body FROM verification.sms_log WHERE body LIKE 'ha-b %' AND send_state = 'submitted'});
is(join(', ', grep { !$at_gateway{$_} } @submitted), '', 'every submitted row reached the gateway');
note(scalar(grep { $at_gateway{$_} } keys %at_gateway) - scalar(@submitted)
	  . ' of the unknown rows had reached the gateway');
is(join(', ', twice()), '', 'no (number, text) reached the gateway twice');
ok($ha->wait_healthy(120), 'the crashed node rejoined as the synchronous standby');

# d. the leader's Patroni frozen: the leader lock expires, the node is not
# demoted and stays a primary its applications can write to
$old = $ha->leader;
$db = $old->{pg};
my $freeze_at = time();
$ha->stop_patroni($old);
$new = $ha->wait_new_leader($old, 90);
ok($new, 'the standby was promoted while the old leader\'s Patroni is frozen');
$new //= $ha->replica($old);
note(sprintf('isolated: %s promoted %.1f s after the freeze', $new->{name}, time() - $freeze_at));
is($db->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 'f',
	'the isolated node is still a primary');
$db->safe_psql('postgres', q{
	SET synchronous_commit = local;
	SELECT sms_send('+3807' || lpad(g::text, 7, '0') || '1', 'ha-d isolated ' || g)
	  FROM generate_series(1, 5) AS g});
ok(wait_until($db, q{SELECT count(*) FROM pg_stat_activity
	 WHERE backend_type = 'smsdispatch worker' AND wait_event = 'SyncRep'}, '1', 30),
	'its worker\'s claim waits for the standby that left');
my $id = $new->{pg}->safe_psql('postgres', q{SELECT sms_send('+380508888881', 'ha-d new leader')});
ok($ha->poll(sub { sends_of('ha-d new leader') }, 30), 'the new leader sends');
is(scalar(sends_of('ha-d isolated')), 0, 'the isolated primary sent nothing');
$ha->cont_patroni($old);
ok($ha->wait_healthy(120), 'thawed, the old leader rejoined as the standby');
is(scalar(sends_of('ha-d isolated')), 0, 'and it sent nothing on its way down');
is(join(', ', twice()), '', 'no (number, text) reached the gateway twice');

# e. the modem sidecar follows the leader across a switchover
my $tmp = PostgreSQL::Test::Utils::tempdir();
my $sim = start_simulator("$tmp/ha_modem");
my ($n1, $n2) = map { $_->{pg} } $ha->nodes;
my $dsn = 'host=' . $n1->host . ',' . $n2->host . ' port=' . $n1->port . ',' . $n2->port
  . ' dbname=postgres target_session_attrs=read-write';
my $sidecar_log = "$tmp/sidecar_ha.log";
my $sidecar = start_sidecar(dsn => $dsn, gammurc => $sim->{rc}, name => 'ha_modem',
	log => $sidecar_log);
$old = $ha->leader;
$old->{pg}->safe_psql('postgres', q{
	SELECT sms_send('+3805' || lpad(g::text, 7, '0') || '5', 'ha-e before ' || g, channel => 'modem')
	  FROM generate_series(1, 5) AS g});
ok(wait_until($old->{pg},
	q{SELECT count(*) FROM verification.sms_log WHERE body LIKE 'ha-e before %' AND send_state = 'submitted'},
	'5', 60), 'the sidecar sends through the leader');
$old->{pg}->safe_psql('postgres', q{
	SELECT sms_send('+3805' || lpad(g::text, 7, '0') || '6', 'ha-e across ' || g, channel => 'modem')
	  FROM generate_series(1, 3) AS g});
$switch_began = time();
($rc, $out) = $ha->switchover;
is($rc, 0, 'patronictl switchover succeeded') or diag($out);
$new = $ha->wait_new_leader($old, 60);
ok($new, 'the standby is the new leader');
$new //= $ha->replica($old);
$new->{pg}->safe_psql('postgres',
	q{SELECT sms_send('+380519999995', 'ha-e after', channel => 'modem')});
ok(wait_until($new->{pg},
	q{SELECT send_state FROM verification.sms_log WHERE body = 'ha-e after'}, 'submitted', 60),
	'the sidecar sends through the new leader');
my $followed = time() - $switch_began;
note(sprintf('the sidecar sent through the new leader %.1f s after the switchover began', $followed));
cmp_ok($followed, '<=', 15, 'within 15 s of the switchover');
ok(wait_until($new->{pg},
	q{SELECT count(*) FROM verification.sms_log
	   WHERE body LIKE 'ha-e across %' AND send_state IN ('queued', 'sending')}, '0', 60),
	'the SMS queued across the switchover are settled');
note('across the switchover: ' . $new->{pg}->safe_psql('postgres',
	q{SELECT string_agg(send_state || ' ' || n, ', ') FROM (SELECT send_state, count(*) AS n
	    FROM verification.sms_log WHERE body LIKE 'ha-e %' GROUP BY 1) s}));
is($new->{pg}->safe_psql('postgres', q{
	SELECT count(*) FROM verification.sms_log
	 WHERE body LIKE 'ha-e %' AND send_state NOT IN ('submitted', 'unknown')}), '0',
	'each is submitted or, if it was in the modem at the drop, unknown');
is(stop_sidecar($sidecar), 0, 'the sidecar stops cleanly');
my %pdus;
$pdus{ $_->{number} }++ for sim_events($sim);
stop_simulator($sim);
is(join(', ', grep { $pdus{$_} > 1 } sort keys %pdus), '', 'no PDU went to a number twice');
is(scalar(keys %pdus), $new->{pg}->safe_psql('postgres',
	q{SELECT count(*) FROM verification.sms_log WHERE body LIKE 'ha-e %' AND send_state = 'submitted'}),
	'the modem sent every submitted SMS');
my @reconnect = grep { /connection lost|could not connect|connected to/ } split /\n/, slurp_file($sidecar_log);
note("the sidecar's reconnection:\n" . join("\n", @reconnect));
my ($lost) = map { /^\S+ (\d+):(\d+):(\d+\.\d+)/ ? $1 * 3600 + $2 * 60 + $3 : () }
  grep { /connection lost/ } @reconnect;
my ($back) = map { /^\S+ (\d+):(\d+):(\d+\.\d+)/ ? $1 * 3600 + $2 * 60 + $3 : () }
  grep { /connected to/ } @reconnect[ 1 .. $#reconnect ];
ok(defined $lost && defined $back, 'the sidecar saw its connection drop and connected again');
SKIP:
{
	skip 'no reconnection in its log', 1 unless defined $lost && defined $back;
	note(sprintf('the sidecar was connected to the new leader %.1f s after its connection dropped', $back - $lost));
	cmp_ok($back - $lost, '<=', 10, 'within 10 s');
}

# f. a lease the standby never received is not honoured: the sidecar's
# claim waits for the synchronous standby even where the database sets
# synchronous_commit = off, so the leader that dies meanwhile sends nothing
# and the new leader sends each SMS once
ok($ha->wait_healthy(120), 'the old leader rejoined as the synchronous standby');
$old = $ha->leader;
$db = $old->{pg};
$db->safe_psql('postgres', q{
	ALTER DATABASE postgres SET synchronous_commit = off;
	SELECT sms_send('+3805' || lpad(g::text, 7, '0') || '7', 'ha-f ' || g, channel => 'modem')
	  FROM generate_series(1, 3) AS g});
ok($ha->poll(sub {
	$ha->replica($old)->{pg}->safe_psql('postgres',
		q{SELECT count(*) FROM verification.sms_log WHERE body LIKE 'ha-f %'}) eq '3' }, 30),
	'the standby has the three modem SMS');
$walsender = $db->safe_psql('postgres', 'SELECT pid FROM pg_stat_replication');
kill 'STOP', $walsender;
my $sim_f = start_simulator("$tmp/ha_modem_f");
my $sidecar_f = start_sidecar(dsn => $dsn, gammurc => $sim_f->{rc}, name => 'ha_modem_f',
	log => "$tmp/sidecar_f.log");
my %f_sent;
ok($ha->poll(sub {
	$db->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity
		 WHERE backend_type = 'client backend' AND wait_event = 'SyncRep'}) ne '0'
	  || sim_events($sim_f) > 0 }, 30),
	'the sidecar claimed, or sent');
is(scalar(sim_events($sim_f)), 0, 'the sidecar sent nothing the standby had not seen claimed');
$ha->kill_postmaster($old);
kill 'KILL', $walsender;
$new = $ha->wait_new_leader($old, 60);
ok($new, 'Patroni failed over to the standby');
$new //= $ha->replica($old);
ok(wait_until($new->{pg},
	q{SELECT count(*) FROM verification.sms_log WHERE body LIKE 'ha-f %' AND send_state = 'submitted'},
	'3', 60), 'the sidecar sent the three through the new leader');
is(stop_sidecar($sidecar_f), 0, 'the sidecar stops cleanly');
$f_sent{ $_->{number} }++ for sim_events($sim_f);
stop_simulator($sim_f);
note('the modem received: ' . join(', ', map { "$_ x$f_sent{$_}" } sort keys %f_sent));
is(join(', ', grep { $f_sent{$_} > 1 } sort keys %f_sent), '', 'none of them twice');
$new->{pg}->safe_psql('postgres', 'ALTER DATABASE postgres RESET synchronous_commit');

note(sprintf('the whole file took %.0f s after the cluster started', time() - $started));
$ha->stop;
$mock->stop;
done_testing();

# Faults: the modem falls silent mid-send (the SMS becomes unknown, the
# modem is reset, work goes on), +CMS ERROR: 38 (retried later), a full
# SIM (WARNING and heartbeat flag), the database restarting (the sidecar
# reconnects, keeps the modem, loses nothing).
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../modem";
use ModemTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $node = modem_node('modem_faults', 'smsdispatch.max_per_phone_per_hour' => 0);
my $sim = start_simulator("$tmp/fault_modem");
my $log = "$tmp/sidecar_faults.log";
my $pid = start_sidecar(dsn => $node->connstr('postgres'), gammurc => $sim->{rc},
	name => 'faulty', log => $log, extra => ['--send-timeout', '5']);
sub q1 { return $node->safe_psql('postgres', $_[0]); }
sub state_of { return q1("SELECT send_state FROM verification.sms_log WHERE phone_number = '$_[0]'"); }

# silence after the PDU went out
sim_ctl($sim, 'silence_after_pdu 1');
q1(q{SELECT sms_send('+380500000001', 'falls silent', channel => 'modem')});
is(wait_until(sub { state_of('+380500000001') eq 'unknown' }, 60) && 'unknown',
	'unknown', 'an SMS whose answer never came is unknown');
like(q1(q{SELECT last_error FROM verification.sms_log WHERE phone_number = '+380500000001'}),
	qr/timeout/i, 'last_error says the modem timed out');
sim_ctl($sim, 'silence off');
ok(wait_until(sub { slurp_file($log) =~ /resetting the modem/ }, 30), 'the sidecar resets the modem');
q1(q{SELECT sms_send('+380500000002', 'after the reset', channel => 'modem')});
is(wait_until(sub { state_of('+380500000002') eq 'submitted' }, 90) && 'submitted',
	'submitted', 'and goes on sending after the reset');
is(scalar(grep { $_->{number} eq '+380500000001' } sim_events($sim)), 1,
	'the unknown SMS was not sent again');
is(wait_for_value($node, q{SELECT resets >= 1 FROM smsdispatch.modem}, 't', 30), 't',
	'the heartbeat counts the reset');

# +CMS ERROR: 38 (network out of order): queued again for later
sim_ctl($sim, 'cms 38 1');
q1(q{SELECT sms_send('+380500000003', 'network trouble', channel => 'modem')});
ok(wait_until(sub { q1(q{SELECT attempts FROM verification.sms_log WHERE phone_number = '+380500000003'}) eq '1'
		&& state_of('+380500000003') eq 'queued' }, 60), 'a +CMS ERROR: 38 puts the SMS back in the queue');
like(q1(q{SELECT last_error || ' ' || (next_attempt_at > now()) FROM verification.sms_log
	WHERE phone_number = '+380500000003'}), qr/error 38 true$/, 'with the error and a later attempt time');
q1(q{UPDATE verification.sms_log SET next_attempt_at = now(), send_state = 'queued'
	WHERE phone_number = '+380500000003'});
is(wait_until(sub { state_of('+380500000003') eq 'submitted' }, 60) && 'submitted', 'submitted',
	'the retry goes out');
is(q1(q{SELECT attempts FROM verification.sms_log WHERE phone_number = '+380500000003'}), '2',
	'on the second attempt');

# a full SIM
sim_ctl($sim, 'simfull on');
is(wait_for_value($node, q{SELECT sim_full FROM smsdispatch.modem}, 't', 30), 't',
	'a full SIM raises the heartbeat flag');
like(slurp_file($log), qr/WARNING:  SIM message memory is full/, 'and a WARNING in the log');
sim_ctl($sim, 'simfull off');
is(wait_for_value($node, q{SELECT sim_full FROM smsdispatch.modem}, 'f', 30), 'f',
	'the flag drops when there is room again');

# the database restarts
$node->stop('fast');
sleep 2;
$node->start;
q1(q{SELECT sms_send('+38050000001' || g, 'after restart ' || g, channel => 'modem')
	FROM generate_series(0, 4) AS g});
is(wait_for_value($node, q{SELECT count(*) FROM verification.sms_log
	WHERE phone_number LIKE '+38050000001_' AND send_state = 'submitted'}, '5', 120),
	'5', 'after a database restart the sidecar reconnects and sends what was queued');
my $sidelog = slurp_file($log);
like($sidelog, qr/database connection lost/, 'it noticed the lost connection');
my @opens = $sidelog =~ /modem open/g;
my @resets = $sidelog =~ /resetting the modem/g;
is(scalar(@opens), 1 + scalar(@resets), 'and kept the modem open meanwhile (reopened only by resets)');
is(q1(q{SELECT count(*) FROM verification.sms_log WHERE send_state IN ('queued', 'sending')}), '0',
	'nothing left behind');

# the database goes away while a three-part SMS is on its way out: the
# outcome is kept and recorded after the reconnection, nothing re-sent
q1(q{SELECT sms_send('+380500000020', repeat('Disk full on db1. ', 22), channel => 'modem')});
ok(wait_until(sub { grep { $_->{number} eq '+380500000020' } sim_events($sim) }, 60),
	'the first part reached the modem');
$node->stop('fast');
sleep 4;
$node->start;
is(wait_for_value($node, q{SELECT send_state || ' ' || array_length(string_to_array(gateway_id, ','), 1)
	FROM verification.sms_log WHERE phone_number = '+380500000020'}, 'submitted 3', 60),
	'submitted 3', 'the SMS sent while the database was down is recorded as submitted, three references');
is(scalar(grep { $_->{number} eq '+380500000020' } sim_events($sim)), 3,
	'its three parts went out once');

is(stop_sidecar($pid), 0, 'SIGTERM: exit 0');
stop_simulator($sim);
$node->stop;
done_testing();

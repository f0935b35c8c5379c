# The SQL functions the modem sidecar calls: leases, outcomes, recovery of
# expired leases as unknown (never re-sent), status reports, bad input.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../modem";
use ModemTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = modem_node('modem_sql');
sub q1 { return $node->safe_psql('postgres', $_[0]); }

sub error_of
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return $err;
}

my $id = q1(q{SELECT sms_send('+380501234567', 'hello', channel => 'modem')});
q1(q{SELECT sms_send('+380501234568', 'ip', channel => 'ip2sms')});

# claim: only modem rows, a lease, one at a time
is(q1(q{SELECT id FROM smsdispatch.modem_claim('m1', '1 min')}), $id, 'm1 claims the modem row');
is(q1(q{SELECT count(*) FROM smsdispatch.modem_claim('m2')}), '0', 'm2 finds nothing left (ip2sms rows are not its)');
is(q1(qq{SELECT send_state || ' ' || claimed_by || ' ' || attempts || ' ' || (lease_until > now())
	FROM verification.sms_log WHERE id = $id}), 'sending m1 1 true', 'the row is sending, leased to m1');

# finishing: only the owner
is(q1(qq{SELECT smsdispatch.modem_finish($id, 'm2', 'submitted', '7')}), 'f', 'another modem cannot finish it');
is(q1(qq{SELECT smsdispatch.modem_finish($id, 'm1', 'retry', NULL, '+CMS ERROR: 38')}), 't', 'm1 reports a refusal');
is(q1(qq{SELECT send_state || ' ' || (next_attempt_at > now()) || ' ' || last_error || ' ' || (claimed_by IS NULL)
	FROM verification.sms_log WHERE id = $id}), 'queued true +CMS ERROR: 38 true',
	'a refused SMS is queued again for later, with the error');
is(q1(q{SELECT count(*) FROM smsdispatch.modem_claim('m1')}), '0', 'not before its next attempt');
q1(qq{UPDATE verification.sms_log SET next_attempt_at = now() WHERE id = $id});
is(q1(q{SELECT id FROM smsdispatch.modem_claim('m1')}), $id, 'claimed again when due');
is(q1(qq{SELECT smsdispatch.modem_finish($id, 'm1', 'submitted', '12,13')}), 't', 'submitted');
is(q1(qq{SELECT send_state || ' ' || gateway_id || ' ' || gateway_status || ' ' || attempts
	FROM verification.sms_log WHERE id = $id}), 'submitted 12,13 Accepted 2', 'submitted with its references');

# status reports: paired by modem, number and any part's reference
is(q1(q{SELECT smsdispatch.modem_status_report('m2', '+380501234567', 13, 'Delivered')}), '',
	'another modem\'s report does not match');
is(q1(q{SELECT smsdispatch.modem_status_report('m1', '+380501234567', 14, 'Delivered')}), '',
	'an unknown reference does not match');
is(q1(q{SELECT smsdispatch.modem_status_report('m1', '+380501234567', 12, 'Enroute')}), $id, 'part 1 enroute');
is(q1(q{SELECT smsdispatch.modem_status_report('m1', '380501234567', 13, 'Delivered', '2026-11-22 05:00+00')}),
	$id, 'part 2 delivered (number without +)');
is(q1(qq{SELECT gateway_status || ' ' || status_changed_at FROM verification.sms_log WHERE id = $id}),
	'Delivered 2026-11-22 05:00:00+00', 'Delivered, at the report\'s time');
q1(q{SELECT smsdispatch.modem_status_report('m1', '+380501234567', 12, 'Enroute')});
is(q1(qq{SELECT gateway_status FROM verification.sms_log WHERE id = $id}), 'Delivered',
	'a late Enroute does not undo Delivered');

# retries run out into failed
my $id2 = q1(q{SELECT sms_send('+380501234569', 'x', channel => 'modem')});
q1(qq{UPDATE verification.sms_log SET attempts = 4 WHERE id = $id2});
q1(q{SELECT id FROM smsdispatch.modem_claim('m1')});
q1(qq{SELECT smsdispatch.modem_finish($id2, 'm1', 'retry', NULL, 'no network')});
like(q1(qq{SELECT send_state || ' ' || last_error FROM verification.sms_log WHERE id = $id2}),
	qr/^failed no network \(gave up after 5 attempts\)$/, 'after smsdispatch.max_attempts a refusal is final');

# leases that expire become unknown, never queued
my $id3 = q1(q{SELECT sms_send('+380501234570', 'y', channel => 'modem')});
q1(q{SELECT id FROM smsdispatch.modem_claim('m3', '1 ms')});
q1(q{SELECT pg_sleep(0.01)});
is(q1(q{SELECT smsdispatch.modem_recover()}), '1', 'an expired lease is recovered');
like(q1(qq{SELECT send_state || ' ' || last_error FROM verification.sms_log WHERE id = $id3}),
	qr/^unknown sidecar m3 .*not re-sent$/, 'as unknown, saying it is not re-sent');
is(q1(q{SELECT count(*) FROM smsdispatch.modem_claim('m1')}), '0', 'and nobody claims it again');
is(q1(qq{SELECT smsdispatch.modem_finish($id3, 'm3', 'submitted', '99')}), 't',
	'the late sidecar may still record what it learnt');
my $id4 = q1(q{SELECT sms_send('+380501234571', 'z', channel => 'modem')});
q1(q{SELECT id FROM smsdispatch.modem_claim('m4')});
is(q1(q{SELECT smsdispatch.modem_recover('m4')}), '1', 'a restarting sidecar turns its own sending rows unknown');
q1(q{SELECT sms_send('+380501234572', 'w', channel => 'modem')});
my $id5 = q1(q{SELECT id FROM smsdispatch.modem_claim('m4')});
is(q1(qq{SELECT smsdispatch.modem_finish($id5, 'm4', 'released')}), 't', 'release');
is(q1(qq{SELECT send_state || ' ' || attempts FROM verification.sms_log WHERE id = $id5}), 'queued 0',
	'a released row is queued again, the attempt not counted');

# receive: once per message
is(q1(q{SELECT smsdispatch.modem_receive('m1', '+380501111111', 'hi', '2026-11-22 05:00+00')}), 'no_number', 'received');
is(q1(q{SELECT smsdispatch.modem_receive('m1', '+380501111111', 'hi', '2026-11-22 05:00+00')}), 'seen', 'seen twice: handled once');
is(q1(q{SELECT count(*) FROM smsdispatch.inbox}), '1', 'one inbox row');

# heartbeat accumulates counts
q1(q{SELECT smsdispatch.modem_heartbeat('m1', '10 s', '1', '2', 'Op', 50, 3, 1, 0, 0, 0, false, NULL, true)});
q1(q{SELECT smsdispatch.modem_heartbeat('m1', '10 s', NULL, NULL, NULL, 40, 2, 0, 1, 1, 1, true, 'x', false)});
is(q1(q{SELECT imei || ' ' || operator || ' ' || signal_percent || ' ' || sent || ' ' || received || ' '
	|| status_reports || ' ' || modem_errors || ' ' || resets || ' ' || sim_full FROM smsdispatch.modem}),
	'1 Op 40 5 1 1 1 1 true', 'heartbeat keeps the identity and adds the counts');

# bad input
like(error_of(q{SELECT smsdispatch.modem_finish(1, 'm1', 'sent')}),
	qr/22023: unknown modem send outcome "sent"/, 'unknown outcome: 22023 naming it');
like(error_of(q{SELECT smsdispatch.modem_finish(1, 'm1', 'submitted')}),
	qr/22004: a submitted modem SMS needs its message reference/, 'submitted without reference: 22004');
like(error_of(q{SELECT * FROM smsdispatch.modem_claim('')}),
	qr/22023: modem name must not be empty/, 'empty modem name: 22023');
like(error_of(q{SELECT * FROM smsdispatch.modem_claim('m1', '-1 s')}),
	qr/22023: lease "-00:00:01" must be positive/, 'negative lease: 22023');
like(error_of(q{SELECT smsdispatch.modem_status_report('m1', '+380501234567', 1, 'Gone')}),
	qr/22023: unknown status report word "Gone"/, 'unknown status word: 22023');
like(error_of(q{SELECT smsdispatch.modem_heartbeat(NULL, '1 s', NULL, NULL, NULL, NULL, 0, 0, 0, 0, 0, false, NULL)}),
	qr/22023: modem name must not be empty/, 'NULL modem name: 22023');

$node->stop;
done_testing();

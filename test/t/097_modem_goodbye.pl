# A modem sidecar that stops cleanly (SIGTERM, SIGINT) says goodbye: by the
# time it has exited, smsdispatch.channel_health shows the modem channel
# no_sidecar (within a second of the signal, whatever its heartbeat), so
# failover need not wait three heartbeats. The goodbye leaves an SMS the
# sidecar holds on the wire under its lease, to be recovered as unknown
# (never re-sent) as after any stop. A crash (kill -9) says nothing: the
# channel stays ok until three heartbeats are missed. A new start is ok
# again.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../modem";
use ModemTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $node = modem_node('modem_goodbye');
my $dir = "$tmp/goodbye_phone";
my $rc = dummy_gammurc($dir);
my $log = "$tmp/sidecar_goodbye.log";
my $dsn = $node->connstr('postgres');
sub q1 { return $node->safe_psql('postgres', $_[0]); }

my $health = q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'modem'};

sub start
{
	my ($heartbeat) = @_;
	my $pid = start_sidecar(dsn => $dsn, gammurc => $rc, name => 'dummy1', log => $log,
		heartbeat => $heartbeat);
	is(wait_for_value($node, $health, 'ok', 60), 'ok',
		"a started sidecar (heartbeat $heartbeat s) makes the modem channel ok");
	return $pid;
}

# Stops the sidecar with $signal; returns the time the signal was sent.
sub stop_with
{
	my ($pid, $signal) = @_;
	my $sent_at = time;
	is(stop_sidecar($pid, 30, $signal), 0, "$signal: the sidecar exits with status 0");
	return $sent_at;
}

# Checks what a clean stop by $signal at $sent_at left in channel_health.
sub said_goodbye
{
	my ($signal, $sent_at) = @_;
	is(q1($health), 'no_sidecar', "$signal: once the sidecar has exited, the modem channel is no_sidecar");
	my $after = q1(qq{SELECT extract(epoch FROM since) - $sent_at FROM smsdispatch.channel_health
		WHERE channel = 'modem'});
	ok($after ne '' && $after >= 0 && $after <= 1,
		"$signal: since is the goodbye, within a second of the signal ("
		  . ($after eq '' ? 'NULL' : sprintf('%.3f s', $after)) . ')');
	like(q1(q{SELECT last_error FROM smsdispatch.channel_health WHERE channel = 'modem'}),
		qr/^no sidecar running; the last one, dummy1, stopped at \d{4}-/,
		"$signal: last_error says the last sidecar stopped");
}

# A heartbeat of 60 s: without the goodbye the channel would stay ok for
# three minutes after the stop.
my $pid = start(60);

# an SMS on the wire when the stop comes: claimed under this modem's name
# and lease in the transaction that queues it, so the sidecar's claim
# cannot take it first
my ($queued, $held) = split /\n/, q1(q{
	BEGIN;
	SELECT sms_send('+380501110001', 'on the wire', channel => 'modem');
	SELECT id FROM smsdispatch.modem_claim('dummy1', '1 hour');
	COMMIT;});
ok(defined $held && $held eq $queued, 'an SMS is claimed as dummy1\'s, sending under a lease');

my $sent_at = stop_with($pid, 'TERM');
said_goodbye('TERM', $sent_at);
like(slurp_file($log), qr/said goodbye: modem "dummy1" is marked stopped/, 'the sidecar logs its goodbye');
is(q1(qq{SELECT send_state || ' ' || claimed_by || ' ' || (lease_until > now() + interval '50 min')
	FROM verification.sms_log WHERE id = $held}), 'sending dummy1 true',
	'the goodbye leaves the SMS on the wire sending, under its lease');

# the next start is ok again; the SMS the stopped sidecar held is unknown,
# not sent again
$pid = start(4);
is(q1(q{SELECT stopped_at IS NULL FROM smsdispatch.modem WHERE name = 'dummy1'}), 't',
	'the new start clears the goodbye');
is(q1(qq{SELECT send_state FROM verification.sms_log WHERE id = $held}), 'unknown',
	'the SMS the stopped sidecar held is recovered as unknown at the new start');
unlike(slurp_file("$dir.log"), qr/\+380501110001/, 'and never handed to the phone');

$sent_at = stop_with($pid, 'INT');
said_goodbye('INT', $sent_at);

# kill -9: no goodbye; ok until three heartbeats (4 s) are missed
$pid = start(4);
is(stop_sidecar($pid, 30, 'KILL'), 9, 'kill -9: the sidecar is gone');
is(q1(q{SELECT h.state || ' ' || (now() < m.last_seen + 3 * m.heartbeat) || ' ' || (m.stopped_at IS NULL)
	FROM smsdispatch.channel_health h, smsdispatch.modem m WHERE h.channel = 'modem'}),
	'ok true true', 'kill -9: no goodbye, the modem stays ok while its heartbeats are not yet missed');
is(wait_for_value($node, $health, 'no_sidecar', 60), 'no_sidecar',
	'kill -9: no_sidecar once three heartbeats are missed');
is(q1(q{SELECT (h.since = m.last_seen + 3 * m.heartbeat) || ' ' || (now() >= h.since)
	FROM smsdispatch.channel_health h, smsdispatch.modem m WHERE h.channel = 'modem'}),
	'true true', 'kill -9: since the third missed heartbeat, not earlier');
like(q1(q{SELECT last_error FROM smsdispatch.channel_health WHERE channel = 'modem'}),
	qr/^no sidecar seen within three heartbeats; the last one, dummy1, was last seen at/,
	'kill -9: last_error says no sidecar was seen');

$pid = start(4);
is(stop_sidecar($pid), 0, 'the restarted sidecar stops cleanly');

$node->stop;
done_testing();

# smsdispatch.modem_goodbye(), the call a modem sidecar makes when it stops
# cleanly, as channel_health and the sidecar's role see it: the channel stays
# ok while another sidecar still runs, and is no_sidecar, since the last
# one's goodbye, when none is left; the next heartbeat under that name
# counts as running again; the goodbye touches no SMS; smsdispatch_admin (the
# sidecar's role) may call it and nobody else; an empty name is refused.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../modem";
use ModemTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = modem_node('modem_goodbye_sql');
sub q1 { return $node->safe_psql('postgres', $_[0]); }

sub error_of
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return $err;
}

sub heartbeat
{
	my ($name, $starting) = @_;
	q1(qq{SELECT smsdispatch.modem_heartbeat('$name', '1 hour', NULL, NULL, NULL, NULL,
		0, 0, 0, 0, 0, false, NULL, $starting)});
}

my $health = q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'modem'};

heartbeat('m1', 'true');
heartbeat('m2', 'true');
is(q1($health), 'ok', 'two sidecars with fresh heartbeats: ok');

# m1 holds an SMS on the wire when it says goodbye
my $id = q1(q{SELECT sms_send('+380501110002', 'held', channel => 'modem')});
is(q1(q{SELECT id FROM smsdispatch.modem_claim('m1', '1 hour')}), $id, 'm1 holds an SMS, sending');

is(q1(q{SELECT smsdispatch.modem_goodbye('m1')}), 't', 'm1 says goodbye');
is(q1(qq{SELECT send_state || ' ' || claimed_by || ' ' || (lease_until > now() + interval '50 min')
	FROM verification.sms_log WHERE id = $id}), 'sending m1 true',
	'the goodbye leaves the SMS m1 held sending, under its lease');
is(q1(q{SELECT h.state || ' ' || (h.since = m.started_at)
	FROM smsdispatch.channel_health h, smsdispatch.modem m WHERE h.channel = 'modem' AND m.name = 'm2'}),
	'ok true', 'm2 still runs: the channel stays ok, since m2 started');

is(q1(q{SELECT smsdispatch.modem_goodbye('m2')}), 't', 'm2 says goodbye');
is(q1(q{SELECT h.state || ' ' || (h.since = m.stopped_at)
	FROM smsdispatch.channel_health h, smsdispatch.modem m WHERE h.channel = 'modem' AND m.name = 'm2'}),
	'no_sidecar true', 'none left: no_sidecar at once, since the last goodbye');
like(q1(q{SELECT last_error FROM smsdispatch.channel_health WHERE channel = 'modem'}),
	qr/^no sidecar running; the last one, m2, stopped at /, 'last_error names the last one to stop');

heartbeat('m1', 'false');
is(q1(q{SELECT h.state || ' ' || (m.stopped_at IS NULL)
	FROM smsdispatch.channel_health h, smsdispatch.modem m WHERE h.channel = 'modem' AND m.name = 'm1'}),
	'ok true', 'a heartbeat after the goodbye: running again, ok');

is(q1(q{SELECT smsdispatch.modem_goodbye('m9')}), 'f', 'a goodbye from a name with no heartbeat row: false');
is(q1(q{SELECT count(*) FROM smsdispatch.modem WHERE name = 'm9'}), '0', 'and no row is made for it');
like(error_of(q{SELECT smsdispatch.modem_goodbye('')}),
	qr/22023: modem name must not be empty/, 'an empty modem name: 22023');

# privileges: the sidecar's role may say goodbye; readers and senders may not
q1(q{CREATE ROLE sidecar LOGIN IN ROLE smsdispatch_admin;
	CREATE ROLE watcher LOGIN IN ROLE smsdispatch_reader;
	CREATE ROLE app LOGIN IN ROLE smsdispatch_sender});
is(q1(q{SET ROLE sidecar; SELECT smsdispatch.modem_goodbye('m1')}), 't',
	'smsdispatch_admin may call modem_goodbye');
like(error_of(q{SET ROLE watcher; SELECT smsdispatch.modem_goodbye('m1')}),
	qr/42501: permission denied for function modem_goodbye/, 'smsdispatch_reader may not: 42501');
like(error_of(q{SET ROLE app; SELECT smsdispatch.modem_goodbye('m1')}),
	qr/42501: permission denied for function modem_goodbye/, 'smsdispatch_sender may not: 42501');
is(q1(q{SET ROLE watcher; SELECT state FROM smsdispatch.channel_health WHERE channel = 'modem'}),
	'no_sidecar', 'a reader sees the goodbye in channel_health');

$node->stop;
done_testing();

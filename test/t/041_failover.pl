# Failover for alarms (issue 11, Done when 3; Build 6), failover_after = 5 s:
# - the modem sidecar stopped: smsdispatch.channel_health says no_sidecar
#   from its goodbye on, and an alarm on the modem channel is submitted
#   through IP2SMS within failover_after + 2 s, with a failover event, the
#   same message_id, the modem row failed "failed over", and the
#   recipient's deadline counted from the IP2SMS submission;
# - the gateway answering 401 and a sidecar on gammu's dummy phone: the
#   alarm's SMS reaches the dummy phone, and the IP2SMS row, failed over,
#   never reaches the gateway once the password is right again;
# - verification SMS fail over only with smsdispatch.failover_verification.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock", "$FindBin::RealBin/../modem";
use Ip2smsMock;
use ModemTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('failover', "smsdispatch.failover_after = '5s'\n");
my $dir = "${PostgreSQL::Test::Utils::tmp_check}/failover_phone";
my $rc = dummy_gammurc($dir);
my $sidecar_log = "${PostgreSQL::Test::Utils::tmp_check}/failover_sidecar.log";
my $dsn = $node->connstr('postgres');

$node->safe_psql('postgres', q{
	SELECT sms_list_create('ward');
	SELECT sms_list_add('ward', '+380505551001', 1, '1 hour', 'Alice');
	SELECT sms_list_create('plant');
	SELECT sms_list_add('plant', '+380505551005', 1, '1 hour', 'Carol')});

# the sidecar runs, then stops
my $pid = start_sidecar(dsn => $dsn, gammurc => $rc, name => 'dummy1', log => $sidecar_log);
is(wait_for_value($node, q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'modem'}, 'ok'),
	'ok', 'channel_health: the modem is ok while its sidecar runs');
stop_sidecar($pid);
is($node->safe_psql('postgres', q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'modem'}),
	'no_sidecar', 'the stopped sidecar said goodbye: no_sidecar');
like($node->safe_psql('postgres', q{SELECT last_error FROM smsdispatch.channel_health WHERE channel = 'modem'}),
	qr/no sidecar running; the last one, dummy1, stopped at/,
	'channel_health names the last sidecar, stopped');

my $t0 = time;
my $number = $node->safe_psql('postgres', q{SELECT sms_enqueue('ward 3 door open', 'ward', channel => 'modem')});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM verification.sms_log
	WHERE phone_number = '+380505551001' AND channel = 'ip2sms' AND send_state = 'submitted'}),
	'the alarm on the modem channel is submitted through IP2SMS');
my $took = time - $t0;
cmp_ok($took, '<=', 5 + 2, sprintf('within failover_after + 2 s (%.1f s)', $took));
is($node->safe_psql('postgres', qq{SELECT string_agg(l.channel || ' ' || l.send_state, ', ' ORDER BY l.id)
	FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id WHERE m.number = '$number'}),
	'modem failed, ip2sms submitted', 'two rows with the alarm\'s message_id: the modem one failed, the IP2SMS one sent');
like($node->safe_psql('postgres', q{SELECT last_error FROM verification.sms_log
	WHERE phone_number = '+380505551001' AND channel = 'modem'}),
	qr/^failed over to ip2sms as sms_log \d+: channel modem is no_sidecar$/, 'the modem row says where it went');
like($node->safe_psql('postgres', qq{SELECT e.phone || ' ' || e.detail FROM smsdispatch.event e
	JOIN smsdispatch.message m ON m.id = e.message_id WHERE m.number = '$number' AND e.kind = 'failover'}),
	qr/^\+380505551001 modem to ip2sms as sms_log \d+: channel modem is no_sidecar/, 'a failover event');
is($node->safe_psql('postgres', q{SELECT r.status || ' ' || (r.deadline = l.submitted_at + r.ack_timeout)
	FROM smsdispatch.message_recipient r JOIN verification.sms_log l ON l.id = r.sms_log_id
	WHERE r.phone = '+380505551001'}),
	'NOT_YET_ACK true', 'Alice waits, her deadline counted from the IP2SMS submission');
is(scalar(grep { $_->{kind} eq 'send' && $_->{text} eq "[$number] ward 3 door open" } $mock->log_entries),
	1, 'the gateway got the alarm once');

# the gateway refuses the credentials, the sidecar runs on the dummy phone
$pid = start_sidecar(dsn => $dsn, gammurc => $rc, name => 'dummy1', log => $sidecar_log);
is(wait_for_value($node, q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'modem'}, 'ok'),
	'ok', 'the sidecar is back: the modem is ok');
$mock->password_file('not-the-password');
$node->reload;
$node->safe_psql('postgres', q{SELECT sms_send('+380505552001', 'code 7781', 'verification')});
my $number2 = $node->safe_psql('postgres', q{SELECT sms_enqueue('boiler pressure low', 'plant')});
is(wait_for_value($node, q{SELECT send_state || ' ' || gateway_id FROM verification.sms_log
	WHERE phone_number = '+380505551005' AND channel = 'modem'}, 'submitted 255', 20),
	'submitted 255', 'with the gateway answering 401 the alarm goes out on the modem');
like(slurp_file("$dir.log"), qr/\Q[$number2] boiler pressure low\E/, 'the alarm reached the dummy phone');
is($node->safe_psql('postgres', q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
	'auth_failed', 'channel_health: ip2sms auth_failed');
is($node->safe_psql('postgres', q{SELECT channel || ' ' || send_state FROM verification.sms_log
	WHERE phone_number = '+380505552001'}),
	'ip2sms queued', 'a verification SMS does not fail over while failover_verification is off');

$node->append_conf('postgresql.conf', "smsdispatch.failover_verification = on\n");
$node->reload;
is(wait_for_value($node, q{SELECT string_agg(channel || ' ' || send_state, ', ' ORDER BY id)
	FROM verification.sms_log WHERE phone_number = '+380505552001'}, 'ip2sms failed, modem submitted', 20),
	'ip2sms failed, modem submitted', 'with failover_verification on it goes out on the modem');

# the right password again: the rows that failed over are not sent twice
$mock->password_file;
$node->reload;
my $probe = $node->safe_psql('postgres', q{SELECT sms_send('+380505553001', 'after the fix')});
ok($node->poll_query_until('postgres', "SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $probe"),
	'the gateway takes the credentials again');
is(scalar(grep { $_->{kind} eq 'send' && $_->{outcome} eq 'Accepted'
		  && ($_->{text} =~ /boiler pressure low/ || $_->{text} eq 'code 7781') } $mock->log_entries),
	0, 'the rows that failed over to the modem never reach the gateway');

stop_sidecar($pid);
$node->stop;
$mock->stop;
done_testing();

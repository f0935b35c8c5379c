# Sticky failover, which on-call staff rely on while a channel is dead for
# minutes: once the modem channel has had no sidecar for longer than
# smsdispatch.failover_after, a new alarm on it is submitted through IP2SMS
# within 1.5 s of its COMMIT, and its next escalation level within 1.5 s of
# the level's start: neither waits failover_after again. Each such SMS is
# sent once, its modem row failed "failed over", with a failover event.
# When the sidecar is back the modem channel stays failed over (listed in
# smsdispatch.channel_failover) until it has been ok for
# smsdispatch.failback_after: an alarm on it still goes out on IP2SMS, and
# the sidecar, though running, never takes it; after failback_after an
# alarm on it goes out on the modem.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock", "$FindBin::RealBin/../modem";
use Ip2smsMock;
use ModemTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('sticky',
	"smsdispatch.failover_after = '3s'\nsmsdispatch.failback_after = '15s'\n");
my $dir = "${PostgreSQL::Test::Utils::tmp_check}/sticky_phone";
my $rc = dummy_gammurc($dir);
my $sidecar_log = "${PostgreSQL::Test::Utils::tmp_check}/sticky_sidecar.log";
my $dsn = $node->connstr('postgres');

$node->safe_psql('postgres', q{
	SELECT sms_list_create('ward');
	SELECT sms_list_add('ward', '+380505561001', 1, '2 s', 'Alice');
	SELECT sms_list_add('ward', '+380505561006', 2, '1 hour', 'Bob');
	SELECT sms_list_create('plant');
	SELECT sms_list_add('plant', '+380505561005', 1, '1 hour', 'Carol');
	SELECT sms_list_create('yard');
	SELECT sms_list_add('yard', '+380505561007', 1, '1 hour', 'Dan')});

# the sidecar runs, then stops; the modem has been without one for longer
# than failover_after
my $pid = start_sidecar(dsn => $dsn, gammurc => $rc, name => 'dummy1', log => $sidecar_log);
is(wait_for_value($node, q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'modem'}, 'ok'),
	'ok', 'the modem is ok while its sidecar runs');
stop_sidecar($pid);
is(wait_for_value($node, q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'modem'
	AND since <= now() - interval '4 s'}, 'no_sidecar', 20),
	'no_sidecar', 'the modem has had no sidecar for longer than failover_after');

# a new alarm: its level 1 leaves at once, and so does its level 2
my $number = $node->safe_psql('postgres', q{SELECT sms_enqueue('ward 3 door open', 'ward', channel => 'modem')});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM verification.sms_log
	WHERE phone_number = '+380505561001' AND channel = 'ip2sms' AND send_state = 'submitted'}),
	'level 1 of the alarm on the modem channel is submitted through IP2SMS');
my $took = $node->safe_psql('postgres', qq{SELECT extract(epoch FROM l.submitted_at - m.created_at)
	FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
	WHERE m.number = '$number' AND l.phone_number = '+380505561001' AND l.channel = 'ip2sms'});
ok($took ne '' && $took < 1.5, "level 1 submitted within 1.5 s of the COMMIT ($took s), not failover_after later");

ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM verification.sms_log
	WHERE phone_number = '+380505561006' AND channel = 'ip2sms' AND send_state = 'submitted'}),
	'level 2 of the alarm is submitted through IP2SMS');
$took = $node->safe_psql('postgres', qq{SELECT extract(epoch FROM l.submitted_at - m.level_started_at)
	FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
	WHERE m.number = '$number' AND m.level = 2 AND l.phone_number = '+380505561006'
	  AND l.channel = 'ip2sms'});
ok($took ne '' && $took < 1.5, "level 2 submitted within 1.5 s of the level's start ($took s)");

is($node->safe_psql('postgres', qq{SELECT string_agg(l.phone_number || ' ' || l.channel || ' ' || l.send_state,
		', ' ORDER BY l.id)
	FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id WHERE m.number = '$number'}),
	'+380505561001 modem failed, +380505561001 ip2sms submitted, '
	  . '+380505561006 modem failed, +380505561006 ip2sms submitted',
	'each level: the modem row failed, the IP2SMS row sent');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM verification.sms_log l
	JOIN smsdispatch.message m ON m.id = l.message_id
	WHERE m.number = '$number' AND l.channel = 'modem'
	  AND l.last_error ~ '^failed over to ip2sms as sms_log [0-9]+: channel modem is no_sidecar\$'}),
	2, 'the modem rows say where they went');
is($node->safe_psql('postgres', qq{SELECT string_agg(e.phone, ', ' ORDER BY e.id) FROM smsdispatch.event e
	JOIN smsdispatch.message m ON m.id = e.message_id WHERE m.number = '$number' AND e.kind = 'failover'}),
	'+380505561001, +380505561006', 'a failover event for each level');
is(scalar(grep { $_->{kind} eq 'send' && $_->{text} eq "[$number] ward 3 door open" } $mock->log_entries),
	2, 'the gateway got the alarm once per level');

# the sidecar is back: the modem stays failed over for failback_after, then
# takes its alarms back
$pid = start_sidecar(dsn => $dsn, gammurc => $rc, name => 'dummy1', log => $sidecar_log);
is(wait_for_value($node, q{SELECT state FROM smsdispatch.channel_health WHERE channel = 'modem'}, 'ok'),
	'ok', 'the sidecar is back: the modem is ok');
is($node->safe_psql('postgres', q{SELECT string_agg(channel, ', ') FROM smsdispatch.channel_failover}),
	'modem', 'within failback_after the modem is still failed over');
my $number3 = $node->safe_psql('postgres', q{SELECT sms_enqueue('gate 2 open', 'yard', channel => 'modem')});
is(wait_for_value($node, q{SELECT string_agg(channel || ' ' || send_state, ', ' ORDER BY id)
	FROM verification.sms_log WHERE phone_number = '+380505561007'}, 'modem failed, ip2sms submitted', 20),
	'modem failed, ip2sms submitted', 'within failback_after an alarm on the modem goes out on IP2SMS')
  or diag($node->safe_psql('postgres', q{SELECT channel, state, since, last_error FROM smsdispatch.channel_health;
	SELECT * FROM smsdispatch.channel_failover; SELECT smsdispatch.failing_over_channels()}));
like($node->safe_psql('postgres', q{SELECT last_error FROM verification.sms_log
	WHERE phone_number = '+380505561007' AND channel = 'modem'}),
	qr/^failed over to ip2sms as sms_log \d+: channel modem is back, for less than smsdispatch.failback_after,$/,
	'the modem row says the modem is back for less than failback_after');
is($node->safe_psql('postgres', q{SELECT h.since > now() - interval '15 s'
	FROM smsdispatch.channel_health h WHERE h.channel = 'modem'}),
	't', 'the modem was ok for less than failback_after then');
is(scalar(grep { $_->{kind} eq 'send' && $_->{text} eq "[$number3] gate 2 open" } $mock->log_entries),
	1, 'the gateway got it once');
unlike(slurp_file("$dir.log"), qr/gate 2 open/, 'the running sidecar never sent it');
is(wait_for_value($node, q{SELECT count(*) FROM smsdispatch.channel_failover}, '0', 30),
	'0', 'the modem takes its SMS back');
is($node->safe_psql('postgres', q{SELECT h.since <= now() - interval '15 s'
	FROM smsdispatch.channel_health h WHERE h.channel = 'modem'}),
	't', 'only after it has been ok for failback_after');
my $number2 = $node->safe_psql('postgres', q{SELECT sms_enqueue('boiler pressure low', 'plant', channel => 'modem')});
is(wait_for_value($node, q{SELECT channel || ' ' || send_state || ' ' || gateway_id FROM verification.sms_log
	WHERE phone_number = '+380505561005'}, 'modem submitted 255', 20),
	'modem submitted 255', 'after failback_after an alarm on the modem goes out on the modem');

stop_sidecar($pid);
$node->stop;
$mock->stop;
done_testing();

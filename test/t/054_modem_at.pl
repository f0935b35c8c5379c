# The AT path: the real gammu tool and the sidecar against the simulated
# modem on a pseudo-terminal. The alarm round trip, a 400-character
# Cyrillic text as concatenated UCS-2 parts, a status report turning the
# row Delivered.
use strict;
use warnings;
use utf8;

use Encode qw(encode_utf8);
use FindBin;
use lib "$FindBin::RealBin/../modem";
use ModemTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $sim = start_simulator("$tmp/at_modem");

# the real gammu tool recognises the simulator
my $identify = `timeout 60 gammu -c $sim->{rc} identify 2>&1`;
is($? >> 8, 0, 'gammu --identify against the simulator exits 0');
like($identify, qr/IMEI\s+:\s+356938035643809/, 'and reads its IMEI');
like($identify, qr/SIM IMSI\s+:\s+255011234567890/, 'and its IMSI');

my $node = modem_node('modem_at');
$node->safe_psql('postgres', q{
	SELECT sms_list_create('oncall');
	SELECT sms_list_add('oncall', '+380501111111', 1, '1 hour', 'Alice');
	SELECT sms_list_add('oncall', '+380502222222', 2, '1 hour', 'Bob');
});
my $log = "$tmp/sidecar_at.log";
my $pid = start_sidecar(dsn => $node->connstr('postgres'), gammurc => $sim->{rc},
	name => 'at1', log => $log);

my $number = $node->safe_psql('postgres',
	q{SELECT sms_enqueue('Disk full on db1', 'oncall', channel => 'modem')});
is(wait_for_value($node, q{SELECT send_state FROM verification.sms_log WHERE phone_number = '+380501111111'},
		'submitted', 60), 'submitted', 'the alarm SMS was submitted through the AT modem');
my @ev = sim_events($sim);
is(scalar(@ev), 1, 'the simulator received one PDU');
is($ev[0]{number}, '+380501111111', 'addressed to Alice');
is($ev[0]{text}, "[$number] Disk full on db1", 'carrying the alarm text (GSM-7)');
is($ev[0]{coding}, 'gsm7', 'in GSM-7');
ok($ev[0]{srr}, 'asking for a status report');
is($node->safe_psql('postgres', q{SELECT gateway_id FROM verification.sms_log WHERE phone_number = '+380501111111'}),
	$ev[0]{reference}, 'gateway_id is the modem\'s message reference');

# the status report
sim_ctl($sim, "report $ev[0]{reference} +380501111111 0");
is(wait_for_value($node, q{SELECT gateway_status FROM verification.sms_log WHERE phone_number = '+380501111111'},
		'Delivered', 30), 'Delivered', 'a +CDS status report turns the row Delivered');
ok($node->safe_psql('postgres', q{SELECT status_changed_at IS NOT NULL FROM verification.sms_log
	WHERE phone_number = '+380501111111'}) eq 't', 'with status_changed_at');

# the reply
like(sim_ctl($sim, "deliver +380501111111 $number ack"), qr/^ok/, 'the reply arrives at the modem');
is(wait_for_value($node, q{SELECT state FROM smsdispatch.message}, 'acked', 30),
	'acked', 'the reply acknowledged the alarm');
ok(wait_until(sub { sim_ctl($sim, 'stored') eq '0' }, 30),
	'and was deleted from the SIM after the database committed it');
is($node->safe_psql('postgres', q{SELECT count(*) FROM verification.sms_log WHERE phone_number = '+380502222222'}),
	'0', 'escalation stopped: no level-2 SMS');

# a reply in two parts, the number split between them
like(sim_ctl($sim, 'deliver_parts +380509999999 2 0123456789'), qr/^ok/, 'a two-part message arrives');
is(wait_for_value($node, q{SELECT body FROM smsdispatch.inbox WHERE sender = '+380509999999'},
		'0123456789', 30), '0123456789', 'its parts are joined');

# 400 Cyrillic characters: concatenated UCS-2
my $text = substr('Тривога: сервер бази даних db1 не відповідає, диск заповнений. ' x 10, 0, 400);
is(length($text), 400, 'the text is 400 characters');
$node->safe_psql('postgres', encode_utf8(qq{SELECT sms_send('+380503333333', '$text', channel => 'modem')}));
is(wait_for_value($node, q{SELECT send_state FROM verification.sms_log WHERE phone_number = '+380503333333'},
		'submitted', 90), 'submitted', 'the 400-character Cyrillic SMS was submitted');
my @parts = grep { $_->{number} eq '+380503333333' } sim_events($sim);
is(scalar(@parts), 6, 'as 6 parts (67 UCS-2 characters each)');
is(scalar(grep { $_->{coding} eq 'ucs2' } @parts), 6, 'every part in UCS-2');
is(join(',', map { $_->{concat}{seq} } @parts), '1,2,3,4,5,6', 'numbered 1 to 6');
is(scalar(grep { $_->{concat}{total} == 6 && $_->{concat}{ref} == $parts[0]{concat}{ref} } @parts),
	6, 'with one concatenation reference and total');
is(join('', map { $_->{text} } @parts), $text, 'which join into the text');
is($node->safe_psql('postgres', q{SELECT gateway_id FROM verification.sms_log WHERE phone_number = '+380503333333'}),
	join(',', map { $_->{reference} } @parts), 'gateway_id lists the six references');
# its status: delivered only when the parts are
sim_ctl($sim, "report $parts[0]{reference} +380503333333 0x21");
is(wait_for_value($node, q{SELECT gateway_status FROM verification.sms_log WHERE phone_number = '+380503333333'},
		'Enroute', 30), 'Enroute', 'a temporary TP-Status is Enroute');
sim_ctl($sim, "report $parts[5]{reference} +380503333333 0");
is(wait_for_value($node, q{SELECT gateway_status FROM verification.sms_log WHERE phone_number = '+380503333333'},
		'Delivered', 30), 'Delivered', 'then Delivered');

# the heartbeat sees the simulated network
is(wait_for_value($node, q{SELECT imei || ' ' || imsi || ' ' || (operator IS NOT NULL) || ' ' || (signal_percent > 0)
	FROM smsdispatch.modem}, '356938035643809 255011234567890 true true', 30),
	'356938035643809 255011234567890 true true', 'heartbeat: IMEI, IMSI, operator, signal');

is(stop_sidecar($pid), 0, 'SIGTERM: exit 0');
stop_simulator($sim);
$node->stop;
done_testing();

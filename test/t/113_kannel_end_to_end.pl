# A registered Kannel channel carries alarms end to end: an alarm queued
# with sms_enqueue(..., 'kannel1') leaves through Kannel's sendsms to the
# SMSC, each recipient's delivery report makes its row Delivered, a reply
# typed at the SMSC acknowledges the alarm, and the other person paged is
# told who took it, through Kannel too; a long UTF-8 verification SMS on the
# channel goes as UCS-2 and Kannel splits it into concatenated parts (at most
# its sendsms-user's max-messages of them).
use strict;
use warnings;
use utf8;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use KannelTest;
use SmsWorkerNode;

my $node = worker_node('kannel_e2e', conf => "smsdispatch.loopback_channel = off\n");
$node->safe_psql('postgres', 'CREATE ROLE kannel_http LOGIN IN ROLE smsdispatch_admin');
my $db = $node->connstr('postgres') . ' user=kannel_http';

my $port = PostgreSQL::Test::Cluster::get_free_port();
my ($service) = channels_doc() =~ /^(    group = sms-service\n(?:    \S.*\n)+)/m;
$service =~ s/^    //mg;
$service =~ s/127\.0\.0\.1:8089/127.0.0.1:$port/;
my $kannel = kannel_start(service => $service);
my $http = start_http($port, $db, "${PostgreSQL::Test::Utils::tmp_check}/http_e2e.log");

my $password_file = "${PostgreSQL::Test::Utils::tmp_check}/kannel1.password";
append_to_file($password_file, "kannel-test\n");
chmod 0600, $password_file;
$node->safe_psql('postgres', qq{
	SELECT smsdispatch.channel_add('kannel1', 'kannel', jsonb_build_object(
		'url', 'http://127.0.0.1:$kannel->{sendsms_port}/cgi-bin/sendsms', 'username', 'tester',
		'password_file', '$password_file', 'from', '+380990000000',
		'callback_url', 'http://127.0.0.1:$port'))});

make_list($node, 'noc', 0,
	[ '+380501111111', 1, '1 hour' ], [ '+380502222222', 1, '1 hour' ],
	[ '+380503333333', 2, '1 hour' ]);
my $number = $node->safe_psql('postgres', "SELECT sms_enqueue('Core router down', 'noc', 'kannel1')");

# the MTs fakesmsc received for $phone
sub received_by
{
	my ($phone) = @_;
	return grep { /^\+380990000000 \Q$phone\E / } $kannel->received;
}

for my $phone ('+380501111111', '+380502222222')
{
	ok(poll_until(sub { grep { /Core router down/ } received_by($phone) }, 30),
		"the alarm reached $phone at the SMSC through Kannel");
	ok( wait_until(
			$node,
			"SELECT send_state || ' ' || coalesce(gateway_status, '-') FROM verification.sms_log
			  WHERE phone_number = '$phone' AND channel = 'kannel1'",
			'submitted Delivered', 30),
		"its delivery report made the row of $phone Delivered");
}
is(scalar(received_by('+380503333333')), 0, 'level 2 was not paged');

$kannel->type_mo('+380501111111', '+380990000000', "OK $number on my way");
ok(wait_until($node, "SELECT state FROM smsdispatch.message WHERE number = '$number'", 'acked', 30),
	'the reply typed at the SMSC acknowledged the alarm');
ok(poll_until(sub { received_by('+380502222222') == 2 }, 30),
	'the other person paged got a second SMS through Kannel');
my @second = received_by('+380502222222');
like($second[1], qr/\+380501111111|taken/i, 'it says who took the alarm');
ok( wait_until(
		$node,
		"SELECT count(*) FROM verification.sms_log WHERE phone_number = '+380502222222'
		    AND channel = 'kannel1' AND confirms IS NOT NULL AND send_state = 'submitted'",
		'1', 30),
	'the confirmation is an SMS of channel kannel1');
ok(poll_until(sub { received_by('+380501111111') == 2 }, 30),
	'the one who acked got the confirmation of the ack through Kannel');

# a long UTF-8 verification SMS
my $long = substr('Код підтвердження 4812. ' x 30, 0, 600);
my $id = $node->safe_psql('postgres', "SELECT sms_send('+380504444444', '$long', 'verification', 'kannel1')");
ok(wait_until($node, "SELECT send_state FROM verification.sms_log WHERE id = $id", 'submitted', 30),
	'a 600-character UTF-8 SMS was submitted through Kannel');
# UCS-2 (coding=2), split by Kannel into concatenated parts; the
# sendsms-user's max-messages (3 in KannelTest's kannel.conf) caps them
ok(poll_until(sub { received_by('+380504444444') == 3 }, 30), 'it reached the SMSC in 3 parts');
my @parts = received_by('+380504444444');
is(scalar(grep { m{ udh %05%00%03%[0-9A-F]{2}%03%0[123] data %} } @parts), 3,
	'as one concatenated SMS of 3 parts (UDH: 3 parts), as Kannel\'s max-messages = 3 allows');
# fakesmsc escapes what is not printable ASCII, in either case of hex
my ($first) = grep { m{ udh %05%00%03%[0-9A-Fa-f]{2}%03%01 } } @parts;
like($first // '', qr/ data %04%1A%04%3E%04(?:4|%34)/i,
	'in UCS-2: the first part starts with the text (U+041A U+043E U+0434)')
  or diag(join("\n", @parts));

is($node->safe_psql('postgres', "SELECT state FROM smsdispatch.channel_health WHERE channel = 'kannel1'"),
	'ok', 'channel_health shows kannel1 ok');

stop_http($http);
$kannel->stop;
done_testing();

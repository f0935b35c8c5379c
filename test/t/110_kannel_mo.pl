# Replies through Kannel: an on-call person's "OK 0042 on my way", received
# by Kannel's SMSC (fakesmsc here), reaches sms_receive through smsbox's
# get-url and smsdispatch-http, and acknowledges the alarm, also when the
# sidecar was down while the reply came in (smsbox tries again) and when
# smsbox was (bearerbox keeps it). The sidecar
# logs neither the phone number nor the text, answers 200 only for what the
# database took, and with --mo-token-file takes only requests that carry
# the token.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use IO::Socket::INET;
use KannelTest;
use SmsWorkerNode;

my $node = worker_node('kannel_mo');
# the sidecar logs in as an admin, as a deployment would
$node->safe_psql('postgres', 'CREATE ROLE kannel_http LOGIN IN ROLE smsdispatch_admin');
my $db = $node->connstr('postgres') . ' user=kannel_http';

make_list($node, 'oncall', 0, [ '+380501111111', 1, '1 hour' ], [ '+380502222222', 2, '1 hour' ]);

# the sms-service group of docs/channels.md, as printed, on a free port
my $port = PostgreSQL::Test::Cluster::get_free_port();
my ($service) = channels_doc() =~ /^(    group = sms-service\n(?:    \S.*\n)+)/m;
ok(defined $service, 'docs/channels.md shows the sms-service group');
$service =~ s/^    //mg;
$service =~ s/127\.0\.0\.1:8089/127.0.0.1:$port/;
my $kannel = kannel_start(service => $service);
my $log = "${PostgreSQL::Test::Utils::tmp_check}/http_mo.log";
my $http = start_http($port, $db, $log);

# an alarm, sent on level 1 (the loopback channel)
sub alarm_sent
{
	my ($body) = @_;
	my $number = $node->safe_psql('postgres', "SELECT sms_enqueue('$body', 'oncall')");
	ok( wait_until(
			$node,
			"SELECT r.status FROM smsdispatch.message_recipient r
			   JOIN smsdispatch.message m ON m.id = r.message_id
			  WHERE m.number = '$number' AND r.level = 1",
			'NOT_YET_ACK', 30),
		"alarm $number was sent to level 1");
	return $number;
}

my $first = alarm_sent('Disk full on db1');
$kannel->type_mo('+380501111111', '12345', "OK $first on my way");
ok(wait_until($node, "SELECT state FROM smsdispatch.message WHERE number = '$first'", 'acked', 30),
	'the reply typed into the SMSC acknowledged the alarm through Kannel and the sidecar');
is( $node->safe_psql('postgres',
		"SELECT sender || '|' || body || '|' || outcome FROM smsdispatch.inbox"),
	"+380501111111|OK $first on my way|ack",
	'sms_receive took the sender and the whole text');
is($node->safe_psql('postgres',
		"SELECT acked_by FROM smsdispatch.message WHERE number = '$first'"),
	'+380501111111', 'acked by the phone that replied');

# the sidecar is down when the second reply comes in: smsbox keeps it and
# tries again until the sidecar is back
my $second = alarm_sent('Disk full on db2');
stop_http($http);
$kannel->type_mo('+380501111111', '12345', "ok $second");
ok( poll_until(
		sub { slurp_file("$kannel->{dir}/smsbox.log") =~ m{Couldn't fetch <http://127\.0\.0\.1:$port/kannel/mo} },
		30),
	'smsbox failed to reach the stopped sidecar');
is($node->safe_psql('postgres', "SELECT state FROM smsdispatch.message WHERE number = '$second'"),
	'open', 'the alarm is still open while the sidecar is down');
$http = start_http($port, $db, $log);
ok(wait_until($node, "SELECT state FROM smsdispatch.message WHERE number = '$second'", 'acked', 45),
	'once the sidecar is back, the retried reply acknowledged the second alarm');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM smsdispatch.inbox WHERE body = 'ok $second'"),
	'1', 'and it was handed in once');

# smsbox is down when the third reply comes in: bearerbox keeps it until
# smsbox is back
my $third = alarm_sent('Disk full on db3');
$kannel->stop_smsbox;
$kannel->type_mo('+380501111111', '12345', "$third ok");
ok( poll_until(
		sub { ($kannel->admin('status'))[1] =~ /SMS: received [1-9]\d* \([1-9]\d* queued\)/ }, 30),
	'bearerbox queued the reply while smsbox was down');
$kannel->start_smsbox;
ok(wait_until($node, "SELECT state FROM smsdispatch.message WHERE number = '$third'", 'acked', 30),
	'once smsbox is back, the queued reply acknowledged the third alarm');

my $text = slurp_file($log);
unlike($text, qr/380501111111/, 'the sidecar logged no phone number');
unlike($text, qr/on my way|Disk full/, 'and no text');
like($text, qr/received SMS: ack/, 'it logged the outcome');

# straight to the sidecar: what a request that is not a well-formed
# callback gets
my $base = "http://127.0.0.1:$port";
is((http_get("$base/kannel/mo?text=hello"))[0], 400, 'no sender: 400');
is((http_get("$base/kannel/mo?from=%2B380501111111&text=" . ('x' x 9000)))[0],
	400, 'a text over 8 kB: 400');
is((http_get("$base/elsewhere"))[0], 404, 'another path: 404');
is((http_get("$base/kannel/mo?from=1&text=x", 'POST'))[0], 405, 'POST: 405');
my ($big) = http_get("$base/kannel/mo?from=1&text=" . ('x' x 70000));
ok($big >= 400 && $big < 500, "a request over 64 kB is refused ($big)");

# --mo-token-file: only requests with the token are taken
my $token_file = "${PostgreSQL::Test::Utils::tmp_check}/mo.token";
PostgreSQL::Test::Utils::append_to_file($token_file, "s3cret-mo-token\n");
chmod(0644, $token_file);
my $port2 = PostgreSQL::Test::Cluster::get_free_port();
my ($out, $err);
my $refused = eval {
	IPC::Run::run([ KannelTest::http_program(), '--listen', "127.0.0.1:$port2", '--db', $db,
		'--mo-token-file', $token_file ], '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(10));
};
ok(!$refused && !$@, 'a token file others may read is refused at start');
like($err, qr/mo-token-file.*mode 0644/, 'naming the file\'s mode');
chmod(0600, $token_file);
my $http2 = start_http($port2, $db, "${PostgreSQL::Test::Utils::tmp_check}/http_mo2.log",
	'--mo-token-file', $token_file, '--max-connections', 2);

# --max-connections: two idle connections take every place, a third
# request finds none; once they close it is served again
my @idle = map { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port2") or die "connect: $!" } 1 .. 2;
is((http_get("http://127.0.0.1:$port2/"))[0], 599, 'past --max-connections no request is served');
close($_) for @idle;
ok(poll_until(sub { (http_get("http://127.0.0.1:$port2/"))[0] == 404 }, 10),
	'once they close, requests are served again');

my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM smsdispatch.inbox');
is((http_get("http://127.0.0.1:$port2/kannel/mo?from=%2B380509999999&text=no+token"))[0],
	403, 'without the token: 403');
is((http_get("http://127.0.0.1:$port2/kannel/mo?from=%2B380509999999&text=x&token=s3cret-mo-tokem"))[0],
	403, 'with a wrong token: 403');
is($node->safe_psql('postgres', 'SELECT count(*) FROM smsdispatch.inbox'), $before,
	'neither reached the inbox');
is((http_get("http://127.0.0.1:$port2/kannel/mo?from=%2B380509999999&text=hello+there&token=s3cret-mo-token"))[0],
	200, 'with the token: 200');
is( $node->safe_psql('postgres',
		"SELECT body || '|' || outcome FROM smsdispatch.inbox WHERE sender = '+380509999999'"),
	'hello there|no_number', 'and it reached sms_receive');
unlike(slurp_file("${PostgreSQL::Test::Utils::tmp_check}/http_mo2.log"), qr/s3cret/,
	'the token is not logged');

my $help = `@{[KannelTest::http_program()]} --help`;
is($? >> 8, 0, '--help exits 0');
like($help, qr{/kannel/dlr\?id=ID&token=TOKEN.*/kannel/mo\?from=%p}s, '--help names both paths');

stop_http($http2);
stop_http($http);
$kannel->stop;
done_testing();

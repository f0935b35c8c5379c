# Delivery reports through Kannel: an SMS sent through Kannel's sendsms with
# a dlr-url naming its sms_log row and that row's callback token becomes
# Delivered once the SMSC reports it; a report with another row's token or
# a made-up one is refused (403) and changes nothing; a row in doubt after
# a crash (unknown) is settled by its report; while the database is down
# the sidecar answers 503 and Kannel's retries record the report once it is
# back; while the sidecar itself is down Kannel's retries lose nothing, and
# a multi-host connection string finds the database.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use KannelTest;
use SmsWorkerNode;

my $node = worker_node('kannel_dlr');
$node->safe_psql('postgres', 'CREATE ROLE kannel_http LOGIN IN ROLE smsdispatch_admin');
my $db = $node->connstr('postgres') . ' user=kannel_http';

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $kannel = kannel_start();
my $log = "${PostgreSQL::Test::Utils::tmp_check}/http_dlr.log";
my $http = start_http($port, $db, $log);
my $base = "http://127.0.0.1:$port";
# the dlr-url of docs/channels.md, as printed
my ($dlr_url) = channels_doc() =~ m{^    (http://127\.0\.0\.1:8089/kannel/dlr\?\S+)$}m;
ok(defined $dlr_url, 'docs/channels.md shows the dlr-url');

# An SMS in the log, submitted by the loopback channel: its id.
sub logged_sms
{
	my ($phone, $body) = @_;
	my $id = $node->safe_psql('postgres', "SELECT sms_send('$phone', '$body')");
	ok(wait_until($node, "SELECT send_state FROM verification.sms_log WHERE id = $id",
			'submitted', 30),
		"sms_log row $id submitted");
	return $id;
}

sub token
{
	my ($id) = @_;
	return $node->safe_psql('postgres', "SELECT smsdispatch.callback_token($id)");
}

sub row
{
	my ($id) = @_;
	return $node->safe_psql('postgres',
		"SELECT send_state || ' ' || coalesce(gateway_status, '-') FROM verification.sms_log WHERE id = $id");
}

# Sends row $id's SMS through Kannel with a dlr-url for it carrying $tok
# (by default the row's token; dlr-mask 31: every report).
sub send_through_kannel
{
	my ($id, $phone, $tok) = @_;
	$tok //= token($id);
	(my $url = $dlr_url) =~ s/:8089/:$port/;
	$url =~ s/=ID&/=$id&/;
	$url =~ s/=TOKEN&/=$tok&/;
	my ($status, $body) = $kannel->sendsms(
		to => $phone, from => '12345', text => "sms $id",
		'dlr-mask' => 31,
		'dlr-url' => $url);
	is("$status $body", '202 0: Accepted for delivery', "Kannel took the SMS of row $id");
}

my $r1 = logged_sms('+380501000001', 'first');
send_through_kannel($r1, '+380501000001');
ok(wait_until($node, "SELECT gateway_status FROM verification.sms_log WHERE id = $r1",
		'Delivered', 30),
	'the SMSC\'s delivery report made the row Delivered');
ok(poll_until(sub { grep { /^12345 \+380501000001 text sms $r1$/ } $kannel->received }, 10),
	'the fake SMSC received the SMS');
is($node->safe_psql('postgres',
		"SELECT send_state || ' ' || (status_changed_at > now() - interval '5 min')
		   FROM verification.sms_log WHERE id = $r1"),
	'submitted true', 'still submitted, status_changed_at from Kannel\'s %T');

# forged reports, straight to the sidecar
my $r2 = logged_sms('+380501000002', 'second');
my $b_before = $node->safe_psql('postgres',
	"SELECT gateway_status || ' ' || status_changed_at || ' ' || updated_at FROM verification.sms_log WHERE id = $r2");
my $tok_a = token($r1);
is((http_get("$base/kannel/dlr?id=$r2&token=$tok_a&status=2&at=1700000000"))[0], 403,
	'another row\'s token: 403');
is((http_get("$base/kannel/dlr?id=$r2&token=" . ('0' x 64) . "&status=2"))[0], 403,
	'a made-up token: 403');
is((http_get("$base/kannel/dlr?id=$r2&token=short&status=2"))[0], 403, 'a short token: 403');
is( $node->safe_psql('postgres',
		"SELECT gateway_status || ' ' || status_changed_at || ' ' || updated_at FROM verification.sms_log WHERE id = $r2"),
	$b_before, 'the row is unchanged');
my $tok_b = token($r2);
is((http_get("$base/kannel/dlr?id=$r2&token=$tok_b&status=99"))[0], 400,
	'a status that is no DLR type: 400');
is((http_get("$base/kannel/dlr?id=x$r2&token=$tok_b&status=1"))[0], 400, 'an id that is no number: 400');
my ($st, $body) = http_get("$base/kannel/dlr?id=$r2&token=$tok_b&status=2&answer=NACK%2F0x0b&at=1700000000");
is("$st $body", "200 recorded\n", 'its own token: 200');
is( $node->safe_psql('postgres',
		"SELECT gateway_status || '|' || last_error || '|' || (status_changed_at = to_timestamp(1700000000))
		   FROM verification.sms_log WHERE id = $r2"),
	'Undeliverable|NACK/0x0b|true', 'the failure, the SMSC\'s answer and the report\'s time are recorded');
($st, $body) = http_get("$base/kannel/dlr?id=$r2&token=$tok_b&status=1");
is("$st $body", "200 unchanged\n", 'a final failure is not overwritten');

# a row in doubt after a crash: its report settles it
my $r3 = logged_sms('+380501000003', 'third');
$node->safe_psql('postgres', "UPDATE verification.sms_log SET send_state = 'unknown' WHERE id = $r3");
send_through_kannel($r3, '+380501000003');
ok(wait_until($node, "SELECT send_state || ' ' || gateway_status FROM verification.sms_log WHERE id = $r3",
		'submitted Delivered', 30),
	'a delivery report settles an unknown row: submitted, Delivered');

# the database is down while the reports come: 503, Kannel retries, and
# the report is recorded once the database is back
my $r4 = logged_sms('+380501000004', 'fourth');
my $tok_d = token($r4);
$node->stop('fast');
is((http_get("$base/kannel/dlr?id=$r4&token=$tok_d&status=8"))[0], 503,
	'database down: 503');
is((http_get("$base/kannel/mo?from=%2B380501000004&text=ok"))[0], 503,
	'a received SMS too: 503');
send_through_kannel($r4, '+380501000004', $tok_d);
ok( poll_until(
		sub { slurp_file("$kannel->{dir}/smsbox.log") =~ m{Retrying request <http://127\.0\.0\.1:$port/kannel/dlr\?id=$r4&} },
		30),
	'Kannel retries the report the sidecar answered 503');
$node->start;
ok(wait_until($node, "SELECT gateway_status FROM verification.sms_log WHERE id = $r4",
		'Delivered', 45),
	'once the database is back, the retried report is recorded');

# the sidecar is down while the reports come: nothing is lost
my $r5 = logged_sms('+380501000005', 'fifth');
my $r5_before = row($r5);
stop_http($http);
send_through_kannel($r5, '+380501000005');
ok( poll_until(
		sub { slurp_file("$kannel->{dir}/smsbox.log") =~ m{Couldn't fetch <http://127\.0\.0\.1:$port/kannel/dlr\?id=$r5&} },
		30),
	'Kannel could not reach the stopped sidecar');
is(row($r5), $r5_before, 'the row waits');
# started again with a multi-host connection string whose first host
# takes no connection: libpq finds the primary
my $dead = PostgreSQL::Test::Cluster::get_free_port();
my ($host, $pgport) = ($node->host, $node->port);
$http = start_http($port,
	"host=$host,$host port=$dead,$pgport dbname=postgres user=kannel_http target_session_attrs=read-write",
	$log);
ok(wait_until($node, "SELECT gateway_status FROM verification.sms_log WHERE id = $r5",
		'Delivered', 45),
	'once the sidecar is back, the retried report is recorded (through the multi-host string)');

my $text = slurp_file($log);
unlike($text, qr/38050100000|$tok_a|$tok_b/, 'the sidecar logged no phone number and no token');
like($text, qr/delivery report for sms_log id $r1, status 1: recorded/, 'it logged what it recorded');

stop_http($http);
$kannel->stop;
done_testing();

# smsdispatch.channel_health shows the last error of a
# channel only while the channel is not ok. The IP2SMS gateway cannot be
# reached: 'down', with the connection failure as last_error; back at the
# right URL, the SMS leaves and the channel is 'ok' with no last_error, not
# the stale one of the cause that is gone.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use IO::Socket::INET;
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('channel_health_last_error');

# the channel works first
my $first = $node->safe_psql('postgres', q{SELECT sms_send('+380504445000', 'hello', 'text')});
ok($node->poll_query_until('postgres', qq{SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $first}),
	'an SMS leaves through the gateway');

# a port nobody listens on
my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
  or die "socket: $!";
my $dead_port = $sock->sockport;
close $sock;
$node->append_conf('postgresql.conf', "smsdispatch.ip2sms_url = 'http://127.0.0.1:$dead_port/ip2sms/'\n");
$node->reload;

my $id = $node->safe_psql('postgres', q{SELECT sms_send('+380504445001', 'into the void', 'text')});
ok($node->poll_query_until('postgres', q{SELECT state = 'down' AND last_error LIKE 'connection failed%'
	FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
	'the gateway cannot be reached: channel_health says down, with the connection failure');

$node->append_conf('postgresql.conf', "smsdispatch.ip2sms_url = '" . $mock->send_url . "'\n");
$node->reload;
ok($node->poll_query_until('postgres', qq{SELECT send_state = 'submitted' FROM verification.sms_log WHERE id = $id}),
	'back at the right URL, the SMS leaves');
is($node->safe_psql('postgres', q{SELECT state || ' ' || coalesce(last_error, '(no error)')
	FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
	'ok (no error)', 'the channel is ok, and the error of the cause that is gone is not shown');

# down again: the new cause is shown
$node->append_conf('postgresql.conf', "smsdispatch.ip2sms_url = 'http://127.0.0.1:$dead_port/ip2sms/'\n");
$node->reload;
$node->safe_psql('postgres', q{SELECT sms_send('+380504445002', 'into the void again', 'text')});
ok($node->poll_query_until('postgres', q{SELECT state = 'down' AND last_error LIKE 'connection failed%'
	FROM smsdispatch.channel_health WHERE channel = 'ip2sms'}),
	'down again: the new connection failure is shown');

$node->stop;
$mock->stop;
done_testing();

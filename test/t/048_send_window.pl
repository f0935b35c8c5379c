# Issue 13, Done when 5: a medication_request queued outside its send
# window (a window a few seconds wide here, as 08:00-21:00 would be for a
# reminder queued at 23:00) stays queued and leaves when the window opens,
# without expiring while held; an alarm and a 2FA code queued at the same
# moment leave at once. Through the IP2SMS channel and its mock gateway.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('window',
	"smsdispatch.timezone = 'Europe/Kyiv'\nsmsdispatch.ip2sms_poll_interval = '1h'\n"
	  # shorter than the hold: counted from the release, it does not expire
	  . "smsdispatch.validity_medication_request = '2s'\n");
$node->safe_psql('postgres', q{
	SELECT sms_list_create('ward');
	SELECT sms_list_add('ward', '+380509990001', 1, '1 h')});

# a window that opens 4 s from now and stays open 6 s, in Kyiv time
my ($opens, $window) = split /\|/, $node->safe_psql('postgres', q{
	SELECT date_trunc('second', now()) + interval '4 s',
		   to_char((date_trunc('second', now()) + interval '4 s') AT TIME ZONE 'Europe/Kyiv', 'HH24:MI:SS')
		   || '-' ||
		   to_char((date_trunc('second', now()) + interval '10 s') AT TIME ZONE 'Europe/Kyiv', 'HH24:MI:SS')});
$node->safe_psql('postgres',
	"ALTER SYSTEM SET smsdispatch.send_window_medication_request = '$window'");
$node->reload;
$node->poll_query_until('postgres',
	"SELECT current_setting('smsdispatch.send_window_medication_request') = '$window'")
  or die 'the window was not loaded';

my $med = $node->safe_psql('postgres',
	"SELECT sms_send('+380509990011', 'take your pill', 'medication_request')");
my $code = $node->safe_psql('postgres', "SELECT sms_send('+380509990015', 'login 4711', '2FA')");
my $number = $node->safe_psql('postgres', "SELECT sms_enqueue('patient fell', 'ward')");

$node->poll_query_until('postgres', qq{
	SELECT bool_and(send_state = 'submitted') FROM verification.sms_log
	 WHERE id = $code OR message_id IS NOT NULL})
  or die 'the code and the alarm were not submitted';
cmp_ok( $node->safe_psql('postgres', qq{
		SELECT extract(epoch FROM max(submitted_at - inserted_at)) FROM verification.sms_log
		 WHERE id = $code OR message_id IS NOT NULL}),
	'<', 1, 'the 2FA code and the alarm leave at once');

is( $node->safe_psql('postgres', "SELECT send_state || ' ' || (held_until = '$opens') FROM verification.sms_log WHERE id = $med"),
	'queued true', 'the reminder waits queued, held until its window opens');
is(scalar(grep { $_->{kind} eq 'send' && $_->{text} eq 'take your pill' } $mock->log_entries),
	0, 'nothing of it reached the gateway before the window');

$node->poll_query_until('postgres',
	"SELECT send_state <> 'queued' FROM verification.sms_log WHERE id = $med")
  or die 'the reminder never left';
my ($state, $after, $error) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT send_state, extract(epoch FROM submitted_at - '$opens'), coalesce(last_error, '')
	  FROM verification.sms_log WHERE id = $med});
is($state, 'submitted', "the reminder is submitted, not expired (last_error '$error')");
cmp_ok($after, '>=', 0, 'not before the window opened');
cmp_ok($after, '<', 1, sprintf('but as it opened: %.3f s after', $after));
sleep 0.5;
is(scalar(grep { $_->{kind} eq 'send' && $_->{text} eq 'take your pill' } $mock->log_entries),
	1, 'the gateway got it once');

$node->stop;
done_testing();

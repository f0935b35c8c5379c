# IP2SMS end to end against the mock gateway: delivered, refused, expired and
# en-route numbers end with the right gateway_id, gateway_status,
# status_changed_at and last_error; the mock saw Basic auth, text/xml and the
# text intact (XML special characters and Cyrillic).
use strict;
use warnings;
use utf8;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('e2e', "smsdispatch.ip2sms_poll_interval = '1s'\n");

my $text = q{Код 4812 & <b> "quoted" 'single' — Привіт};
my %phone = (
	delivered => '+380501000001',
	refused   => '+380501000002',
	expired   => '+380501000003',
	enroute   => '+380501000004');
my %id;
for my $k (sort keys %phone)
{
	$id{$k} = $node->safe_psql('postgres',
		"SELECT sms_send('$phone{$k}', \$t\$$text\$t\$, 'verification')");
}

ok( $node->poll_query_until('postgres', qq{
	SELECT count(*) = 4 FROM verification.sms_log
	 WHERE (gateway_status IN ('Delivered', 'Expired', 'Rejected'))
	    OR (gateway_status = 'Enroute')}),
	'every SMS reached its final or en-route state');

sub row
{
	my ($k) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT send_state, gateway_id ~ '^[0-9]{7,25}\$', gateway_status,
			   status_changed_at IS NOT NULL
			   AND status_changed_at BETWEEN now() - interval '5 min' AND now() + interval '1 min',
			   coalesce(last_error, ''), next_poll_at IS NULL, attempts,
			   updated_at >= inserted_at
		  FROM verification.sms_log WHERE id = $id{$k}});
}
is(row('delivered'), 'submitted|t|Delivered|t||t|1|t', 'delivered number');
is(row('expired'),   'submitted|t|Expired|t||t|1|t',   'expired number');
is(row('enroute'),   'submitted|t|Enroute|t||f|1|t',   'en-route number is still polled');
is($node->safe_psql('postgres', "SELECT send_state, gateway_id IS NULL, gateway_status,
		status_changed_at IS NOT NULL, last_error, next_poll_at IS NULL
		FROM verification.sms_log WHERE id = $id{refused}"),
	'failed|t|Rejected|t|Invalid abonent number|t', 'refused number: error text kept');

# status_changed_at is the gateway's date: the mock answers in +03:00 with
# whole seconds
is($node->safe_psql('postgres', "SELECT status_changed_at = date_trunc('second', status_changed_at)
	FROM verification.sms_log WHERE id = $id{delivered}"), 't', 'status_changed_at from the gateway date');

my @sends = grep { $_->{kind} eq 'send' } $mock->log_entries;
is(scalar @sends, 4, 'the mock received four send requests');
is(scalar(grep { $_->{auth} } @sends), 4, 'every request carried the Basic credentials');
is(scalar(grep { ($_->{content_type} // '') eq 'text/xml; charset=utf-8' } @sends), 4,
	'every request was text/xml; charset=utf-8');
is(scalar(grep { $_->{text} eq $text } @sends), 4, 'the text arrived intact');
is(scalar(grep { $_->{source} eq 'TestSender' } @sends), 4, 'the source alpha-name was sent');
is_deeply([ sort map { $_->{to} } @sends ],
	[ sort map { substr($_, 1) } values %phone ], 'numbers sent without the plus');
my @status = grep { $_->{kind} eq 'status' } $mock->log_entries;
ok(scalar(@status) >= 3, 'statuses were polled');
ok(!grep({ !$_->{auth} } @status), 'status requests carried the credentials');

my %stats = map { split /\|/ } split /\n/,
  $node->safe_psql('postgres', 'SELECT name, value FROM smsdispatch.stats()');
is($stats{requests_send}, 4, 'stats: four send requests');
is($stats{answers_Accepted}, 3, 'stats: three Accepted answers');
is($stats{answers_Rejected}, 1, 'stats: one Rejected answer');
is($stats{answers_Delivered} >= 1 && $stats{answers_Expired} >= 1 ? 1 : 0, 1,
	'stats: Delivered and Expired answers counted');
is($stats{latency_count}, $stats{requests_send} + $stats{requests_status},
	'stats: one latency sample per request');
$node->safe_psql('postgres', 'SELECT smsdispatch.stats_reset()');
is($node->safe_psql('postgres', "SELECT value FROM smsdispatch.stats() WHERE name = 'requests_send'"),
	'0', 'stats_reset zeroes the counters');

# a reload that changes the number of connections, up and down, while the
# worker lives: the same worker sends on (it once crashed here)
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'");
for my $conns (64, 2, 32)
{
	$node->append_conf('postgresql.conf', "smsdispatch.ip2sms_max_connections = $conns\n");
	$node->reload;
	$node->safe_psql('postgres', "SELECT sms_send('+3805020' || lpad(g::text, 4, '0') || '1', 'resize $conns')
		FROM generate_series(1, 100) g");
	ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 100 FROM verification.sms_log
		 WHERE body = 'resize $conns' AND send_state = 'submitted'}),
		"100 SMS sent after a reload to $conns connections");
}
is($node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'"),
	$pid, 'the same worker sent them all');

$node->stop;
$mock->stop;
done_testing();

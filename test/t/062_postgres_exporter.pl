# Debian's prometheus-postgres-exporter with src/metrics/postgres_exporter_queries.yaml,
# connected as a reader, serves the smsdispatch metrics with the database's numbers,
# each channel's state among them (1 for the state it is in, 0 for the others, and
# following a change of state), and the example alert rules of
# src/metrics/prometheus_alerts.yaml name metrics, channels and states it serves.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use HTTP::Tiny;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use SmsdispatchReports qw(start_node fill_report_data ensure_stats free_port);

my ($exporter) = grep { -x } map { "$_/prometheus-postgres-exporter" } split /:/, $ENV{PATH};
BAIL_OUT('prometheus-postgres-exporter is not in PATH: run install-deps.sh') unless $exporter;
my $queries = abs_path(dirname(__FILE__) . '/../../src/metrics/postgres_exporter_queries.yaml');
my $alerts = abs_path(dirname(__FILE__) . '/../../src/metrics/prometheus_alerts.yaml');

my $node = start_node('metrics', 'reports');
fill_report_data($node, 'reports');
my $stand_in = ensure_stats($node, 'reports');
note('smsdispatch.stats() is a stand-in: the IP2SMS channel is not built here') if $stand_in;
$node->safe_psql('reports', 'CREATE ROLE metrics LOGIN IN ROLE smsdispatch_reader');

my $port = free_port();
my ($out, $err) = ('', '');
my $h;
{
	local $ENV{DATA_SOURCE_NAME} = sprintf('host=%s port=%d user=metrics dbname=reports sslmode=disable',
		$node->host, $node->port);
	$h = IPC::Run::start(
		[ $exporter, "--web.listen-address=127.0.0.1:$port",
		  "--extend.query-path=$queries", '--disable-default-metrics',
		  '--disable-settings-metrics', '--log.level=warn' ],
		'<', \undef, '>', \$out, '2>', \$err);
}

# the exporter's page once it holds a line matching $want (polled for 30 s)
my $http = HTTP::Tiny->new(timeout => 10);
sub scrape
{
	my ($want) = @_;
	my $page = '';
	for (1 .. 60)
	{
		my $res = $http->get("http://127.0.0.1:$port/metrics");
		$page = $res->{content} if $res->{success};
		last if $page =~ $want;
		usleep(500_000);
	}
	return $page;
}

my $body = scrape(qr/^smsdispatch_delivery_ratio/m);
ok($body =~ /^smsdispatch_delivery_ratio/m, 'the exporter serves smsdispatch metrics')
  or diag("exporter stderr: $err");

# every metric of the queries file, with the value the database has
my %db = split /[|\n]/, $node->safe_psql('reports', 'SELECT name, value FROM smsdispatch.stats()');
my $cumulative = 0;
$cumulative += $db{$_} // 0
  for qw(latency_le_10ms latency_le_50ms latency_le_100ms latency_le_500ms
  latency_le_1s latency_le_5s latency_gt_5s);
my @expected = (
	[ 'smsdispatch_requests_total', 'kind="send"', $db{requests_send} ],
	[ 'smsdispatch_requests_total', 'kind="status"', $db{requests_status} ],
	[ 'smsdispatch_answers_total', 'state="Delivered"', $db{answers_Delivered} ],
	[ 'smsdispatch_errors_total', 'class="timeout"', $db{errors_timeout} ],
	[ 'smsdispatch_retries_total', '', $db{retries} ],
	[ 'smsdispatch_request_latency_seconds_bucket', 'le="0.01"', $db{latency_le_10ms} ],
	[ 'smsdispatch_request_latency_seconds_bucket', 'le="+Inf"', $cumulative ],
	[ 'smsdispatch_request_latency_seconds_sum', '', $db{latency_us_sum} / 1e6 ],
	[ 'smsdispatch_request_latency_seconds_count', '', $db{latency_count} ],
	[ 'smsdispatch_delivery_delivered', 'type="verification"', 3 ],
	[ 'smsdispatch_delivery_failed', 'type="verification"', 1 ],
	[ 'smsdispatch_delivery_pending', 'type="verification"', 1 ],
	[ 'smsdispatch_delivery_lost', 'type="verification"', 0 ],
	[ 'smsdispatch_delivery_ratio', 'type="verification"', 0.75 ],
	[ 'smsdispatch_delivery_ratio', 'type="2FA"', 0.5 ]);
for my $e (@expected)
{
	my ($metric, $label, $value) = @$e;
	my ($line) = grep { /^\Q$metric\E(\{|\s)/ && index($_, $label) >= 0 } split /\n/, $body;
	my ($got) = ($line // '') =~ /\s(\S+)$/;
	ok(defined $got && $got == $value, "$metric {$label} = $value")
	  or diag('got: ' . ($line // 'no such metric'));
}
# each figure names the database it belongs to, so that one exporter with a
# connection string per database keeps the databases apart
my @smsdispatch_lines = grep { /^smsdispatch_/ } split /\n/, $body;
is(scalar(grep { !/database="reports"/ } @smsdispatch_lines), 0,
	'every smsdispatch series has the label database="reports" (of ' . @smsdispatch_lines . ')');

# smsdispatch_channel_health{channel, state} of a page: channel => state => value
sub channel_health
{
	my ($page) = @_;
	my %health;
	for (split /\n/, $page)
	{
		next unless /^smsdispatch_channel_health\{([^}]*)\}\s+(\S+)$/;
		my ($labels, $value) = ($1, $2);
		my %label = $labels =~ /(\w+)="([^"]*)"/g;
		$health{ $label{channel} }{ $label{state} } = $value;
	}
	return \%health;
}

# each channel: 1 for the state channel_health says, 0 for every other state
sub check_channel_health
{
	my ($page, $when) = @_;
	my %state = split /[|\n]/,
	  $node->safe_psql('reports', 'SELECT channel, state FROM smsdispatch.channel_health');
	my $health = channel_health($page);
	is_deeply([ sort keys %$health ], [ sort keys %state ],
		"$when: smsdispatch_channel_health has a series for each channel");
	for my $channel (sort keys %state)
	{
		my $series = $health->{$channel} // {};
		is_deeply([ grep { $series->{$_} == 1 } sort keys %$series ], [ $state{$channel} ],
			"$when: channel $channel is 1 in its state $state{$channel} only");
		is_deeply([ sort grep { $series->{$_} != 0 && $series->{$_} != 1 } keys %$series ], [],
			"$when: channel $channel has no value but 0 and 1");
		ok(exists $series->{$_}, "$when: channel $channel has a series for state $_")
		  for qw(ok down auth_failed);
	}
	return ($health, \%state);
}

my ($health, $state) = check_channel_health($body, 'no sidecar');
is($state->{modem}, 'no_sidecar', 'the modem channel has no sidecar yet');
is($health->{modem}{ok}, 0, 'so its state ok is 0');

# a sidecar's heartbeat: the modem channel turns ok, and so does the metric
$node->safe_psql('reports', q{INSERT INTO smsdispatch.modem (name) VALUES ('gsm0')});
$body = scrape(qr/^smsdispatch_channel_health\{(?=[^}]*channel="modem")(?=[^}]*state="ok")[^}]*\} 1$/m);
($health, $state) = check_channel_health($body, 'a sidecar');
is($state->{modem}, 'ok', 'with a fresh heartbeat the modem channel is ok');
is($health->{modem}{no_sidecar}, 0, 'and its state no_sidecar is 0');

# every alert rule's expression names metrics, channels and states that the
# exporter serves (a renamed metric or state would leave the alert silent)
my @rules = do
{
	open my $fh, '<', $alerts or die "$alerts: $!";
	map { /^\s*expr:\s*(.*)$/ ? $1 : () } <$fh>;
};
cmp_ok(scalar @rules, '>=', 1, 'the alert rules file has expressions');
my %served_state = map { map { $_ => 1 } keys %$_ } values %$health;
for my $expr (@rules)
{
	my @metrics = $expr =~ /\b(smsdispatch_\w+)/g;
	ok(@metrics, "alert expression names a smsdispatch metric: $expr");
	for my $metric (@metrics)
	{
		like($body, qr/^\Q$metric\E\{/m, "alert expression's metric $metric is served");
	}
	for my $channel ($expr =~ /\bchannel="(\w+)"/g)
	{
		ok(exists $health->{$channel}, "alert expression's channel $channel is served");
	}
	for my $states ($expr =~ /\bstate=~?"([\w|]+)"/g)
	{
		ok($served_state{$_}, "alert expression's state $_ is served") for split /\|/, $states;
	}
}

like($body, qr/^# TYPE smsdispatch_requests_total counter$/m, 'counters are typed as counters');
like($body, qr/^# TYPE smsdispatch_channel_health gauge$/m, 'the channel states are typed as gauges');
like($body, qr/^pg_exporter_user_queries_load_error\{[^}]*\} 0$/m, 'the queries file loads');
like($body, qr/^pg_exporter_last_scrape_error 0$/m, 'the last scrape had no error');
$h->pump_nb;
unlike($err, qr/level=error/, 'the exporter logged no error') or diag($err);

$h->kill_kill;
$node->stop;
done_testing();

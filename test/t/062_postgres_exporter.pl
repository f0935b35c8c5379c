# Debian's prometheus-postgres-exporter with src/metrics/postgres_exporter_queries.yaml,
# connected as a reader, serves the smsdispatch metrics with the database's numbers.
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

my $http = HTTP::Tiny->new(timeout => 10);
my $body = '';
for (1 .. 60)
{
	my $res = $http->get("http://127.0.0.1:$port/metrics");
	$body = $res->{content} if $res->{success};
	last if $body =~ /^smsdispatch_delivery_ratio/m;
	usleep(500_000);
}
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
like($body, qr/^# TYPE smsdispatch_requests_total counter$/m, 'counters are typed as counters');
like($body, qr/^pg_exporter_user_queries_load_error\{[^}]*\} 0$/m, 'the queries file loads');
like($body, qr/^pg_exporter_last_scrape_error 0$/m, 'the last scrape had no error');
$h->pump_nb;
unlike($err, qr/level=error/, 'the exporter logged no error') or diag($err);

$h->kill_kill;
$node->stop;
done_testing();

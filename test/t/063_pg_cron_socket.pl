# The pg_cron recipe of docs/operations.md on a server that listens on a Unix socket only (as
# the test clusters do): without cron.use_background_workers or a socket
# cron.host, schedule_maintenance() refuses, saying what to set, and
# schedules nothing; with the settings the recipe gives, its jobs run.
use strict;
use warnings;
use File::Basename;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsdispatchReports qw(start_node);

# the recipe's postgresql.conf lines for pg_cron
my $doc = slurp_file(dirname(__FILE__) . '/../../docs/operations.md');
my ($block) = $doc =~ /\*\*Scheduling with pg_cron\.\*\*.*?\n```\n(.*?)```/s;
ok(defined $block, "docs/operations.md's pg_cron settings found");
my %conf = ($block // '') =~ /^(\S+)\s*=\s*(.*?)\s*(?:#.*)?$/mg;
is($conf{shared_preload_libraries}, q{'smsdispatch,pg_cron'}, 'the recipe preloads both');
ok(exists $conf{$_}, "the recipe sets $_") for ('cron.database_name', 'cron.use_background_workers');

my $node = start_node('cronsock', 'postgres', 'pg_cron', "cron.database_name = 'postgres'\n");
is($node->safe_psql('postgres', 'SHOW listen_addresses'), '', 'the server listens on no TCP address');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');

my ($rc, $out, $err) = $node->psql('postgres', 'SELECT smsdispatch.schedule_maintenance()');
isnt($rc, 0, 'refused: its jobs could not connect');
like($err, qr/ERROR:  pg_cron could not run the maintenance jobs: cron.host is "localhost" but the server listens on no TCP address/,
	'says why');
like($err, qr/HINT:  Set cron.use_background_workers = on .*or cron.host = '\//, 'says what to set');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cron.job'), '0', 'nothing was scheduled');

# the recipe's settings (its database name replaced by the test's)
my $lines = join '', map {
	my $v = $_ eq 'cron.database_name' ? q{'postgres'} : $conf{$_};
	$_ eq 'shared_preload_libraries' ? '' : "$_ = $v\n"
} sort keys %conf;
$node->append_conf('postgresql.conf', $lines);
$node->restart;
is($node->safe_psql('postgres',
	q{SELECT string_agg(jobname, ',' ORDER BY jobname)
		FROM smsdispatch.schedule_maintenance('90 days', '* * * * *')}),
	'smsdispatch-purge,smsdispatch-snapshot', 'with the recipe\'s settings the jobs are scheduled');
ok($node->poll_query_until('postgres', q{
	SELECT count(DISTINCT j.jobname) = 2
	  FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	 WHERE d.status = 'succeeded'}), 'and a run of each succeeds');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM cron.job_run_details WHERE status = 'failed'}), '0', 'no run failed');

# a socket directory as cron.host works as well
$node->append_conf('postgresql.conf',
	"cron.use_background_workers = off\ncron.host = '" . $node->host . "'\n");
$node->restart;
($rc, $out, $err) = $node->psql('postgres', 'SELECT smsdispatch.schedule_maintenance()');
is($rc, 0, 'a socket cron.host is accepted') or diag($err);

$node->stop;
done_testing();

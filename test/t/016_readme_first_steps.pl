# README's first alarm and first verification, run as printed: each SQL
# statement of the section, and where README shows its result (the "-- "
# lines after it), that result. Queries that only read wait (bounded) for
# the result, since the worker submits the alarm's SMS after the COMMIT; the
# loopback channel stands in for the gateway.
use strict;
use warnings;
use File::Basename;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use SmsWorkerNode;

my $readme = slurp_file(dirname(__FILE__) . '/../../README.md');
my ($section) = $readme =~ /^## A first alarm and a first verification\n(.*?)^## /ms;
ok(defined $section, "README's first-steps section found");
my @blocks = ($section // '') =~ /```sql\n(.*?)```/sg;
is(scalar(@blocks), 3, 'with its three SQL blocks');

# statements with the result lines shown under each
my @steps;
for my $line (map { split /\n/ } @blocks)
{
	if ($line =~ /^-- (.*)$/)
	{
		die "a result before any statement" unless @steps;
		push @{ $steps[-1]{expected} }, $1;
	}
	elsif (@steps && $steps[-1]{sql} !~ /;\s*$/)
	{
		$steps[-1]{sql} .= "\n$line";
	}
	else
	{
		push @steps, { sql => $line, expected => [] };
	}
}

# psql's unaligned rows and README's aligned ones compared cell by cell
sub rows
{
	return join "\n", map { s/^\s+|\s+$//gr =~ s/\s*\|\s*/|/gr } @_;
}

my $node = worker_node('readme_first');
for my $step (@steps)
{
	my $sql = $step->{sql};
	my $expected = rows(@{ $step->{expected} });
	my ($first) = $sql =~ /^(.*)$/m;
	if ($expected ne '' && $sql =~ /^SELECT .* FROM (smsdispatch|verification)\./s)
	{
		my ($got, $tries) = ('', 0);
		until (($got = rows(split /\n/, $node->safe_psql('postgres', $sql))) eq $expected
			|| ++$tries > 600)
		{
			usleep(50_000);
		}
		is($got, $expected, "README's result of: $first");
	}
	else
	{
		my $got = rows(split /\n/, $node->safe_psql('postgres', $sql));
		is($got, $expected, "README's statement runs" . ($expected ne '' ? ' with its result' : '') . ": $first");
	}
}

$node->stop;
done_testing();

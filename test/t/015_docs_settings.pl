# docs/settings.md names every setting the C module defines, and nothing
# else, with the context PostgreSQL reports: its table is compared with
# pg_settings on a server that preloads the library (so that
# smsdispatch.database is defined as the postmaster defines it).
use strict;
use warnings;
use File::Basename;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsWorkerNode;

my $doc = slurp_file(dirname(__FILE__) . '/../../docs/settings.md');
# rows of the table: | `smsdispatch.name` | default | context | meaning |
my %documented = $doc =~ /^\| `(smsdispatch\.[a-z0-9_]+)` \|[^|]*\| ([a-z]+)[^|]*\|/mg;
ok(scalar(keys %documented) > 0, 'docs/settings.md has a table of settings');

my $node = worker_node('docs_settings');
my %defined = map { split /\|/ } split /\n/, $node->safe_psql('postgres',
	q{SELECT name || '|' || context FROM pg_settings WHERE name LIKE 'smsdispatch.%'});
ok(scalar(keys %defined) > 0, 'the server defines smsdispatch settings');

my @missing = sort grep { !exists $documented{$_} } keys %defined;
my @extra = sort grep { !exists $defined{$_} } keys %documented;
is(join(', ', @missing), '', 'every setting of the code is in docs/settings.md');
is(join(', ', @extra), '', 'docs/settings.md names no setting the code does not define');
my @wrong = map { "$_ is $defined{$_}, docs say $documented{$_}" }
  sort grep { exists $documented{$_} && $documented{$_} ne $defined{$_} } keys %defined;
is(join('; ', @wrong), '', "each setting's context is the one docs/settings.md gives");

$node->stop;
done_testing();

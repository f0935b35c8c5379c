# The dummy-modem recipe of docs/channels.md, run as printed: the gammurc of gammu's dummy
# phone, the sidecar's own login role, the sidecar started from
# pg_config --bindir; then its SQL sends an SMS through it.
use strict;
use warnings;
use File::Basename;
use FindBin;
use lib "$FindBin::RealBin/../modem";
use IPC::Run;
use ModemTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $doc = slurp_file(dirname(__FILE__) . '/../../docs/channels.md');
my ($section) = $doc =~ /### Trying it without a modem: gammu's dummy phone\n(.*?)\n### /s;
ok(defined $section, "docs/channels.md's dummy-modem section found");
my ($sh) = ($section // '') =~ /```sh\n(.*?)```/s;
my ($sql) = ($section // '') =~ /```sql\n(.*?)```/s;
ok(defined $sh && defined $sql, 'with its shell and SQL lines');
my @lines = split /\n/, $sh // '';
like($lines[-1] // '', qr/^"\$\(pg_config --bindir\)\/smsdispatch-modem" /,
	'the sidecar is started from pg_config --bindir');

my $node = modem_node('modem_readme');
my $dir = PostgreSQL::Test::Utils::tempdir();

# the recipe's paths and database are this test's
s{/tmp/phone}{$dir/phone}g for @lines;
s{-d app\b}{-d postgres}g, s{dbname=app\b}{dbname=postgres}g for @lines;
my $sidecar = pop @lines;
local $ENV{PGHOST} = $node->host;
local $ENV{PGPORT} = $node->port;
my ($out, $err);
IPC::Run::run([ 'sh', '-ec', join("\n", @lines) ], '<', \undef, '>', \$out, '2>', \$err);
is($?, 0, 'the setup lines run') or diag($err);
like(slurp_file("$dir/phone.gammurc"), qr/connection = none\nmodel = dummy\n/, 'a dummy-phone gammurc');
is($node->safe_psql('postgres',
	q{SELECT rolcanlogin AND pg_has_role('smsmodem', 'smsdispatch_admin', 'MEMBER')
		FROM pg_roles WHERE rolname = 'smsmodem'}), 't', "the sidecar's role logs in as an admin");

my $h = IPC::Run::start([ 'sh', '-c', "exec $sidecar" ], '<', \undef, '>', \$out, '2>', \$err);

# the recipe's SQL: the send, then the rows it shows
(my $statements = $sql // '') =~ s/^--.*\n//mg;
my @statements = grep { /\S/ } split /;\n/, $statements;
$node->safe_psql('postgres', $statements[0]);
is(wait_for_value($node,
		q{SELECT send_state || '|' || gateway_id || '|' || gateway_status
		    FROM verification.sms_log WHERE channel = 'modem'}, 'submitted|255|Accepted'),
	'submitted|255|Accepted', 'the SMS went out through the dummy phone, as docs/channels.md shows');
is($node->safe_psql('postgres', $statements[1]), 'submitted|255|Accepted', "the documented query shows it");
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM smsdispatch.modem WHERE name = 'dummy0'}),
	'the sidecar keeps its health row');
like($node->safe_psql('postgres', $statements[2]), qr/^dummy0\|\d*\|\d{4}-/, "the documented query shows the modem");
like(slurp_file("$dir/phone-sidecar.log"), qr/./, 'the sidecar logs where docs/channels.md says');

$h->signal('TERM');
$h->finish;
is(($h->full_results)[0], 0, 'the sidecar stops on SIGTERM with status 0');

$node->stop;
done_testing();

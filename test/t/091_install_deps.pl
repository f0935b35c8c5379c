# A database server's footprint: install-deps.sh --runtime selects only what
# building and running smsdispatch need, the full selection (make deps) has
# the test tools too, and --print lists them without root, without apt lists
# and without calling apt or dpkg at all. The Debian package's version is the
# release's, smsdispatch.control's default_version.
use strict;
use warnings;
use File::Basename;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = dirname(dirname(dirname(__FILE__)));
$top = '.' if $top eq '';
my $script = "$top/install-deps.sh";

# apt-get, apt-cache, dpkg and dpkg-query that only record their call:
# whatever --print runs of them shows in the record
my $stubs = PostgreSQL::Test::Utils::tempdir();
my $record = "$stubs/calls";
for my $tool ('apt-get', 'apt-cache', 'dpkg', 'dpkg-query')
{
	open(my $fh, '>', "$stubs/$tool") or die "$stubs/$tool: $!";
	print $fh "#!/bin/sh\necho \"$tool \$*\" >>'$record'\nexit 1\n";
	close($fh);
	chmod(0755, "$stubs/$tool");
}

# runs install-deps.sh with the stubs first in PATH: (exit status, stdout,
# stderr)
sub install_deps
{
	my ($env, @args) = @_;
	local %ENV = (%ENV, PATH => "$stubs:$ENV{PATH}", %$env);
	delete $ENV{PG_MAJOR} unless exists $env->{PG_MAJOR};
	my ($out, $err);
	IPC::Run::run([ 'sh', $script, @args ], '<', \undef, '>', \$out, '2>', \$err);
	return ($? >> 8, $out, $err);
}

my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
my ($major) = `$pg_config --version` =~ /PostgreSQL (\d+)/
  or die "no PostgreSQL major from $pg_config --version";

my ($rc, $out, $err) = install_deps({}, '--help');
is($rc, 0, '--help exits 0');
like($out, qr/--runtime.*--print/s, '--help tells --runtime and --print');

($rc, $out, $err) = install_deps({}, '--no-such-option');
is($rc, 2, 'an unknown option exits 2');
like($err, qr/unknown option "--no-such-option"/, 'and names it');

($rc, $out, $err) = install_deps({ PG_MAJOR => $major }, '--runtime', '--print');
is($rc, 0, '--runtime --print exits 0 without root');
is($err, '', 'with nothing on stderr');
my @runtime = split /\n/, $out;
is(scalar(grep { !/^[a-z0-9][a-z0-9.+-]+$/ } @runtime), 0,
	'one package name a line') or diag($out);
for my $needed ('build-essential', "postgresql-$major", "postgresql-server-dev-$major",
	'libcurl4-openssl-dev', 'libxml2-dev', 'libgammu-dev', 'libpq-dev')
{
	ok((grep { $_ eq $needed } @runtime), "the runtime selection has $needed");
}
for my $tool (qr/chromium/, qr/nginx/, qr/valgrind/, qr/clang/,
	qr/prometheus/, qr/^fonts-/, qr/^python3/, qr/^libipc-run-perl$/, qr/-cron$/)
{
	is(join(' ', grep { $_ =~ $tool } @runtime), '',
		"the runtime selection has nothing matching $tool");
}

($rc, $out, $err) = install_deps({ PG_MAJOR => $major }, '--print', '--runtime');
is(join(' ', split /\n/, $out), join(' ', @runtime), 'the options in either order');

($rc, $out, $err) = install_deps({ PG_MAJOR => $major }, '--print');
is($rc, 0, '--print exits 0 without root');
my @all = split /\n/, $out;
is(join(' ', grep { my $p = $_; !grep { $_ eq $p } @all } @runtime), '',
	'the full selection has every runtime package');
for my $tool ('valgrind', 'clang', 'libclang-rt-dev', 'libipc-run-perl', 'python3',
	'nginx-light', 'chromium', 'prometheus-postgres-exporter', "postgresql-$major-cron")
{
	ok((grep { $_ eq $tool } @all), "the full selection has $tool");
}
# make demo (whose deps is the full selection) runs Kannel: bearerbox and
# smsbox, and fakesmsc of kannel-extras; a database server needs neither
for my $kannel ('kannel', 'kannel-extras')
{
	ok((grep { $_ eq $kannel } @all), "the full selection, make demo's, has $kannel");
	ok(!(grep { $_ eq $kannel } @runtime), "the runtime selection has no $kannel");
}

# without PG_MAJOR and without apt lists (apt-cache answers nothing), the
# major is the newest of /usr/lib/postgresql
SKIP:
{
	my ($newest) = sort { $b <=> $a } grep { /^\d+$/ }
	  map { basename($_) } glob('/usr/lib/postgresql/*');
	skip 'no /usr/lib/postgresql/NN here', 2 unless defined $newest;
	($rc, $out, $err) = install_deps({}, '--runtime', '--print');
	is($rc, 0, '--print without PG_MAJOR nor apt lists exits 0');
	like($out, qr/^postgresql-server-dev-$newest$/m,
		"its major is the newest installed ($newest)");
}

is(join('', grep { !/^apt-cache policy postgresql$/ } split /^/, -e $record ? slurp_file($record) : ''), '',
	'--print ran no apt-get, dpkg or dpkg-query (at most apt-cache, for the major)');

# the package's version is the release's
my ($default_version) = slurp_file("$top/smsdispatch.control") =~ /^default_version = '([^']+)'/m;
my ($package_version) = slurp_file("$top/debian/changelog") =~ /\Asmsdispatch \(([^)]+)\)/;
like($package_version, qr/^\Q$default_version\E-\d+$/,
	"debian/changelog's version ($package_version) is default_version ($default_version) with a Debian revision");

done_testing();

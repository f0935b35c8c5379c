# The IP2SMS password comes from smsdispatch.ip2sms_password_file and never
# shows: not to a pg_monitor member (pg_read_all_settings), not in the server
# log at debug5 with every statement logged, not after the file changes and
# the server reloads. A file that the group or others may read is refused,
# naming the file and its mode, and nothing is sent until it is fixed.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;

my $password = 'Pw-7f3c9e1a-secret';
my $rotated = 'Pw-rotated-4b2d-secret';
my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir(),
	password => $password);
my $file = $mock->password_file;
my $node = $mock->node('password',
	"log_min_messages = debug5\nlog_statement = 'all'\nlog_connections = on\n"
	  . "smsdispatch.ip2sms_poll_interval = '1s'\n");

# Whether the mock saw a send to $phone, and whether it carried the password.
sub auth_of
{
	my ($phone) = @_;
	my @seen = grep { ($_->{to} // '') eq $phone } $mock->log_entries;
	return @seen ? ($seen[-1]{auth} ? 'right' : 'wrong') : 'none';
}

sub wait_auth
{
	my ($phone) = @_;
	for (1 .. 100)
	{
		my $auth = auth_of($phone);
		return $auth if $auth ne 'none';
		select(undef, undef, undef, 0.1);
	}
	return 'none';
}

$node->safe_psql('postgres', q{
	CREATE ROLE monitor LOGIN;
	GRANT pg_monitor TO monitor;
	SELECT sms_send('+380504000001', 'secret test');});
is(wait_auth('380504000001'), 'right', 'an SMS went out with the password from the file');

# what the exporter role can see
my ($rc, $out, $err) = $node->psql('postgres', 'SHOW smsdispatch.ip2sms_password',
	extra_params => [ '-U', 'monitor' ]);
like($err, qr/unrecognized configuration parameter/, 'there is no password setting to read');
($rc, $out, $err) = $node->psql('postgres',
	"SELECT name, setting, reset_val, boot_val FROM pg_settings WHERE name LIKE 'smsdispatch.%'",
	extra_params => [ '-U', 'monitor' ]);
like($out, qr/smsdispatch\.ip2sms_login/, 'a pg_monitor member reads the settings');
unlike($out, qr/\Q$password\E/, 'but no password among them');
($rc, $out, $err) = $node->psql('postgres',
	"SELECT pg_read_file(current_setting('smsdispatch.ip2sms_password_file'))",
	extra_params => [ '-U', 'monitor' ]);
isnt($rc, 0, 'nor can it read the password file');
unlike($out . $err, qr/\Q$password\E/, 'whose contents it never sees');
($rc, $out, $err) = $node->psql('postgres', 'SELECT query FROM pg_stat_activity');
unlike($out, qr/\Q$password\E/, 'pg_stat_activity does not show it');

# a new password in the file is used after a reload, and logged nowhere
$mock->password_file($rotated);
$node->reload;
$node->safe_psql('postgres', "SELECT sms_send('+380504000002', 'after rotation')");
is(wait_auth('380504000002'), 'wrong', 'the changed file was read: the mock refuses the new password');
$mock->password_file($password);
$node->reload;
$node->safe_psql('postgres', "SELECT sms_send('+380504000003', 'rotated back')");
is(wait_auth('380504000003'), 'right', 'and the password written back is used again');

# a file others may read is refused, by name and mode (the worker looks at
# the file once a second, and at once after a reload)
my $offset = -s $node->logfile;
chmod 0644, $file;
$node->reload;
($rc, $out, $err) = $node->psql('postgres',
	"ALTER SYSTEM SET smsdispatch.ip2sms_password_file = '$file'");
isnt($rc, 0, 'ALTER SYSTEM refuses a password file readable by others');
like($err, qr/cannot use password file "\Q$file\E": its mode 0644 lets the group or others at it/,
	'naming the file and its mode');
like($err, qr/HINT:.*chmod 0600/, 'with a hint how to fix it');
$node->safe_psql('postgres', "SELECT sms_send('+380504000004', 'while refused')");
ok($node->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'smsdispatch worker'}),
	'the worker runs');
sleep 2;
is(auth_of('380504000004'), 'none', 'nothing is sent with a refused password file');
is($node->safe_psql('postgres',
	"SELECT send_state FROM verification.sms_log WHERE phone_number = '+380504000004'"),
	'queued', 'the SMS stays queued');
like(slurp_file($node->logfile, $offset),
	qr/WARNING:.*IP2SMS messages stay queued: cannot use password file "\Q$file\E": its mode 0644/,
	'the worker says why, naming the file and its mode');
chmod 0600, $file;
is(wait_auth('380504000004'), 'right', 'once the mode is fixed the SMS leaves');

# an empty file
open my $fh, '>', $file or die;
$offset = -s $node->logfile;
close $fh;
$node->reload;
$node->safe_psql('postgres', "SELECT sms_send('+380504000005', 'empty file')");
sleep 2;
is(auth_of('380504000005'), 'none', 'an empty password file sends nothing');
like(slurp_file($node->logfile, $offset), qr/cannot use password file "\Q$file\E": its first line is empty/,
	'and says so');
$mock->password_file($password);
is(wait_auth('380504000005'), 'right', 'until it holds the password again');

$node->stop;
my $log = slurp_file($node->logfile);
like($log, qr/DEBUG/, 'the server log was written at debug level');
unlike($log, qr/\Q$password\E/, 'the password is nowhere in the server log');
unlike($log, qr/\Q$rotated\E/, 'nor the rotated one');

$mock->stop;
done_testing();

# The IP2SMS password never appears in the server log (at debug5, with every
# statement logged, including after a 401), nor in pg_settings, SHOW,
# current_setting() or pg_stat_activity for a non-superuser.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;

my $password = 'Pw-7f3c9e1a-secret';
my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir(),
	password => $password);
my $node = $mock->node('password',
	"log_min_messages = debug5\nlog_statement = 'all'\nlog_connections = on\n"
	  . "smsdispatch.ip2sms_poll_interval = '1s'\n");

$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	GRANT smsdispatch_admin, smsdispatch_reader TO app;
	SELECT sms_send('+380504000001', 'secret test');});
ok($node->poll_query_until('postgres',
	"SELECT gateway_status = 'Delivered' FROM verification.sms_log WHERE phone_number = '+380504000001'"),
	'an SMS went out with the password');

# a 401 makes the worker log about credentials
$mock->control(mode => '401', count => 1, kind => 'send');
$node->safe_psql('postgres', "SELECT sms_send('+380504000011', 'after 401')");
ok($node->poll_query_until('postgres',
	"SELECT send_state = 'failed' FROM verification.sms_log WHERE phone_number = '+380504000011'"),
	'a 401 failed the SMS');

my ($rc, $out, $err) = $node->psql('postgres', 'SHOW smsdispatch.ip2sms_password',
	extra_params => [ '-U', 'app' ]);
isnt($rc, 0, 'SHOW refuses the password to a non-superuser');
like($err, qr/permission denied|must be superuser|pg_read_all_settings/, 'with a permission error');
unlike($out . $err, qr/\Q$password\E/, 'and does not print it');

($rc, $out, $err) = $node->psql('postgres',
	"SELECT current_setting('smsdispatch.ip2sms_password')", extra_params => [ '-U', 'app' ]);
unlike($out . $err, qr/\Q$password\E/, 'current_setting() does not show it');

($rc, $out, $err) = $node->psql('postgres',
	"SELECT name, setting, reset_val, boot_val FROM pg_settings WHERE name LIKE 'smsdispatch.%'",
	extra_params => [ '-U', 'app' ]);
unlike($out, qr/\Q$password\E/, 'pg_settings does not show it');
like($out, qr/smsdispatch\.ip2sms_login/, 'pg_settings does show the other settings');

($rc, $out, $err) = $node->psql('postgres',
	'SELECT query, backend_type FROM pg_stat_activity', extra_params => [ '-U', 'app' ]);
unlike($out, qr/\Q$password\E/, 'pg_stat_activity does not show it');
($rc, $out, $err) = $node->psql('postgres', 'SELECT query FROM pg_stat_activity');
unlike($out, qr/\Q$password\E/, 'not even to a superuser');

$node->stop;
my $log = slurp_file($node->logfile);
like($log, qr/DEBUG/, 'the server log was written at debug level');
unlike($log, qr/\Q$password\E/, 'the password is nowhere in the server log');

$mock->stop;
done_testing();

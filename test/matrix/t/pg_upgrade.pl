# pg_upgrade of a cluster with smsdispatch from an older major (15, in
# SMSDISPATCH_OLD_INSTALL) to this one: an alarm waiting for its first level
# to time out, an alarm and SMS still queued. After the upgrade every row is
# there as it was, the worker sends the queued SMS once, the open alarm
# escalates, and nothing already sent goes out again. Both clusters preload
# the library, as pg_upgrade's documentation asks; the worker stays away
# while pg_upgrade runs either server.
#
# Runs in the version matrix (test/matrix/pg-upgrade.sh), where both majors
# are installed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsTables;
use SmsWorkerNode;

my $old_install = $ENV{SMSDISPATCH_OLD_INSTALL}
  or BAIL_OUT('set SMSDISPATCH_OLD_INSTALL to the older major\'s installation');

my $old = worker_node('old', install_path => $old_install);
my $new = worker_node('new', init_only => 1,
	conf => "smsdispatch.loopback_channel = off\n");
cmp_ok($old->safe_psql('postgres', 'SHOW server_version_num'), '<',
	$new->pg_version->major * 10000, 'the old cluster runs an older major');

# an alarm whose first level went out and waits for its 20 s to pass
make_list($old, 'oncall', 0,
	[ '+380501000001', 1, '20 s' ], [ '+380501000002', 2, '1 hour' ]);
make_list($old, 'dba', 0, [ '+380502000001', 1, '1 hour' ]);
my $waiting = $old->safe_psql('postgres', "SELECT sms_enqueue('Disk full on db1', 'oncall')");
ok( wait_until(
		$old, "SELECT send_state FROM verification.sms_log WHERE phone_number = '+380501000001'",
		'submitted', 30),
	'old: the first level of an alarm is sent');

# then, without the loopback channel, an alarm and five SMS stay queued
$old->append_conf('postgresql.conf', "smsdispatch.loopback_channel = off\n");
$old->restart;
my $queued_alarm = $old->safe_psql('postgres', "SELECT sms_enqueue('Replica lag', 'dba')");
$old->safe_psql('postgres',
	"SELECT sms_send('+38050300000' || i, 'Your code: 100' || i, 'verification') FROM generate_series(1, 5) i");
is( $old->safe_psql('postgres',
		"SELECT count(*) FROM verification.sms_log WHERE send_state = 'queued'"),
	'6', 'old: six SMS queued');

my $rows = "SELECT string_agg(concat_ws(' ', id, phone_number, body, send_state, attempts, gateway_id),
		E'\\n' ORDER BY id) FROM verification.sms_log";
my $log_before = $old->safe_psql('postgres', $rows);
my $digests = table_digests($old, 'postgres');
$old->stop;

my $dir = "${PostgreSQL::Test::Utils::tmp_check}/pg_upgrade";
mkdir $dir;
chdir $dir;
$new->command_ok(
	[
		'pg_upgrade', '--no-sync', '--retain',
		'-b', $old->config_data('--bindir'),
		'-B', $new->config_data('--bindir'),
		'-d', $old->data_dir, '-D', $new->data_dir,
		'-p', $old->port, '-P', $new->port,
		'-s', $new->host,
	],
	'pg_upgrade');
my @server_logs = glob($new->data_dir . '/pg_upgrade_output.d/*/log/pg_upgrade_server.log');
ok(@server_logs, 'pg_upgrade kept the log of the servers it ran');
my $server_log = join('', map { slurp_file($_) } @server_logs);
unlike($server_log, qr/smsdispatch worker started/,
	'no worker ran while pg_upgrade ran a server');

# first without the loopback channel: the data as the old cluster left it
$new->start;
is($new->safe_psql('postgres', $rows), $log_before, 'new: every SMS of the log as it was');
my $after = table_digests($new, 'postgres');
foreach my $t (sort keys %extension_tables)
{
	is($after->{$t}, $digests->{$t}, "new: $t row for row");
}

# then the worker carries on
$new->append_conf('postgresql.conf', "smsdispatch.loopback_channel = on\n");
$new->reload;
ok( wait_until(
		$new, "SELECT count(*) FROM verification.sms_log WHERE send_state = 'queued'",
		'0', 30),
	'new: the queued SMS are sent');
ok($new->log_contains('smsdispatch worker started'),
	'new: the worker logs its start (what the pg_upgrade logs do not have)');
ok( wait_until(
		$new, "SELECT level FROM smsdispatch.message WHERE number = '$waiting'",
		'2', 60),
	'new: the open alarm escalates to its second level');
ok( wait_until(
		$new, "SELECT send_state FROM verification.sms_log WHERE phone_number = '+380501000002'",
		'submitted', 30),
	'new: the second level is sent');
is( $new->safe_psql('postgres',
		"SELECT count(*) FROM verification.sms_log WHERE attempts <> 1 OR send_state <> 'submitted'"),
	'0', 'new: every SMS submitted in one attempt');
is(repeated_sends($new), '0', 'new: no recipient of an alarm got it twice');
is( $new->safe_psql('postgres',
		"SELECT count(*) FROM verification.sms_log WHERE phone_number ~ '^\\+38050300000'"),
	'5', 'new: each verification code once');
my ($first_gateway_id) = $log_before =~ /^\d+ \+380501000001 .* submitted 1 (\S+)$/m;
is( $new->safe_psql('postgres',
		"SELECT gateway_id FROM verification.sms_log WHERE phone_number = '+380501000001'"),
	$first_gateway_id, 'new: the SMS sent before the upgrade was not sent again');
is($new->safe_psql('postgres', 'SELECT count(*) FROM verification.sms_log'),
	scalar(split /\n/, $log_before) + 1, 'new: the log grew by the second level only');

$new->stop;
done_testing();

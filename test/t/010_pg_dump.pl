# pg_dump keeps everything smsdispatch holds: a database with recipient
# lists, alarms (open, acked, cancelled), received SMS and log rows is dumped
# and restored into a new database, where every row is there, the sequences
# go on where they were (new rows do not collide) and the verification
# trigger still fires. Run once with the application's verification schema
# existing before CREATE EXTENSION (the eHealth layout) and once without.
# The library is not preloaded here: the SQL API works without the worker.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsTables;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init(extra => ['--encoding=UTF8', '--locale=C']);
$node->start;

# Fills a database with one of everything.
sub populate
{
	my ($db, $app_schema) = @_;
	my $sql = '';
	$sql .= PostgreSQL::Test::Utils::slurp_file('test/ehealth-verifications.sql')
	  if $app_schema;
	$sql .= q{
		CREATE EXTENSION smsdispatch;
		SELECT sms_list_create('oncall', 'Database on-call');
		SELECT sms_list_add('oncall', '+380501111111', 1, '10 min', 'Alice');
		SELECT sms_list_add('oncall', '+380502222222', 2, '5 min', 'Bob');
		SELECT sms_list_create('dba');
		SELECT sms_list_add('dba', '+380503333333', 1);
		SELECT sms_rotation_create('oncall', 1, '1 week', '09:00', 'Europe/Kyiv', '2026-03-02');
		SELECT sms_override_add('oncall', 2, '+380508888888', '2030-01-01', '2030-01-03', 'Olga');
		SELECT sms_list_pause('oncall', '+380502222222', '2030-02-01', '2030-01-20');
		SELECT sms_enqueue('Disk full on db1', 'oncall');
		SELECT sms_enqueue('Replica lag', 'oncall', 'modem');
		SELECT sms_enqueue('Backup failed', 'dba');
		SELECT sms_receive('+380501111111', 'ok 0001');
		SELECT sms_receive('+380509999999', 'what is 0002?');
		SELECT sms_cancel('0003');
		SELECT sms_send('+380504444444', 'Your code: 4812', 'verification');
		SELECT sms_send('+380504444444', 'Prescription ready', 'medication_request');
		UPDATE verification.sms_log SET send_state = 'submitted', gateway_id = '1234567890123456789012345',
			gateway_status = 'Delivered', status_changed_at = now(), attempts = 1
		 WHERE id = 1;
	};
	$sql .= q{
		INSERT INTO verification.verifications (phone_number, code)
		VALUES ('+380505555555', '111111'), ('+380505555556', '222222');
	} if $app_schema;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, $sql);
}

foreach my $app_schema (1, 0)
{
	my $src = $app_schema ? 'ehealth' : 'plain';
	my $dst = "${src}_restored";
	my $dump = $node->basedir . "/$src.dump";

	populate($src, $app_schema);
	my $before = table_digests($node, $src);

	$node->command_ok(
		[ 'pg_dump', '-Fc', '-d', $node->connstr($src), '-f', $dump ],
		"$src: pg_dump");
	$node->safe_psql('postgres', "CREATE DATABASE $dst");
	$node->command_ok(
		[ 'pg_restore', '--exit-on-error', '-d', $node->connstr($dst), $dump ],
		"$src: pg_restore without errors");

	my $after = table_digests($node, $dst);
	foreach my $t (sort keys %extension_tables)
	{
		isnt($before->{$t}, '0 -', "$src: $t has rows");
		is($after->{$t}, $before->{$t}, "$src: $t restored row for row");
	}

	# the sequences and the number cursor go on where they were: each new
	# row takes the id after the restored ones (a sequence restored at 1
	# would fail these inserts on the primary key)
	my %max_id = map {
		$_ => $node->safe_psql($dst, "SELECT max(id) FROM $_")
	} grep { $extension_tables{$_} eq 'id' } keys %extension_tables;
	is($node->safe_psql($dst, "SELECT sms_send('+380506666666', 'after restore')"),
		$max_id{'verification.sms_log'} + 1, "$src: sms_log ids go on after the restored ones");
	is($node->safe_psql($dst, "SELECT sms_enqueue('after restore', 'oncall')"),
		'0004', "$src: the next alarm number follows the restored cursor");
	is($node->safe_psql($dst, "SELECT sms_receive('+380501111111', 'ok 0004')"),
		'ack', "$src: the new alarm is acknowledged");
	$node->safe_psql($dst, "SELECT sms_list_create('new'); SELECT sms_list_add('new', '+380507777777')");
	foreach my $t (sort keys %max_id)
	{
		next if $t eq 'verification.sms_log';
		cmp_ok($node->safe_psql($dst, "SELECT min(id) FROM $t WHERE id > $max_id{$t}"),
			'==', $max_id{$t} + 1, "$src: new $t rows follow the restored ones");
	}

	# rotations, overrides and pauses (not in SmsTables: release 1.0 has
	# none) come back row for row, and new ones follow them
	foreach my $t ('smsdispatch.rotation', 'smsdispatch.duty_override', 'smsdispatch.member_pause')
	{
		my $rows = "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY t.id)) FROM $t t";
		my $was = $node->safe_psql($src, $rows);
		like($was, qr/^1 /, "$src: $t has a row");
		is($node->safe_psql($dst, $rows), $was, "$src: $t restored row for row");
	}
	is($node->safe_psql($dst,
		"SELECT sms_override_add('new', 1, '+380508888889', '2030-01-01', '2030-01-02')"),
		'2', "$src: new overrides follow the restored ones");
	$node->safe_psql($dst, "SELECT sms_rotation_create('new', 1, '1 day', '09:00', 'UTC', '2030-01-01');
		SELECT sms_list_pause('new', '+380507777777', '2030-01-10', '2030-01-05')");
	is($node->safe_psql($dst, "SELECT max(id) FROM smsdispatch.rotation"), '2',
		"$src: new rotations follow the restored ones");
	is($node->safe_psql($dst, "SELECT max(id) FROM smsdispatch.member_pause"), '2',
		"$src: new pauses follow the restored ones");
	is($node->safe_psql($dst, "SELECT string_agg(name, ',') FROM sms_oncall('oncall', '2030-01-02')"),
		'Alice,Olga', "$src: the restored rotation and override say who is on duty");

	next unless $app_schema;
	# the application's table and its trigger came back with it
	is($node->safe_psql($dst, 'SELECT count(*) FROM verification.verifications'),
		'2', 'ehealth: verifications restored');
	$node->safe_psql($dst,
		"INSERT INTO verification.verifications (phone_number, code) VALUES ('+380508888888', '333333')");
	is( $node->safe_psql($dst,
			"SELECT body FROM verification.sms_log WHERE phone_number = '+380508888888'"),
		'Your verification code: 333333',
		'ehealth: the verification trigger fires after the restore');
}

$node->stop;
done_testing();

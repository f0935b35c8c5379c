# ALTER EXTENSION smsdispatch UPDATE moves a database made by release 1.0
# (its script exactly as released, src/sql/released/) to the current version
# with its data intact, through every upgrade script of the chain, the
# worker carries on with what 1.0 left open, and the upgraded schema equals
# a fresh install of the current version, object for object; so does a
# database made by release 1.1's own script and updated. An upgrade script
# that leaves out a change the fresh install has fails here.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsTables;
use SmsWorkerNode;

my $node = worker_node('upgrade', no_extension => 1);
my $current = $node->safe_psql('postgres',
	"SELECT default_version FROM pg_available_extensions WHERE name = 'smsdispatch'");
isnt($current, '1.0', "the control file's default version ($current) is past 1.0");

$node->safe_psql('postgres', "CREATE EXTENSION smsdispatch VERSION '1.0'");
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'smsdispatch'"),
	'1.0', 'release 1.0 installed');

# Release 1.0 at work: the worker (loopback channel) sends an alarm and
# exhausts it.
make_list($node, 'short', 0, [ '+380501000001', 1, '1 s' ]);
my $exhausted = $node->safe_psql('postgres', "SELECT sms_enqueue('Short alarm', 'short')");
ok( wait_until(
		$node, "SELECT state FROM smsdispatch.message WHERE number = '$exhausted'",
		'exhausted', 30),
	'1.0: the worker exhausts an unanswered alarm');

# Then without the loopback channel nothing leaves: what 1.0 leaves behind
# stays as it is while the extension is updated. A restart makes sure the
# worker runs with the setting.
$node->append_conf('postgresql.conf', "smsdispatch.loopback_channel = off\n");
$node->restart;

make_list($node, 'oncall', 0,
	[ '+380502000001', 1, '2 s' ], [ '+380502000002', 2, '1 hour' ]);
make_list($node, 'dba', 1, [ '+380503000001', 1, '10 min' ]);
my $open = $node->safe_psql('postgres', "SELECT sms_enqueue('Disk full on db1', 'oncall')");
my $acked = $node->safe_psql('postgres', "SELECT sms_enqueue('Replica lag', 'dba')");
my $cancelled = $node->safe_psql('postgres', "SELECT sms_enqueue('Backup failed', 'dba', 'modem')");
is($node->safe_psql('postgres', "SELECT sms_receive('+380503000001', 'ok $acked')"),
	'ack', '1.0: an alarm is acknowledged');
$node->safe_psql('postgres', "SELECT sms_cancel('$cancelled')");
$node->safe_psql('postgres', "SELECT sms_receive('+380509999999', 'what is this?')");
my $code_sms = $node->safe_psql('postgres',
	"SELECT sms_send('+380504000001', 'Your code: 4812', 'verification')");
# the abuse guard writes the eleventh SMS to one number within an hour failed
$node->safe_psql('postgres',
	"SELECT sms_send('+380504000002', 'Reminder ' || i) FROM generate_series(1, 11) i");

is( $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT state, ',' ORDER BY state) FROM smsdispatch.message"),
	'acked,cancelled,exhausted,open', '1.0: alarms in every state');
is( $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT send_state, ',' ORDER BY send_state) FROM verification.sms_log"),
	'failed,queued,submitted', '1.0: log rows queued, submitted and failed');
is( $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT status, ',' ORDER BY status) FROM smsdispatch.message_recipient"),
	'ACK,ACK_TIME_OVER,NOT_SENT', '1.0: recipients acknowledged, timed out and not sent yet');
is($node->safe_psql('postgres', 'SELECT count(*) FROM smsdispatch.inbox'),
	'2', '1.0: inbox rows, matched and unmatched');

my $failed = $node->safe_psql('postgres',
	"SELECT string_agg(id::text, ',' ORDER BY id) FROM verification.sms_log WHERE send_state = 'failed'");
# the columns of 1.0: what the update adds is not part of 1.0's data
my $columns = table_columns($node, 'postgres');
# and its rows: what the updated worker adds at once (such as an `undeliverable`
# event for the open alarm, whose channel is not configured) is not
my $last_ids = table_last_ids($node, 'postgres');
my $before = table_digests($node, 'postgres', $columns, $last_ids);
foreach my $t (sort keys %extension_tables)
{
	isnt($before->{$t}, '0 -', "1.0: $t has rows");
}

$node->safe_psql('postgres', 'ALTER EXTENSION smsdispatch UPDATE');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'smsdispatch'"),
	$current, "ALTER EXTENSION UPDATE moves 1.0 to $current");

my $after = table_digests($node, 'postgres', $columns, $last_ids);
foreach my $t (sort keys %extension_tables)
{
	is($after->{$t}, $before->{$t}, "$t: every row as it was");
}

# The worker carries on: with the loopback channel back (a reload, the
# worker keeps running), the open alarm's first level goes out, times out
# after 2 s and the alarm escalates to level 2; the queued verification code
# goes out once; nothing is sent twice; the failed SMS stay failed.
$node->append_conf('postgresql.conf', "smsdispatch.loopback_channel = on\n");
$node->reload;
ok( wait_until(
		$node, "SELECT level FROM smsdispatch.message WHERE number = '$open'",
		'2', 30),
	'the open alarm of 1.0 escalates to level 2 after the update');
ok( wait_until(
		$node, "SELECT string_agg(l.send_state, ',' ORDER BY l.id)
		  FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
		 WHERE m.number = '$open'",
		'submitted,submitted', 30),
	'its level 1 and level 2 SMS are submitted');
ok(wait_until($node, "SELECT send_state FROM verification.sms_log WHERE id = $code_sms", 'submitted', 30),
	'the queued verification code of 1.0 is submitted');
is($node->safe_psql('postgres', "SELECT attempts FROM verification.sms_log WHERE id = $code_sms"),
	'1', 'in one attempt');
is(repeated_sends($node), '0', 'no recipient of an alarm got it twice');
is( $node->safe_psql('postgres',
		"SELECT string_agg(id::text, ',' ORDER BY id) FROM verification.sms_log
		  WHERE send_state = 'failed' AND attempts = 0"),
	$failed, 'the SMS 1.0 wrote failed (abuse guard, alarms closed first) stay failed, unsent');
is($node->safe_psql('postgres', "SELECT sms_enqueue('After the update', 'dba')"),
	sprintf('%04d', $cancelled + 1), 'new alarms take the next number');

# The schema: the upgraded database against a fresh install in the same
# cluster, compared as the extension's members, its configuration tables
# (what pg_dump dumps the data of) and pg_dump --schema-only of every
# object. pg_dump leaves out the members of an extension, so each database
# first drops all of them from the extension (ALTER EXTENSION ... DROP
# keeps the objects); the dump then has every object with its privileges.
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION smsdispatch');
$node->safe_psql('postgres', 'CREATE DATABASE from_1_1');
$node->safe_psql('from_1_1', "CREATE EXTENSION smsdispatch VERSION '1.1'");
$node->safe_psql('from_1_1', 'ALTER EXTENSION smsdispatch UPDATE');
is($node->safe_psql('from_1_1', "SELECT extversion FROM pg_extension WHERE extname = 'smsdispatch'"),
	$current, "release 1.1's script, updated, is at $current");

my $members = "SELECT string_agg(pg_describe_object(classid, objid, objsubid), E'\\n'
		ORDER BY pg_describe_object(classid, objid, objsubid))
	  FROM pg_depend
	 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
	   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'smsdispatch')";
my $config = "SELECT array(SELECT c::regclass::text FROM unnest(extconfig) c ORDER BY 1)::text
		|| ' ' || extcondition::text
	  FROM pg_extension WHERE extname = 'smsdispatch'";
my $detach = q{DO $$
	DECLARE
		o record;
	BEGIN
		FOR o IN SELECT i.type, i.identity
				   FROM pg_depend d, pg_identify_object(d.classid, d.objid, d.objsubid) i
				  WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
					AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'smsdispatch')
					-- an array type goes with its element type, the row type of
					-- a table or view with it (18 lists them as members too)
					AND NOT (d.classid = 'pg_type'::regclass
							 AND EXISTS (SELECT 1 FROM pg_type t
										   LEFT JOIN pg_class c ON c.oid = t.typrelid
										  WHERE t.oid = d.objid
											AND (EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)
												 OR c.relkind <> 'c')))
		LOOP
			EXECUTE format('ALTER EXTENSION smsdispatch DROP %s %s', o.type, o.identity);
		END LOOP;
	END;
	$$};

my %schema;
foreach my $db ('postgres', 'from_1_1', 'fresh')
{
	$schema{$db}{members} = $node->safe_psql($db, $members);
	$schema{$db}{config} = $node->safe_psql($db, $config);
	$node->safe_psql($db, $detach);
	is($node->safe_psql($db, $members), '', "$db: every member dropped from the extension for the dump");
	my $file = $node->basedir . "/$db.schema.sql";
	$node->command_ok([ 'pg_dump', '--schema-only', '-d', $node->connstr($db), '-f', $file ],
		"$db: pg_dump --schema-only");
	# the only normalisation: the random key of \restrict (pg_dump 17.6,
	# 16.10, 15.14 and later) differs between any two dumps
	my $dump = slurp_file($file);
	$dump =~ s/^\\(un)?restrict \S+$//mg;
	$schema{$db}{dump} = $dump;
	$schema{$db}{file} = "$file.normalised";
	append_to_file($schema{$db}{file}, $dump);
}
isnt($schema{fresh}{members}, '', 'the fresh install has members');
like($schema{fresh}{dump}, qr/CREATE TABLE verification\.sms_log/, 'the dump has the extension\'s tables');
is($schema{postgres}{members}, $schema{fresh}{members},
	'the upgraded extension has the members of a fresh install');
is($schema{postgres}{config}, $schema{fresh}{config},
	'the upgraded extension dumps the data of the same configuration tables');
is($schema{from_1_1}{members}, $schema{fresh}{members},
	'1.1 updated has the members of a fresh install');
is($schema{from_1_1}{config}, $schema{fresh}{config},
	'1.1 updated dumps the data of the same configuration tables');
foreach my $db ('postgres', 'from_1_1')
{
	my $from = $db eq 'postgres' ? '1.0' : '1.1';
	# (ok, not is: the message shows the difference, not both dumps whole)
	next if ok($schema{$db}{dump} eq $schema{fresh}{dump},
		"pg_dump --schema-only of $from updated equals that of a fresh install");
	my ($out, $err) = run_command([ 'diff', '-u', $schema{fresh}{file}, $schema{$db}{file} ]);
	diag("fresh install -> $from updated:\n$out");
}

$node->stop;
done_testing();

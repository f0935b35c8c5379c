# An application's verification.verifications whose columns are not named
# phone_number and code: CREATE EXTENSION succeeds and says, in a WARNING
# (CREATE EXTENSION shows no NOTICE of its script), that the trigger is not
# attached and which call attaches it; that call, with the table's own
# columns, makes each INSERT queue exactly one verification SMS.
# A table with the expected names still gets the trigger by itself.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsWorkerNode;

my $node = worker_node('verification_columns', no_extension => 1, preload => '');

$node->safe_psql('postgres', q{
	CREATE SCHEMA verification;
	CREATE TABLE verification.verifications (
		id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		msisdn text NOT NULL,
		otp integer NOT NULL,
		attempts_count int NOT NULL DEFAULT 0);
});

my ($rc, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION smsdispatch',
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
is($rc, 0, 'CREATE EXTENSION succeeds over verifications(msisdn, otp)') or diag($err);
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_extension WHERE extname = 'smsdispatch'"),
	'1', 'the extension is installed');
like($err,
	qr/WARNING:  01000: table verification\.verifications has no column "phone_number" and "code", so its verification trigger is not attached/,
	'a WARNING names the table and the columns it looked for');
like($err, qr/DETAIL:  .*"phone_number" \(the phone\) and "code" \(the code\)/,
	'its detail says which names are attached by themselves');
my ($call) = $err =~ /HINT:  .*?(SELECT smsdispatch\.watch_verifications\([^)]*\);)/;
is($call, q{SELECT smsdispatch.watch_verifications('verification.verifications', 'msisdn', 'otp');},
	"its hint gives the exact call, with the table's own columns");
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_trigger WHERE tgrelid = 'verification.verifications'::regclass"),
	'0', 'no trigger is attached');

# the call of the hint, then one INSERT and an UPDATE
$node->safe_psql('postgres', $call);
$node->safe_psql('postgres', q{
	INSERT INTO verification.verifications (msisdn, otp) VALUES ('+380501234567', 4812);
	UPDATE verification.verifications SET attempts_count = attempts_count + 1;
});
is($node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || string_agg(phone_number || ' ' || body || ' ' || verification_id, ',')
		  FROM verification.sms_log WHERE type = 'verification'}),
	'1 +380501234567 Your verification code: 4812 1',
	'the INSERT queues exactly one verification SMS, to msisdn with otp');

# a table with the expected names still gets its trigger at CREATE EXTENSION,
# with no WARNING
$node->safe_psql('postgres', q{
	DROP TABLE verification.verifications;
	ALTER EXTENSION smsdispatch DROP SCHEMA verification;
	DROP EXTENSION smsdispatch;
	CREATE TABLE verification.verifications (phone_number text, code text);
});
($rc, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION smsdispatch');
is($rc, 0, 'CREATE EXTENSION over verifications(phone_number, code)');
unlike($err, qr/WARNING/, 'with no WARNING');
$node->safe_psql('postgres',
	"INSERT INTO verification.verifications VALUES ('+380501234568', '1234')");
is($node->safe_psql('postgres',
		"SELECT count(*) FROM verification.sms_log WHERE phone_number = '+380501234568'"),
	'1', 'the trigger was attached by itself: the INSERT queues one SMS');

# two phone-like columns: the hint does not guess between them
$node->safe_psql('postgres', q{
	DROP TABLE verification.verifications;
	ALTER EXTENSION smsdispatch DROP SCHEMA verification;
	DROP EXTENSION smsdispatch;
	CREATE TABLE verification.verifications (phone text, mobile text, otp text);
});
($rc, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION smsdispatch');
is($rc, 0, 'CREATE EXTENSION over verifications(phone, mobile, otp)');
like($err,
	qr/HINT:  .*SELECT smsdispatch\.watch_verifications\('verification\.verifications', 'PHONE_COLUMN', 'otp'\);/,
	'with two phone-like columns the hint leaves the phone column to the user');

done_testing();

# The worker, run_once() and purge run as superuser and resolve no name
# through a schema another role can write to. The database's owner plants
# shadows of what their SQL calls (make_interval(int), now(), lower(), the =
# and <> operators on the extension's domains, ...) in public and in a schema
# named after the worker's user, and puts both before pg_catalog in the
# database's search_path. Each shadow records its call and, if it runs as a
# superuser, makes the owner one. The worker then escalates alarms, sends and
# polls through the mock gateway and imports a spool file; a superuser runs
# run_once() and purge with the database's search_path, as pg_cron would: no
# shadow is called and the owner stays an ordinary role.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $spool = PostgreSQL::Test::Utils::tempdir();
my $node = PostgreSQL::Test::Cluster->new('shadow');
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'smsdispatch'\n"
	  . "smsdispatch.database = 'app'\n"
	  . "smsdispatch.naptime = '200ms'\n"
	  . "smsdispatch.ip2sms_poll_interval = '1s'\n"
	  . "smsdispatch.max_per_phone_per_hour = 100\n"
	  . "smsdispatch.spool_dir = '$spool'\n"
	  . $mock->conf);
$node->start;

my $super = $node->safe_psql('postgres', 'SELECT rolname FROM pg_roles WHERE oid = 10');
$node->safe_psql('postgres', q{
	CREATE ROLE app_owner LOGIN;
	CREATE DATABASE app OWNER app_owner;});
$node->safe_psql('app', q{
	CREATE EXTENSION smsdispatch;
	GRANT smsdispatch_admin TO app_owner;
	CREATE ROLE checker LOGIN IN ROLE smsdispatch_admin;
	ALTER ROLE checker SET search_path = pg_catalog, pg_temp;});

# The test's own look-ups, as a role of its own with a safe search_path.
sub check
{
	my ($sql) = @_;
	return $node->safe_psql('app', $sql, extra_params => [ '-U', 'checker' ]);
}

sub wait_for
{
	my ($sql) = @_;
	for (1 .. 300)
	{
		return 1 if check($sql) eq 't';
		select(undef, undef, undef, 0.1);
	}
	diag("timed out: $sql; the log: "
		  . check('SELECT string_agg(concat_ws(\' \', id, phone_number, send_state, gateway_status, last_error), E\'\\n\') FROM verification.sms_log'));
	return 0;
}

# What the owner plants: [schema-less signature, return type, body that
# computes the real answer]. Functions first, then operators on the
# extension's domains and on the types the worker compares.
my @functions = (
	[ 'make_interval(secs integer)', 'interval', 'pg_catalog.make_interval(secs => secs::float8)' ],
	[ 'make_interval(secs double precision)', 'interval', 'pg_catalog.make_interval(secs => secs)' ],
	[ 'now()', 'timestamptz', 'pg_catalog.now()' ],
	[ 'lower(t text)', 'text', 'pg_catalog.lower(t)' ],
	[ 'length(t text)', 'integer', 'pg_catalog.length(t)' ],
	[ 'right(t text, n integer)', 'text', 'pg_catalog.right(t, n)' ],
	[ 'regexp_replace(a text, b text, c text, d text)', 'text', 'pg_catalog.regexp_replace(a, b, c, d)' ],
	[ 'string_to_array(a text, b text)', 'text[]', 'pg_catalog.string_to_array(a, b)' ],
	[ 'octet_length(t text)', 'integer', 'pg_catalog.octet_length(t)' ],
	[ 'clock_timestamp()', 'timestamptz', 'pg_catalog.clock_timestamp()' ],
);
my @operators = (
	[ '=', 'smsdispatch.channel', 'text' ],
	[ '=', 'smsdispatch.channel', 'smsdispatch.channel' ],
	[ '=', 'smsdispatch.send_state', 'text' ],
	[ '=', 'smsdispatch.send_state', 'smsdispatch.send_state' ],
	[ '<>', 'smsdispatch.send_state', 'text' ],
	[ '=', 'smsdispatch.sms_type', 'text' ],
	[ '=', 'smsdispatch.gateway_status', 'text' ],
	[ '=', 'text', 'text' ],
	[ '<=', 'timestamptz', 'timestamptz' ],
	[ '<', 'timestamptz', 'timestamptz' ],
	[ '+', 'timestamptz', 'interval' ],
	[ '-', 'timestamptz', 'interval' ],
);

my $plant = q{
	CREATE TABLE public.shadow_calls (name text, by_user name, at timestamptz DEFAULT pg_catalog.clock_timestamp());
	GRANT ALL ON public.shadow_calls TO PUBLIC;
	CREATE FUNCTION public.shadow_hit(what text) RETURNS void LANGUAGE plpgsql AS $f$
	BEGIN
		INSERT INTO public.shadow_calls (name, by_user) VALUES (what, current_user);
		IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
			EXECUTE 'ALTER ROLE app_owner SUPERUSER';
		END IF;
	END $f$;
};
foreach my $schema ('public', $super)
{
	$plant .= "CREATE SCHEMA \"$schema\";\n" if $schema ne 'public';
	foreach my $f (@functions)
	{
		my ($sig, $ret, $real) = @$f;
		$plant .= qq{CREATE FUNCTION "$schema".$sig RETURNS $ret LANGUAGE plpgsql AS \$f\$
			BEGIN PERFORM public.shadow_hit('$schema.$sig'); RETURN $real; END \$f\$;\n};
	}
	my $n = 0;
	foreach my $o (@operators)
	{
		my ($op, $l, $r) = @$o;
		my $base = { '=' => 'pg_catalog.=', '<>' => 'pg_catalog.<>', '<=' => 'pg_catalog.<=',
			'<' => 'pg_catalog.<', '+' => 'pg_catalog.+', '-' => 'pg_catalog.-' }->{$op};
		my $ret = $op =~ /^[+-]$/ ? 'timestamptz' : 'boolean';
		my ($lc, $rc) = map { /^smsdispatch\./ ? '::text' : '' } ($l, $r);
		$n++;
		$plant .= qq{CREATE FUNCTION "$schema".shadow_op_$n(a $l, b $r) RETURNS $ret LANGUAGE plpgsql AS \$f\$
			BEGIN PERFORM public.shadow_hit('$schema.$op($l, $r)'); RETURN a$lc OPERATOR($base) b$rc; END \$f\$;
			CREATE OPERATOR "$schema".$op (LEFTARG = $l, RIGHTARG = $r, FUNCTION = "$schema".shadow_op_$n);\n};
	}
}
$plant .= qq{ALTER DATABASE app SET search_path = public, "$super", pg_catalog;\n};
$node->safe_psql('app', $plant, extra_params => [ '-U', 'app_owner' ]);

# the shadows work: an ordinary session of the database calls them
$node->safe_psql('app', q{SELECT make_interval(secs => 1), now(), lower('X')},
	extra_params => [ '-U', 'app_owner' ]);
cmp_ok(check('SELECT count(*) FROM public.shadow_calls'), '>=', 3,
	'a session with the database search_path calls the shadows');
is(check(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app_owner'}),
	'f', 'which, run by the owner, change nothing');
$node->safe_psql('app', 'TRUNCATE public.shadow_calls', extra_params => [ '-U', 'app_owner' ]);

# the worker picks up its database's settings at its next start
$node->restart;

# work for every duty: an alarm that escalates and runs out, an SMS sent and
# polled, a spool file, a verification row
$node->safe_psql('app', q{
	SELECT sms_list_create('oncall');
	SELECT sms_list_add('oncall', '+380501000001', 1, '1 s');
	SELECT sms_list_add('oncall', '+380501000002', 2, '1 s');
	SELECT sms_enqueue('Disk full on db1', 'oncall');
	SELECT sms_send('+380501000003', 'hello', 'text');});
open(my $fh, '>', "$spool/.alarm.tmp") or die;
print $fh '<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>From the spool</MSG></SMS>';
close $fh;
rename("$spool/.alarm.tmp", "$spool/alarm.xml") or die;

ok(wait_for(q{SELECT count(*) = 2 FROM smsdispatch.message WHERE state = 'exhausted'}),
	'the worker escalated both alarms to exhaustion');
ok(wait_for(q{SELECT gateway_status IN ('Delivered', 'Expired') FROM verification.sms_log WHERE phone_number = '+380501000003'}),
	'the worker sent an SMS and polled its delivery');
ok(-e "$spool/processed/alarm.xml", 'the worker imported the spool file');

# run_once and purge as a superuser with the database's search_path, as
# pg_cron runs them
is($node->safe_psql('app', 'SHOW search_path'), qq{public, $super, pg_catalog},
	'the superuser session has the owner\'s search_path');
$node->safe_psql('app', 'SELECT smsdispatch.run_once()');
$node->safe_psql('app', "SET smsdispatch.redact_after = '1s'; CALL smsdispatch.purge('0 s')");
is(check('SELECT count(*) FROM verification.sms_log WHERE message_id IS NULL AND confirms IS NULL'), '0',
	'purge did its work (confirmations stay with their alarms, in quarantine)');

is(check(q{SELECT coalesce(string_agg(DISTINCT name || ' by ' || by_user, ', '), 'none')
	FROM public.shadow_calls}), 'none', 'no shadow function or operator was called');
is(check(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app_owner'}),
	'f', 'the database owner is not superuser');

$node->stop;
$mock->stop;
done_testing();

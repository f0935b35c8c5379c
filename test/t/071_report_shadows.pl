# The reports resolve no name through a schema another role can write to.
# The database's owner (an ordinary role) plants shadows of what the report
# functions call (date_trunc, round, the aggregates max and sum, the
# operators on text, timestamptz, bigint and numeric) in public and in a
# schema named after the superuser, and puts both before pg_catalog in the
# database's search_path. Each shadow records its call and, if it runs as a
# superuser, makes the owner one. A superuser then reads every report view
# and function with the database's search_path, as an operator's psql or a
# pg_cron job would: no shadow is called and the owner stays an ordinary role.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('report_shadows');
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->start;

my $super = $node->safe_psql('postgres', 'SELECT rolname FROM pg_roles WHERE oid = 10');
$node->safe_psql('postgres', q{
	CREATE ROLE app_owner LOGIN;
	CREATE DATABASE app OWNER app_owner;});
$node->safe_psql('app', q{
	CREATE EXTENSION smsdispatch;
	CREATE ROLE checker LOGIN SUPERUSER;
	ALTER ROLE checker SET search_path = pg_catalog, pg_temp;});

# The test's own statements, as a role of its own with a safe search_path.
sub check
{
	my ($sql) = @_;
	return $node->safe_psql('app', $sql, extra_params => [ '-U', 'checker' ]);
}

# Something for every report to count: 2FA SMS of every outcome over two days,
# alarms acked, exhausted and open, and gateway counter snapshots with a
# reset among them.
check(q{
	INSERT INTO verification.sms_log (phone_number, type, body, channel, send_state,
		gateway_id, gateway_status, inserted_at, status_changed_at, updated_at)
	SELECT '+38050100' || lpad(i::text, 4, '0'), '2FA', 'report row', 'ip2sms', s.state,
		   i::text, s.status, now() - i * interval '1 hour',
		   now() - i * interval '1 hour' + interval '5 s', now() - i * interval '1 hour'
	  FROM generate_series(1, 48) AS i,
		   LATERAL (SELECT (ARRAY['submitted', 'submitted', 'submitted', 'failed', 'unknown'])[1 + i % 5] AS state,
						   (ARRAY['Delivered', 'Expired', 'Rejected', NULL, NULL])[1 + i % 5] AS status) AS s;
	SELECT public.sms_list_create('oncall');
	SELECT public.sms_list_add('oncall', '+380501000001', 1, '1 min');
	SELECT public.sms_list_add('oncall', '+380501000002', 2, '1 min');
	SELECT public.sms_enqueue('Disk full on db1', 'oncall');
	SELECT public.sms_enqueue('Disk full on db2', 'oncall');
	SELECT public.sms_enqueue('Disk full on db3', 'oncall');
	UPDATE smsdispatch.message_recipient SET status = 'NOT_YET_ACK', sent_at = now(),
		   deadline = now() + interval '1 min';
	SELECT public.sms_ack('0001', '+380501000001');
	UPDATE smsdispatch.message SET state = 'exhausted', closed_at = now() WHERE number = '0002';
	INSERT INTO smsdispatch.counter_snapshot (taken_at, server_started_at, name, value)
	SELECT now() - m * interval '10 min', now() - interval '1 day' + (m < 3)::int * interval '1 hour',
		   n.name, (30 - m) * n.k
	  FROM generate_series(0, 12) AS m,
		   (VALUES ('requests_send', 10), ('answers_Delivered', 9), ('errors_timeout', 1),
				   ('latency_us_sum', 200000), ('latency_count', 10), ('latency_le_50ms', 10)) AS n(name, k);});
is(check(q{SELECT (SELECT count(*) FROM smsdispatch.message WHERE state = 'acked') = 1
			  AND (SELECT count(*) FROM smsdispatch.message WHERE state = 'exhausted') = 1}),
	't', 'one alarm acked, one exhausted, one open');

# What the owner plants: [schema-less signature, return type, body that
# computes the real answer]; then aggregates and operators.
my @functions = (
	[ 'date_trunc(f text, t timestamptz)', 'timestamptz', 'pg_catalog.date_trunc(f, t)' ],
	[ 'round(v numeric, s integer)', 'numeric', 'pg_catalog.round(v, s)' ],
);
my @aggregates = (
	[ 'max', 'timestamptz', 'greatest(s, v)' ],
	[ 'sum', 'bigint', 'coalesce(s, 0) OPERATOR(pg_catalog.+) v' ],
);
my @operators = (
	[ '=', 'text', 'text', 'boolean' ],
	[ '<>', 'text', 'text', 'boolean' ],
	[ '>=', 'timestamptz', 'timestamptz', 'boolean' ],
	[ '<', 'timestamptz', 'timestamptz', 'boolean' ],
	[ '<>', 'timestamptz', 'timestamptz', 'boolean' ],
	[ '-', 'timestamptz', 'timestamptz', 'interval' ],
	[ '<', 'bigint', 'bigint', 'boolean' ],
	[ '+', 'bigint', 'bigint', 'bigint' ],
	[ '-', 'bigint', 'bigint', 'bigint' ],
	[ '/', 'numeric', 'numeric', 'numeric' ],
);

my $plant = q{
	CREATE TABLE public.shadow_calls (name text, by_user name);
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
	$plant .= qq{CREATE SCHEMA "$schema";\n} if $schema ne 'public';
	foreach my $f (@functions)
	{
		my ($sig, $ret, $real) = @$f;
		$plant .= qq{CREATE FUNCTION "$schema".$sig RETURNS $ret LANGUAGE plpgsql AS \$f\$
			BEGIN PERFORM public.shadow_hit('$schema.$sig'); RETURN $real; END \$f\$;\n};
	}
	foreach my $a (@aggregates)
	{
		my ($name, $type, $real) = @$a;
		$plant .= qq{CREATE FUNCTION "$schema".shadow_${name}_step(s $type, v $type) RETURNS $type LANGUAGE plpgsql AS \$f\$
			BEGIN PERFORM public.shadow_hit('$schema.$name($type)'); RETURN $real; END \$f\$;
			CREATE AGGREGATE "$schema".$name($type) (SFUNC = "$schema".shadow_${name}_step, STYPE = $type);\n};
	}
	my $n = 0;
	foreach my $o (@operators)
	{
		my ($op, $l, $r, $ret) = @$o;
		$n++;
		$plant .= qq{CREATE FUNCTION "$schema".shadow_op_$n(a $l, b $r) RETURNS $ret LANGUAGE plpgsql AS \$f\$
			BEGIN PERFORM public.shadow_hit('$schema.$op($l, $r)'); RETURN a OPERATOR(pg_catalog.$op) b; END \$f\$;
			CREATE OPERATOR "$schema".$op (LEFTARG = $l, RIGHTARG = $r, FUNCTION = "$schema".shadow_op_$n);\n};
	}
}
$plant .= qq{ALTER DATABASE app SET search_path = "\$user", public, pg_catalog;\n};
$node->safe_psql('app', $plant, extra_params => [ '-U', 'app_owner' ]);

# the shadows work: an ordinary session of the database calls each of them
$node->safe_psql('app', q{
	SELECT date_trunc('hour', now()), round(1.25, 1), max(now()), sum(1::bigint),
		   'a'::text = 'a'::text, 'a'::text <> 'b'::text, now() >= now(), now() < now(),
		   now() <> now(), now() - now(), 1::bigint < 2::bigint, 1::bigint + 2::bigint,
		   1::bigint - 2::bigint, 1::numeric / 2::numeric},
	extra_params => [ '-U', 'app_owner' ]);
is(check('SELECT count(DISTINCT name) FROM public.shadow_calls'),
	scalar(@functions) + scalar(@aggregates) + scalar(@operators),
	'a session with the database search_path calls every shadow');
is(check(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app_owner'}),
	'f', 'which, run by the owner, change nothing');
check('TRUNCATE public.shadow_calls');

# every report view and function, as a superuser with the database's
# search_path; each must count what is there. The test's own part of each
# query names pg_catalog's functions and operators. (of the 48 SMS: 9 delivered;
# 10 expired, 10 rejected and 10 never accepted, 30 failed)
is($node->safe_psql('app', 'SHOW search_path'), qq{"\$user", public, pg_catalog},
	'the superuser session has the owner\'s search_path');
my $range = q{now() - interval '3 days', now() + interval '1 hour'};
my @reports = (
	[ "smsdispatch.delivery_stats WHERE type OPERATOR(pg_catalog.=) '2FA'", 'pg_catalog.sum(logged)', '48' ],
	[ "smsdispatch.delivery_stats($range) WHERE type OPERATOR(pg_catalog.=) '2FA'", 'pg_catalog.sum(logged)', '48' ],
	[ "smsdispatch.delivery_stats_hourly($range) WHERE type OPERATOR(pg_catalog.=) '2FA'", 'pg_catalog.sum(delivered)', '9' ],
	[ "smsdispatch.delivery_stats_per('day', $range) WHERE type OPERATOR(pg_catalog.=) '2FA'", 'pg_catalog.sum(failed)', '30' ],
	[ 'smsdispatch.escalation_stats', 'pg_catalog.sum(acked_level_1)', '1' ],
	[ "smsdispatch.escalation_stats($range)", 'pg_catalog.sum(exhausted) OPERATOR(pg_catalog.+) pg_catalog.sum(open)', '2' ],
	[ 'smsdispatch.gateway_stats', 'pg_catalog.sum(requests_send) OPERATOR(pg_catalog.>) 0', 't' ],
	[ "smsdispatch.gateway_stats($range)", 'pg_catalog.sum(errors_timeout) OPERATOR(pg_catalog.>) 0', 't' ],
	[ "(SELECT sms_report_html($range) AS html) r", q{bool_and(html LIKE '%<html%')}, 't' ],
);
foreach my $r (@reports)
{
	my ($from, $what, $expected) = @$r;
	is($node->safe_psql('app', "SELECT $what FROM $from"), $expected, "$from: $what");
}

is(check(q{SELECT coalesce(string_agg(DISTINCT name || ' by ' || by_user, ', '), 'none')
	FROM public.shadow_calls}), 'none', 'no shadow function, aggregate or operator was called');
is(check(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app_owner'}),
	'f', 'the database owner is not superuser');

$node->stop;
done_testing();

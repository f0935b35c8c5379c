# The IP2SMS channel plans its statements with sequential and bitmap scans
# off, so a statement with no index path costs more than any
# jit_above_cost. Such a statement in a trigger someone put on the log must
# not be JIT-compiled on every exchange: with jit on (the default) and
# pg_stat_statements counting, the worker's statements, the trigger's among
# them, show no JIT functions after 200 SMS. Skipped where PostgreSQL has no
# JIT provider.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::RealBin/../mock";
use PostgreSQL::Test::Utils;
use Test::More;
use Ip2smsMock;

my $mock = Ip2smsMock->new(dir => PostgreSQL::Test::Utils::tempdir());
my $node = $mock->node('no_jit',
	"shared_preload_libraries = 'smsdispatch, pg_stat_statements'\n"
	  . "pg_stat_statements.track = all\n"
	  . "jit = on\n");
sub q1 { return $node->safe_psql('postgres', $_[0]); }

plan skip_all => 'this PostgreSQL has no JIT provider'
  unless q1('SELECT pg_jit_available()') eq 't';

# an application's audit trigger: its lookup has no index to use (its names
# qualified, as the worker runs with a search_path of pg_catalog only)
q1(q{
	CREATE EXTENSION pg_stat_statements;
	CREATE TABLE audit_rule (state text);
	INSERT INTO audit_rule VALUES ('submitted');
	CREATE TABLE audit_log (sms_id bigint, state text);
	CREATE FUNCTION audit_sms() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.audit_log
		SELECT NEW.id, NEW.send_state FROM public.audit_rule r WHERE r.state = NEW.send_state;
		RETURN NULL;
	END $$;
	CREATE TRIGGER audit_sms AFTER UPDATE ON verification.sms_log
		FOR EACH ROW EXECUTE FUNCTION audit_sms();
	SELECT pg_stat_statements_reset()});

# numbers ending in 1: the mock accepts them
q1(q{SELECT sms_send('+3805' || lpad(g::text, 7, '0') || '1', 'jit ' || g) FROM generate_series(1, 200) g});
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) = 200 FROM verification.sms_log WHERE send_state = 'submitted'}),
	'200 SMS submitted with the audit trigger on the log');
is(q1('SELECT count(DISTINCT sms_id) FROM audit_log'), '200', 'the trigger ran for each of them');

my ($calls, $jit) = split /\|/, q1(q{
	SELECT sum(calls), sum(jit_functions) FROM pg_stat_statements
	 WHERE query LIKE 'INSERT INTO public.audit_log%'});
cmp_ok($calls, '>=', 200, "the trigger's statement ran in the worker ($calls calls)");
is($jit, '0', "and was never JIT-compiled");
is(q1(q{SELECT coalesce(sum(jit_functions), 0) FROM pg_stat_statements
	 WHERE query ~ 'verification\.sms_log|claim_sends'}),
	'0', 'no statement of the channel was JIT-compiled');

done_testing();

# No advisory lock a handler takes outlives its call.
# A handler takes a session-level and a transaction-level advisory lock
# and returns; while the handler worker is still busy with the next SMS,
# another session takes both locks at once and no smsdispatch process
# holds an advisory lock.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsWorkerNode;

my $node = worker_node('locks',
	conf => "smsdispatch.default_country_code = '380'\n"
	  . "smsdispatch.inbound_handler_timeout = '60s'\n");

# 'hold' sleeps until the test creates a row in public.go
$node->safe_psql('postgres', q{
	CREATE ROLE sms_hook;
	CREATE TABLE public.go ();
	GRANT SELECT ON public.go TO sms_hook;
	CREATE FUNCTION public.on_sms(inbox_id bigint, sender text, body text, outcome text)
	RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		IF body = 'lock' THEN
			PERFORM pg_advisory_lock(42);
			PERFORM pg_advisory_xact_lock(43);
		ELSIF body = 'hold' THEN
			WHILE NOT EXISTS (SELECT FROM public.go) LOOP
				PERFORM pg_sleep(0.05);
			END LOOP;
		END IF;
	END $$});
$node->append_conf('postgresql.conf',
	"smsdispatch.inbound_handler = 'public.on_sms'\n"
	  . "smsdispatch.inbound_handler_role = 'sms_hook'\n");
$node->reload;
$node->poll_query_until('postgres',
	"SELECT current_setting('smsdispatch.inbound_handler') = 'public.on_sms'") or die;

$node->safe_psql('postgres', q{
	SELECT sms_receive('+380509990001', 'lock');
	SELECT sms_receive('+380509990002', 'hold')});
ok( wait_until($node, q{
		SELECT count(*) FROM pg_stat_activity
		 WHERE backend_type LIKE 'smsdispatch%' AND wait_event = 'PgSleep'}, '1', 10),
	'a handler call is busy with the second SMS');
ok(wait_until($node, q{SELECT handler_state FROM smsdispatch.inbox WHERE id = 1}, 'done', 5),
	'the first SMS, whose handler took the locks, is done');
is($node->safe_psql('postgres', 'SELECT pg_try_advisory_lock(42)'), 't',
	"another session takes the handler's session-level advisory lock at once");
is($node->safe_psql('postgres', 'SELECT pg_try_advisory_lock(43)'), 't',
	"and its transaction-level one");
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		 WHERE l.locktype = 'advisory' AND a.backend_type LIKE 'smsdispatch%'}),
	'0', 'no smsdispatch process holds an advisory lock');

$node->safe_psql('postgres', 'INSERT INTO public.go DEFAULT VALUES');
ok(wait_until($node, q{SELECT handler_state FROM smsdispatch.inbox WHERE id = 2}, 'done', 10),
	'the second SMS is done once let go');

$node->stop;
done_testing();

# Issue 13, Done when 6: the inbound hook. A LISTENing session sees NOTIFY
# smsdispatch_inbox for each received SMS; the handler function named by
# smsdispatch.inbound_handler is called once per SMS that is not an ack, as
# the role smsdispatch.inbound_handler_role (never a superuser); a handler
# that raises leaves its error on the inbox row and the next SMS is still
# handled; a configuration that cannot work keeps the SMS pending, loudly.
# Since 1.2 the handler runs in a worker of its own ("smsdispatch inbound
# handler", test/t/075 and 076), never in the main worker.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use SmsWorkerNode;

my $node = worker_node('inbound', conf => "smsdispatch.default_country_code = '380'\n");

$node->safe_psql('postgres', q{
	CREATE ROLE sms_hook;
	CREATE TABLE public.handled (inbox_id bigint, sender text, body text, outcome text,
								 run_as text, path text, pid int,
								 at timestamptz DEFAULT clock_timestamp());
	GRANT INSERT ON public.handled TO sms_hook;
	CREATE FUNCTION public.on_sms(inbox_id bigint, sender text, body text, outcome text)
	RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.handled (inbox_id, sender, body, outcome, run_as, path, pid)
			VALUES (inbox_id, sender, body, outcome, current_user,
					current_setting('search_path') || ' ' || current_setting('work_mem'),
					pg_backend_pid());
		-- a setting a handler changes for the session ends with its call
		PERFORM set_config('work_mem', '77kB', false);
		IF body LIKE '%boom%' THEN
			RAISE EXCEPTION 'cannot handle "%"', body USING ERRCODE = 'data_exception';
		END IF;
	END $$;
	SELECT sms_list_create('oncall');
	SELECT sms_list_add('oncall', '+380501000001', 1, '1 h')});
my $number = $node->safe_psql('postgres', "SELECT sms_enqueue('pump stopped', 'oncall')");
$node->poll_query_until('postgres', q{
	SELECT status = 'NOT_YET_ACK' FROM smsdispatch.message_recipient})
  or die 'the alarm was not sent';

# a superuser as the handler's role: refused, the SMS waits
$node->append_conf('postgresql.conf',
	"smsdispatch.inbound_handler = 'public.on_sms'\n"
	  . "smsdispatch.inbound_handler_role = '" . $node->safe_psql('postgres', 'SELECT current_user') . "'\n");
$node->reload;
my $log_offset = -s $node->logfile;
$node->poll_query_until('postgres',
	"SELECT current_setting('smsdispatch.inbound_handler') = 'public.on_sms'") or die;

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN smsdispatch_inbox');

is($node->safe_psql('postgres', "SELECT sms_receive('+380509990001', 'first: status?')"),
	'no_number', 'an SMS that is no ack');
ok( $node->wait_for_log(
		qr/WARNING:  smsdispatch: received SMS wait for their handler: role "[^"]+" \(smsdispatch.inbound_handler_role\) is a superuser/,
		$log_offset),
	'a superuser as the handler role is refused, loudly');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.handled'), '0',
	'the handler did not run as a superuser');
is($node->safe_psql('postgres', "SELECT handler_state FROM smsdispatch.inbox"), 'pending',
	'the SMS waits for a handler that may run');

$node->append_conf('postgresql.conf', "smsdispatch.inbound_handler_role = 'sms_hook'\n");
$node->reload;
$node->poll_query_until('postgres', "SELECT count(*) = 1 FROM public.handled") or die;

is($node->safe_psql('postgres', "SELECT sms_receive('+380501000001', 'ok $number')"),
	'ack', 'an ack');
is($node->safe_psql('postgres', "SELECT sms_receive('+380509990002', 'second: boom')"),
	'no_number', 'an SMS its handler fails on');
is($node->safe_psql('postgres', "SELECT sms_receive('050 999 0003', 'third: $number')"),
	'not_recipient', 'an SMS after it, from a stranger quoting the alarm');

ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 0 FROM smsdispatch.inbox WHERE handler_state = 'pending'}),
	'every SMS was handled');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(h.inbox_id || ' ' || h.sender || ' ' || h.body || ' ' || h.outcome || ' ' || h.run_as,
						  E'\n' ORDER BY h.inbox_id)
		  FROM public.handled h}),
	"1 +380509990001 first: status? no_number sms_hook\n"
	  . "4 +380509990003 third: $number not_recipient sms_hook",
	'the handler ran once per SMS that is no ack, as sms_hook, with the normalised sender; what the failing call did is rolled back');
is( $node->safe_psql('postgres', q{SELECT string_agg(DISTINCT path, ',') FROM public.handled}),
	'pg_catalog, pg_temp 4MB',
	'every call runs with the pinned search_path, and a setting a handler changed ended with its call');
my $main_worker = worker_pid($node);
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE pid = $main_worker) || ' ' || count(pid) FROM public.handled}),
	'0 2', 'no call runs in the main worker (pid ' . $main_worker . ')');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(id || ' ' || outcome || ' ' || coalesce(handler_state, '-') || ' '
						  || coalesce(handler_error, '-'), E'\n' ORDER BY id)
		  FROM smsdispatch.inbox}),
	"1 no_number done -\n2 ack - -\n"
	  . "3 no_number failed 22000: cannot handle \"second: boom\"\n"
	  . "4 not_recipient done -",
	'the failing handler left its error on the inbox row; acks are not handed over');
like(slurp_file($node->logfile, $log_offset),
	qr/WARNING:  smsdispatch: the inbound handler failed on inbox row 3: 22000: cannot handle "second: boom"/,
	'and in the server log');
is($node->safe_psql('postgres', "SELECT sender || ' ' || sender_e164 FROM smsdispatch.inbox WHERE id = 4"),
	'050 999 0003 +380509990003', 'the inbox keeps the raw and the normalised sender');

# psql prints the notifications after the next command it runs
my $out = $listener->query_safe('SELECT 1');
$out .= $listener->{stderr} // '';
my @payloads = $out =~ /Asynchronous notification "smsdispatch_inbox" with payload "(.*?)" received/g;
is_deeply([ map { JSON::PP->new->decode($_) } @payloads ],
	[ { id => 1, outcome => 'no_number' }, { id => 2, outcome => 'ack' },
	  { id => 3, outcome => 'no_number' }, { id => 4, outcome => 'not_recipient' } ],
	'the LISTENing session got one NOTIFY per received SMS, with its inbox id and outcome')
  or diag("psql said: $out");
$listener->quit;

$node->stop;
done_testing();

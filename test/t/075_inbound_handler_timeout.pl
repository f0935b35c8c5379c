# A looping inbound handler stops nothing. The handler
# runs in its own worker ("smsdispatch inbound handler"), each call within
# smsdispatch.inbound_handler_timeout. While handlers loop (a plain loop,
# one that catches its cancel and goes on, one that catches it and
# returns), an alarm's SMS is submitted
# within 3 s and the spool is read; each looping SMS ends 'failed' with the
# reason, the SMS after them is handled, the main worker never restarts, and
# DROP EXTENSION completes within the bound.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use SmsSpool;
use SmsWorkerNode;

my $timeout = 2;	# smsdispatch.inbound_handler_timeout, seconds
my $spool = PostgreSQL::Test::Utils::tempdir();
my $node = worker_node('timeout',
	conf => "smsdispatch.default_country_code = '380'\n"
	  . "smsdispatch.spool_dir = '$spool'\n"
	  . "smsdispatch.inbound_handler_timeout = '${timeout}s'\n");

# advisory lock 7, taken by a looping call before it loops, tells the test
# that a handler is in its loop (whichever process runs it)
$node->safe_psql('postgres', q{
	CREATE ROLE sms_hook;
	CREATE TABLE public.handled (inbox_id bigint, body text);
	GRANT INSERT ON public.handled TO sms_hook;
	CREATE FUNCTION public.on_sms(inbox_id bigint, sender text, body text, outcome text)
	RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.handled VALUES (inbox_id, body);
		IF body LIKE 'loop%' THEN
			PERFORM pg_advisory_xact_lock(7);
			LOOP
			END LOOP;
		ELSIF body LIKE 'stubborn%' THEN
			PERFORM pg_advisory_xact_lock(7);
			LOOP
				BEGIN
					PERFORM pg_sleep(3600);
				EXCEPTION WHEN query_canceled THEN
					NULL;
				END;
			END LOOP;
		ELSIF body LIKE 'sly%' THEN
			BEGIN
				PERFORM pg_sleep(3600);
			EXCEPTION WHEN query_canceled THEN
				NULL;
			END;
		END IF;
	END $$;
	SELECT sms_list_create('oncall');
	SELECT sms_list_add('oncall', '+380501000001', 1, '1 h')});
$node->append_conf('postgresql.conf',
	"smsdispatch.inbound_handler = 'public.on_sms'\n"
	  . "smsdispatch.inbound_handler_role = 'sms_hook'\n");
$node->reload;
$node->poll_query_until('postgres',
	"SELECT current_setting('smsdispatch.inbound_handler') = 'public.on_sms'") or die;
my $main_worker = worker_pid($node);
my $log_offset = -s $node->logfile;

my $in_loop = q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7 AND granted};
$node->safe_psql('postgres', q{
	SELECT sms_receive('+380509990001', 'loop one');
	SELECT sms_receive('+380509990002', 'stubborn two');
	SELECT sms_receive('+380509990003', 'loop three');
	SELECT sms_receive('+380509990004', 'sly four');
	SELECT sms_receive('+380509990005', 'plain five')});
ok(wait_until($node, $in_loop, '1', 10), 'a handler loops on the first SMS');
my $loop_seen = time();

# the alarm path goes on
my $start = time();
my $number = $node->safe_psql('postgres', "SELECT sms_enqueue('pump stopped', 'oncall')");
my $submitted = qq{
	SELECT count(*) FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
	 WHERE m.number = '$number' AND l.send_state = 'submitted'};
ok(wait_until($node, $submitted, '1', 3),
	"the alarm's SMS is submitted within 3 s while a handler loops");
diag(sprintf('submitted after %.2f s', time() - $start));

# and so does the spool
drop_spool_file($spool, 'disk.xml',
	'<SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>disk full</MSG></SMS>');
ok( wait_until($node, q{
		SELECT count(*) FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.message_id
		 WHERE m.source = 'spool' AND l.send_state = 'submitted'}, '1', 5),
	'a spool file is imported and its alarm submitted while a handler loops');

my $canceled = "57014: canceled after $timeout s (smsdispatch.inbound_handler_timeout)";
my $row_state = q{SELECT handler_state || ' ' || coalesce(handler_error, '-')
					FROM smsdispatch.inbox WHERE id = %d};
ok(wait_until($node, sprintf($row_state, 1), "failed $canceled", $timeout + 5),
	"the looping SMS ends failed with the bound as its reason, within the bound and a margin");
diag(sprintf('failed %.2f s after its loop was seen', time() - $loop_seen));

# the stubborn one catches its cancel: its worker ends at twice the bound
# and the next handler worker fails its row; then the next loop, then the
# plain SMS
ok( wait_until($node, sprintf($row_state, 2),
		"failed $canceled; the handler went on, and its worker was ended after twice that",
		2 * $timeout + 10),
	'an SMS whose handler catches its cancel and goes on ends failed, its worker ended');
ok(wait_until($node, sprintf($row_state, 3), "failed $canceled", 2 * $timeout + 10),
	'the second looping SMS ends failed too');
ok(wait_until($node, sprintf($row_state, 4), "failed $canceled", $timeout + 10),
	'an SMS whose handler catches its cancel and returns ends failed');
ok(wait_until($node, sprintf($row_state, 5), 'done -', $timeout + 10),
	'the SMS after the overrunning ones is handled');
is($node->safe_psql('postgres', 'SELECT string_agg(inbox_id || body, \',\') FROM public.handled'),
	'5plain five', 'what the overrunning calls did is rolled back');
is(worker_pid($node), $main_worker, 'the main worker ran throughout (no restart)');
my $log = slurp_file($node->logfile, $log_offset);
like($log,
	qr/WARNING:  smsdispatch: the inbound handler failed on inbox row 1: \Q$canceled\E/,
	'the cancel is logged');
like($log,
	qr/FATAL:  terminating background worker "smsdispatch inbound handler" due to administrator command/,
	'the handler worker whose call went on after its cancel was ended');

# a looping handler does not hold DROP EXTENSION: the bound releases it
$node->safe_psql('postgres', "SELECT sms_receive('+380509990006', 'loop six')");
ok(wait_until($node, $in_loop, '1', 10), 'a handler loops on a sixth SMS');
$start = time();
my ($ret, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = '30s'; DROP EXTENSION smsdispatch");
my $took = time() - $start;
is($ret, 0, 'DROP EXTENSION completes while a handler loops') or diag($err);
cmp_ok($took, '<', $timeout + 8, "within the bound ($timeout s) and a margin");
diag(sprintf('DROP EXTENSION took %.2f s', $took));

$node->stop;
done_testing();

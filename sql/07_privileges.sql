-- Privileges: PUBLIC gets nothing; smsdispatch_sender queues SMS and alarms
-- but reads no phone numbers; smsdispatch_reader reads the log, not the
-- lists; smsdispatch_admin manages lists.
SELECT regress.reset();
SELECT sms_list_create('oncall');
SELECT sms_list_add('oncall', '+380501111111', 1, name => 'Alice');
SELECT sms_list_add('oncall', '+380502222222', 2, name => 'Bob');

CREATE ROLE regress_nobody;
CREATE ROLE regress_sender IN ROLE smsdispatch_sender;
CREATE ROLE regress_reader IN ROLE smsdispatch_reader;
CREATE ROLE regress_admin IN ROLE smsdispatch_admin;
GRANT USAGE ON SCHEMA regress TO PUBLIC;	-- the test helper only

-- nothing of the extension is granted to PUBLIC, and every SECURITY DEFINER
-- function pins search_path
SELECT p.oid::regprocedure AS function_granted_to_public
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'smsdispatch')
   AND d.deptype = 'e' AND has_function_privilege('regress_nobody', p.oid, 'EXECUTE');
SELECT p.oid::regprocedure AS definer_without_search_path
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'smsdispatch')
   AND d.deptype = 'e' AND p.prosecdef
   AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%');
SELECT p.oid::regprocedure AS definer_function
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'smsdispatch')
   AND d.deptype = 'e' AND p.prosecdef
 ORDER BY p.oid::regprocedure::text;

-- a role without grants: 42501 from every function and table
SET ROLE regress_nobody;
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_send('+380501234567', 'x')$$,
	$$SELECT sms_list_create('mine')$$,
	$$SELECT sms_list_add('oncall', '+380501234567')$$,
	$$SELECT sms_enqueue('x', 'oncall')$$,
	$$SELECT sms_ack('0001', '+380501111111')$$,
	$$SELECT sms_receive('+380501111111', '0001')$$,
	$$SELECT sms_cancel('0001')$$,
	$$SELECT sms_normalize_phone('+380501234567')$$,
	$$SELECT sms_segments('x')$$,
	$$SELECT smsdispatch.watch_verifications('pg_class')$$,
	$$SELECT * FROM smsdispatch.list_member$$,
	$$SELECT * FROM verification.sms_log$$,
	$$INSERT INTO verification.sms_log (phone_number, body) VALUES ('+380501234567', 'x')$$]) AS s;
RESET ROLE;

-- the sender queues and reports replies...
SET ROLE regress_sender;
SELECT sms_send('+380501234567', 'from the sender');
SELECT sms_enqueue('Disk full', 'oncall');
SELECT sms_normalize_phone('+380 50 123 45 67'), (sms_segments('x')).parts;
SELECT sms_receive('+380509999999', 'what is 0001?');
SELECT sms_ack('0001', '+380501111111');
SELECT sms_enqueue('Load high', 'oncall');
SELECT sms_cancel('0002');
-- ... but reads no phone numbers, and does not manage lists
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT * FROM smsdispatch.list_member$$,
	$$SELECT phone FROM smsdispatch.message_recipient$$,
	$$SELECT phone_number FROM verification.sms_log$$,
	$$SELECT sender FROM smsdispatch.inbox$$,
	$$SELECT phone FROM smsdispatch.event$$,
	$$SELECT acked_by FROM smsdispatch.message$$,
	$$SELECT * FROM smsdispatch.recipient_list$$,
	$$UPDATE smsdispatch.number_cursor SET last_number = 0$$,
	$$SELECT sms_list_create('mine')$$,
	$$SELECT sms_list_add('oncall', '+380501234567', 1)$$,
	$$SELECT smsdispatch.watch_verifications('pg_class')$$,
	$$SELECT smsdispatch.allocate_number()$$]) AS s;
RESET ROLE;

-- the reader sees the counts of the log and the alarms, not their texts,
-- not the phones, not the lists, and sends nothing
SET ROLE regress_reader;
SELECT type, channel, send_state FROM verification.sms_log ORDER BY id;
SELECT number, state FROM smsdispatch.message ORDER BY id;
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT phone_number FROM verification.sms_log$$,
	$$SELECT body FROM verification.sms_log$$,
	$$SELECT body FROM smsdispatch.message$$,
	$$SELECT * FROM smsdispatch.queue$$,
	$$SELECT * FROM smsdispatch.list_member$$,
	$$SELECT * FROM smsdispatch.message_recipient$$,
	$$SELECT sms_send('+380501234567', 'x')$$,
	$$SELECT sms_enqueue('x', 'oncall')$$]) AS s;
RESET ROLE;

-- the admin manages lists and reads them
SET ROLE regress_admin;
SELECT sms_list_create('dba', 'DBA team');
SELECT sms_list_add('dba', '+380503333333', 1, '1 min', 'Carol');
SELECT list, phone, name FROM smsdispatch.list_member ORDER BY id;
SELECT sms_send('+380503333333', 'from the admin') > 0 AS admin_sends;
-- and reads the views, but does not write through them
SELECT count(*) >= 0 AS admin_reads_queue FROM smsdispatch.queue;
SELECT regress.try(s) FROM unnest(ARRAY[
	$$DELETE FROM smsdispatch.modem_stale$$,
	$$UPDATE smsdispatch.modem_stale SET name = name$$]) AS s;
RESET ROLE;

-- an application role granted nothing of smsdispatch inserts into a
-- watched table: the trigger queues the SMS, writing as the log's owner,
-- and the role still cannot read the log
CREATE ROLE regress_app;
CREATE TABLE regress.app_otp (phone text, code text);
GRANT INSERT ON regress.app_otp TO regress_app;
SELECT smsdispatch.watch_verifications('regress.app_otp', 'phone', 'code');
SET ROLE regress_app;
INSERT INTO regress.app_otp VALUES ('+380504444444', '1234');
SELECT regress.try($$SELECT phone_number FROM verification.sms_log$$);
RESET ROLE;
SELECT phone_number, body, send_state FROM verification.sms_log
 WHERE phone_number = '+380504444444';
-- sms_send and the trigger are not SECURITY DEFINER, yet the caller's
-- search_path cannot redirect their write
CREATE SCHEMA regress_decoy;
CREATE TABLE regress_decoy.sms_log (LIKE verification.sms_log);
GRANT USAGE ON SCHEMA regress_decoy TO regress_sender;
GRANT ALL ON regress_decoy.sms_log TO regress_sender;
SET ROLE regress_sender;
SET search_path = regress_decoy, public;
SELECT sms_send('+380504444445', 'decoy') > 0 AS sent;
RESET search_path;
RESET ROLE;
SELECT (SELECT count(*) FROM regress_decoy.sms_log) AS in_decoy,
	   (SELECT count(*) FROM verification.sms_log WHERE body = 'decoy') AS in_log;
DROP SCHEMA regress_decoy CASCADE;
DROP TABLE regress.app_otp;

REVOKE USAGE ON SCHEMA regress FROM PUBLIC;
DROP ROLE regress_nobody, regress_sender, regress_reader, regress_admin, regress_app;

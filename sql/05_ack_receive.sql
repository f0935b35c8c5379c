-- Acknowledgements (sms_ack, sms_receive) and sms_cancel.
SELECT regress.reset();
SELECT sms_list_create('oncall');
SELECT sms_list_add('oncall', '+380501111111', 1, name => 'Alice');
SELECT sms_list_add('oncall', '+380502222222', 1, name => 'Bob');
SELECT sms_list_add('oncall', '+380503333333', 2, name => 'Carol');
SELECT sms_enqueue('Disk full on db1', 'oncall');

-- sms_ack errors: unknown number, phone never sent the alarm (a stranger, or
-- Carol whose level has not started); nothing changes
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_ack('0002', '+380501111111')$$,
	$$SELECT sms_ack('1', '+380501111111')$$,
	$$SELECT sms_ack('abcd', '+380501111111')$$,
	$$SELECT sms_ack(NULL, '+380501111111')$$,
	$$SELECT sms_ack('0001', '+380509999999')$$,
	$$SELECT sms_ack('0001', '+380503333333')$$,
	$$SELECT sms_ack('0001', 'garbage')$$,
	$$SELECT sms_ack('0001', NULL)$$]) AS s;
SELECT number, state, acked_by FROM smsdispatch.message;
SELECT (SELECT count(*) FROM smsdispatch.event WHERE kind LIKE '%ack%') AS ack_events,
	   (SELECT count(*) FROM smsdispatch.message_recipient WHERE status = 'ACK') AS acks;

-- the ack: the alarm ends, SMS not yet sent are withdrawn, the other
-- recipients are left as they are
SELECT sms_ack('0001', '+380 50 111-11-11');
SELECT number, state, acked_by, acked_at IS NOT NULL AS has_acked_at,
	   closed_at IS NOT NULL AS closed
  FROM smsdispatch.message;
SELECT phone, level, status, acked_at IS NOT NULL AS has_acked_at
  FROM smsdispatch.message_recipient ORDER BY level, phone;
SELECT phone_number, send_state, last_error FROM verification.sms_log ORDER BY id;
-- acks are idempotent: false, and only an audit event
SELECT sms_ack('0001', '+380501111111');
SELECT sms_ack('0001', '+380502222222');
SELECT number, state, acked_by FROM smsdispatch.message;
SELECT kind, level, phone, detail FROM smsdispatch.event ORDER BY id;
-- a closed alarm cannot be cancelled
SELECT regress.try($$SELECT sms_cancel('0001')$$);

-- a late ack after the last level timed out is still taken
SELECT sms_enqueue('Replica lag', 'oncall');
UPDATE smsdispatch.message SET state = 'exhausted', closed_at = now() WHERE number = '0002';
SELECT regress.try($$SELECT sms_cancel('0002')$$);
SELECT sms_ack('0002', '+380502222222');
SELECT number, state, acked_by FROM smsdispatch.message WHERE number = '0002';
SELECT kind, phone, detail FROM smsdispatch.event
 WHERE message_id = (SELECT id FROM smsdispatch.message WHERE number = '0002') AND kind = 'acked';

-- cancel: queued SMS withdrawn, acks refused, the number answers as unknown
SELECT sms_enqueue('Backup failed', 'oncall');
SELECT sms_cancel('0003');
SELECT number, state, closed_at IS NOT NULL AS closed FROM smsdispatch.message WHERE number = '0003';
SELECT phone_number, send_state, last_error FROM verification.sms_log
 WHERE body LIKE '[0003]%' ORDER BY id;
SELECT phone, status FROM smsdispatch.message_recipient r
  JOIN smsdispatch.message m ON m.id = r.message_id WHERE m.number = '0003' ORDER BY phone;
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_cancel('0003')$$,
	$$SELECT sms_ack('0003', '+380501111111')$$,
	$$SELECT sms_cancel('0042')$$,
	$$SELECT sms_cancel(NULL)$$]) AS s;
SELECT sms_receive('+380501111111', '0003');
SELECT sms_receive('+380509999999', '0003');
SELECT number, state FROM smsdispatch.message WHERE number = '0003';

-- sms_receive never raises for content; it says what the SMS did
SELECT sms_enqueue('Load high', 'oncall');
SELECT sender, body, sms_receive(sender, body)
  FROM (VALUES ('+380501111111', 'ok thanks'),
			   ('+380501111111', 'call 12345, re 100045'),
			   ('+380501111111', '7777'),
			   ('+380509999999', 'ok 0004'),
			   ('+380503333333', '0004'),
			   ('050 222 22 22', 'Taking 0004!'),
			   ('+380501111111', '0004 ok'),
			   ('+380501111111', 'room 7777 re 0004')) AS v(sender, body);
SELECT sender, body, outcome, number, message_id IS NOT NULL AS matched
  FROM smsdispatch.inbox ORDER BY id;
SELECT number, state, acked_by FROM smsdispatch.message WHERE number = '0004';
SELECT regress.try($$SELECT sms_receive(NULL, '0004')$$);
SELECT regress.try($$SELECT sms_receive('+380501111111', NULL)$$);

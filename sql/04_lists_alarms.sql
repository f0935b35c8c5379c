-- Recipient lists and sms_enqueue: the alarm, its recipients, the first
-- level queued, four-digit numbers allocated cyclically.
SELECT regress.reset();

SELECT sms_list_create('oncall', 'Database on-call');
SELECT sms_list_create('empty');
SELECT sms_list_add('oncall', '+380 50 111 11 11', 1, '10 min', 'Alice');
SELECT sms_list_add('oncall', '+380502222222', 1, '5 min', 'Bob');
SELECT sms_list_add('oncall', '+380503333333', 2, name => 'Carol');
SELECT sms_list_add('oncall', '+380504444444', 3, '1 hour');
-- the same person may be on two levels
SELECT sms_list_add('oncall', '+380501111111', 3);
SELECT name, description FROM smsdispatch.recipient_list ORDER BY id;
SELECT list, phone, name, level, ack_timeout FROM smsdispatch.list_member ORDER BY id;

-- list errors: SQLSTATE, the value in the message, nothing written
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_list_create('oncall')$$,
	$$SELECT sms_list_create('')$$,
	$$SELECT sms_list_create('  ')$$,
	$$SELECT sms_list_create(NULL)$$,
	$$SELECT sms_list_add('nosuch', '+380505555555')$$,
	$$SELECT sms_list_add(NULL, '+380505555555')$$,
	$$SELECT sms_list_add('oncall', '+380505555555', 0)$$,
	$$SELECT sms_list_add('oncall', '+380505555555', 4)$$,
	$$SELECT sms_list_add('oncall', '+380505555555', -1)$$,
	$$SELECT sms_list_add('oncall', '+380505555555', NULL)$$,
	$$SELECT sms_list_add('oncall', '+380505555555', 1, '-5 min')$$,
	$$SELECT sms_list_add('oncall', '+380505555555', 1, '0')$$,
	$$SELECT sms_list_add('oncall', '+380505555555', 1, NULL)$$,
	$$SELECT sms_list_add('oncall', '0505555555')$$,
	$$SELECT sms_list_add('oncall', 'not a phone')$$,
	$$SELECT sms_list_add('oncall', '+380 50 222 22 22', 1)$$]) AS s;
SELECT (SELECT count(*) FROM smsdispatch.recipient_list) AS lists,
	   (SELECT count(*) FROM smsdispatch.list_member) AS members;

-- an alarm: level 1 queued at once with the number in front of the text
SELECT sms_enqueue('Disk full on db1', 'oncall');
SELECT id, number, body, list, state, level, round, channel, source,
	   level_started_at IS NOT NULL AS level_started, closed_at
  FROM smsdispatch.message;
SELECT phone, name, level, ack_timeout, status, sms_log_id IS NOT NULL AS handed
  FROM smsdispatch.message_recipient ORDER BY level, phone;
SELECT phone_number, type, body, channel, send_state, message_id
  FROM verification.sms_log ORDER BY id;
SELECT kind, level, detail FROM smsdispatch.event ORDER BY id;
SELECT sms_enqueue('Replica lag', 'oncall', 'modem');
SELECT number, channel FROM smsdispatch.message ORDER BY id;
SELECT DISTINCT channel FROM verification.sms_log WHERE body LIKE '[0002]%';

-- enqueue errors: nothing written, the number not used up
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_enqueue('x', 'nosuch')$$,
	$$SELECT sms_enqueue('x', '')$$,
	$$SELECT sms_enqueue('x', NULL)$$,
	$$SELECT sms_enqueue('x', 'empty')$$,
	$$SELECT sms_enqueue('', 'oncall')$$,
	$$SELECT sms_enqueue(NULL, 'oncall')$$,
	$$SELECT sms_enqueue(repeat('a', 1531), 'oncall')$$,
	$$SELECT sms_enqueue(repeat('a', 1522), 'oncall')$$,
	$$SELECT sms_enqueue('x', 'oncall', 'fax')$$]) AS s;
SELECT (SELECT count(*) FROM smsdispatch.message) AS messages,
	   (SELECT count(*) FROM smsdispatch.message_recipient) AS recipients,
	   (SELECT count(*) FROM verification.sms_log) AS sms,
	   (SELECT count(*) FROM smsdispatch.event) AS events,
	   (SELECT last_number FROM smsdispatch.number_cursor) AS last_number;
-- the longest body that fits with its "[0042] " prefix (brackets are
-- GSM-7 extension characters: 9 septets)
SELECT sms_enqueue(repeat('a', 1521), 'oncall');
SELECT length(body), (sms_segments(body)).parts FROM verification.sms_log
 WHERE message_id = (SELECT id FROM smsdispatch.message WHERE number = '0003') LIMIT 1;

-- alarms are not subject to the abuse guard
SELECT count(sms_enqueue('flood ' || g, 'oncall')) FROM generate_series(1, 12) g;
SELECT send_state, count(*) FROM verification.sms_log
 WHERE phone_number = '+380501111111' GROUP BY 1;

-- numbers: the next after the last one given, skipping those in use (open,
-- or closed less than smsdispatch.number_quarantine ago), 9999 then 0000
SELECT regress.reset();
SELECT sms_list_create('oncall');
SELECT sms_list_add('oncall', '+380501111111');
SELECT sms_enqueue('first', 'oncall'), sms_enqueue('second', 'oncall');
-- 0003 is open, 0004 closed an hour ago, 0005 closed two days ago
INSERT INTO smsdispatch.message (number, body, list, channel, state, closed_at) VALUES
	('0003', 'open', 'oncall', 'ip2sms', 'open', NULL),
	('0004', 'recent', 'oncall', 'ip2sms', 'acked', now() - interval '1 hour'),
	('0005', 'old', 'oncall', 'ip2sms', 'cancelled', now() - interval '2 days');
SELECT sms_enqueue('third', 'oncall');
UPDATE smsdispatch.number_cursor SET last_number = 9998;
SELECT sms_enqueue('a', 'oncall'), sms_enqueue('b', 'oncall'), sms_enqueue('c', 'oncall');
SELECT number, body, state FROM smsdispatch.message ORDER BY id;

-- all 10,000 numbers in use: a clear error, nothing written
INSERT INTO smsdispatch.message (number, body, list, channel)
SELECT lpad(g::text, 4, '0'), 'filler', 'oncall', 'ip2sms'
  FROM generate_series(0, 9999) g
 WHERE lpad(g::text, 4, '0') NOT IN (SELECT number FROM smsdispatch.message);
SELECT count(*) FROM smsdispatch.message;
SELECT regress.try($$SELECT sms_enqueue('one too many', 'oncall')$$);
SELECT (SELECT count(*) FROM smsdispatch.message) AS messages,
	   (SELECT count(*) FROM verification.sms_log WHERE body LIKE '%one too many') AS sms,
	   (SELECT last_number FROM smsdispatch.number_cursor) AS last_number;
-- closing one frees its number once the quarantine is over
UPDATE smsdispatch.message SET state = 'acked', closed_at = now() - interval '25 hours'
 WHERE number = '4242';
SELECT sms_enqueue('fits again', 'oncall');

-- sms_send: one SMS into verification.sms_log; every bad argument is an
-- error that writes nothing.
SELECT regress.reset();

SELECT sms_send('+380 50 123 45 67', 'Your code: 4812', 'verification');
SELECT sms_send('+380501234568', 'Plain text');
SELECT sms_send('+380501234569', 'Prescription ready', 'medication_request', 'modem');
SELECT sms_send('+380501234560', 'Login code 99', '2FA', 'ip2sms');
SELECT id, phone_number, type, body, channel, send_state, attempts, last_error,
	   gateway_id, gateway_status, message_id, verification_id
  FROM verification.sms_log ORDER BY id;

-- national numbers with smsdispatch.default_country_code
SET smsdispatch.default_country_code = '380';
SELECT sms_send('050 765 43 21', 'National');
RESET smsdispatch.default_country_code;
SELECT phone_number FROM verification.sms_log WHERE body = 'National';

-- errors: SQLSTATE, message naming the value, nothing written
SELECT count(*) AS rows_before FROM verification.sms_log;
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_send('abc', 'x')$$,
	$$SELECT sms_send('0501234567', 'x')$$,
	$$SELECT sms_send('+12', 'x')$$,
	$$SELECT sms_send(NULL, 'x')$$,
	$$SELECT sms_send('+380501234567', '')$$,
	$$SELECT sms_send('+380501234567', E' \n\t ')$$,
	$$SELECT sms_send('+380501234567', NULL)$$,
	$$SELECT sms_send('+380501234567', repeat('a', 1531))$$,
	$$SELECT sms_send('+380501234567', repeat('ж', 671))$$,
	$$SELECT sms_send('+380501234567', 'x', 'marketing')$$,
	$$SELECT sms_send('+380501234567', 'x', 'Verification')$$,
	$$SELECT sms_send('+380501234567', 'x', NULL)$$,
	$$SELECT sms_send('+380501234567', 'x', 'text', 'carrier-pigeon')$$]) AS s;
SELECT count(*) AS rows_after FROM verification.sms_log;

-- the longest accepted body follows smsdispatch.max_parts
SELECT sms_send('+380501234561', repeat('a', 1530)) > 0 AS ten_parts_ok;
SET smsdispatch.max_parts = 1;
SELECT sms_send('+380501234561', repeat('a', 160)) > 0 AS one_part_ok;
SELECT regress.try($$SELECT sms_send('+380501234561', repeat('a', 161))$$);
SELECT regress.try($$SELECT sms_send('+380501234561', repeat('ж', 71))$$);
RESET smsdispatch.max_parts;
SELECT regress.try($$SET smsdispatch.max_parts = 0$$);

-- the default channel is a server-wide setting
SHOW smsdispatch.default_channel;
SELECT regress.try($$SET smsdispatch.default_channel = 'modem'$$);

-- abuse guard: at most smsdispatch.max_per_phone_per_hour (10) SMS to one
-- number; the 11th is written failed with the reason, the caller's
-- transaction goes on and commits.
SHOW smsdispatch.max_per_phone_per_hour;
SELECT regress.reset();
BEGIN;
SELECT count(sms_send('+380671112233', 'code ' || g, 'verification')) FROM generate_series(1, 12) g;
SELECT sms_send('+380671112299', 'another number is not limited');
COMMIT;
SELECT id, phone_number, body, send_state, last_error
  FROM verification.sms_log ORDER BY id;
-- refused rows do not count towards the limit
SELECT regress.try($$SELECT sms_send('+380671112233', 'still refused')$$);
SELECT send_state, count(*) FROM verification.sms_log
 WHERE phone_number = '+380671112233' GROUP BY 1 ORDER BY 1;
-- rows older than an hour no longer count
UPDATE verification.sms_log SET inserted_at = inserted_at - interval '61 min'
 WHERE phone_number = '+380671112233' AND send_state = 'queued';
SELECT sms_send('+380671112233', 'an hour later') > 0;
SELECT send_state, last_error FROM verification.sms_log WHERE body = 'an hour later';

-- 0 turns the guard off (a reloadable setting)
ALTER SYSTEM SET smsdispatch.max_per_phone_per_hour = 0;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW smsdispatch.max_per_phone_per_hour;
SELECT count(sms_send('+380671112233', 'unguarded ' || g)) FROM generate_series(1, 20) g;
SELECT send_state, count(*) FROM verification.sms_log
 WHERE body LIKE 'unguarded %' GROUP BY 1;
ALTER SYSTEM RESET smsdispatch.max_per_phone_per_hour;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW smsdispatch.max_per_phone_per_hour;

-- priorities (issue 11): by type unless the sender names one, 1 to 9
SELECT type, smsdispatch.default_priority(type) FROM unnest(ARRAY['verification', '2FA',
	'medication_request', 'text']) AS type;
SELECT sms_send('+380501230001', 'p code', 'verification') > 0,
	   sms_send('+380501230002', 'p bulk') > 0,
	   sms_send('+380501230003', 'p urgent', priority => 1) > 0,
	   sms_send('+380501230004', 'p late', 'verification', NULL, 9) > 0;
SELECT l.body, l.type, l.priority FROM verification.sms_log l
 WHERE l.body LIKE 'p %' ORDER BY l.id;
SELECT regress.try($$SELECT sms_send('+380501230005', 'x', priority => 0)$$);
SELECT regress.try($$SELECT sms_send('+380501230005', 'x', priority => 10)$$);
-- validity by type: the settings' defaults; alarms' SMS never expire
SELECT type, smsdispatch.validity(type) FROM unnest(ARRAY['verification', '2FA',
	'medication_request', 'text']) AS type;

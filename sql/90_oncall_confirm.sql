-- Issue 13: confirmations when an alarm closes, send windows per SMS type,
-- the inbox's normalised sender and the inbound handler's pending rows.
-- The worker serves another database here: SMS are marked submitted by
-- hand, as a channel would.
SET client_min_messages = warning;
SET smsdispatch.default_country_code = '380';

-- a channel submitting every queued SMS of an alarm
CREATE FUNCTION submit_alarm(num text) RETURNS void LANGUAGE sql AS $$
	UPDATE verification.sms_log l SET send_state = 'submitted', submitted_at = now()
	  FROM smsdispatch.message m
	 WHERE l.message_id = m.id AND m.number = num AND m.state = 'open'
	   AND l.send_state = 'queued';
$$;
CREATE FUNCTION confirmations(num text) RETURNS TABLE (phone text, body text, priority int,
	channel text, message_id bigint) LANGUAGE sql AS $$
	SELECT l.phone_number, l.body, l.priority, l.channel::text, l.message_id
	  FROM verification.sms_log l JOIN smsdispatch.message m ON m.id = l.confirms
	 WHERE m.number = num ORDER BY l.id;
$$;
CREATE FUNCTION recipients(num text) RETURNS TABLE (phone text, level int, status text)
LANGUAGE sql AS $$
	SELECT r.phone, r.level, r.status FROM smsdispatch.message_recipient r
	  JOIN smsdispatch.message m ON m.id = r.message_id
	 WHERE m.number = num ORDER BY r.level, r.phone;
$$;

SELECT sms_list_create('conf');
SELECT sms_list_add('conf', '+380501110001', 1, '10 min', 'Alice');
SELECT sms_list_add('conf', '+380501110002', 1, '10 min', 'Ann');
SELECT sms_list_add('conf', '+380501110003', 2, '10 min', 'Ben');
SELECT sms_list_add('conf', '+380501110004', 3, '10 min');

-- an ack at level 1: the acker is told "acknowledged", the other one paged
-- "taken by Alice" and stops waiting (CLOSED); level 2 and 3 get nothing
SELECT sms_enqueue('db1 down', 'conf', channel => 'modem') AS a1 \gset
SELECT submit_alarm(:'a1');
SELECT sms_receive('050 111 0001', 'ok ' || :'a1');
SELECT * FROM confirmations(:'a1');
SELECT * FROM recipients(:'a1');
-- a second ack confirms nothing again
SELECT sms_receive('+380501110001', :'a1');
SELECT count(*) FROM confirmations(:'a1');
SELECT kind, phone, detail FROM smsdispatch.event e JOIN smsdispatch.message m ON m.id = e.message_id
 WHERE m.number = :'a1' AND kind IN ('acked', 'duplicate_ack', 'confirmation') ORDER BY e.id;

-- an ack at level 2: Alice and Ann, paged at level 1 and timed out, are
-- told; the recipient without a name is named by phone
SELECT sms_enqueue('db2 down', 'conf') AS a2 \gset
SELECT submit_alarm(:'a2');
UPDATE smsdispatch.message_recipient r SET deadline = now() - interval '1 s'
  FROM smsdispatch.message m WHERE m.id = r.message_id AND m.number = :'a2';
UPDATE smsdispatch.message SET check_at = now() - interval '1 s' WHERE number = :'a2';
SELECT escalated FROM smsdispatch.escalate();
SELECT submit_alarm(:'a2');
SELECT sms_ack(:'a2', '+380501110003');
SELECT * FROM confirmations(:'a2');
SELECT * FROM recipients(:'a2');

-- a cancel tells those paged; an SMS a channel has in hand counts as paged
-- and its recipient stops waiting too; one never taken is withdrawn
SELECT sms_enqueue('db3 down', 'conf') AS a3 \gset
UPDATE verification.sms_log l SET send_state = 'sending'
  FROM smsdispatch.message m
 WHERE l.message_id = m.id AND m.number = :'a3' AND l.phone_number = '+380501110001';
SELECT sms_cancel(:'a3');
SELECT * FROM confirmations(:'a3');
SELECT * FROM recipients(:'a3');
SELECT phone_number, send_state, last_error FROM verification.sms_log l
  JOIN smsdispatch.message m ON m.id = l.message_id WHERE m.number = :'a3' ORDER BY l.id;

-- exhaustion tells everyone paged
SELECT sms_list_create('solo');
SELECT sms_list_add('solo', '+380501110005', 1, '1 min', 'Sol');
SELECT sms_enqueue('db4 down', 'solo') AS a4 \gset
SELECT submit_alarm(:'a4');
UPDATE smsdispatch.message_recipient r SET deadline = now() - interval '1 s'
  FROM smsdispatch.message m WHERE m.id = r.message_id AND m.number = :'a4';
UPDATE smsdispatch.message SET check_at = now() - interval '1 s' WHERE number = :'a4';
SELECT exhausted FROM smsdispatch.escalate();
SELECT * FROM confirmations(:'a4');

-- confirmations are nobody's page: when they fail, no recipient changes and
-- the alarm is not escalated or reopened
UPDATE verification.sms_log SET send_state = 'failed', last_error = 'test'
 WHERE confirms IS NOT NULL;
SELECT count(*) FROM smsdispatch.event WHERE kind = 'send_failed';
SELECT number, state FROM smsdispatch.message WHERE list IN ('conf', 'solo') ORDER BY id;

-- a list with confirmations off gets none
SELECT sms_list_confirmations('solo', false);
SELECT sms_enqueue('db5 down', 'solo') AS a5 \gset
SELECT submit_alarm(:'a5');
SELECT sms_receive('+380501110005', :'a5');
SELECT count(*) FROM confirmations(:'a5');
SELECT * FROM recipients(:'a5');

-- errors
SELECT sms_list_confirmations('nosuch', true);
SELECT sms_list_confirmations('solo', NULL);
SELECT smsdispatch.confirm_closed(ARRAY[1::bigint], 'forgotten');
CREATE ROLE regress_conf_sender IN ROLE smsdispatch_sender;
SET ROLE regress_conf_sender;
SELECT sms_list_confirmations('solo', true);
RESET ROLE;
SELECT confirmations FROM smsdispatch.recipient_list WHERE name = 'solo';

-- send windows: when a window is open, and when it next opens (Kyiv, both
-- DST changes of 2026: 29 March 03:00 -> 04:00, 25 October 04:00 -> 03:00)
ALTER SYSTEM SET smsdispatch.timezone = 'Europe/Kyiv';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW smsdispatch.timezone;
SET timezone = 'UTC';
SELECT w, at, smsdispatch.send_window_next(w, at) AS opens
  FROM (VALUES
	('08:00-21:00', timestamptz '2026-03-28 22:00+02'),	-- before spring forward
	('08:00-21:00', '2026-03-29 07:59+03'),
	('08:00-21:00', '2026-03-29 08:00+03'),				-- open: NULL
	('08:00-21:00', '2026-10-24 23:00+03'),				-- before fall back
	('08:00-21:00', '2026-10-25 20:59+02'),				-- open
	('Mon-Fri 08:00-21:00', '2026-12-04 21:30+02'),		-- Friday night: Monday
	('Sat,Sun 10:00-12:00', '2026-12-02 12:00+02'),		-- Wednesday: Saturday
	('Fri-Mon 09:00-10:00', '2026-12-01 09:30+02'),		-- Tuesday: Friday
	('22:00-06:00', '2026-12-01 23:00+02'),				-- open past midnight
	('22:00-06:00', '2026-12-02 05:59:59+02'),			-- still open
	('22:00-06:00', '2026-12-02 06:00+02'),				-- closed: 22:00
	('Mon 22:00-06:00', '2026-12-01 05:00+02'),			-- Tuesday morning: Monday's night
	('Mon 22:00-06:00', '2026-12-01 07:00+02'),			-- next Monday
	('08:00:00-08:00:05', '2026-12-01 08:00:05+02'),	-- a few seconds wide
	('always', '2026-12-01 03:00+02')) AS t(w, at);
RESET timezone;
SELECT smsdispatch.send_window_next('bogus');
SELECT smsdispatch.send_window_next('Mon-Xyz 08:00-09:00');
SELECT smsdispatch.send_window_next('25:00-26:00');
SELECT smsdispatch.send_window_next('08:00-08:00');
SELECT smsdispatch.send_window_next('Mon-Fri08:00-21:00');
ALTER SYSTEM SET smsdispatch.send_window_text = 'nightly';
ALTER SYSTEM SET smsdispatch.timezone = 'Mars/Olympus';

-- a medication reminder outside its window is held, queued; a 2FA code
-- and an alarm's SMS leave at once
ALTER SYSTEM SET smsdispatch.timezone = 'UTC';
-- a one-minute window twelve hours from now (not echoed: it names the time)
\set ECHO none
SELECT format('ALTER SYSTEM SET smsdispatch.send_window_medication_request = %L',
			  to_char(now() AT TIME ZONE 'UTC' + interval '12 hours', 'HH24:MI') || '-' ||
			  to_char(now() AT TIME ZONE 'UTC' + interval '12 hours 1 minute', 'HH24:MI'))
\gexec
\set ECHO all
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT sms_send('+380501110011', 'take your pill', 'medication_request', 'modem') AS med \gset
SELECT sms_send('+380501110011', 'code 4812', '2FA', 'modem') AS tfa \gset
SELECT body FROM smsdispatch.claim_sends('modem', 10) ORDER BY id;
SELECT send_state, attempts, held_until > now() + interval '11 hours' AS held_half_a_day,
	   held_until = smsdispatch.send_window_opens('medication_request') AS until_it_opens
  FROM verification.sms_log WHERE id = :med;
-- held rows are not claimed again, nor expired, however old
UPDATE verification.sms_log SET inserted_at = now() - interval '3 days' WHERE id = :med;
SELECT count(*) FROM smsdispatch.claim_sends('modem', 10);
SELECT send_state, last_error FROM verification.sms_log WHERE id = :med;
-- once its window opens the worker's duty releases the row and it leaves:
-- validity counts from the release, not from the insert three days ago
ALTER SYSTEM RESET smsdispatch.send_window_medication_request;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
UPDATE verification.sms_log SET held_until = now() - interval '1 s' WHERE id = :med;
SELECT * FROM smsdispatch.release_held();
SELECT body FROM smsdispatch.claim_sends('modem', 10);
SELECT send_state, attempts, held_until, released_at IS NOT NULL AS released
  FROM verification.sms_log WHERE id = :med;
ALTER SYSTEM RESET smsdispatch.timezone;

-- the inbox keeps the sender as given and in E.164; with a handler set,
-- SMS that are not acks wait for it, acks do not
SELECT sms_receive('050 111 0099', 'hello');
ALTER SYSTEM SET smsdispatch.inbound_handler = 'public.on_sms';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT sms_receive('+380501110098', 'status?');
SELECT sms_enqueue('db6 down', 'conf') AS a6 \gset
SELECT submit_alarm(:'a6');
SELECT sms_receive('+380501110001', :'a6');
SELECT sender, sender_e164, outcome, handler_state FROM smsdispatch.inbox
 WHERE coalesce(sender_e164, sender) LIKE '+38050111%' ORDER BY id;
ALTER SYSTEM RESET smsdispatch.inbound_handler;
SELECT pg_reload_conf();

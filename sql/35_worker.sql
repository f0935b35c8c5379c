-- The worker's duties called directly, without the worker (it serves
-- another database here): escalation steps, the loopback channel, failed
-- sends, spool import records, run_once() and their bad input.
DROP EXTENSION IF EXISTS smsdispatch CASCADE;
CREATE EXTENSION smsdispatch;
SELECT sms_list_create('duty', 'escalation by hand', 1);
SELECT sms_list_add('duty', '+380501000001', 1, '10 min');
SELECT sms_list_add('duty', '+380501000002', 1, '20 min');
SELECT sms_list_add('duty', '+380501000003', 3, '10 min');
SELECT sms_enqueue('by hand', 'duty') AS number \gset

-- nothing is due before a channel submits level 1
SELECT alarms_checked, timed_out, escalated, next_check FROM smsdispatch.escalate();
SELECT submitted FROM smsdispatch.loopback_submit();
SELECT phone, status, deadline - sent_at AS waits FROM smsdispatch.message_recipient ORDER BY phone;
SELECT check_at = (SELECT min(deadline) FROM smsdispatch.message_recipient) AS check_at_is_earliest_deadline
  FROM smsdispatch.message;
SELECT alarms_checked, timed_out, escalated FROM smsdispatch.escalate();

-- the first deadline passes: that recipient times out, the level goes on
UPDATE smsdispatch.message_recipient SET deadline = now() - interval '1 s'
 WHERE phone = '+380501000001';
UPDATE smsdispatch.message SET check_at = now() - interval '1 s';
SELECT alarms_checked, timed_out, escalated FROM smsdispatch.escalate();
SELECT phone, status FROM smsdispatch.message_recipient ORDER BY phone;
SELECT check_at = (SELECT deadline FROM smsdispatch.message_recipient
					WHERE phone = '+380501000002') AS next_check_is_the_other_deadline
  FROM smsdispatch.message;

-- the second one's SMS fails for good: the level is over at once, and the
-- empty level 2 is skipped
UPDATE verification.sms_log SET gateway_status = 'Undeliverable'
 WHERE phone_number = '+380501000002';
SELECT phone, status FROM smsdispatch.message_recipient ORDER BY phone;
SELECT check_at <= now() AS due_now FROM smsdispatch.message;
SELECT alarms_checked, timed_out, escalated, repeated, exhausted FROM smsdispatch.escalate();
SELECT level, round, state FROM smsdispatch.message;
SELECT phone_number, send_state FROM verification.sms_log ORDER BY id;

-- level 3 is the last: with repeat = 1 a second round starts at level 1
SELECT submitted FROM smsdispatch.loopback_submit();
UPDATE verification.sms_log SET send_state = 'failed', last_error = 'test'
 WHERE phone_number = '+380501000003' AND send_state = 'submitted';
SELECT alarms_checked, timed_out, escalated, repeated, exhausted FROM smsdispatch.escalate();
SELECT level, round, state FROM smsdispatch.message;
SELECT phone, status FROM smsdispatch.message_recipient ORDER BY phone;

-- the second round runs out: exhausted
SELECT submitted FROM smsdispatch.loopback_submit();
UPDATE verification.sms_log SET send_state = 'failed', last_error = 'test'
 WHERE send_state = 'submitted' AND id > 3;
SELECT alarms_checked, escalated, repeated, exhausted FROM smsdispatch.escalate();
SELECT submitted FROM smsdispatch.loopback_submit();
UPDATE verification.sms_log SET send_state = 'failed', last_error = 'test'
 WHERE send_state = 'submitted' AND phone_number = '+380501000003';
SELECT alarms_checked, escalated, repeated, exhausted FROM smsdispatch.escalate();
SELECT level, round, state, closed_at IS NOT NULL AS closed, check_at IS NULL AS nothing_to_check
  FROM smsdispatch.message;
SELECT kind, level, detail FROM smsdispatch.event
 WHERE kind IN ('level_started', 'escalated', 'repeated', 'exhausted') ORDER BY id;

-- a spool file is imported once, however often it is offered
SELECT smsdispatch.spool_enqueue('a.xml', 10, '2026-01-01', 'abc', 'duty', 'from spool', NULL, NULL) LIKE 'alarm %' AS imported;
SELECT smsdispatch.spool_enqueue('a.xml', 10, '2026-01-01', 'abc', 'duty', 'from spool', NULL, NULL) AS again;
SELECT source, body FROM smsdispatch.message WHERE body = 'from spool';
SELECT smsdispatch.spool_enqueue('b.xml', 10, '2026-01-01', 'abc', NULL, 'code 1', ARRAY['+380507000001'], '2FA');
SELECT phone_number, type, body FROM verification.sms_log WHERE message_id IS NULL;
-- a refused file leaves no record, so it is not mistaken for imported
SELECT smsdispatch.spool_enqueue('c.xml', 10, '2026-01-01', 'abc', 'nobody', 'x', NULL, NULL);
SELECT smsdispatch.spool_enqueue('d.xml', 10, '2026-01-01', 'abc', NULL, 'x', ARRAY['not a phone'], NULL);
SELECT smsdispatch.spool_enqueue('e.xml', 10, '2026-01-01', 'abc', NULL, 'x', ARRAY['+380507000001'], 'fax');
SELECT name FROM smsdispatch.spool_file ORDER BY name;

-- run_once(): one pass here (no spool directory, no loopback channel)
SELECT smsdispatch.run_once() - 'alarms_checked';

-- bad input
SELECT * FROM smsdispatch.escalate(0);
SELECT * FROM smsdispatch.escalate(NULL);
SELECT smsdispatch.setting('work_mem');
SELECT smsdispatch.setting('smsdispatch.no_such_setting');
SELECT smsdispatch.setting('smsdispatch.naptime');

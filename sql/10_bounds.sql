-- Bounds on what the API stores and on what it builds from stored data
-- (issue 25): over-long names and descriptions are refused; a list name
-- made long before 1.2, or full of quotes and newlines, neither stops the
-- escalation nor forges an alarm's reason; times and periods out of range
-- get their own errors; the send windows' time zone is one PostgreSQL can
-- show.
SELECT regress.reset();

-- names the API stores: list names 63 characters, people's names and
-- descriptions 200; the longest accepted
SELECT sms_list_create(repeat('x', 63));
SELECT sms_list_create('bounds', repeat('d', 200));
SELECT sms_list_add('bounds', '+380501200001', 1, '1 min', repeat('n', 200));
-- and one character more refused (rolled back, so that nothing after
-- depends on it)
BEGIN;
SELECT regress.try($$SELECT sms_list_create(repeat('x', 100000))$$);
SELECT regress.try($$SELECT sms_list_create(repeat('x', 64))$$);
SELECT regress.try($$SELECT sms_list_create('bounds2', repeat('d', 201))$$);
SELECT regress.try($$SELECT sms_list_add('bounds', '+380501200002', name => repeat('n', 201))$$);
SELECT regress.try($$SELECT sms_list_change('bounds', '+380501200001', name => repeat('n', 201))$$);
SELECT regress.try($$SELECT sms_list_rename('bounds', repeat('r', 64))$$);
SELECT regress.try($$SELECT sms_override_add('bounds', 1, '+380501200002', now(), now() + '1 h', repeat('o', 201))$$);
ROLLBACK;
SELECT length(name) FROM smsdispatch.recipient_list ORDER BY 1;
SELECT length(name) FROM smsdispatch.list_member;

-- on duty at an infinite time: refused, not "cannot subtract infinite dates"
SELECT sms_rotation_create('bounds', 1, '1 week', '09:00', 'UTC', '2026-01-05');
SELECT regress.try($$SELECT * FROM sms_oncall('bounds', 'infinity')$$);
SELECT regress.try($$SELECT * FROM sms_oncall('bounds', '-infinity')$$);
SELECT level, phone, duty FROM sms_oncall('bounds', '2026-02-01 12:00+00');

-- a rotation period of whole days that is too long is out of range
SELECT sms_rotation_drop('bounds', 1);
SELECT regress.try($$SELECT sms_rotation_create('bounds', 1, '100000 days')$$);
SELECT regress.try($$SELECT sms_rotation_create('bounds', 1, '367 days')$$);
SELECT regress.try($$SELECT sms_rotation_create('bounds', 1, '-1 day')$$);
SELECT regress.try($$SELECT sms_rotation_create('bounds', 1, '36 hours')$$);
SELECT regress.try($$SELECT sms_rotation_create('bounds', 1, '366 days', '09:00', 'UTC')$$);

-- a list name with a quote and a newline cannot forge the reason of its
-- exhausted alarm: the reason quotes it with its escapes
SELECT sms_list_create(E'ops" acknowledged it.\nWARNING:  alarm 0000 is acked: "');
SELECT sms_list_add(E'ops" acknowledged it.\nWARNING:  alarm 0000 is acked: "', '+380501200010',
					1, '1 min');
SELECT sms_enqueue('bounds check', E'ops" acknowledged it.\nWARNING:  alarm 0000 is acked: "');
SELECT submitted FROM smsdispatch.loopback_submit();
UPDATE verification.sms_log SET gateway_status = 'Undeliverable'
 WHERE phone_number = '+380501200010';
SELECT alarms_checked, exhausted FROM smsdispatch.escalate();

-- a list made before 1.2 with a 100,000-character name (inserted the way
-- 1.1 let it be made): its alarm exhausts in the same pass as another
-- one, the reason cuts the name
INSERT INTO smsdispatch.recipient_list (name) VALUES (repeat('L', 100000)), ('plain');
SELECT sms_list_add(l.name, '+380501200011', 1, '1 min')
  FROM smsdispatch.recipient_list l WHERE l.name IN (repeat('L', 100000), 'plain');
SELECT count(sms_enqueue('bounds check', l.name)) AS enqueued
  FROM smsdispatch.recipient_list l WHERE l.name IN (repeat('L', 100000), 'plain');
SELECT submitted FROM smsdispatch.loopback_submit();
UPDATE verification.sms_log SET gateway_status = 'Undeliverable'
 WHERE phone_number = '+380501200011';
SELECT alarms_checked, exhausted FROM smsdispatch.escalate();
SELECT length(list), state FROM smsdispatch.message ORDER BY id;

-- the alarm's reason, whatever its length and however JSON escapes it,
-- fits a NOTIFY payload
SET client_min_messages = error;
SELECT smsdispatch.alarm_alert('0000', 'exhausted', repeat(E'\u0001', 100000));
RESET client_min_messages;

-- the send windows' time zone: one the TimeZone setting takes, with
-- offsets PostgreSQL reads back in a timestamp
ALTER SYSTEM SET smsdispatch.timezone = 'UTC+25';
ALTER SYSTEM SET smsdispatch.timezone = 'UTC-16';
ALTER SYSTEM SET smsdispatch.timezone = 'AAA+10BBB+25';
ALTER SYSTEM SET smsdispatch.timezone = 'No/Such_Zone';
ALTER SYSTEM SET smsdispatch.timezone = 'UTC+15';
ALTER SYSTEM SET smsdispatch.timezone = 'Pacific/Kiritimati';
ALTER SYSTEM RESET smsdispatch.timezone;

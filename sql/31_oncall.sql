-- List upkeep, rotations, overrides and pauses: every function with its
-- errors, who may call them, who sms_oncall says is on duty at fixed
-- instants (both changes of daylight saving time in Kyiv), and what alarms
-- page when their levels start.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SELECT regress.reset();

SELECT sms_list_create('oncall', 'Database on-call');
SELECT sms_list_add('oncall', '+380501111111', 1, '10 min', 'Alice');
SELECT sms_list_add('oncall', '+380502222222', 1, '10 min', 'Bob');
SELECT sms_list_add('oncall', '+380503333333', 2, '20 min', 'Carol');
SELECT sms_list_add('oncall', '+380501111111', 3, '30 min', 'Alice');

-- remove: from one level, or from all; errors name the list and the phone
SELECT sms_list_remove('oncall', '+380 50 111 11 11', 3);
SELECT list, phone, name, level FROM smsdispatch.list_member ORDER BY id;
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_list_remove('nosuch', '+380501111111')$$,
	$$SELECT sms_list_remove(NULL, '+380501111111')$$,
	$$SELECT sms_list_remove('oncall', '+380509999999')$$,
	$$SELECT sms_list_remove('oncall', '+380501111111', 2)$$,
	$$SELECT sms_list_remove('oncall', '+380501111111', 4)$$,
	$$SELECT sms_list_remove('oncall', 'not a phone')$$,
	$$SELECT sms_list_remove('oncall', NULL)$$]) AS s;

-- change: level, phone, timeout, name; a phone on several levels needs
-- the level to move
SELECT sms_list_add('oncall', '+380504444444', 3, '30 min', 'Dave');
SELECT sms_list_change('oncall', '+380504444444', new_level => 2, ack_timeout => '25 min');
SELECT sms_list_change('oncall', '+380502222222', name => 'Robert', new_phone => '+380502222200');
SELECT sms_list_change('oncall', '+380503333333', name => '');
SELECT list, phone, name, level, ack_timeout FROM smsdispatch.list_member ORDER BY id;
SELECT sms_list_add('oncall', '+380501111111', 3, '30 min', 'Alice');
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_list_change('nosuch', '+380501111111', name => 'x')$$,
	$$SELECT sms_list_change('oncall', '+380509999999', name => 'x')$$,
	$$SELECT sms_list_change('oncall', '+380501111111', 2, name => 'x')$$,
	$$SELECT sms_list_change('oncall', '+380501111111')$$,
	$$SELECT sms_list_change('oncall', '+380501111111', new_level => 2)$$,
	$$SELECT sms_list_change('oncall', '+380501111111', 1, new_level => 3)$$,
	$$SELECT sms_list_change('oncall', '+380501111111', 1, new_level => 0)$$,
	$$SELECT sms_list_change('oncall', '+380501111111', 1, new_phone => '+380502222200')$$,
	$$SELECT sms_list_change('oncall', '+380501111111', 1, new_phone => 'garbage')$$,
	$$SELECT sms_list_change('oncall', '+380501111111', 1, ack_timeout => '0')$$]) AS s;
SELECT list, phone, name, level, ack_timeout FROM smsdispatch.list_member ORDER BY id;
-- without a level, a new phone applies to every level the phone is on
SELECT sms_list_change('oncall', '+380501111111', new_phone => '+380501111100');
SELECT phone, level FROM smsdispatch.list_member WHERE name = 'Alice' ORDER BY level;
SELECT sms_list_change('oncall', '+380501111100', new_phone => '+380501111111');

-- rename and drop; errors
SELECT sms_list_create('spare');
SELECT sms_list_add('spare', '+380505555555');
SELECT sms_list_rename('spare', 'reserve');
SELECT name FROM smsdispatch.recipient_list ORDER BY id;
SELECT list, phone FROM smsdispatch.list_member WHERE phone = '+380505555555';
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_list_rename('nosuch', 'x')$$,
	$$SELECT sms_list_rename('reserve', 'oncall')$$,
	$$SELECT sms_list_rename('reserve', ' ')$$,
	$$SELECT sms_list_rename('reserve', NULL)$$,
	$$SELECT sms_list_drop('nosuch')$$]) AS s;
-- a list with open alarms is neither renamed nor dropped
SELECT sms_enqueue('Disk full', 'reserve') AS number \gset
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_list_rename('reserve', 'other')$$,
	$$SELECT sms_list_drop('reserve')$$]) AS s;
SELECT sms_cancel(:'number');
SELECT sms_list_rename('reserve', 'other');
SELECT list, state FROM smsdispatch.message;
SELECT sms_list_drop('other');
SELECT (SELECT count(*) FROM smsdispatch.recipient_list WHERE name = 'other') AS lists,
	   (SELECT count(*) FROM smsdispatch.list_member WHERE list = 'other') AS members,
	   (SELECT list FROM smsdispatch.message) AS closed_alarm_keeps_its_list;

-- pause and resume; errors
SELECT sms_list_pause('oncall', '+380501111111', now() + interval '7 days');
SELECT sms_list_pause('oncall', '+380503333333', '2030-01-10', '2030-01-01');
SELECT list, phone, ends_at - starts_at AS lasts FROM smsdispatch.member_pause ORDER BY id;
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_list_pause('nosuch', '+380501111111', now() + interval '1 day')$$,
	$$SELECT sms_list_pause('oncall', '+380509999999', now() + interval '1 day')$$,
	$$SELECT sms_list_pause('oncall', '+380501111111', NULL)$$,
	$$SELECT sms_list_pause('oncall', '+380501111111', '2030-01-01', NULL)$$,
	$$SELECT sms_list_pause('oncall', '+380501111111', '2020-01-01')$$,
	$$SELECT sms_list_pause('oncall', '+380501111111', '2030-01-01', '2030-02-01')$$,
	$$SELECT sms_list_resume('oncall', '+380509999999')$$]) AS s;
SELECT sms_list_resume('oncall', '+380503333333') AS future_pauses_ended;
SELECT count(*) FROM smsdispatch.member_pause;

-- rotations and overrides: errors (level 3 has nobody for an override to
-- stand in for)
SELECT sms_list_remove('oncall', '+380501111111', 3);
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_rotation_create('nosuch', 1)$$,
	$$SELECT sms_rotation_create('oncall', 4)$$,
	$$SELECT sms_rotation_create('oncall', 1, '36 hours')$$,
	$$SELECT sms_rotation_create('oncall', 1, '1 mon')$$,
	$$SELECT sms_rotation_create('oncall', 1, '0 days')$$,
	$$SELECT sms_rotation_create('oncall', 1, NULL)$$,
	$$SELECT sms_rotation_create('oncall', 1, '1 week', '09:00', 'Mars/Olympus')$$,
	$$SELECT sms_rotation_create('oncall', 1, '1 week', '09:00', NULL)$$,
	$$SELECT sms_rotation_create('oncall', 1, '1 week', NULL)$$,
	$$SELECT sms_rotation_drop('oncall', 1)$$,
	$$SELECT sms_override_add('nosuch', 1, '+380506666666', now(), now() + interval '1 day')$$,
	$$SELECT sms_override_add('oncall', 0, '+380506666666', now(), now() + interval '1 day')$$,
	$$SELECT sms_override_add('oncall', 1, 'x', now(), now() + interval '1 day')$$,
	$$SELECT sms_override_add('oncall', 1, '+380506666666', '2030-01-02', '2030-01-01')$$,
	$$SELECT sms_override_add('oncall', 1, '+380506666666', '2030-01-01', '2030-01-01')$$,
	$$SELECT sms_override_add('oncall', 1, '+380506666666', NULL, '2030-01-01')$$,
	$$SELECT sms_override_add('oncall', 3, '+380506666666', '2030-01-01', '2030-01-02')$$,
	$$SELECT sms_override_add('oncall', 1, '+380506666666', now(), now() + interval '1 day', ack_timeout => '-1 min')$$,
	$$SELECT sms_override_remove(424242)$$,
	$$SELECT * FROM sms_oncall('nosuch')$$,
	$$SELECT * FROM sms_oncall('oncall', NULL)$$]) AS s;
SELECT sms_rotation_create('oncall', 1, '1 day', '08:00', 'UTC', '2026-01-01');
SELECT regress.try($$SELECT sms_rotation_create('oncall', 1)$$);
SELECT sms_rotation_drop('oncall', 1);
SELECT (SELECT count(*) FROM smsdispatch.rotation) AS rotations,
	   (SELECT count(*) FROM smsdispatch.duty_override) AS overrides;

-- a weekly rotation handing off on Mondays at 09:00 in Kyiv, from Monday
-- 2 March 2026, Ann then Ben then Cat; Dave on level 2; Oscar covers the
-- rotation for two days from Saturday 24 October 12:00, across the end of
-- summer time. Kyiv is UTC+2 in winter, UTC+3 in summer (from Sunday 29
-- March 03:00 to Sunday 25 October 04:00).
SELECT sms_list_create('rota');
SELECT sms_list_add('rota', '+380507000001', 1, '10 min', 'Ann'),
	   sms_list_add('rota', '+380507000002', 1, '10 min', 'Ben'),
	   sms_list_add('rota', '+380507000003', 1, '10 min', 'Cat'),
	   sms_list_add('rota', '+380504444444', 2, '15 min', 'Dave');
SELECT sms_rotation_create('rota', 1, '1 week', '09:00', 'Europe/Kyiv', '2026-03-02');
SELECT sms_override_add('rota', 1, '+380507000009', '2026-10-24 12:00 Europe/Kyiv',
						'2026-10-26 12:00 Europe/Kyiv', 'Oscar') > 0 AS override_added;
SELECT t.at AS at_utc, t.why,
	   (SELECT string_agg(o.name || ' (' || o.duty || ')', ', ' ORDER BY o.phone)
		  FROM sms_oncall('rota', t.at) o WHERE o.level = 1) AS level_1,
	   (SELECT string_agg(o.name, ', ') FROM sms_oncall('rota', t.at) o WHERE o.level = 2) AS level_2
  FROM (VALUES
	(timestamptz '2026-03-02 06:59:59+00', 'Mon 08:59:59 EET: before the first hand-off'),
	('2026-03-02 07:00+00', 'Mon 09:00 EET: Ann''s first week'),
	('2026-03-09 06:59+00', 'Mon 08:59 EET'),
	('2026-03-09 07:00+00', 'Mon 09:00 EET: Ben'),
	('2026-03-16 07:00+00', 'Mon 09:00 EET: Cat'),
	('2026-03-23 07:00+00', 'Mon 09:00 EET: Ann again'),
	('2026-03-29 00:59+00', 'Sun 02:59 EET, before summer time'),
	('2026-03-29 01:00+00', 'Sun 04:00 EEST, summer time began'),
	('2026-03-30 05:59+00', 'Mon 08:59 EEST'),
	('2026-03-30 06:00+00', 'Mon 09:00 EEST: Ben, an hour earlier in UTC'),
	('2026-10-19 06:00+00', 'Mon 09:00 EEST: Ann'),
	('2026-10-24 08:59+00', 'Sat 11:59 EEST'),
	('2026-10-24 09:00+00', 'Sat 12:00 EEST: Oscar''s override'),
	('2026-10-25 00:59+00', 'Sun 03:59 EEST'),
	('2026-10-25 01:00+00', 'Sun 03:00 EET, summer time ended'),
	('2026-10-26 06:59+00', 'Mon 08:59 EET'),
	('2026-10-26 07:00+00', 'Mon 09:00 EET: Ben''s turn, still covered'),
	('2026-10-26 09:59+00', 'Mon 11:59 EET'),
	('2026-10-26 10:00+00', 'Mon 12:00 EET: the override is over'),
	('2026-11-02 06:59+00', 'Mon 08:59 EET'),
	('2026-11-02 07:00+00', 'Mon 09:00 EET: Cat, an hour later in UTC')) AS t(at, why)
 ORDER BY t.at;
-- a paused member of a rotation is not on duty in its turn: nobody is.
-- Cat's turn is the week from Monday 4 January 2027; she is away until
-- Sunday 10 January.
SELECT sms_list_pause('rota', '+380507000003', '2027-01-10', '2027-01-03');
SELECT level, name, duty FROM sms_oncall('rota', '2027-01-05 12:00+00');
SELECT level, name, duty FROM sms_oncall('rota', '2027-01-10 12:00+00');
SELECT level, name, duty FROM sms_oncall('rota', '2027-01-11 07:00+00');
SELECT sms_list_resume('rota', '+380507000003');

-- an alarm pages whoever is on duty when its level starts: during an
-- override, the override
SELECT sms_rotation_drop('rota', 1);
SELECT sms_rotation_create('rota', 1, '1 day', '00:00', 'UTC', current_date - 30);
SELECT sms_override_add('rota', 1, '+380507000009', now() - interval '1 day',
						now() + interval '1 day', 'Oscar') AS override_id \gset
SELECT sms_enqueue('Replica lag', 'rota') AS number \gset
SELECT phone_number, body FROM verification.sms_log
 WHERE message_id = (SELECT id FROM smsdispatch.message WHERE number = :'number');
SELECT phone, recipient_name, recipient_level, status, sent_at IS NOT NULL AS paged
  FROM smsdispatch.queue WHERE number = :'number' ORDER BY recipient_level, phone;
SELECT sms_cancel(:'number');
-- without the override: the rotation's member of the day
SELECT sms_override_remove(:override_id);
SELECT sms_enqueue('Replica lag again', 'rota') AS number \gset
SELECT l.phone_number = (SELECT o.phone FROM sms_oncall('rota') o WHERE o.level = 1) AS pages_member_on_duty,
	   l.phone_number LIKE '+38050700000_' AS a_rotation_member, count(*) OVER () AS sms
  FROM verification.sms_log l
 WHERE l.message_id = (SELECT id FROM smsdispatch.message WHERE number = :'number');
SELECT sms_cancel(:'number');

-- who is on duty is decided when a level starts, not at enqueue: an
-- override added while level 1 waits is who level 2 pages
SELECT sms_enqueue('Disk full', 'oncall') AS number \gset
SELECT phone, recipient_name, recipient_level, status, sent_at IS NOT NULL AS paged
  FROM smsdispatch.queue WHERE number = :'number' ORDER BY recipient_level, phone;
SELECT sms_override_add('oncall', 2, '+380508888888', now() - interval '1 minute',
						now() + interval '1 hour', 'Olga', '5 min') > 0 AS override_added;
SELECT submitted FROM smsdispatch.loopback_submit();
UPDATE smsdispatch.message_recipient SET deadline = now() - interval '1 s'
 WHERE status = 'NOT_YET_ACK';
UPDATE smsdispatch.message SET check_at = now() - interval '1 s' WHERE state = 'open';
SELECT alarms_checked, timed_out, escalated FROM smsdispatch.escalate();
SELECT phone, recipient_name, recipient_level, status, sent_at IS NOT NULL AS paged
  FROM smsdispatch.queue WHERE number = :'number' ORDER BY recipient_level, phone;
SELECT phone_number, send_state FROM verification.sms_log
 WHERE message_id = (SELECT id FROM smsdispatch.message WHERE number = :'number') ORDER BY id;
-- open alarms keep the recipients they were given: a paged member removed
-- from the list can still acknowledge
SELECT sms_list_remove('oncall', '+380502222200');
SELECT sms_receive('+380502222200', 'ok ' || :'number');
SELECT number, state, acked_by FROM smsdispatch.message WHERE number = :'number';
DELETE FROM smsdispatch.duty_override;
SELECT sms_list_add('oncall', '+380502222200', 1, '10 min', 'Robert');

-- a paused member is not paged; the level's others are
SELECT regress.reset();
SELECT sms_list_create('team');
SELECT sms_list_add('team', '+380501000001', 1, '10 min', 'Alice'),
	   sms_list_add('team', '+380501000002', 1, '10 min', 'Bob'),
	   sms_list_add('team', '+380501000003', 2, '10 min', 'Carol');
SELECT sms_list_pause('team', '+380501000001', now() + interval '14 days');
SELECT sms_enqueue('paused Alice', 'team') AS number \gset
SELECT phone_number FROM verification.sms_log ORDER BY id;
SELECT recipient_name, recipient_level, status FROM smsdispatch.queue ORDER BY 2, 1;
SELECT sms_cancel(:'number');
-- after the pause ends she is paged again
UPDATE smsdispatch.member_pause SET starts_at = now() - interval '14 days', ends_at = now() - interval '1 s';
SELECT sms_enqueue('Alice is back', 'team') AS number \gset
SELECT phone_number FROM verification.sms_log
 WHERE message_id = (SELECT id FROM smsdispatch.message WHERE number = :'number') ORDER BY id;
SELECT sms_cancel(:'number');
-- the same after sms_list_resume
SELECT sms_list_pause('team', '+380501000001', now() + interval '14 days');
SELECT sms_list_resume('team', '+380501000001');
SELECT sms_enqueue('Alice resumed', 'team') AS number \gset
SELECT phone_number FROM verification.sms_log
 WHERE message_id = (SELECT id FROM smsdispatch.message WHERE number = :'number') ORDER BY id;
SELECT sms_cancel(:'number');

-- a level with nobody on duty is passed over at once; with nobody on duty
-- at all, the alarm is due at once and the escalation exhausts it, loudly
SELECT sms_list_pause('team', '+380501000001', now() + interval '1 day'),
	   sms_list_pause('team', '+380501000002', now() + interval '1 day');
SELECT sms_enqueue('level 1 away', 'team') AS number \gset
SELECT level, (SELECT string_agg(phone_number, ', ') FROM verification.sms_log l
				WHERE l.message_id = m.id) AS paged
  FROM smsdispatch.message m WHERE number = :'number';
SELECT detail FROM smsdispatch.event
 WHERE kind = 'level_started' AND message_id = (SELECT id FROM smsdispatch.message WHERE number = :'number');
SELECT sms_cancel(:'number');
SELECT sms_list_pause('team', '+380501000003', now() + interval '1 day');
SELECT * FROM sms_oncall('team');
SELECT sms_enqueue('nobody at all', 'team') AS number \gset
SELECT level, check_at <= now() AS due_at_once,
	   (SELECT count(*) FROM verification.sms_log l WHERE l.message_id = m.id) AS sms
  FROM smsdispatch.message m WHERE number = :'number';
SELECT alarms_checked, escalated, repeated, exhausted FROM smsdispatch.escalate();
SELECT state FROM smsdispatch.message WHERE number = :'number';
SELECT recipient_name, status FROM smsdispatch.queue_history WHERE number = :'number' ORDER BY 1;
-- a member whose pause ends while the alarm waits on level 1 is paged
-- when level 2 starts, though she was off duty when it was raised
SELECT sms_list_resume('team', '+380501000001');
SELECT sms_list_add('team', '+380501000004', 2, '10 min', 'Dan');
UPDATE smsdispatch.member_pause SET starts_at = now() - interval '1 day', ends_at = now() + interval '1 s'
 WHERE phone = '+380501000003';
SELECT sms_enqueue('Carol soon back', 'team') AS number \gset
SELECT recipient_name, recipient_level, status FROM smsdispatch.queue ORDER BY 2, 1;
UPDATE smsdispatch.member_pause SET ends_at = now() WHERE phone = '+380501000003';
SELECT submitted FROM smsdispatch.loopback_submit();
UPDATE smsdispatch.message_recipient SET deadline = now() - interval '1 s' WHERE status = 'NOT_YET_ACK';
UPDATE smsdispatch.message SET check_at = now() - interval '1 s' WHERE state = 'open';
SELECT alarms_checked, timed_out, escalated FROM smsdispatch.escalate();
SELECT recipient_name, recipient_level, status, sent_at IS NULL AS unsent FROM smsdispatch.queue ORDER BY 2, 1;
SELECT phone_number FROM verification.sms_log
 WHERE message_id = (SELECT id FROM smsdispatch.message WHERE number = :'number') ORDER BY id;
SELECT sms_cancel(:'number');

-- privileges: senders raise alarms but cannot change who they page; admins can
CREATE ROLE regress_oncall_sender IN ROLE smsdispatch_sender;
CREATE ROLE regress_oncall_admin IN ROLE smsdispatch_admin;
GRANT USAGE ON SCHEMA regress TO regress_oncall_sender, regress_oncall_admin;
SET ROLE regress_oncall_sender;
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT sms_list_remove('team', '+380501000001')$$,
	$$SELECT sms_list_change('team', '+380501000001', name => 'x')$$,
	$$SELECT sms_list_rename('team', 'x')$$,
	$$SELECT sms_list_drop('team')$$,
	$$SELECT sms_list_pause('team', '+380501000001', now() + interval '1 day')$$,
	$$SELECT sms_list_resume('team', '+380501000001')$$,
	$$SELECT sms_rotation_create('team', 1)$$,
	$$SELECT sms_rotation_drop('team', 1)$$,
	$$SELECT sms_override_add('team', 1, '+380501000009', now(), now() + interval '1 day')$$,
	$$SELECT sms_override_remove(1)$$,
	$$SELECT * FROM sms_oncall('team')$$,
	$$SELECT * FROM smsdispatch.rotation$$,
	$$SELECT * FROM smsdispatch.duty_override$$,
	$$SELECT * FROM smsdispatch.member_pause$$,
	$$DELETE FROM smsdispatch.list_member$$,
	$$SELECT * FROM smsdispatch.on_duty('team', now())$$]) AS s;
RESET ROLE;
SET ROLE regress_oncall_admin;
SELECT sms_list_change('team', '+380501000001', name => 'Alicia');
SELECT sms_rotation_create('team', 1, '1 day', '09:00', 'Europe/Kyiv', '2026-01-01');
SELECT sms_override_add('team', 2, '+380501000009', now(), now() + interval '1 day') > 0 AS override_added;
SELECT count(*) > 0 AS sees_duty FROM sms_oncall('team');
SELECT sms_rotation_drop('team', 1);
SELECT sms_list_remove('team', '+380501000002');
SELECT sms_list_rename('team', 'crew');
SELECT sms_list_drop('crew');
RESET ROLE;
SELECT count(*) AS lists FROM smsdispatch.recipient_list;
REVOKE USAGE ON SCHEMA regress FROM regress_oncall_sender, regress_oncall_admin;
DROP ROLE regress_oncall_sender, regress_oncall_admin;
SELECT regress.reset();

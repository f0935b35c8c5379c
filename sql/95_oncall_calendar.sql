-- The duty calendar: sms_oncall_calendar gives each rotation turn, override
-- and pause of a period with the instants it begins and ends, agrees with
-- sms_oncall at every instant of it, refuses a period it cannot answer, and
-- is for admins only.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SELECT regress.reset();

-- the list of docs/oncall.md: level 1 of rota a weekly rotation handing off
-- on Mondays at 09:00 Kyiv time from Monday 2 March 2026, Ann, Ben, Cat;
-- Dave on level 2; Oscar covers level 1 from Saturday 24 October 12:00 to
-- Monday 26 October 12:00, across the end of summer time (Sunday 25 October
-- 04:00 EEST is 03:00 EET)
SELECT sms_list_create('rota');
SELECT sms_list_add('rota', '+380507000001', 1, '10 min', 'Ann'),
	   sms_list_add('rota', '+380507000002', 1, '10 min', 'Ben'),
	   sms_list_add('rota', '+380507000003', 1, '10 min', 'Cat'),
	   sms_list_add('rota', '+380504444444', 2, '15 min', 'Dave');
SELECT sms_rotation_create('rota', 1, '1 week', '09:00', 'Europe/Kyiv', '2026-03-02');
SELECT sms_override_add('rota', 1, '+380507000009', '2026-10-24 12:00 Europe/Kyiv',
						'2026-10-26 12:00 Europe/Kyiv', 'Oscar') > 0 AS override_added;

-- four weeks, printed in Kyiv time: each turn from Monday 09:00 to Monday
-- 09:00 (+03 before the change, +02 after), Ann's turn cut by Oscar's
-- override, which runs into Ben's; Dave all along
SET TimeZone = 'Europe/Kyiv';
SELECT level, name, duty, since, "until"
  FROM sms_oncall_calendar('rota', '2026-10-12 09:00', '2026-11-09 09:00');
SET TimeZone = 'UTC';
-- the same in UTC, with every column: a weekly hand-off is an hour later in
-- UTC after the change
SELECT * FROM sms_oncall_calendar('rota', '2026-10-12 06:00+00', '2026-11-09 07:00+00');

-- a period that starts before the rotation's first turn: level 1 has nobody
-- on duty until then (an alarm would pass it over)
SELECT level, name, duty, since, "until"
  FROM sms_oncall_calendar('rota', '2026-02-27 00:00+00', '2026-03-10 00:00+00');

-- a pause shows: Cat is away from Wednesday 4 November 12:00 until Friday
-- 6 November 12:00, in her turn, so level 1 has nobody; Dave's afternoon
-- off on 5 November leaves level 2 with nobody. (sms_list_pause refuses a
-- pause that ends in the past; the test's dates are fixed.)
INSERT INTO smsdispatch.member_pause (list, phone, starts_at, ends_at) VALUES
	('rota', '+380507000003', '2026-11-04 10:00+00', '2026-11-06 10:00+00'),
	('rota', '+380504444444', '2026-11-05 12:00+00', '2026-11-05 18:00+00');
SELECT level, name, duty, since, "until"
  FROM sms_oncall_calendar('rota', '2026-11-02 07:00+00', '2026-11-09 07:00+00');

-- two overlapping overrides of one level are both on duty: each has its
-- own row, and who they replace comes back when both are over
SELECT sms_override_add('rota', 2, '+380507000010', '2026-11-07 10:00+00',
						'2026-11-08 10:00+00', 'Olga', '5 min') > 0 AS override_added,
	   sms_override_add('rota', 2, '+380507000011', '2026-11-07 22:00+00',
						'2026-11-08 22:00+00', 'Pavlo') > 0 AS override_added;
SELECT level, name, ack_timeout, duty, since, "until"
  FROM sms_oncall_calendar('rota', '2026-11-07 00:00+00', '2026-11-09 00:00+00')
 WHERE level = 2;

-- the calendar agrees with sms_oncall: at every hand-off, override and
-- pause boundary, a microsecond before each, and every 20 minutes of eight
-- weeks and a half (the period ends in a turn), the rows covering the
-- instant are what sms_oncall says then, and a 'nobody' row is there
-- exactly when a level with members has nobody on duty. The instants that
-- disagree (none), and how many were asked.
CREATE TEMP TABLE calendar AS
	SELECT * FROM sms_oncall_calendar('rota', '2026-10-12 06:00+00', '2026-12-09 12:00+00');
CREATE TEMP TABLE instant AS
	SELECT DISTINCT t.at
	  FROM (SELECT c.since FROM calendar c
			UNION ALL SELECT c.since - interval '1 microsecond' FROM calendar c
			UNION ALL SELECT generate_series(timestamptz '2026-10-12 06:00+00',
											 '2026-12-09 11:59+00', '20 min')) AS t (at)
	 WHERE t.at >= '2026-10-12 06:00+00';
SELECT i.at, 'calendar' AS says, c.level, c.phone, c.duty
  FROM instant i JOIN calendar c ON c.since <= i.at AND i.at < c."until" AND c.duty <> 'nobody'
EXCEPT
SELECT i.at, 'calendar', o.level, o.phone, o.duty FROM instant i CROSS JOIN sms_oncall('rota', i.at) o
UNION ALL
(SELECT i.at, 'sms_oncall', o.level, o.phone, o.duty FROM instant i CROSS JOIN sms_oncall('rota', i.at) o
 EXCEPT
 SELECT i.at, 'sms_oncall', c.level, c.phone, c.duty
   FROM instant i JOIN calendar c ON c.since <= i.at AND i.at < c."until" AND c.duty <> 'nobody')
UNION ALL
SELECT i.at, 'nobody row', l.level, NULL, NULL
  FROM instant i CROSS JOIN (VALUES (1), (2)) AS l (level)
 WHERE EXISTS (SELECT 1 FROM calendar c WHERE c.level = l.level AND c.duty = 'nobody'
				  AND c.since <= i.at AND i.at < c."until")
	   = EXISTS (SELECT 1 FROM sms_oncall('rota', i.at) o WHERE o.level = l.level)
ORDER BY 1, 2, 3, 4;
SELECT count(*) AS instants, count(*) FILTER (WHERE i.at <> date_trunc('minute', i.at)) AS just_before_a_change,
	   (SELECT count(*) FROM calendar) AS calendar_rows,
	   (SELECT count(DISTINCT c.duty) FROM calendar c) AS kinds_of_duty
  FROM instant i;
-- and each level's rows cover the period from end to end, and no row
-- ends where the same row of its level begins again (they are joined)
SELECT c.level, range_agg(tstzrange(c.since, c."until")) AS covers,
	   count(*) FILTER (WHERE EXISTS (
			SELECT 1 FROM calendar n
			 WHERE n.level = c.level AND n.since = c."until" AND n.duty = c.duty
			   AND n.phone IS NOT DISTINCT FROM c.phone
			   AND n.name IS NOT DISTINCT FROM c.name
			   AND n.ack_timeout IS NOT DISTINCT FROM c.ack_timeout)) AS not_joined
  FROM calendar c GROUP BY c.level ORDER BY c.level;

-- a daily rotation over a leap year, the longest period asked at once
-- (exactly 366 days): 366 turns, one 23 hours long (the start of summer
-- time) and one 25 (its end), each of them sms_oncall's member at its noon
SELECT sms_list_create('daily');
SELECT sms_list_add('daily', '+380508000001', 1, '5 min', 'Ivan'),
	   sms_list_add('daily', '+380508000002', 1, '5 min', 'Olena');
SELECT sms_rotation_create('daily', 1, '1 day', '08:00', 'Europe/Kyiv', '2026-01-01');
SELECT count(*) AS turns, count(DISTINCT c.phone) AS people, min(c."until" - c.since) AS shortest, max(c."until" - c.since) AS longest,
	   count(*) FILTER (WHERE c.phone IS DISTINCT FROM
						(SELECT o.phone FROM sms_oncall('daily', c.since + interval '4 hours') o)) AS disagree
  FROM sms_oncall_calendar('daily', '2027-07-01 08:00 Europe/Kyiv', '2028-07-01 08:00 Europe/Kyiv') c;

-- a hand-off in the hour summer time skips (Sunday 29 March 2026, 03:30
-- Kyiv does not exist) and in the hour its end repeats (Sunday 25 October,
-- 03:30 comes twice): the calendar's hand-off is where sms_oncall's turn
-- changes, minute by minute
SELECT sms_list_create('night');
SELECT sms_list_add('night', '+380508000011', 1, '5 min', 'Anna'),
	   sms_list_add('night', '+380508000012', 1, '5 min', 'Bohdan'),
	   sms_list_add('night', '+380508000013', 1, '5 min', 'Vira');
SELECT sms_rotation_create('night', 1, '1 day', '03:30', 'Europe/Kyiv', '2026-01-01');
CREATE TEMP TABLE night AS
	SELECT * FROM sms_oncall_calendar('night', '2026-03-28 00:00+00', '2026-03-31 00:00+00')
	UNION ALL
	SELECT * FROM sms_oncall_calendar('night', '2026-10-24 00:00+00', '2026-10-27 00:00+00');
SELECT name, since, "until" FROM night ORDER BY since;
SELECT count(*) AS minutes,
	   count(*) FILTER (WHERE n.phone IS DISTINCT FROM
						(SELECT o.phone FROM sms_oncall('night', m.at) o)) AS disagree
  FROM (SELECT generate_series(timestamptz '2026-03-28 00:00+00', '2026-03-30 23:59+00', '1 min')
		UNION ALL
		SELECT generate_series(timestamptz '2026-10-24 00:00+00', '2026-10-26 23:59+00', '1 min')) AS m (at)
  LEFT JOIN night n ON n.since <= m.at AND m.at < n."until";

-- a list with no rotation, override or pause: one row per member
SELECT sms_list_create('plain');
SELECT sms_list_add('plain', '+380509000001', 1, '5 min', 'Yana');
SELECT * FROM sms_oncall_calendar('plain', '2026-10-12 00:00+00', '2026-10-13 00:00+00');

-- bad periods and lists: refused, naming the argument and the value
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT * FROM sms_oncall_calendar('nosuch', '2026-10-12', '2026-10-19')$$,
	$$SELECT * FROM sms_oncall_calendar(NULL, '2026-10-12', '2026-10-19')$$,
	$$SELECT * FROM sms_oncall_calendar('rota', NULL, '2026-10-19')$$,
	$$SELECT * FROM sms_oncall_calendar('rota', '2026-10-12', NULL)$$,
	$$SELECT * FROM sms_oncall_calendar('rota', '-infinity', '2026-10-19')$$,
	$$SELECT * FROM sms_oncall_calendar('rota', '2026-10-12', 'infinity')$$,
	$$SELECT * FROM sms_oncall_calendar('rota', '2026-10-19', '2026-10-19')$$,
	$$SELECT * FROM sms_oncall_calendar('rota', '2026-10-19', '2026-10-12')$$,
	$$SELECT * FROM sms_oncall_calendar('rota', '2026-10-12', '2027-10-14')$$,
	$$SELECT * FROM sms_oncall_calendar('rota', '2026-10-12', timestamptz '2026-10-12' + interval '366 days 1 microsecond')$$]) AS s;
SELECT count(*) > 0 AS exactly_366_days_answered
  FROM sms_oncall_calendar('rota', '2026-10-12', timestamptz '2026-10-12' + interval '366 days');

-- admins only: senders and readers may not read who is on duty
CREATE ROLE regress_calendar_sender IN ROLE smsdispatch_sender;
CREATE ROLE regress_calendar_reader IN ROLE smsdispatch_reader;
CREATE ROLE regress_calendar_admin IN ROLE smsdispatch_admin;
GRANT USAGE ON SCHEMA regress
	TO regress_calendar_sender, regress_calendar_reader, regress_calendar_admin;
SET ROLE regress_calendar_sender;
SELECT regress.try($$SELECT * FROM sms_oncall_calendar('rota', '2026-10-12', '2026-10-19')$$);
RESET ROLE;
SET ROLE regress_calendar_reader;
SELECT regress.try($$SELECT * FROM sms_oncall_calendar('rota', '2026-10-12', '2026-10-19')$$);
RESET ROLE;
SET ROLE regress_calendar_admin;
SELECT count(*) AS rows_for_an_admin FROM sms_oncall_calendar('rota', '2026-10-12', '2026-10-19');
RESET ROLE;
REVOKE USAGE ON SCHEMA regress
	FROM regress_calendar_sender, regress_calendar_reader, regress_calendar_admin;
DROP ROLE regress_calendar_sender, regress_calendar_reader, regress_calendar_admin;
SELECT regress.reset();

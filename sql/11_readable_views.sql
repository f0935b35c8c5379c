-- What a reader (reports, dashboards, the metrics exporter) relies on: it
-- can SELECT * from smsdispatch.sms_log_readable, message_readable,
-- event_readable and inbox_readable, which hold exactly the columns of
-- verification.sms_log, smsdispatch.message, event and inbox it may read
-- (no phone number, no text), while SELECT * on those tables stays refused.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS smsdispatch;
RESET client_min_messages;
CREATE ROLE regress_readable_reader IN ROLE smsdispatch_reader;

-- an alarm with its SMS, an event and a reply, each with a phone and a text
SELECT sms_list_create('readable');
SELECT sms_list_add('readable', '+380671230001', 1, '5 min', 'Alice');
INSERT INTO smsdispatch.message (id, number, body, list, state, level, channel)
VALUES (9001, '9001', 'SECRET alarm text', 'readable', 'open', 1, 'ip2sms');
INSERT INTO verification.sms_log (phone_number, type, body, channel, send_state, message_id)
VALUES ('+380671230001', 'text', '[9001] SECRET alarm text', 'ip2sms', 'queued', 9001);
INSERT INTO smsdispatch.event (id, message_id, at, kind, level, phone, detail)
VALUES (9001, 9001, '2026-03-01 10:00:00+00', 'sent', 1, '+380671230001', 'SECRET detail');
INSERT INTO smsdispatch.inbox (sender, body, outcome, number, message_id)
VALUES ('+380671230001', '9001 SECRET reply', 'ack', '9001', 9001);

-- each view against its table: a column of one but not of the other, or a
-- view column the reader may not read on the table, is listed here (none)
WITH pair(view, tbl) AS (VALUES
	('smsdispatch.sms_log_readable'::regclass, 'verification.sms_log'::regclass),
	('smsdispatch.message_readable', 'smsdispatch.message'),
	('smsdispatch.event_readable', 'smsdispatch.event'),
	('smsdispatch.inbox_readable', 'smsdispatch.inbox')),
readable AS (
	SELECT p.view, a.attname
	  FROM pair p JOIN pg_attribute a ON a.attrelid = p.tbl
	 WHERE a.attnum > 0 AND NOT a.attisdropped
	   AND has_column_privilege('smsdispatch_reader', p.tbl, a.attnum, 'SELECT')),
shown AS (
	SELECT p.view, a.attname
	  FROM pair p JOIN pg_attribute a ON a.attrelid = p.view
	 WHERE a.attnum > 0 AND NOT a.attisdropped)
SELECT coalesce(r.view, s.view) AS view, coalesce(r.attname, s.attname) AS column_name,
	   CASE WHEN s.attname IS NULL THEN 'readable on the table, missing from the view'
			ELSE 'in the view, not readable on the table' END AS problem
  FROM readable r FULL JOIN shown s ON s.view = r.view AND s.attname = r.attname
 WHERE r.attname IS NULL OR s.attname IS NULL
 ORDER BY 1, 2;

-- the columns, as docs/security.md lists them
SELECT c.oid::regclass AS view, string_agg(a.attname, ', ' ORDER BY a.attnum) AS columns
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
 WHERE c.oid IN ('smsdispatch.sms_log_readable'::regclass, 'smsdispatch.message_readable'::regclass,
				 'smsdispatch.event_readable'::regclass, 'smsdispatch.inbox_readable'::regclass)
 GROUP BY c.oid ORDER BY 1::text;

SET ROLE regress_readable_reader;
-- SELECT * works on the views, and no value of theirs holds the phone or a text
SELECT count(*) AS sms_rows, bool_or(v::text ~ 'SECRET|67123') AS secret_shown
  FROM smsdispatch.sms_log_readable v WHERE message_id = 9001;
SELECT count(*) AS alarm_rows, bool_or(v::text ~ 'SECRET|67123') AS secret_shown
  FROM smsdispatch.message_readable v WHERE id = 9001;
SELECT count(*) AS event_rows, bool_or(v::text ~ 'SECRET|67123') AS secret_shown
  FROM smsdispatch.event_readable v WHERE message_id = 9001;
SELECT count(*) AS inbox_rows, bool_or(v::text ~ 'SECRET|67123') AS secret_shown
  FROM smsdispatch.inbox_readable v WHERE message_id = 9001;
-- as docs/security.md shows it
SELECT * FROM smsdispatch.event_readable WHERE message_id = 9001 ORDER BY at;
-- SELECT * on the tables stays refused
SELECT * FROM verification.sms_log;
SELECT * FROM smsdispatch.message;
SELECT * FROM smsdispatch.event;
SELECT * FROM smsdispatch.inbox;
-- the reader writes nothing through a view
DELETE FROM smsdispatch.sms_log_readable;
RESET ROLE;
-- senders do not read them
SELECT has_table_privilege('smsdispatch_sender', 'smsdispatch.sms_log_readable', 'SELECT') AS sender_reads,
	   has_table_privilege('public', 'smsdispatch.sms_log_readable', 'SELECT') AS public_reads;

-- leave nothing behind for later suites
TRUNCATE verification.sms_log, smsdispatch.message, smsdispatch.inbox,
	smsdispatch.recipient_list CASCADE;
DROP ROLE regress_readable_reader;

-- What each role may see and do, where it matters for security: a reader
-- (reports, the metrics exporter) reads no phone and no text; bodies that
-- smsdispatch.redact_after blanked leave the reports' numbers as they were;
-- a reply from another country's number with the same last nine digits is
-- no ack; an oversized received body is refused; an admin attaches the
-- verification trigger to a table of its own.
SELECT regress.reset();
CREATE ROLE regress_sec_reader IN ROLE smsdispatch_reader;
CREATE ROLE regress_sec_admin IN ROLE smsdispatch_admin;
GRANT USAGE ON SCHEMA regress TO regress_sec_reader, regress_sec_admin;
SELECT sms_list_create('oncall');
SELECT sms_list_add('oncall', '+380671112233', 1, name => 'Secret Sam');
SELECT sms_enqueue('SECRET-ALARM-TEXT', 'oncall');
SELECT sms_send('+380671112244', 'SECRET-CODE-4812', 'verification') > 0 AS queued;
-- a refused spool file, its reason quoting the number (src/spool.c)
INSERT INTO smsdispatch.spool_failure (name, reason)
	VALUES ('to-sam.xml', 'invalid phone number in phone: "+3806711122559"');

-- replies: another country's number with the same last nine digits is not
-- the recipient; the recipient's number written nationally is
SELECT sender, sms_receive(sender, body)
  FROM (VALUES ('+1 567 111 2233', '0001 SECRET-STRANGER'),
			   ('15671112233', '0001'),
			   ('067 111 22 33', '0001 SECRET-REPLY')) AS v(sender, body);
SELECT s, e, smsdispatch.same_subscriber(s, e)
  FROM (VALUES ('0671112233', '+380671112233'), ('380671112233', '+380671112233'),
			   ('00380671112233', '+380671112233'), ('671112233', '+380671112233'),
			   ('+15671112233', '+380671112233'), ('71112233', '+380671112233'),
			   ('', '+380671112233'), (NULL, '+380671112233')) AS v(s, e);

-- every column of the extension's tables and views that the reader can
-- read, searched for the texts and the phone numbers above
CREATE FUNCTION regress.secrets_visible(pattern text)
RETURNS TABLE (relation text, column_name name)
LANGUAGE plpgsql AS $$
DECLARE
	c record;
	found boolean;
BEGIN
	FOR c IN
		SELECT a.attrelid::regclass AS rel, a.attname
		  FROM pg_attribute a JOIN pg_class k ON k.oid = a.attrelid
		 WHERE k.relnamespace IN ('smsdispatch'::regnamespace, 'verification'::regnamespace)
		   AND k.relkind IN ('r', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
		   AND has_column_privilege(a.attrelid, a.attnum, 'SELECT')
		 ORDER BY 1, a.attnum
	LOOP
		EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %I::text ~ $1)', c.rel, c.attname)
			INTO found USING pattern;
		IF found THEN
			relation := c.rel;
			column_name := c.attname;
			RETURN NEXT;
		END IF;
	END LOOP;
END;
$$;
-- the admin sees them (so the search finds what it looks for)...
SET ROLE regress_sec_admin;
SELECT relation, column_name FROM regress.secrets_visible('SECRET|67111') ORDER BY 1, 2;
-- ...the reader does not, in any table, view or report
SET ROLE regress_sec_reader;
SELECT relation, column_name FROM regress.secrets_visible('SECRET|67111');
SELECT count(*) > 0 AS reads_columns
  FROM pg_attribute a JOIN pg_class k ON k.oid = a.attrelid
 WHERE k.relnamespace IN ('smsdispatch'::regnamespace, 'verification'::regnamespace)
   AND a.attnum > 0 AND has_column_privilege(a.attrelid, a.attnum, 'SELECT');
SELECT (SELECT sum(logged) FROM smsdispatch.delivery_stats) AS logged,
	   (SELECT sum(alarms) FROM smsdispatch.escalation_stats) AS alarms,
	   (SELECT count(*) FROM smsdispatch.gateway_stats) >= 0 AS gateway,
	   (SELECT count(*) FROM smsdispatch.stats()) > 0 AS counters,
	   sms_report_html(now() - interval '1 day', now() + interval '1 hour') ~ 'SECRET|67111' AS report_shows_secrets;
RESET ROLE;

-- redaction: a delivered SMS older than redact_after loses its body, keeps
-- its length and parts; the reports count the same
UPDATE verification.sms_log
   SET send_state = 'submitted', gateway_status = 'Delivered',
	   inserted_at = now() - interval '2 days', updated_at = now() - interval '2 days',
	   status_changed_at = now() - interval '2 days' + interval '5 s'
 WHERE phone_number = '+380671112244';
CREATE TABLE regress.stats_before AS
	SELECT * FROM smsdispatch.delivery_stats('-infinity', 'infinity');
CALL smsdispatch.purge('365 days');	-- redact_after is off by default
SET smsdispatch.redact_after = '1d';
CALL smsdispatch.purge('365 days');
SELECT phone_number, body, body_length, body_parts, redacted_at IS NOT NULL AS redacted, send_state
  FROM verification.sms_log ORDER BY id;
SELECT count(*) AS stats_rows_changed FROM (
	(SELECT * FROM regress.stats_before
	 EXCEPT ALL SELECT * FROM smsdispatch.delivery_stats('-infinity', 'infinity'))
	UNION ALL
	(SELECT * FROM smsdispatch.delivery_stats('-infinity', 'infinity')
	 EXCEPT ALL SELECT * FROM regress.stats_before)) d;
CALL smsdispatch.purge('365 days');	-- nothing left to redact
RESET smsdispatch.redact_after;
DROP TABLE regress.stats_before;

-- an oversized received body is refused and stores nothing
SET smsdispatch.max_inbound_length = 160;
SELECT regress.try($$SELECT sms_receive('+380671112233', repeat('x', 161))$$);
SELECT sms_receive('+380671112233', repeat('x', 160));
RESET smsdispatch.max_inbound_length;
SELECT max(octet_length(body)) AS longest_stored FROM smsdispatch.inbox;

-- an admin attaches the verification trigger to a table of its own
CREATE SCHEMA regress_app AUTHORIZATION regress_sec_admin;
SET ROLE regress_sec_admin;
CREATE TABLE regress_app.codes (id serial, phone_number text, code text);
SELECT smsdispatch.watch_verifications('regress_app.codes');
INSERT INTO regress_app.codes (phone_number, code) VALUES ('+380671110000', '9999');
SELECT type, body FROM verification.sms_log WHERE phone_number = '+380671110000';
RESET ROLE;
DROP SCHEMA regress_app CASCADE;
DROP FUNCTION regress.secrets_visible(text);
DROP ROLE regress_sec_reader, regress_sec_admin;

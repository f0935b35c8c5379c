-- sms_send() and the verification trigger write their log row without
-- planning an INSERT (src/log_writer.c). The row must still get everything
-- an INSERT gives it: defaults, domain and table checks, indexes, row and
-- statement triggers with transition tables, and the refusals of a
-- read-only transaction.
SELECT regress.reset();
-- errors without the Failing row detail, which holds ids and timestamps
CREATE FUNCTION regress.try_msg(stmt text) RETURNS text
LANGUAGE sql AS $$ SELECT split_part(regress.try(stmt), ' DETAIL: ', 1) $$;

-- the enumerated columns are domains: every writer meets their checks (a
-- channel name is lower case: registered names are looked up by the API)
SELECT regress.try(s) FROM unnest(ARRAY[
	$$INSERT INTO verification.sms_log (phone_number, body, type) VALUES ('+380501234567', 'x', 'marketing')$$,
	$$INSERT INTO verification.sms_log (phone_number, body, channel) VALUES ('+380501234567', 'x', 'Fax')$$,
	$$INSERT INTO verification.sms_log (phone_number, body, send_state) VALUES ('+380501234567', 'x', 'lost')$$,
	$$INSERT INTO verification.sms_log (phone_number, body, gateway_status) VALUES ('+380501234567', 'x', 'delivered')$$]) AS s;
SELECT count(*) AS rows_after_refusals FROM verification.sms_log;
-- the gateway's state words and their class are one table in C
-- (src/ip2sms_xml.c): the domain admits exactly the words it classifies
SELECT w AS word, smsdispatch.gateway_status_class(w) AS class,
	   regress.try(format('SELECT %L::smsdispatch.gateway_status', w)) AS as_domain
  FROM unnest(ARRAY['Accepted', 'Enroute', 'Delivered', 'Expired', 'Deleted',
					'Undeliverable', 'Rejected', 'Unknown', 'Unaccepted',
					'Terminated', 'Pending', 'delivered', 'Lost', '']) AS w;
SELECT smsdispatch.gateway_status_class(NULL) IS NULL AS null_class,
	   NULL::smsdispatch.gateway_status IS NULL AS null_admitted;
SELECT a.attname, format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a
 WHERE a.attrelid = 'verification.sms_log'::regclass
   AND a.attname IN ('type', 'channel', 'send_state', 'gateway_status')
 ORDER BY a.attnum;

-- a read-only transaction refuses the write, as it refuses INSERT
BEGIN READ ONLY;
SELECT regress.try($$SELECT sms_send('+380501234567', 'read only')$$);
ROLLBACK;

-- a changed column default applies to the next row (the writer's cache is
-- dropped when the table changes), and so does the original one again
ALTER TABLE verification.sms_log ALTER attempts SET DEFAULT 7;
SELECT sms_send('+380501230001', 'default changed') AS sent_id \gset
ALTER TABLE verification.sms_log ALTER attempts SET DEFAULT 0;
SELECT sms_send('+380501230002', 'default back') > 0 AS sent;
-- defaults fill what the caller left out
SELECT body, attempts, send_state, inserted_at = updated_at AS same_time,
	   next_attempt_at, gateway_status
  FROM verification.sms_log ORDER BY id;
-- sms_send returns the row's id
SELECT body FROM verification.sms_log WHERE id = :sent_id;
-- updates meet the domains too
SELECT regress.try($$UPDATE verification.sms_log SET send_state = 'gone'$$);
SELECT regress.try($$UPDATE verification.sms_log SET gateway_status = 'Lost'$$);
SELECT DISTINCT send_state FROM verification.sms_log;

-- a CHECK added to the table is checked; its failure writes nothing
ALTER TABLE verification.sms_log ADD CONSTRAINT regress_short_body CHECK (length(body) < 40);
SELECT regress.try_msg($$SELECT sms_send('+380501230003', repeat('long ', 10))$$);
ALTER TABLE verification.sms_log DROP CONSTRAINT regress_short_body;

-- a new unique index gets the writer's entries
CREATE UNIQUE INDEX regress_unique_body ON verification.sms_log (body) WHERE body LIKE 'unique %';
SELECT sms_send('+380501230004', 'unique one') > 0 AS sent;
SELECT regress.try_msg($$SELECT sms_send('+380501230005', 'unique one')$$);
DROP INDEX verification.regress_unique_body;
SELECT count(*) AS rows_so_far FROM verification.sms_log;

-- row triggers see and change the row; statement triggers fire, with the
-- new rows in their transition table
CREATE TABLE regress.seen (what text, n int);
CREATE FUNCTION regress.tag_body() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.body := NEW.body || ' [tagged]';
	RETURN NEW;
END;
$$;
CREATE FUNCTION regress.count_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO regress.seen SELECT TG_NAME, count(*) FROM new_rows;
	RETURN NULL;
END;
$$;
CREATE FUNCTION regress.count_stmt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO regress.seen VALUES (TG_NAME, NULL);
	RETURN NULL;
END;
$$;
CREATE TRIGGER regress_tag BEFORE INSERT ON verification.sms_log
	FOR EACH ROW EXECUTE FUNCTION regress.tag_body();
CREATE TRIGGER regress_new_rows AFTER INSERT ON verification.sms_log
	REFERENCING NEW TABLE AS new_rows
	FOR EACH STATEMENT EXECUTE FUNCTION regress.count_new();
CREATE TRIGGER regress_before_stmt BEFORE INSERT ON verification.sms_log
	FOR EACH STATEMENT EXECUTE FUNCTION regress.count_stmt();
SELECT sms_send('+380501230006', 'with triggers') > 0 AS sent;
SELECT body FROM verification.sms_log WHERE phone_number = '+380501230006';
SELECT what, n FROM regress.seen ORDER BY what;
-- the verification trigger writes through the same path
CREATE TABLE regress.otp (phone text, code text);
SELECT smsdispatch.watch_verifications('regress.otp', 'phone', 'code');
INSERT INTO regress.otp VALUES ('+380501230007', '4242');
SELECT body FROM verification.sms_log WHERE phone_number = '+380501230007';
SELECT what, n FROM regress.seen ORDER BY what;
DROP TRIGGER regress_tag ON verification.sms_log;
DROP TRIGGER regress_new_rows ON verification.sms_log;
DROP TRIGGER regress_before_stmt ON verification.sms_log;

-- a trigger may change the catalogs in the middle of a write and write a
-- row of its own
\i test/log-writer-nested-trigger.sql
SELECT sms_send('+380501230013', 'outer') > 0 AS sent;
SELECT sms_send('+380501230014', 'after') > 0 AS sent;
DROP TRIGGER log_writer_nested ON verification.sms_log;
DROP FUNCTION log_writer_nested(), log_writer_scratch();
SELECT body, send_state FROM verification.sms_log
 WHERE body IN ('outer', 'inner', 'after') ORDER BY id;

-- a BEFORE trigger that drops the row is refused: every SMS has its row
CREATE FUNCTION regress.drop_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RETURN NULL;
END;
$$;
CREATE TRIGGER regress_drop BEFORE INSERT ON verification.sms_log
	FOR EACH ROW EXECUTE FUNCTION regress.drop_row();
SELECT regress.try($$SELECT sms_send('+380501230008', 'dropped')$$);
SELECT regress.try($$INSERT INTO regress.otp VALUES ('+380501230009', '1')$$);
DROP TRIGGER regress_drop ON verification.sms_log;
SELECT count(*) AS otp_rows FROM regress.otp;

-- forced row-level security is not silently bypassed
ALTER TABLE verification.sms_log FORCE ROW LEVEL SECURITY;
SELECT regress.try($$SELECT sms_send('+380501230010', 'forced rls')$$);
ALTER TABLE verification.sms_log NO FORCE ROW LEVEL SECURITY;

-- a log table changed under the extension is a clear error, not a wrong row
BEGIN;
ALTER TABLE verification.sms_log RENAME COLUMN last_error TO last_error_renamed;
SELECT regress.try($$SELECT sms_send('+380501230015', 'renamed column')$$);
ROLLBACK;
BEGIN;
ALTER TABLE verification.sms_log ALTER verification_id TYPE varchar(40);
SELECT regress.try($$SELECT sms_send('+380501230016', 'changed type')$$);
ROLLBACK;
BEGIN;
ALTER TABLE verification.sms_log RENAME TO sms_log_renamed;
SELECT regress.try($$SELECT sms_send('+380501230017', 'renamed table')$$);
ROLLBACK;
SELECT sms_send('+380501230018', 'table restored') > 0 AS sent;

-- the row is visible to the rest of the caller's transaction at once
DO $$
DECLARE
	new_id bigint := sms_send('+380501230011', 'seen at once');
BEGIN
	IF NOT EXISTS (SELECT 1 FROM verification.sms_log l WHERE l.id = new_id) THEN
		RAISE EXCEPTION 'row % not visible', new_id;
	END IF;
END;
$$;
SELECT count(*) AS rows_at_end FROM verification.sms_log;

-- the wake-up trigger's function refuses to be anything but a BEFORE row
-- trigger on a table with the log's channel and send_state
CREATE TABLE regress.not_a_log (id int, channel text, send_state text);
CREATE TRIGGER wrong AFTER INSERT ON regress.not_a_log
	FOR EACH ROW EXECUTE FUNCTION smsdispatch.wake_on_change();
SELECT regress.try($$INSERT INTO regress.not_a_log VALUES (1, 'modem', 'queued')$$);
DROP TRIGGER wrong ON regress.not_a_log;
CREATE TRIGGER wrong BEFORE INSERT ON regress.not_a_log
	FOR EACH STATEMENT EXECUTE FUNCTION smsdispatch.wake_on_change();
SELECT regress.try($$INSERT INTO regress.not_a_log VALUES (1, 'modem', 'queued')$$);
DROP TRIGGER wrong ON regress.not_a_log;
ALTER TABLE regress.not_a_log DROP COLUMN channel;
CREATE TRIGGER wrong BEFORE INSERT ON regress.not_a_log
	FOR EACH ROW EXECUTE FUNCTION smsdispatch.wake_on_change();
SELECT regress.try($$INSERT INTO regress.not_a_log VALUES (1, 'queued')$$);
SELECT count(*) AS not_a_log_rows FROM regress.not_a_log;
DROP TABLE regress.not_a_log;
DROP TABLE regress.otp, regress.seen;
DROP FUNCTION regress.tag_body(), regress.count_new(), regress.count_stmt(),
	regress.drop_row();

-- The verification trigger: each inserted row queues exactly one
-- verification SMS; updates queue nothing.
SELECT regress.reset();
CREATE SCHEMA app;
CREATE TABLE app.verifications (
	id				uuid PRIMARY KEY,
	phone_number	text,
	check_digit		int,
	status			text DEFAULT 'new',
	code			text,
	code_expired_at	timestamptz,
	active			boolean DEFAULT true,
	attempts_count	int NOT NULL DEFAULT 0,
	inserted_at		timestamptz DEFAULT now()
);
SELECT smsdispatch.watch_verifications('app.verifications');
SELECT tgname, tgtype, pg_get_triggerdef(oid) FROM pg_trigger
 WHERE tgrelid = 'app.verifications'::regclass;

INSERT INTO app.verifications (id, phone_number, code)
VALUES ('00000000-0000-0000-0000-000000000001', '+380 50 123 45 67', '4812');
SELECT phone_number, type, body, channel, send_state, last_error, verification_id
  FROM verification.sms_log;

-- 1,000 rows in one INSERT ... SELECT: 1,000 SMS, each with its own code
INSERT INTO app.verifications (id, phone_number, code)
SELECT ('00000000-0000-0000-0000-' || lpad((1000 + g)::text, 12, '0'))::uuid,
	   '+38067' || lpad(g::text, 7, '0'), lpad(g::text, 4, '0')
  FROM generate_series(1, 1000) g;
SELECT count(*) AS sms, count(DISTINCT phone_number) AS phones,
	   count(DISTINCT verification_id) AS verifications,
	   count(*) FILTER (WHERE body = 'Your verification code: ' || right(phone_number, 4)) AS bodies_right,
	   count(*) FILTER (WHERE send_state = 'queued' AND type = 'verification') AS queued
  FROM verification.sms_log WHERE phone_number LIKE '+38067%';

-- updating every row (attempts, status, even phone and code) queues nothing
UPDATE app.verifications SET attempts_count = attempts_count + 1, status = 'sent';
UPDATE app.verifications SET code = '0000', phone_number = '+380991234567';
SELECT count(*) AS sms_after_updates FROM verification.sms_log;
-- neither does an upsert that updates
INSERT INTO app.verifications (id, phone_number, code)
VALUES ('00000000-0000-0000-0000-000000000001', '+380501234567', '1111')
ON CONFLICT (id) DO UPDATE SET attempts_count = app.verifications.attempts_count + 1;
SELECT count(*) AS sms_after_upsert FROM verification.sms_log;
-- COPY is an insert like any other
COPY app.verifications (id, phone_number, code) FROM stdin;
00000000-0000-0000-0000-000000000002	+380501234500	2222
\.
SELECT phone_number, body FROM verification.sms_log ORDER BY id DESC LIMIT 1;

-- rows the SMS cannot go out for are written failed with the reason; the
-- application's insert goes through
INSERT INTO app.verifications (id, phone_number, code) VALUES
	('00000000-0000-0000-0000-000000000003', 'not a phone', '3333'),
	('00000000-0000-0000-0000-000000000004', NULL, '4444'),
	('00000000-0000-0000-0000-000000000005', '0501234567', '5555'),
	('00000000-0000-0000-0000-000000000006', '+380501234506', NULL);
SELECT count(*) AS app_rows FROM app.verifications;
SELECT phone_number, body, send_state, last_error FROM verification.sms_log
 WHERE verification_id ~ '00000000000[3-6]$' ORDER BY verification_id;
-- the application's default_country_code applies
SET smsdispatch.default_country_code = '380';
INSERT INTO app.verifications (id, phone_number, code)
VALUES ('00000000-0000-0000-0000-000000000007', '050 123 45 07', '7777');
RESET smsdispatch.default_country_code;
SELECT phone_number, send_state FROM verification.sms_log
 WHERE verification_id = '00000000-0000-0000-0000-000000000007';

-- the abuse guard applies to the trigger too
INSERT INTO app.verifications (id, phone_number, code)
SELECT gen_random_uuid(), '+380631234567', g::text FROM generate_series(1, 11) g;
SELECT send_state, last_error, count(*) FROM verification.sms_log
 WHERE phone_number = '+380631234567' GROUP BY 1, 2 ORDER BY 1;

-- a table with other column names
CREATE TABLE app.otp (msisdn text, pin int, created timestamptz DEFAULT now());
SELECT smsdispatch.watch_verifications('app.otp', phone_column => 'msisdn', code_column => 'pin');
INSERT INTO app.otp (msisdn, pin) VALUES ('+44 20 7946 0958', 90210);
SELECT phone_number, body, send_state, verification_id FROM verification.sms_log
 WHERE phone_number = '+442079460958';
-- watching again replaces the trigger, it does not add a second one
SELECT smsdispatch.watch_verifications('app.otp', 'msisdn', 'pin');
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'app.otp'::regclass;
INSERT INTO app.otp (msisdn, pin) VALUES ('+442079460959', 1);
SELECT count(*) FROM verification.sms_log WHERE phone_number = '+442079460959';

-- a missing column is a clear error, and no trigger is attached
CREATE TABLE app.other (phone text, secret text);
SELECT regress.try(s) FROM unnest(ARRAY[
	$$SELECT smsdispatch.watch_verifications('app.other')$$,
	$$SELECT smsdispatch.watch_verifications('app.other', 'phone')$$,
	$$SELECT smsdispatch.watch_verifications('app.other', 'phone', 'secret ')$$,
	$$SELECT smsdispatch.watch_verifications('app.nosuch')$$]) AS s;
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'app.other'::regclass;
-- a column dropped after watching began stops the insert with the same error
ALTER TABLE app.otp DROP COLUMN pin;
SELECT regress.try($$INSERT INTO app.otp (msisdn) VALUES ('+442079460960')$$);
-- the trigger function refuses to be anything but an AFTER INSERT row trigger
CREATE TRIGGER wrong BEFORE INSERT ON app.other
	FOR EACH ROW EXECUTE FUNCTION smsdispatch.verification_trigger('phone', 'secret');
SELECT regress.try($$INSERT INTO app.other VALUES ('+380501234567', '1')$$);
DROP TRIGGER wrong ON app.other;
CREATE TRIGGER wrong AFTER INSERT ON app.other
	FOR EACH ROW EXECUTE FUNCTION smsdispatch.verification_trigger('phone');
SELECT regress.try($$INSERT INTO app.other VALUES ('+380501234567', '1')$$);
DROP SCHEMA app CASCADE;

-- the eHealth table: verification.verifications existing before CREATE
-- EXTENSION gets the trigger there and then
CREATE DATABASE contrib_regression_ehealth;
\c contrib_regression_ehealth
\i test/ehealth-verifications.sql
CREATE EXTENSION smsdispatch;
SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
 WHERE tgrelid = 'verification.verifications'::regclass;
INSERT INTO verification.verifications (phone_number, check_digit, code, code_expired_at)
VALUES ('+380501234567', 7, '123456', now() + interval '5 min');
UPDATE verification.verifications SET attempts_count = 3, status = 'verified', active = false;
SELECT s.phone_number, s.type, s.body, s.send_state, s.verification_id = v.id::text AS linked
  FROM verification.sms_log s, verification.verifications v;
-- the extension adopted the schema (so that pg_dump restores it in the right
-- order): a plain DROP EXTENSION refuses to take the application's table
-- with it, the CASCADE its hint offers is refused too, and releasing the
-- schema first keeps both
DROP EXTENSION smsdispatch;
DROP EXTENSION smsdispatch CASCADE;
SELECT count(*) AS verifications_kept FROM verification.verifications;
ALTER EXTENSION smsdispatch DROP SCHEMA verification;
DROP EXTENSION smsdispatch CASCADE;
SELECT count(*) AS verifications_kept FROM verification.verifications;
SELECT to_regclass('verification.sms_log') AS sms_log_after_drop,
	   (SELECT count(*) FROM pg_trigger
		 WHERE tgrelid = 'verification.verifications'::regclass AND NOT tgisinternal) AS triggers;
\c contrib_regression
DROP DATABASE contrib_regression_ehealth;
-- not only relations: with no table or view of the application in the
-- schema, its functions, procedures, sequences, types and domains there are
-- named and kept too
CREATE DATABASE contrib_regression_appobjects;
\c contrib_regression_appobjects
CREATE EXTENSION smsdispatch;
CREATE TABLE public.verifications (phone_number text, active boolean);
CREATE FUNCTION verification.code_digits(code text) RETURNS int
	LANGUAGE sql IMMUTABLE RETURN length(code);
CREATE PROCEDURE verification.expire_codes() LANGUAGE sql
	BEGIN ATOMIC UPDATE public.verifications SET active = false; END;
CREATE SEQUENCE verification.check_digit_seq;
CREATE TYPE verification.code_kind AS ENUM ('sms', 'call');
CREATE DOMAIN verification.code_text AS text CHECK (VALUE ~ '^[0-9]+$');
-- which of them exist (a view outside the schema, so the guard ignores it)
CREATE VIEW public.application_objects_kept AS
	SELECT to_regprocedure('verification.code_digits(text)') IS NOT NULL AS function_kept,
		   to_regprocedure('verification.expire_codes()') IS NOT NULL AS procedure_kept,
		   to_regclass('verification.check_digit_seq') IS NOT NULL AS sequence_kept,
		   to_regtype('verification.code_kind') IS NOT NULL AS type_kept,
		   to_regtype('verification.code_text') IS NOT NULL AS domain_kept;
DROP EXTENSION smsdispatch CASCADE;
SELECT *, to_regclass('verification.sms_log') IS NOT NULL AS sms_log_kept
  FROM public.application_objects_kept;
-- past 100 objects the error names the first 100 and counts the rest
DO $$
DECLARE
	detail text;
BEGIN
	FOR i IN 1..100 LOOP
		EXECUTE format('CREATE SEQUENCE verification.many_%s', lpad(i::text, 3, '0'));
	END LOOP;
	DROP EXTENSION smsdispatch CASCADE;
EXCEPTION WHEN dependent_objects_still_exist THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RAISE NOTICE '%: ...%', SQLERRM, right(detail, 60);
END;
$$;
ALTER EXTENSION smsdispatch DROP SCHEMA verification;
DROP EXTENSION smsdispatch CASCADE;
SELECT * FROM public.application_objects_kept;
\c contrib_regression
DROP DATABASE contrib_regression_appobjects;

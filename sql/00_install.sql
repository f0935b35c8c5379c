-- The extension installs, with its schemas, tables and roles.
CREATE EXTENSION smsdispatch;
SELECT extname, extversion FROM pg_extension WHERE extname = 'smsdispatch';
SELECT rolname FROM pg_roles WHERE rolname LIKE 'smsdispatch%' ORDER BY 1;
-- Test helpers for the suites after this one: regress.try() runs a statement
-- and returns 'ok' or its error as SQLSTATE, message, detail and hint;
-- regress.reset() empties every table of the extension.
CREATE SCHEMA regress;
CREATE FUNCTION regress.try(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	state text;
	msg text;
	detail text;
	hint text;
BEGIN
	EXECUTE stmt;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	RETURN state || ': ' || msg || coalesce(' DETAIL: ' || nullif(detail, ''), '')
		|| coalesce(' HINT: ' || nullif(hint, ''), '');
END;
$$;
-- empties every table of the extension, whatever later parts add
CREATE FUNCTION regress.reset() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE (SELECT 'TRUNCATE ' || string_agg(c.oid::regclass::text, ', ') || ' RESTART IDENTITY'
			   FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
			  WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'smsdispatch')
				AND d.deptype = 'e' AND c.relkind = 'r');
END;
$$;
SELECT regress.try('SELECT 1/0');
SELECT sms_normalize_phone('+380 (50) 123-45-67');
SELECT * FROM sms_segments('hello');
SELECT sms_send('+380501234567', 'Your code: 4812', 'verification');
SELECT phone_number, type, body, send_state, channel FROM verification.sms_log;
SELECT sms_list_create('oncall', 'Database on-call');
SELECT sms_list_add('oncall', '+380501111111', 1, '30 s', 'Alice');
SELECT sms_list_add('oncall', '+380502222222', 2, '30 s', 'Bob');
SELECT sms_enqueue('Disk full on db1', 'oncall');
SELECT number, state, level FROM smsdispatch.message;
SELECT phone, level, status, sms_log_id IS NOT NULL AS handed FROM smsdispatch.message_recipient ORDER BY level;
SELECT sms_receive('+380501111111', 'ok 0000 on it');
SELECT number, state, acked_by FROM smsdispatch.message;

-- Attaches the verification trigger to a table: each inserted row queues one
-- verification SMS to phone_column carrying code_column.
CREATE FUNCTION smsdispatch.watch_verifications(tbl regclass,
	phone_column name DEFAULT 'phone_number', code_column name DEFAULT 'code')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	col name;
BEGIN
	FOREACH col IN ARRAY ARRAY[phone_column, code_column]
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_attribute a
					   WHERE a.attrelid = tbl AND a.attname = col
						 AND a.attnum > 0 AND NOT a.attisdropped) THEN
			RAISE EXCEPTION 'column "%" does not exist in table %', col, tbl
				USING ERRCODE = 'undefined_column',
					  HINT = 'Name the phone and code columns: smsdispatch.watch_verifications(tbl, phone_column, code_column).';
		END IF;
	END LOOP;
	IF EXISTS (SELECT 1 FROM pg_trigger t
			   WHERE t.tgrelid = tbl AND t.tgname = 'smsdispatch_verification') THEN
		EXECUTE format('DROP TRIGGER smsdispatch_verification ON %s', tbl);
	END IF;
	EXECUTE format('CREATE TRIGGER smsdispatch_verification AFTER INSERT ON %s '
				   'FOR EACH ROW EXECUTE FUNCTION smsdispatch.verification_trigger(%L, %L)',
				   tbl, phone_column, code_column);
END;
$$;

-- CREATE EXTENSION attaches the trigger to an application's existing
-- verification.verifications when it has the columns phone_number and code.
-- A table whose columns have other names does not stop the installation: a
-- WARNING names the columns looked for and the call that attaches the
-- trigger, with the table's own phone and code columns when exactly one
-- column of the table has a common name for each (msisdn, phone, mobile;
-- otp). A WARNING, not a NOTICE: CREATE EXTENSION runs its script with
-- client_min_messages at least WARNING, which would swallow a NOTICE.
DO $$
DECLARE
	tbl CONSTANT regclass := to_regclass('verification.verifications');
	missing text;
	phone_guess text;
	code_guess text;
BEGIN
	IF tbl IS NULL THEN
		RETURN;
	END IF;
	SELECT string_agg(format('"%s"', w.col), ' and ' ORDER BY w.ord) INTO missing
	  FROM unnest(ARRAY['phone_number', 'code']) WITH ORDINALITY AS w(col, ord)
	 WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a
					   WHERE a.attrelid = tbl AND a.attname = w.col
						 AND a.attnum > 0 AND NOT a.attisdropped);
	IF missing IS NULL THEN
		PERFORM smsdispatch.watch_verifications(tbl);
		RETURN;
	END IF;
	-- the one column of the table with a common name of each kind, if any
	SELECT CASE WHEN count(*) FILTER (WHERE g.kind = 'phone') = 1
				THEN max(a.attname) FILTER (WHERE g.kind = 'phone') END,
		   CASE WHEN count(*) FILTER (WHERE g.kind = 'code') = 1
				THEN max(a.attname) FILTER (WHERE g.kind = 'code') END
	  INTO phone_guess, code_guess
	  FROM pg_attribute a
	  JOIN (VALUES ('phone_number', 'phone'), ('msisdn', 'phone'), ('phone', 'phone'),
				   ('mobile', 'phone'), ('code', 'code'), ('otp', 'code')) AS g(col, kind)
		ON a.attname = g.col
	 WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped;
	RAISE WARNING 'table verification.verifications has no column %, so its verification trigger is not attached', missing
		USING DETAIL = 'CREATE EXTENSION attaches the trigger by itself only to a table with the columns "phone_number" (the phone) and "code" (the code).',
			  HINT = format('To send its codes, name its phone and code columns: SELECT smsdispatch.watch_verifications(%L, %L, %L);',
							'verification.verifications',
							coalesce(phone_guess, 'PHONE_COLUMN'), coalesce(code_guess, 'CODE_COLUMN'));
END;
$$;

-- Refuses DROP EXTENSION smsdispatch CASCADE while schema verification (a
-- member) holds the application's tables, which the cascade would drop.
CREATE FUNCTION smsdispatch.drop_guard()
RETURNS event_trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'sms_drop_guard';
CREATE EVENT TRIGGER smsdispatch_drop_guard ON ddl_command_start
	WHEN TAG IN ('DROP EXTENSION')
	EXECUTE FUNCTION smsdispatch.drop_guard();

-- admins attach the trigger to the application's tables
GRANT EXECUTE ON FUNCTION smsdispatch.watch_verifications(regclass, name, name)
	TO smsdispatch_admin;

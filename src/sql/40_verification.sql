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

DO $$
BEGIN
	IF to_regclass('verification.verifications') IS NOT NULL THEN
		PERFORM smsdispatch.watch_verifications('verification.verifications');
	END IF;
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

-- A trigger on verification.sms_log that, for the row with body 'outer',
-- changes the catalogs (which makes the log writer's cache stale while the
-- write in progress still uses it) and writes a row of its own ('inner').
-- Used by sql/08_log_writer.sql and test/t/011_log_writer_valgrind.pl.
CREATE FUNCTION log_writer_nested() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.body = 'outer' THEN
		CREATE OR REPLACE FUNCTION log_writer_scratch() RETURNS int LANGUAGE sql AS 'SELECT 1';
		PERFORM sms_send('+380501230012', 'inner');
	END IF;
	RETURN NEW;
END;
$$;
CREATE TRIGGER log_writer_nested BEFORE INSERT ON verification.sms_log
	FOR EACH ROW EXECUTE FUNCTION log_writer_nested();

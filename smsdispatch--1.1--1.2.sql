-- smsdispatch 1.1 -> 1.2. src/sql/ is the source of a fresh install; this
-- script makes each change of 1.2 to an existing 1.1 database, once per
-- object, in the order of the src/sql/ fragments that define them, so that
-- an upgraded database equals a fresh install (test/t/012_upgrade.pl).

\echo Use "ALTER EXTENSION smsdispatch UPDATE TO '1.2'" to load this file. \quit

-- src/sql/30_alarms.sql: alarm numbers are reserved without waiting for
-- another session's open enqueue
-- Whether this transaction may give alarm number candidate: no other open
-- transaction is giving it and no alarm has it, open or closed less than
-- quarantine ago (reserve_number in src/queue.c). Never waits; the number
-- stays reserved until this transaction ends.
CREATE FUNCTION smsdispatch.reserve_number(candidate int, quarantine interval)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sms_reserve_number'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION smsdispatch.reserve_number(int, interval) FROM PUBLIC;

-- Picks the next free four-digit number after the last one given, without
-- waiting for another session: each candidate is reserved until the
-- enqueue ends (smsdispatch.reserve_number), so two open enqueues never
-- take the same number, and one left open delays no other. The cursor row
-- moves only when no other enqueue holds it; it then lags behind, which
-- costs the next enqueues a few probes, never a duplicate.
CREATE OR REPLACE FUNCTION smsdispatch.allocate_number()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	last_given int;
	holds_cursor boolean;
	quarantine interval := smsdispatch.number_quarantine();
	candidate int;
BEGIN
	SELECT c.last_number INTO last_given FROM smsdispatch.number_cursor c
	   FOR UPDATE SKIP LOCKED;
	holds_cursor := FOUND;
	IF NOT holds_cursor THEN
		SELECT c.last_number INTO last_given FROM smsdispatch.number_cursor c;
	END IF;
	IF last_given IS NULL THEN
		-- the first enqueue creates the cursor, unless another one is doing so
		BEGIN
			LOCK TABLE smsdispatch.number_cursor IN SHARE ROW EXCLUSIVE MODE NOWAIT;
			INSERT INTO smsdispatch.number_cursor DEFAULT VALUES ON CONFLICT DO NOTHING;
			holds_cursor := FOUND;
		EXCEPTION WHEN lock_not_available THEN
			NULL;
		END;
		last_given := 0;
	END IF;
	-- probe one number at a time: the next one is almost always free
	FOR step IN 1..10000 LOOP
		candidate := (last_given + step) % 10000;
		IF smsdispatch.reserve_number(candidate, quarantine) THEN
			IF holds_cursor THEN
				UPDATE smsdispatch.number_cursor SET last_number = candidate;
			END IF;
			RETURN lpad(candidate::text, 4, '0');
		END IF;
	END LOOP;
	RAISE EXCEPTION 'all 10000 alarm numbers are in use'
		USING ERRCODE = 'configuration_limit_exceeded',
			  DETAIL = format('Every number belongs to an open alarm or to one closed less than smsdispatch.number_quarantine (%s) ago.',
							 current_setting('smsdispatch.number_quarantine')),
			  HINT = 'Close or cancel alarms, or lower smsdispatch.number_quarantine.';
END;
$$;

-- src/sql/36_spool_failure.sql: readers see reasons without the values they
-- quote
-- A refusal's reason without the values it quotes: every quoted value (a
-- phone number, a list name, bytes of the text) becomes "...", every byte
-- written 0x.. becomes 0x.., every run of digits #. What the readers see of
-- smsdispatch.spool_failure, which must not show whom an alarm was for or
-- what it said. A standard SQL body: nothing in it is looked up through
-- the search_path when it runs.
CREATE FUNCTION smsdispatch.redact_reason(reason text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.regexp_replace(
	pg_catalog.regexp_replace(
		pg_catalog.regexp_replace(reason, '"[^"]*("|$)|''[^''[:space:]]*''', '"..."', 'g'),
		'0x[0-9A-Fa-f]+', '0x..', 'g'),
	'[0-9]+', '#', 'g');
REVOKE ALL ON FUNCTION smsdispatch.redact_reason(text) FROM PUBLIC;

ALTER TABLE smsdispatch.spool_failure
	ADD COLUMN redacted_reason text GENERATED ALWAYS AS (smsdispatch.redact_reason(reason)) STORED;

-- src/sql/96_roles_1_1.sql
REVOKE SELECT ON smsdispatch.spool_failure FROM smsdispatch_reader;
GRANT SELECT (id, name, size, mtime, failed_at, redacted_reason)
	ON smsdispatch.spool_failure TO smsdispatch_reader;

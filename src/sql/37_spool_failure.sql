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

-- Spool files refused by the importer (moved to failed/ with a .reason file
-- beside them), so that failures are visible from SQL as imports are in
-- smsdispatch.spool_file. Rows stay until deleted. reason is the whole
-- reason, for admins; readers read redacted_reason. list is the recipient
-- list a refused file named (its first 100 characters; NULL when it named
-- none or could not be read): an alarm that was never raised.
CREATE TABLE smsdispatch.spool_failure (
	id			bigserial PRIMARY KEY,
	name		text NOT NULL,
	size		bigint,
	mtime		timestamptz,
	reason		text NOT NULL,
	failed_at	timestamptz NOT NULL DEFAULT now(),
	redacted_reason text GENERATED ALWAYS AS (smsdispatch.redact_reason(reason)) STORED,
	list		text
);
CREATE INDEX spool_failure_failed_idx ON smsdispatch.spool_failure (failed_at);
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.spool_failure', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.spool_failure_id_seq', '');

-- Records a spool file the importer refused (src/spool.c writes the
-- WARNING) and returns the row's id. A file that named a list would have
-- raised an alarm and nobody has been sent it, which must be as loud as an
-- alarm nobody can receive: NOTIFY smsdispatch_alarm (sent at COMMIT) with
-- {"number": null, "state": "refused", "reason", "list", "file",
-- "spool_failure_id"}. Any role may LISTEN, so the reason is the redacted
-- one (admins read the whole one in the row), cut after 800 characters so
-- that the payload stays under NOTIFY's 8000 bytes with a list of 100
-- characters and a file name of 255 bytes, however JSON escapes them.
CREATE FUNCTION smsdispatch.spool_refuse(file_name text, file_size bigint,
	file_mtime timestamptz, reason text, list text)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	failure_id bigint;
	shown text;
BEGIN
	INSERT INTO smsdispatch.spool_failure (name, size, mtime, reason, list)
		VALUES (file_name, file_size, file_mtime, reason, list)
		RETURNING id, redacted_reason INTO failure_id, shown;
	IF list IS NOT NULL THEN
		IF length(shown) > 800 THEN
			shown := left(shown, 800) || '... (cut)';
		END IF;
		PERFORM pg_notify('smsdispatch_alarm',
						  json_build_object('number', NULL, 'state', 'refused',
											'reason', shown, 'list', list,
											'file', file_name,
											'spool_failure_id', failure_id)::text);
	END IF;
	RETURN failure_id;
END;
$$;

-- Privileges: admins read the whole reason; readers see which spool files
-- were refused, and why, but not the values the reason quotes.
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.spool_failure TO smsdispatch_admin;
GRANT USAGE ON SEQUENCE smsdispatch.spool_failure_id_seq TO smsdispatch_admin;
GRANT SELECT (id, name, size, mtime, failed_at, redacted_reason)
	ON smsdispatch.spool_failure TO smsdispatch_reader;

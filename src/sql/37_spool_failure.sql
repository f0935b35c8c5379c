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
-- reason, for admins; readers read redacted_reason.
CREATE TABLE smsdispatch.spool_failure (
	id			bigserial PRIMARY KEY,
	name		text NOT NULL,
	size		bigint,
	mtime		timestamptz,
	reason		text NOT NULL,
	failed_at	timestamptz NOT NULL DEFAULT now(),
	redacted_reason text GENERATED ALWAYS AS (smsdispatch.redact_reason(reason)) STORED
);
CREATE INDEX spool_failure_failed_idx ON smsdispatch.spool_failure (failed_at);
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.spool_failure', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.spool_failure_id_seq', '');

-- Privileges: admins read the whole reason; readers see which spool files
-- were refused, and why, but not the values the reason quotes.
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.spool_failure TO smsdispatch_admin;
GRANT USAGE ON SEQUENCE smsdispatch.spool_failure_id_seq TO smsdispatch_admin;
GRANT SELECT (id, name, size, mtime, failed_at, redacted_reason)
	ON smsdispatch.spool_failure TO smsdispatch_reader;

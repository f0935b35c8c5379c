-- Spool files refused by the importer (moved to failed/ with a .reason file
-- beside them), so that failures are visible from SQL as imports are in
-- smsdispatch.spool_file. Rows stay until deleted.
CREATE TABLE smsdispatch.spool_failure (
	id			bigserial PRIMARY KEY,
	name		text NOT NULL,
	size		bigint,
	mtime		timestamptz,
	reason		text NOT NULL,
	failed_at	timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX spool_failure_failed_idx ON smsdispatch.spool_failure (failed_at);
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.spool_failure', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.spool_failure_id_seq', '');

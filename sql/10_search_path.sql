-- Every function of the extension resolves its names without the caller's
-- search_path, which may name a schema another role writes to (a database
-- owner's ALTER DATABASE ... SET search_path reaches a superuser's session,
-- pg_cron's jobs and the worker): it has a standard SQL body (names bound at
-- CREATE) or carries SET search_path = pg_catalog, pg_temp. A new function
-- without either is listed here by name, and the test fails.
--
-- Two kinds of exception, each listed by name, so that a new one is a
-- decision and not an oversight:
--  * C functions that run no SQL and look up no name through search_path
--    (what they read, they find by OID or by schema-qualified name); a SET
--    would cost a configuration save and restore on every call of
--    sms_send(), of the verification trigger and of the helpers the
--    reports call per row. C functions that do run SQL (run_once,
--    drop_guard) carry the SET.
--  * smsdispatch.purge, a procedure that COMMITs between batches, which a
--    SET clause forbids: its body pins the path with set_config first thing
--    in each of its transactions (checked below).
CREATE TEMP TABLE c_function_without_sql (signature text PRIMARY KEY);
INSERT INTO c_function_without_sql VALUES
	('sms_normalize_phone(text)'),
	('sms_segments(text)'),
	('sms_send(text,text,text,text,integer)'),
	('smsdispatch.check_body(text,text)'),
	('smsdispatch.default_priority(text)'),
	('smsdispatch.gateway_status_class(text)'),
	('smsdispatch.ip2sms_health()'),
	('smsdispatch.max_inbound_length()'),
	('smsdispatch.number_quarantine()'),
	('smsdispatch.phone_plan()'),
	('smsdispatch.prevent_in_transaction_block(text)'),
	('smsdispatch.redact_after()'),
	('smsdispatch.resolve_channel(text)'),
	('smsdispatch.send_window_next(text,timestamp with time zone)'),
	('smsdispatch.send_window_opens(text)'),
	('smsdispatch.setting(text)'),
	('smsdispatch.stats()'),
	('smsdispatch.stats_reset()'),
	('smsdispatch.stats_since()'),
	('smsdispatch.try_normalize_phone(text)'),
	('smsdispatch.validity(text)'),
	('smsdispatch.verification_trigger()'),
	('smsdispatch.wake_at_commit()'),
	('smsdispatch.wake_on_change()');
CREATE TEMP VIEW extension_function AS
	SELECT p.oid, p.oid::regprocedure::text AS signature, l.lanname, p.prokind,
		   p.prosqlbody IS NOT NULL AS bound_at_create,
		   coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false) AS pinned,
		   p.prosrc
	  FROM pg_proc p
	  JOIN pg_language l ON l.oid = p.prolang
	  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
	 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'smsdispatch');

-- the offenders: none
SELECT f.signature AS resolves_names_through_the_callers_search_path, f.lanname
  FROM extension_function f
 WHERE NOT f.bound_at_create AND NOT f.pinned
   AND NOT (f.lanname = 'c' AND f.signature IN (SELECT signature FROM c_function_without_sql))
   AND f.signature <> 'smsdispatch.purge(interval,integer,bigint,bigint,bigint,bigint,bigint)'
 ORDER BY 1;

-- the list of C exceptions is exact: each is a C function of the extension
-- without SET (a stale entry would hide a new function of that name)
SELECT c.signature AS stale_c_exception
  FROM c_function_without_sql c
 WHERE NOT EXISTS (SELECT 1 FROM extension_function f
					WHERE f.signature = c.signature AND f.lanname = 'c' AND NOT f.pinned)
 ORDER BY 1;

-- purge pins the path before it resolves anything (its declarations
-- compute nothing: no :=), and again after every COMMIT
SELECT f.signature,
	   f.prosrc ~ '^\s*DECLARE[^:]*?\mBEGIN\s+PERFORM pg_catalog\.set_config\(''search_path'', ''pg_catalog, pg_temp'', true\);'
		   AS pins_first,
	   f.prosrc !~ 'COMMIT;(?!\s*PERFORM pg_catalog\.set_config\(''search_path'', ''pg_catalog, pg_temp'', true\);)'
		   AS pins_after_each_commit,
	   f.prosrc ~ 'COMMIT;' AS commits
  FROM extension_function f
 WHERE f.signature = 'smsdispatch.purge(interval,integer,bigint,bigint,bigint,bigint,bigint)';


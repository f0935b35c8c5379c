-- smsdispatch: the three roles every privilege of the following files names.
-- They are cluster-wide and outlive DROP EXTENSION; PUBLIC gets nothing (each
-- file grants on what it defines, 99_public.sql closes every function).

\echo Use "CREATE EXTENSION smsdispatch" to load this file. \quit

DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['smsdispatch_sender', 'smsdispatch_admin', 'smsdispatch_reader']
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
			EXECUTE format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END;
$$;

-- admins do all that senders do, and read all that readers read
GRANT smsdispatch_sender TO smsdispatch_admin;
GRANT smsdispatch_reader TO smsdispatch_admin;

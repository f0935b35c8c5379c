-- The channel registry: channel instances of a dialect added by an admin
-- (Kannel first), beside ip2sms and modem, which keep their settings. A
-- registered name is a channel of sms_send, sms_enqueue and spool files
-- (smsdispatch.resolve_channel looks it up); the worker of this database
-- sends its rows (src/kannel.c). Options never hold a secret: a password is
-- the path of a file only the worker reads (src/secrets.c), so the view
-- below shows every option. The worker writes the channel's health here
-- (state, state_since, last_error), shown by smsdispatch.channel_health.
-- The option failover_to names the channel its alarms' SMS (and, with
-- smsdispatch.failover_verification, its codes) leave on once it has not
-- been ok for smsdispatch.failover_after (smsdispatch.failover); without
-- it the channel's SMS wait for the channel itself.
CREATE TABLE smsdispatch.channel_registry (
	name		smsdispatch.channel PRIMARY KEY,
	dialect		text NOT NULL CHECK (dialect IN ('kannel')),
	options		jsonb NOT NULL,
	created_at	timestamptz NOT NULL DEFAULT now(),
	altered_at	timestamptz,
	state		text NOT NULL DEFAULT 'ok'
				CHECK (state IN ('ok', 'degraded', 'down', 'auth_failed')),
	state_since	timestamptz,
	last_error	text
);
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.channel_registry', '');

-- Refuses options that channel name of dialect cannot be run with, naming
-- the option and its value: unknown keys, missing ones, a URL that is not
-- http(s) or carries credentials, a relative password file, a failover_to
-- that is the channel itself or no channel.
CREATE FUNCTION smsdispatch.channel_check_options(name text, dialect text, options jsonb)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	known text[] := ARRAY['url', 'username', 'password_file', 'from', 'callback_url',
						  'failover_to'];
	required text[] := ARRAY['url', 'username', 'password_file', 'callback_url'];
	k text;
	v jsonb;
BEGIN
	IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options % of a % channel are not a JSON object',
			coalesce(options::text, 'NULL'), dialect
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass jsonb_build_object(''url'', ..., ''username'', ..., ''password_file'', ..., ''callback_url'', ...).';
	END IF;
	FOR k, v IN SELECT e.key, e.value FROM jsonb_each(options) e ORDER BY e.key LOOP
		IF k <> ALL (known) THEN
			RAISE EXCEPTION 'unknown option "%" of a % channel', k, dialect
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = format('The options are %s.', array_to_string(known, ', '));
		END IF;
		IF jsonb_typeof(v) <> 'string' OR v #>> '{}' = '' THEN
			RAISE EXCEPTION 'option "%" of a % channel must be a non-empty string, not %',
				k, dialect, v
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
	END LOOP;
	FOREACH k IN ARRAY required LOOP
		IF NOT options ? k THEN
			RAISE EXCEPTION 'option "%" of a % channel is missing', k, dialect
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = format('A %s channel needs %s.', dialect,
									array_to_string(required, ', '));
		END IF;
	END LOOP;
	FOREACH k IN ARRAY ARRAY['url', 'callback_url'] LOOP
		IF options ->> k !~ '^https?://[^/@?#]+(/[^?#]*)?$' THEN
			RAISE EXCEPTION 'option "%" of a % channel is not an http or https URL: "%"',
				k, dialect, options ->> k
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Give http://host:port/path, without a query or credentials in the URL (the password goes into password_file).';
		END IF;
	END LOOP;
	IF left(options ->> 'password_file', 1) <> '/' THEN
		RAISE EXCEPTION 'option "password_file" of a % channel is not an absolute path: "%"',
			dialect, options ->> 'password_file'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give the full path of a file of the server''s user with mode 0600 holding the password on its first line.';
	END IF;
	IF options ->> 'failover_to' = name THEN
		RAISE EXCEPTION 'option "failover_to" of channel "%" names the channel itself', name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Name the channel its SMS should leave on while it is not ok, such as ip2sms.';
	END IF;
	IF options ->> 'failover_to' NOT IN ('ip2sms', 'modem')
	   AND NOT EXISTS (SELECT 1 FROM smsdispatch.channel_registry r
					   WHERE r.name = channel_check_options.options ->> 'failover_to') THEN
		RAISE EXCEPTION 'option "failover_to" of channel "%" names no channel: "%"',
			name, options ->> 'failover_to'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give ip2sms, modem or a registered channel (SELECT name FROM smsdispatch.channels).';
	END IF;
END;
$$;

-- Adds a channel instance: name (a channel of sms_send and sms_enqueue
-- from the COMMIT on), dialect ('kannel'), options (see
-- channel_check_options).
CREATE FUNCTION smsdispatch.channel_add(name text, dialect text, options jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,31}$' THEN
		RAISE EXCEPTION 'channel name "%" is not a valid name', coalesce(name, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A channel name is a lower-case letter followed by up to 31 lower-case letters, digits or underscores.';
	END IF;
	IF name IN ('ip2sms', 'modem', 'loopback') THEN
		RAISE EXCEPTION 'channel name "%" is reserved', name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'ip2sms, modem and loopback are built in; pick another name, such as kannel1.';
	END IF;
	IF dialect IS DISTINCT FROM 'kannel' THEN
		RAISE EXCEPTION 'unknown channel dialect "%"', coalesce(dialect, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The dialect of a registered channel is kannel.';
	END IF;
	PERFORM smsdispatch.channel_check_options(name, dialect, options);
	INSERT INTO smsdispatch.channel_registry (name, dialect, options)
		VALUES (channel_add.name, channel_add.dialect, channel_add.options)
		ON CONFLICT DO NOTHING;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'channel "%" exists already', name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Change its options with smsdispatch.channel_alter.';
	END IF;
END;
$$;

-- The registered channel called name, locked; an error when there is none.
CREATE FUNCTION smsdispatch.channel_lock(name text)
RETURNS smsdispatch.channel_registry
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c smsdispatch.channel_registry;
BEGIN
	SELECT * INTO c FROM smsdispatch.channel_registry r
	 WHERE r.name = channel_lock.name FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'channel "%" is not registered', coalesce(name, 'NULL')
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT name FROM smsdispatch.channels lists the registered channels.';
	END IF;
	RETURN c;
END;
$$;

-- Changes the options of a registered channel: the keys given replace
-- those it had, a key given as JSON null is removed; the result is checked
-- as channel_add checks. The worker uses them from its next pass on.
CREATE FUNCTION smsdispatch.channel_alter(name text, options jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c smsdispatch.channel_registry := smsdispatch.channel_lock(name);
	merged jsonb;
BEGIN
	IF options IS NULL OR jsonb_typeof(options) <> 'object' THEN
		RAISE EXCEPTION 'options % of channel "%" are not a JSON object',
			coalesce(options::text, 'NULL'), name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass the keys to change, such as jsonb_build_object(''url'', ...).';
	END IF;
	merged := jsonb_strip_nulls(c.options || options);
	PERFORM smsdispatch.channel_check_options(c.name, c.dialect, merged);
	UPDATE smsdispatch.channel_registry r
	   SET options = merged, altered_at = now()
	 WHERE r.name = c.name;
END;
$$;

-- Removes a registered channel, refused while SMS are queued on it or on
-- the wire (they would never leave): cancel or move them first; and while
-- another channel fails over to it: alter that one first.
CREATE FUNCTION smsdispatch.channel_drop(name text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	c smsdispatch.channel_registry := smsdispatch.channel_lock(name);
	waiting bigint;
	used_by text;
BEGIN
	SELECT count(*) INTO waiting FROM verification.sms_log l
	 WHERE l.channel = c.name AND l.send_state IN ('queued', 'sending');
	IF waiting > 0 THEN
		RAISE EXCEPTION 'channel "%" still has % queued or sending SMS', c.name, waiting
			USING ERRCODE = 'object_in_use',
				  HINT = format('Wait until they leave, or move them: UPDATE verification.sms_log SET channel = ''ip2sms'' WHERE channel = %L AND send_state = ''queued''.',
								c.name);
	END IF;
	SELECT string_agg(r.name, ', ' ORDER BY r.name) INTO used_by
	  FROM smsdispatch.channel_registry r WHERE r.options ->> 'failover_to' = c.name;
	IF used_by IS NOT NULL THEN
		RAISE EXCEPTION 'channel "%" is the failover_to of channel %', c.name, used_by
			USING ERRCODE = 'object_in_use',
				  HINT = format('Change that first: SELECT smsdispatch.channel_alter(%L, jsonb_build_object(''failover_to'', NULL)).',
								split_part(used_by, ', ', 1));
	END IF;
	DELETE FROM smsdispatch.channel_registry r WHERE r.name = c.name;
END;
$$;

-- The registered channels as readers see them: every option (none is a
-- secret) and the health the worker last found.
CREATE VIEW smsdispatch.channels AS
	SELECT r.name, r.dialect, r.options ->> 'url' AS url,
		   r.options ->> 'username' AS username,
		   r.options ->> 'password_file' AS password_file,
		   r.options ->> 'from' AS sender,
		   r.options ->> 'callback_url' AS callback_url,
		   r.options ->> 'failover_to' AS failover_to,
		   r.created_at, r.altered_at, r.state, r.state_since, r.last_error
	  FROM smsdispatch.channel_registry r;

-- Privileges: admins manage the registry through the functions (SECURITY
-- DEFINER: nobody else writes the table, and each change is checked); readers
-- (and admins) see the view.
REVOKE ALL ON smsdispatch.channel_registry FROM PUBLIC;
REVOKE ALL ON FUNCTION smsdispatch.channel_check_options(text, text, jsonb),
	smsdispatch.channel_add(text, text, jsonb), smsdispatch.channel_lock(text),
	smsdispatch.channel_alter(text, jsonb), smsdispatch.channel_drop(text)
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.channel_add(text, text, jsonb),
	smsdispatch.channel_alter(text, jsonb), smsdispatch.channel_drop(text)
	TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.channels TO smsdispatch_admin, smsdispatch_reader;
-- senders' sms_send and sms_enqueue look their channel up by name
GRANT SELECT (name) ON smsdispatch.channel_registry TO smsdispatch_sender;

-- smsdispatch 1.1 -> 1.2. src/sql/ is the source of a fresh install; this
-- script makes each change of 1.2 to an existing 1.1 database, once per
-- object, in the order of the src/sql/ fragments that define them, so that
-- an upgraded database equals a fresh install (test/t/012_upgrade.pl).

\echo Use "ALTER EXTENSION smsdispatch UPDATE TO '1.2'" to load this file. \quit

-- src/sql/10_tables.sql: a channel is ip2sms, modem or a registered name
ALTER DOMAIN smsdispatch.channel DROP CONSTRAINT channel_check;
ALTER DOMAIN smsdispatch.channel
	ADD CONSTRAINT channel_check CHECK (VALUE ~ '^[a-z][a-z0-9_]{0,31}$');

-- src/sql/11_readable_views.sql: the reader's columns as views it can SELECT * from
-- What smsdispatch_reader may read of the log, the alarms, their events and
-- the received SMS, as views it can SELECT * from: the reader has SELECT on
-- some columns of these tables only (10_tables.sql), so SELECT * on a table
-- is refused. Each view has exactly the columns the reader may read (test
-- sql/11_readable_views.sql holds them equal). security_invoker: the
-- reader's own column privileges are checked through the view, so a column
-- added here that the reader may not read fails instead of showing it.

-- verification.sms_log without phone_number, body, gateway_id, last_error,
-- verification_id and claimed_by
CREATE VIEW smsdispatch.sms_log_readable WITH (security_invoker = true) AS
	SELECT l.id, l.type, l.gateway_status, l.status_changed_at, l.updated_at,
		   l.inserted_at, l.channel, l.send_state, l.attempts, l.next_attempt_at,
		   l.next_poll_at, l.submitted_at, l.lease_until, l.message_id,
		   l.body_length, l.body_parts, l.redacted_at, l.priority, l.confirms,
		   l.held_until, l.released_at
	  FROM verification.sms_log l;

-- smsdispatch.message without body and acked_by
CREATE VIEW smsdispatch.message_readable WITH (security_invoker = true) AS
	SELECT m.id, m.number, m.list, m.state, m.level, m.round, m.level_started_at,
		   m.acked_at, m.closed_at, m.source, m.channel, m.created_at, m.check_at
	  FROM smsdispatch.message m;

-- smsdispatch.event without phone and detail
CREATE VIEW smsdispatch.event_readable WITH (security_invoker = true) AS
	SELECT e.id, e.message_id, e.at, e.kind, e.level
	  FROM smsdispatch.event e;

-- smsdispatch.inbox without sender, body, sender_e164 and handler_error
CREATE VIEW smsdispatch.inbox_readable WITH (security_invoker = true) AS
	SELECT i.id, i.outcome, i.number, i.message_id, i.received_at, i.handler_state,
		   i.handled_at
	  FROM smsdispatch.inbox i;

GRANT SELECT ON smsdispatch.sms_log_readable, smsdispatch.message_readable, smsdispatch.event_readable, smsdispatch.inbox_readable
	TO smsdispatch_reader;

-- src/sql/13_channel_registry.sql: registered channel instances (Kannel)
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

-- src/sql/30_alarms.sql

CREATE FUNCTION smsdispatch.check_length(value text, field text, max_chars int)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF length(value) > max_chars THEN
		RAISE EXCEPTION '% "%..." is % characters long', field, left(value, 20), length(value)
			USING ERRCODE = 'string_data_right_truncation',
				  HINT = format('Give at most %s characters for the %s.', max_chars, field);
	END IF;
END;
$$;
REVOKE ALL ON FUNCTION smsdispatch.check_length(text, text, int) FROM PUBLIC;

CREATE FUNCTION smsdispatch.quote_name(name text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT to_json(CASE WHEN length(name) > 63 THEN left(name, 63) || '...'
						ELSE name END)::text;
END;
REVOKE ALL ON FUNCTION smsdispatch.quote_name(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION sms_list_create(name text, description text DEFAULT NULL,
	repeat int DEFAULT 0)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF name IS NULL OR btrim(name) = '' THEN
		RAISE EXCEPTION 'recipient list name must not be empty'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM smsdispatch.check_length(name, 'recipient list name', 63);
	PERFORM smsdispatch.check_length(description, 'recipient list description', 200);
	IF repeat IS NULL OR repeat NOT BETWEEN 0 AND 100 THEN
		RAISE EXCEPTION 'repeat % is out of range for recipient list "%"', repeat, name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'repeat counts extra rounds of the whole escalation, 0 to 100.';
	END IF;
	IF EXISTS (SELECT 1 FROM smsdispatch.recipient_list l WHERE l.name = sms_list_create.name) THEN
		RAISE EXCEPTION 'recipient list "%" already exists', name
			USING ERRCODE = 'duplicate_object';
	END IF;
	INSERT INTO smsdispatch.recipient_list (name, description, repeat)
		VALUES (sms_list_create.name, sms_list_create.description, sms_list_create.repeat);
END;
$$;

CREATE OR REPLACE FUNCTION sms_list_add(list text, phone text, level int DEFAULT 1,
	ack_timeout interval DEFAULT '15 min', name text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e164 text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM smsdispatch.recipient_list l WHERE l.name = sms_list_add.list) THEN
		RAISE EXCEPTION 'recipient list "%" does not exist', list
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it first with sms_list_create().';
	END IF;
	IF level IS NULL OR level NOT BETWEEN 1 AND 3 THEN
		RAISE EXCEPTION 'escalation level % is out of range', level
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Levels are 1, 2 and 3.';
	END IF;
	IF ack_timeout IS NULL OR ack_timeout <= interval '0' THEN
		RAISE EXCEPTION 'ack_timeout "%" must be positive', ack_timeout
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	PERFORM smsdispatch.check_length(name, 'member name', 200);
	e164 := @extschema@.sms_normalize_phone(phone);
	IF EXISTS (SELECT 1 FROM smsdispatch.list_member m
			   WHERE m.list = sms_list_add.list AND m.phone = e164
				 AND m.level = sms_list_add.level) THEN
		RAISE EXCEPTION 'phone "%" is already on level % of recipient list "%"', e164, level, list
			USING ERRCODE = 'duplicate_object';
	END IF;
	INSERT INTO smsdispatch.list_member (list, phone, name, level, ack_timeout)
		VALUES (sms_list_add.list, e164, sms_list_add.name, sms_list_add.level,
				sms_list_add.ack_timeout);
END;
$$;

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

-- src/sql/31_oncall.sql

CREATE FUNCTION smsdispatch.rotation_handoff(period_days int, handoff_time time,
	time_zone text, starts date, turn int)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ((starts + turn * period_days) + handoff_time) AT TIME ZONE time_zone;
REVOKE ALL ON FUNCTION smsdispatch.rotation_handoff(int, time, text, date, int) FROM PUBLIC;

CREATE OR REPLACE FUNCTION smsdispatch.rotation_turn(period_days int, handoff_time time,
	time_zone text, starts date, at timestamptz)
RETURNS int
LANGUAGE sql STABLE PARALLEL SAFE
RETURN nullif(greatest(
	smsdispatch.rotation_periods(period_days, starts, (at AT TIME ZONE time_zone)::date)
	- CASE WHEN smsdispatch.rotation_handoff(period_days, handoff_time, time_zone, starts,
				smsdispatch.rotation_periods(period_days, starts,
											 (at AT TIME ZONE time_zone)::date)) > at
		   THEN 1 ELSE 0 END, -1), -1);

CREATE OR REPLACE FUNCTION sms_list_change(list text, phone text, level int DEFAULT NULL,
	new_level int DEFAULT NULL, new_phone text DEFAULT NULL,
	ack_timeout interval DEFAULT NULL, name text DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e164 text;
	new_e164 text;
	memberships int;
	clash record;
	changed int;
BEGIN
	PERFORM smsdispatch.lock_list(list);
	PERFORM smsdispatch.check_level(level, allow_null => true);
	PERFORM smsdispatch.check_level(new_level, 'new_level', allow_null => true);
	IF ack_timeout <= interval '0' THEN
		RAISE EXCEPTION 'ack_timeout "%" must be positive', ack_timeout
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF new_level IS NULL AND new_phone IS NULL AND ack_timeout IS NULL AND name IS NULL THEN
		RAISE EXCEPTION 'nothing to change for phone "%" on recipient list "%"', phone, list
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give new_level, new_phone, ack_timeout or name.';
	END IF;
	PERFORM smsdispatch.check_length(name, 'member name', 200);
	e164 := smsdispatch.member_phone(list, phone, level);
	IF new_phone IS NOT NULL THEN
		new_e164 := @extschema@.sms_normalize_phone(new_phone);
	END IF;
	SELECT count(*) INTO memberships FROM smsdispatch.list_member m
	 WHERE m.list = sms_list_change.list AND m.phone = e164
	   AND (sms_list_change.level IS NULL OR m.level = sms_list_change.level);
	IF new_level IS NOT NULL AND memberships > 1 THEN
		RAISE EXCEPTION 'phone "%" is on % levels of recipient list "%"', e164, memberships, list
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Name the level to move with level => n.';
	END IF;
	-- the memberships as they would be, against the others of the list
	SELECT n.phone, n.level INTO clash
	  FROM smsdispatch.list_member m
	 CROSS JOIN LATERAL (SELECT coalesce(new_e164, m.phone) AS phone,
								coalesce(new_level, m.level) AS level) n
	 WHERE m.list = sms_list_change.list AND m.phone = e164
	   AND (sms_list_change.level IS NULL OR m.level = sms_list_change.level)
	   AND EXISTS (SELECT 1 FROM smsdispatch.list_member o
				   WHERE o.list = m.list AND o.id <> m.id
					 AND o.phone = n.phone AND o.level = n.level)
	 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'phone "%" is already on level % of recipient list "%"',
			clash.phone, clash.level, list
			USING ERRCODE = 'duplicate_object';
	END IF;
	UPDATE smsdispatch.list_member m
	   SET level = coalesce(new_level, m.level),
		   phone = coalesce(new_e164, m.phone),
		   ack_timeout = coalesce(sms_list_change.ack_timeout, m.ack_timeout),
		   name = CASE WHEN sms_list_change.name IS NULL THEN m.name
					   ELSE nullif(sms_list_change.name, '') END
	 WHERE m.list = sms_list_change.list AND m.phone = e164
	   AND (sms_list_change.level IS NULL OR m.level = sms_list_change.level);
	GET DIAGNOSTICS changed = ROW_COUNT;
	-- pauses follow the person to the new number
	IF new_e164 IS NOT NULL AND new_e164 <> e164 THEN
		IF EXISTS (SELECT 1 FROM smsdispatch.list_member m
				   WHERE m.list = sms_list_change.list AND m.phone = e164) THEN
			INSERT INTO smsdispatch.member_pause (list, phone, starts_at, ends_at)
			SELECT p.list, new_e164, p.starts_at, p.ends_at FROM smsdispatch.member_pause p
			 WHERE p.list = sms_list_change.list AND p.phone = e164;
		ELSE
			UPDATE smsdispatch.member_pause p SET phone = new_e164
			 WHERE p.list = sms_list_change.list AND p.phone = e164;
		END IF;
	END IF;
	RETURN changed;
END;
$$;

CREATE OR REPLACE FUNCTION sms_list_rename(list text, new_name text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM smsdispatch.lock_list(list);
	IF new_name IS NULL OR btrim(new_name) = '' THEN
		RAISE EXCEPTION 'recipient list name must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Argument new_name.';
	END IF;
	PERFORM smsdispatch.check_length(new_name, 'recipient list name', 63);
	IF EXISTS (SELECT 1 FROM smsdispatch.recipient_list l WHERE l.name = new_name) THEN
		RAISE EXCEPTION 'recipient list "%" already exists', new_name
			USING ERRCODE = 'duplicate_object';
	END IF;
	PERFORM smsdispatch.check_no_open_alarms(list, 'rename');
	UPDATE smsdispatch.recipient_list l SET name = new_name WHERE l.name = sms_list_rename.list;
	UPDATE smsdispatch.message m SET list = new_name WHERE m.list = sms_list_rename.list;
END;
$$;

CREATE OR REPLACE FUNCTION sms_rotation_create(list text, level int,
	period interval DEFAULT '1 week', handoff_time time DEFAULT '09:00',
	time_zone text DEFAULT current_setting('TimeZone'), starts date DEFAULT current_date)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	days int := extract(day FROM period);
BEGIN
	PERFORM smsdispatch.lock_list(list);
	PERFORM smsdispatch.check_level(level);
	IF period IS NULL OR period <> make_interval(days => days) THEN
		RAISE EXCEPTION 'rotation period "%" is not a whole number of days', coalesce(period::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give 1 to 366 days: ''1 day'', ''1 week'', ''3 days''.';
	END IF;
	IF days NOT BETWEEN 1 AND 366 THEN
		RAISE EXCEPTION 'rotation period "%" is out of range', period
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A rotation period is 1 to 366 days.';
	END IF;
	IF handoff_time IS NULL OR starts IS NULL THEN
		RAISE EXCEPTION 'rotation handoff_time and starts must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF time_zone IS NULL
	   OR NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = time_zone) THEN
		RAISE EXCEPTION 'time zone "%" is not known', coalesce(time_zone, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a name of pg_timezone_names, such as Europe/Kyiv, so that hand-offs follow daylight saving time.';
	END IF;
	IF EXISTS (SELECT 1 FROM smsdispatch.rotation r
			   WHERE r.list = sms_rotation_create.list AND r.level = sms_rotation_create.level) THEN
		RAISE EXCEPTION 'level % of recipient list "%" is already a rotation', level, list
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Drop it first with sms_rotation_drop().';
	END IF;
	INSERT INTO smsdispatch.rotation (list, level, period_days, handoff_time, time_zone, starts)
		VALUES (sms_rotation_create.list, sms_rotation_create.level, days,
				sms_rotation_create.handoff_time, sms_rotation_create.time_zone,
				sms_rotation_create.starts);
END;
$$;

CREATE OR REPLACE FUNCTION sms_override_add(list text, level int, phone text,
	starts_at timestamptz, ends_at timestamptz, name text DEFAULT NULL,
	ack_timeout interval DEFAULT '15 min')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e164 text;
	new_id bigint;
BEGIN
	PERFORM smsdispatch.lock_list(list);
	PERFORM smsdispatch.check_level(level);
	e164 := @extschema@.sms_normalize_phone(phone);
	PERFORM smsdispatch.check_length(name, 'override name', 200);
	IF starts_at IS NULL OR ends_at IS NULL OR ends_at <= starts_at THEN
		RAISE EXCEPTION 'override from "%" until "%" is not a time range',
			coalesce(starts_at::text, 'NULL'), coalesce(ends_at::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give ends_at later than starts_at.';
	END IF;
	IF ack_timeout IS NULL OR ack_timeout <= interval '0' THEN
		RAISE EXCEPTION 'ack_timeout "%" must be positive', coalesce(ack_timeout::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- an alarm escalates through the levels its list has members on
	IF NOT EXISTS (SELECT 1 FROM smsdispatch.list_member m
				   WHERE m.list = sms_override_add.list AND m.level = sms_override_add.level) THEN
		RAISE EXCEPTION 'level % of recipient list "%" has no members to stand in for', level, list
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Add the level''s members with sms_list_add() first.';
	END IF;
	INSERT INTO smsdispatch.duty_override (list, level, phone, name, ack_timeout, starts_at, ends_at)
		VALUES (sms_override_add.list, sms_override_add.level, e164, sms_override_add.name,
				sms_override_add.ack_timeout, sms_override_add.starts_at, sms_override_add.ends_at)
		RETURNING id INTO new_id;
	RETURN new_id;
END;
$$;

CREATE FUNCTION smsdispatch.check_duty_question(list text, at timestamptz, arg text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM smsdispatch.recipient_list l
				   WHERE l.name = check_duty_question.list) THEN
		RAISE EXCEPTION 'recipient list "%" does not exist', list
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it first with sms_list_create().';
	END IF;
	IF at IS NULL THEN
		RAISE EXCEPTION '% must not be NULL', arg
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT isfinite(at) THEN
		RAISE EXCEPTION '% "%" is not a finite time', arg, at
			USING ERRCODE = 'datetime_field_overflow',
				  HINT = 'Ask who is on duty at a given time, such as now() or now() + ''1 week''.';
	END IF;
END;
$$;
REVOKE ALL ON FUNCTION smsdispatch.check_duty_question(text, timestamptz, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION sms_oncall(list text, at timestamptz DEFAULT now())
RETURNS TABLE (level int, phone text, name text, ack_timeout interval, duty text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM smsdispatch.check_duty_question(list, at, 'at');
	RETURN QUERY SELECT * FROM smsdispatch.on_duty(list, at);
END;
$$;

CREATE FUNCTION sms_oncall_calendar(list text, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (level int, phone text, name text, ack_timeout interval, duty text,
	since timestamptz, "until" timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM smsdispatch.check_duty_question(list, "from", 'from');
	PERFORM smsdispatch.check_duty_question(list, "to", 'to');
	IF "to" <= "from" THEN
		RAISE EXCEPTION 'calendar from "%" to "%" is not a time range', "from", "to"
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give "to" later than "from".';
	END IF;
	IF "to" - "from" > interval '366 days' THEN
		RAISE EXCEPTION 'calendar from "%" to "%" is longer than 366 days', "from", "to"
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Ask for a year or less at a time.';
	END IF;
	RETURN QUERY
	WITH change (at) AS (
		SELECT "from"
		UNION
		SELECT smsdispatch.rotation_handoff(r.period_days, r.handoff_time, r.time_zone,
											r.starts, k.turn)
		  FROM smsdispatch.rotation r
		 CROSS JOIN LATERAL generate_series(
				greatest(0, smsdispatch.rotation_periods(r.period_days, r.starts,
														 ("from" AT TIME ZONE r.time_zone)::date)),
				smsdispatch.rotation_periods(r.period_days, r.starts,
											 ("to" AT TIME ZONE r.time_zone)::date)) AS k (turn)
		 WHERE r.list = sms_oncall_calendar.list
		UNION
		SELECT b.at
		  FROM smsdispatch.duty_override o
		 CROSS JOIN LATERAL (VALUES (o.starts_at), (o.ends_at)) AS b (at)
		 WHERE o.list = sms_oncall_calendar.list AND o.ends_at > "from" AND o.starts_at < "to"
		UNION
		SELECT b.at
		  FROM smsdispatch.member_pause p
		 CROSS JOIN LATERAL (VALUES (p.starts_at), (p.ends_at)) AS b (at)
		 WHERE p.list = sms_oncall_calendar.list AND p.ends_at > "from" AND p.starts_at < "to"
	), stretch (n, since, till) AS (
		SELECT row_number() OVER w, c.at, coalesce(lead(c.at) OVER w, "to")
		  FROM change c
		 WHERE c.at >= "from" AND c.at < "to"
		WINDOW w AS (ORDER BY c.at)
	), answer AS MATERIALIZED (
		SELECT s.n, s.since, s.till, d.level, d.phone, d.name, d.ack_timeout, d.duty
		  FROM stretch s
		 CROSS JOIN LATERAL smsdispatch.on_duty(sms_oncall_calendar.list, s.since) d
	), duty_row AS (
		SELECT a.n, a.since, a.till, a.level, a.phone, a.name, a.ack_timeout, a.duty
		  FROM answer a
		UNION ALL
		SELECT s.n, s.since, s.till, l.level, NULL, NULL, NULL, 'nobody'
		  FROM stretch s
		 CROSS JOIN (SELECT DISTINCT m.level FROM smsdispatch.list_member m
					  WHERE m.list = sms_oncall_calendar.list) l
		 WHERE NOT EXISTS (SELECT 1 FROM answer a WHERE a.n = s.n AND a.level = l.level)
	), island AS (
		-- the stretches of one row that follow each other share n - its rank
		SELECT r.*, r.n - row_number() OVER (PARTITION BY r.level, r.phone, r.name,
											 r.ack_timeout, r.duty ORDER BY r.n) AS island
		  FROM duty_row r
	)
	SELECT i.level, i.phone, i.name, i.ack_timeout, i.duty, min(i.since), max(i.till)
	  FROM island i
	 GROUP BY i.level, i.phone, i.name, i.ack_timeout, i.duty, i.island
	 ORDER BY 1, 6, 2;
END;
$$;
REVOKE ALL ON FUNCTION sms_oncall_calendar(text, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_oncall_calendar(text, timestamptz, timestamptz) TO smsdispatch_admin;

-- src/sql/35_worker.sql

CREATE OR REPLACE FUNCTION smsdispatch.alarm_alert(number text, state text, reason text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	shown text := CASE WHEN length(reason) > 1000 THEN left(reason, 1000) || '... (cut)'
					   ELSE reason END;
BEGIN
	RAISE WARNING 'smsdispatch: alarm % is %: %', number, state, shown;
	PERFORM pg_notify('smsdispatch_alarm',
					  json_build_object('number', number, 'state', state,
										'reason', shown)::text);
END;
$$;

CREATE OR REPLACE FUNCTION smsdispatch.escalate(batch int DEFAULT 1000,
	OUT alarms_checked int, OUT timed_out int, OUT escalated int,
	OUT repeated int, OUT exhausted int, OUT next_check timestamptz)
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- the due alarms are a small set found by index: each statement reaches
-- their recipients by nested loops over the per-alarm indexes, never by a
-- hash or merge join over a scan of the history
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
	due bigint[];
	up_ids bigint[];
	up_levels int[];
	again_ids bigint[];
	again_levels int[];
	done_ids bigint[];
	gone record;
BEGIN
	IF batch IS NULL OR batch < 1 THEN
		RAISE EXCEPTION 'batch % must be a positive number of alarms', coalesce(batch::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	timed_out := 0;
	escalated := 0;
	repeated := 0;
	exhausted := 0;

	SELECT array_agg(s.id) INTO due FROM (
		SELECT m.id FROM smsdispatch.message m
		 WHERE m.state = 'open' AND m.check_at <= now()
		 ORDER BY m.check_at
		 LIMIT batch
		 FOR NO KEY UPDATE SKIP LOCKED) AS s;
	alarms_checked := coalesce(cardinality(due), 0);

	IF due IS NOT NULL THEN
		-- each statement from here on sees what was committed before the
		-- locks above were granted
		WITH over AS (
			UPDATE smsdispatch.message_recipient r
			   SET status = 'ACK_TIME_OVER'
			  FROM smsdispatch.message m
			 WHERE m.id = ANY (due) AND r.message_id = m.id AND r.level = m.level
			   AND r.status = 'NOT_YET_ACK' AND r.deadline <= now()
			RETURNING r.message_id, r.level, r.phone, r.deadline)
		INSERT INTO smsdispatch.event (message_id, kind, level, phone, detail)
		SELECT o.message_id, 'timed_out', o.level, o.phone, 'deadline ' || o.deadline
		  FROM over o;
		GET DIAGNOSTICS timed_out = ROW_COUNT;

		-- the alarms whose level is over, and where each goes next
		SELECT array_agg(f.id ORDER BY f.id) FILTER (WHERE f.next_level IS NOT NULL),
			   array_agg(f.next_level ORDER BY f.id) FILTER (WHERE f.next_level IS NOT NULL),
			   array_agg(f.id ORDER BY f.id)
				   FILTER (WHERE f.next_level IS NULL AND f.round <= f.repeat),
			   array_agg(f.first_level ORDER BY f.id)
				   FILTER (WHERE f.next_level IS NULL AND f.round <= f.repeat),
			   array_agg(f.id ORDER BY f.id)
				   FILTER (WHERE f.next_level IS NULL AND f.round > f.repeat)
		  INTO up_ids, up_levels, again_ids, again_levels, done_ids
		  FROM (SELECT m.id, m.round, coalesce(l.repeat, 0) AS repeat,
					   min(r.level) FILTER (WHERE r.level > m.level) AS next_level,
					   min(r.level) AS first_level
				  FROM smsdispatch.message m
				  JOIN smsdispatch.message_recipient r ON r.message_id = m.id
				  LEFT JOIN smsdispatch.recipient_list l ON l.name = m.list
				 WHERE m.id = ANY (due)
				 GROUP BY m.id, m.round, l.repeat
				HAVING NOT bool_or(r.level = m.level
								   AND r.status IN ('NOT_SENT', 'NOT_YET_ACK'))) AS f;

		IF up_ids IS NOT NULL THEN
			INSERT INTO smsdispatch.event (message_id, kind, level, detail)
			SELECT u.id, 'escalated', u.level, 'from level ' || m.level
			  FROM unnest(up_ids, up_levels) AS u(id, level)
			  JOIN smsdispatch.message m ON m.id = u.id;
			escalated := cardinality(up_ids);
		END IF;

		IF again_ids IS NOT NULL THEN
			-- a new round: everybody waits to be sent the alarm again; the
			-- previous round's SMS still let its recipients acknowledge
			UPDATE smsdispatch.message_recipient
			   SET status = 'NOT_SENT', sent_at = NULL, deadline = NULL, acked_at = NULL
			 WHERE message_id = ANY (again_ids);
			UPDATE smsdispatch.message SET round = round + 1 WHERE id = ANY (again_ids);
			INSERT INTO smsdispatch.event (message_id, kind, level, detail)
			SELECT a.id, 'repeated', a.level, 'round ' || m.round
			  FROM unnest(again_ids, again_levels) AS a(id, level)
			  JOIN smsdispatch.message m ON m.id = a.id;
			repeated := cardinality(again_ids);
		END IF;

		IF up_ids IS NOT NULL OR again_ids IS NOT NULL THEN
			PERFORM smsdispatch.start_levels(
				coalesce(up_ids, '{}') || coalesce(again_ids, '{}'),
				coalesce(up_levels, '{}') || coalesce(again_levels, '{}'));
		END IF;

		IF done_ids IS NOT NULL THEN
			UPDATE smsdispatch.message
			   SET state = 'exhausted', closed_at = now(), check_at = NULL
			 WHERE id = ANY (done_ids);
			INSERT INTO smsdispatch.event (message_id, kind, level, detail)
			SELECT m.id, 'exhausted', m.level, 'round ' || m.round
			  FROM smsdispatch.message m
			 WHERE m.id = ANY (done_ids);
			exhausted := cardinality(done_ids);
			-- nobody has the alarm: that must be heard
			FOR gone IN SELECT m.number, m.list, m.round FROM smsdispatch.message m
						 WHERE m.id = ANY (done_ids) ORDER BY m.id LOOP
				PERFORM smsdispatch.alarm_alert(gone.number, 'exhausted',
					format('nobody on list %s acknowledged it in %s round(s)',
						   smsdispatch.quote_name(gone.list), gone.round));
			END LOOP;
			PERFORM smsdispatch.confirm_closed(done_ids, 'exhausted');
		END IF;

		-- the alarms still waiting: next look at their earliest deadline;
		-- a level started with nobody on duty is over at once
		UPDATE smsdispatch.message m
		   SET check_at = (SELECT CASE WHEN count(*) FILTER (WHERE r.status IN
													('NOT_SENT', 'NOT_YET_ACK')) = 0
									   THEN now()
									   ELSE min(r.deadline) FILTER (WHERE r.status = 'NOT_YET_ACK') END
							 FROM smsdispatch.message_recipient r
							WHERE r.message_id = m.id AND r.level = m.level)
		 WHERE m.id = ANY (due) AND m.state = 'open';
	END IF;

	SELECT min(m.check_at) INTO next_check
	  FROM smsdispatch.message m
	 WHERE m.state = 'open';
END;
$$;

-- src/sql/35_worker.sql: the launcher starts the worker of a database as
-- the extension arrives, and an unserved database is warned about
-- Tells the launcher that this database has the extension now, so that its
-- worker starts at once (at COMMIT), or warns that no worker serves this
-- database (smsdispatch.database does not name it): its SMS would stay
-- queued. Run once below, by CREATE EXTENSION and ALTER EXTENSION UPDATE.
CREATE FUNCTION smsdispatch.announce_extension()
RETURNS void
AS 'MODULE_PATHNAME', 'sms_announce_extension'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON FUNCTION smsdispatch.announce_extension() FROM PUBLIC;
SELECT smsdispatch.announce_extension();

-- src/sql/36_send_path.sql: a claim may keep to the urgent priorities (the
-- IP2SMS channel's connections kept for them), and says each row's priority
DROP FUNCTION smsdispatch.claim_sends(text, int, text, interval);
-- Claims up to n due queued rows of a channel, most urgent first (priority,
-- then fresh rows, then retries by their time, then age), of priority
-- max_priority or more urgent (9, the default, is every row; the IP2SMS
-- channel's connections kept for urgent SMS claim with 3): they become
-- 'sending' with the attempt counted, under claimer and a lease when given.
-- A row not claimed within its type's validity (smsdispatch.validity) is
-- not sent late: it becomes 'failed', "expired before sending", and is not
-- returned. A row outside its type's send window (smsdispatch.send_window_opens)
-- stays queued, held until the window opens: out of the claim index, so a
-- held backlog of any size costs later claims nothing; the worker releases
-- it when the window opens (smsdispatch.release_held), and its validity
-- counts from its release.
-- Alarms' SMS and their confirmations neither expire nor wait. On a channel
-- that fails over, alarms' SMS (and, with smsdispatch.failover_verification,
-- codes) are left to the failover duty, which sends them on the other
-- channel (smsdispatch.failing_over_channels). Rows other
-- sessions hold are skipped, so a claim never waits. PL/pgSQL rather than
-- SQL so that the statement's plan is kept for the session (a SQL function
-- with SET is planned on every call, a third of the IP2SMS worker's time).
-- That plan is made once for any n, so it cannot know how few rows the
-- locking query returns: joined to them by id alone, the update was planned
-- as a merge join that walks the primary key from the oldest row of the log
-- on every claim (test/bench/claim_plan.sh). The array of the due ids keeps
-- the update's scan of the log to those rows whatever the join.
CREATE FUNCTION smsdispatch.claim_sends(channel text, n int,
	claimer text DEFAULT NULL, lease interval DEFAULT NULL, max_priority int DEFAULT 9)
RETURNS TABLE (id bigint, phone_number text, body text, attempts int, message_id bigint,
	priority int)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	away boolean := CASE WHEN EXISTS (SELECT 1 FROM smsdispatch.channel_failover f
									   WHERE f.channel = claim_sends.channel)
		THEN claim_sends.channel = ANY (smsdispatch.failing_over_channels()) ELSE false END;
	codes_away boolean := away
		AND smsdispatch.setting('smsdispatch.failover_verification')::boolean;
BEGIN
	RETURN QUERY
	WITH due AS (
		SELECT l.id,
			   l.message_id IS NULL
			   AND coalesce(l.released_at, l.inserted_at) + smsdispatch.validity(l.type) < now()
			   AS expired,
			   CASE WHEN l.message_id IS NULL AND l.confirms IS NULL
					THEN smsdispatch.send_window_opens(l.type) END AS held_until
		  FROM verification.sms_log l
		 WHERE l.channel = claim_sends.channel AND l.send_state = 'queued'
		   AND l.held_until IS NULL AND l.priority <= claim_sends.max_priority
		   AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= now())
		   AND NOT (away AND (l.message_id IS NOT NULL
							  OR (codes_away AND l.type IN ('verification', '2FA'))))
		 ORDER BY l.priority, l.next_attempt_at NULLS FIRST, l.id
		 LIMIT n
		 FOR UPDATE SKIP LOCKED
	), claimed AS (
		UPDATE verification.sms_log l
		   SET send_state = CASE WHEN due.expired THEN 'failed'
							WHEN due.held_until IS NOT NULL THEN 'queued'
							ELSE 'sending' END,
			   attempts = l.attempts + CASE WHEN due.expired OR due.held_until IS NOT NULL
										THEN 0 ELSE 1 END,
			   last_error = CASE WHEN due.expired THEN
					format('expired before sending: not submitted within %s (smsdispatch.validity_%s)',
						   smsdispatch.validity(l.type), lower(l.type))
					ELSE l.last_error END,
			   held_until = CASE WHEN due.expired THEN NULL ELSE due.held_until END,
			   claimed_by = CASE WHEN due.expired OR due.held_until IS NOT NULL
							THEN l.claimed_by ELSE claimer END,
			   lease_until = CASE WHEN due.expired OR due.held_until IS NOT NULL
							 THEN NULL ELSE now() + lease END,
			   updated_at = now()
		  FROM due
		 WHERE l.id = due.id AND l.id = ANY (ARRAY(SELECT due.id FROM due))
		RETURNING l.id, l.phone_number, l.body, l.attempts, l.message_id, l.priority,
				  l.send_state
	)
	SELECT c.id, c.phone_number, c.body, c.attempts, c.message_id, c.priority
	  FROM claimed c
	 WHERE c.send_state = 'sending'
	 ORDER BY c.priority, c.id;
END;
$$;
REVOKE ALL ON FUNCTION smsdispatch.claim_sends(text, int, text, interval, int) FROM PUBLIC;

-- src/sql/37_spool_failure.sql: readers see reasons without the values they
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
REVOKE SELECT ON smsdispatch.spool_failure FROM smsdispatch_reader;
GRANT SELECT (id, name, size, mtime, failed_at, redacted_reason)
	ON smsdispatch.spool_failure TO smsdispatch_reader;

-- a refused spool file that named a list is loud (NOTIFY smsdispatch_alarm),
-- and its row names the list
ALTER TABLE smsdispatch.spool_failure ADD COLUMN list text;

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
REVOKE ALL ON FUNCTION smsdispatch.spool_refuse(text, bigint, timestamptz, text, text) FROM PUBLIC;

-- src/sql/50_ip2sms.sql: stats() shows the calling database's counters
-- only and names the database (made anew: its columns change)
DROP FUNCTION smsdispatch.stats();
-- Counters of the IP2SMS channel since stats_since() (they outlive a clean
-- restart; a crash or stats_reset() starts them at zero): requests by kind, answers by state, transport errors by
-- class, retries, request latency. Those of the calling database's worker
-- only, and database names it; zeros where no worker counted.
CREATE FUNCTION smsdispatch.stats()
RETURNS TABLE (name text, value bigint, database text)
AS 'MODULE_PATHNAME', 'sms_stats'
LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION smsdispatch.stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.stats() TO smsdispatch_reader, smsdispatch_admin;

-- src/sql/70_modem.sql, 71_channel_health.sql, 80_reports.sql: admins read
-- the views (1.1 let them write through them too, by a grant on every
-- relation of the schema)
REVOKE INSERT, UPDATE, DELETE ON smsdispatch.modem_stale, smsdispatch.channel_health,
	smsdispatch.delivery_stats, smsdispatch.gateway_stats, smsdispatch.escalation_stats,
	smsdispatch.queue, smsdispatch.queue_history
	FROM smsdispatch_admin;

-- src/sql/70_modem.sql: a sidecar that stops cleanly says goodbye
ALTER TABLE smsdispatch.modem ADD COLUMN stopped_at timestamptz;

-- The heartbeat: the modem's identity and health, plus the counts since
-- the previous heartbeat; a heartbeat after a goodbye means the sidecar
-- runs again. Also forgets received-message digests older than
-- a week (no modem keeps a message that long).
CREATE OR REPLACE FUNCTION smsdispatch.modem_heartbeat(modem text, heartbeat interval,
	imei text, imsi text, operator text, signal_percent int,
	sent int, received int, status_reports int, modem_errors int, resets int,
	sim_full boolean, last_error text, starting boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM smsdispatch.modem_check_name(modem);
	INSERT INTO smsdispatch.modem AS m (name, heartbeat, imei, imsi, operator, signal_percent,
		sent, received, status_reports, modem_errors, resets, sim_full, last_error)
	VALUES (modem, heartbeat, imei, imsi, operator, signal_percent,
		sent, received, status_reports, modem_errors, resets, sim_full, last_error)
	ON CONFLICT (name) DO UPDATE
	   SET heartbeat = EXCLUDED.heartbeat,
		   imei = coalesce(EXCLUDED.imei, m.imei),
		   imsi = coalesce(EXCLUDED.imsi, m.imsi),
		   operator = coalesce(EXCLUDED.operator, m.operator),
		   signal_percent = EXCLUDED.signal_percent,
		   last_seen = now(),
		   started_at = CASE WHEN starting THEN now() ELSE m.started_at END,
		   sent = m.sent + EXCLUDED.sent,
		   received = m.received + EXCLUDED.received,
		   status_reports = m.status_reports + EXCLUDED.status_reports,
		   modem_errors = m.modem_errors + EXCLUDED.modem_errors,
		   resets = m.resets + EXCLUDED.resets,
		   sim_full = EXCLUDED.sim_full,
		   last_error = coalesce(EXCLUDED.last_error, m.last_error),
		   stopped_at = NULL;
	DELETE FROM smsdispatch.modem_received r WHERE r.received_at < now() - interval '7 days';
END;
$$;

-- The goodbye of a sidecar that stops cleanly: marks its heartbeat row
-- stopped, so that smsdispatch.channel_health says no_sidecar at once
-- rather than after three missed heartbeats. It touches no SMS: a row the
-- sidecar could not record keeps its lease and is recovered as unknown like
-- after any stop. The next heartbeat under that name clears the mark.
-- Returns false when no heartbeat row has that name.
CREATE FUNCTION smsdispatch.modem_goodbye(modem text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM smsdispatch.modem_check_name(modem);
	UPDATE smsdispatch.modem m SET stopped_at = now() WHERE m.name = modem_goodbye.modem;
	RETURN FOUND;
END;
$$;
REVOKE ALL ON FUNCTION smsdispatch.modem_goodbye(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.modem_goodbye(text) TO smsdispatch_admin;

-- src/sql/71_channel_health.sql: a modem whose sidecar said goodbye is
-- no_sidecar at once, and each row names its database (made anew: CREATE
-- OR REPLACE VIEW would count as two CREATE VIEW commands)
DROP VIEW smsdispatch.channel_health;

-- One row per channel: its state, since when, and what went wrong last. A
-- modem channel with no sidecar running is 'no_sidecar': a sidecar runs
-- until it says goodbye (a clean stop) or until it misses three of its
-- heartbeats (a crash, a hang, a cut connection). Since: when the last one
-- went (NULL when none ever connected). A registered channel
-- (smsdispatch.channel_registry) is as its worker's sends last found it.
-- Database: the database whose worker and sidecars these are (each
-- database has its own).
CREATE VIEW smsdispatch.channel_health AS
	WITH sidecar AS (
		SELECT m.name, m.started_at, m.last_seen, m.stopped_at,
			   m.stopped_at IS NULL AND m.last_seen >= now() - 3 * m.heartbeat AS running,
			   coalesce(m.stopped_at, m.last_seen + 3 * m.heartbeat) AS gone_at
		  FROM smsdispatch.modem m)
	SELECT 'ip2sms'::text AS channel, h.state, h.since, h.last_error,
		   current_database()::text AS database
	  FROM smsdispatch.ip2sms_health() AS h
	UNION ALL
	SELECT r.name::text, r.state, r.state_since, r.last_error, current_database()::text
	  FROM smsdispatch.channel_registry r
	UNION ALL
	SELECT 'modem'::text,
		   CASE WHEN s.running THEN 'ok' ELSE 'no_sidecar' END,
		   CASE WHEN s.running THEN s.up_since ELSE s.gone_since END,
		   CASE WHEN s.running THEN NULL
				WHEN s.gone_since IS NULL THEN 'no modem sidecar has connected'
				WHEN latest.stopped_at IS NOT NULL THEN
					format('no sidecar running; the last one, %s, stopped at %s',
						   latest.name, latest.stopped_at)
				ELSE format('no sidecar seen within three heartbeats; the last one, %s, was last seen at %s',
							latest.name, latest.last_seen) END,
		   current_database()::text
	  FROM (SELECT coalesce(bool_or(c.running), false) AS running,
				   min(c.started_at) FILTER (WHERE c.running) AS up_since,
				   max(c.gone_at) AS gone_since
			  FROM sidecar c) AS s
	  LEFT JOIN LATERAL (SELECT c.name, c.last_seen, c.stopped_at FROM sidecar c
						  ORDER BY c.gone_at DESC, c.name LIMIT 1) AS latest ON true;
GRANT SELECT ON smsdispatch.channel_health TO smsdispatch_admin, smsdispatch_reader;

-- src/sql/71_channel_health.sql: failover is sticky; a channel that failed
-- over gets its SMS back once it has been ok for smsdispatch.failback_after
-- The channels that failed over, since when: a channel not 'ok' for
-- smsdispatch.failover_after enters (smsdispatch.failover), and leaves once
-- it has been 'ok' again for smsdispatch.failback_after. Meanwhile every SMS
-- queued on it that may fail over goes out on its failover target
-- (smsdispatch.failover_target) at once,
-- each new alarm and each escalation level included, instead of waiting
-- failover_after again. A channel never seen before it entered (a modem
-- whose sidecar has not started yet, a gateway not configured yet) has not
-- flapped: it takes its SMS back as soon as it is ok.
CREATE TABLE smsdispatch.channel_failover (
	channel text PRIMARY KEY,
	since timestamptz NOT NULL DEFAULT now(),
	never_seen boolean NOT NULL DEFAULT false
);
REVOKE ALL ON smsdispatch.channel_failover FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.channel_failover TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.channel_failover TO smsdispatch_reader;

-- The channel the SMS of channel leave on while it has failed over: ip2sms
-- and modem each other's, a registered channel the one its failover_to
-- option names (none without it).
CREATE FUNCTION smsdispatch.failover_target(channel text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE channel WHEN 'ip2sms' THEN 'modem' WHEN 'modem' THEN 'ip2sms'
		   ELSE (SELECT r.options ->> 'failover_to' FROM smsdispatch.channel_registry r
				  WHERE r.name = channel) END
$$;
REVOKE ALL ON FUNCTION smsdispatch.failover_target(text) FROM PUBLIC;

-- The channels whose SMS that may fail over leave on their failover target
-- now: each one that failed over while its target is ok, except that a
-- channel ok again hands its SMS to none that failed over too, so that two
-- recovering channels never hand SMS back and forth. The failover duty
-- sends those SMS on, and the claims (smsdispatch.claim_sends) leave them
-- to it.
CREATE FUNCTION smsdispatch.failing_over_channels()
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	WITH h AS MATERIALIZED (
		SELECT c.channel, c.state, smsdispatch.failover_target(c.channel) AS target,
			   EXISTS (SELECT 1 FROM smsdispatch.channel_failover f
					   WHERE f.channel = c.channel) AS failed_over
		  FROM smsdispatch.channel_health c
	)
	SELECT coalesce(array_agg(h.channel), '{}')
	  FROM h
	 WHERE h.failed_over
	   AND EXISTS (SELECT 1 FROM h AS o
				   WHERE o.channel = h.target AND o.state = 'ok'
					 AND (h.state <> 'ok' OR NOT o.failed_over))
$$;
REVOKE ALL ON FUNCTION smsdispatch.failing_over_channels() FROM PUBLIC;

-- The failover duty (the worker runs it after each escalation step, and so
-- does run_once()). For each recipient of an open alarm's current level
-- whose SMS has not left, at most batch of them a pass (checked counts
-- those acted on; SMS that can only wait are not held locked):
-- - queued on a channel that failed over (smsdispatch.channel_failover),
--   when its failover target (the other channel, smsdispatch.failover_target)
--   is ok and, unless this one is not ok, has not failed over itself: the
--   SMS goes at once out on the other channel: a new sms_log row with the
--   alarm's
--   message_id, event 'failover', the old row failed "failed over"; the
--   recipient's deadline counts from the new row's submission;
-- - failed for good for a transport reason: the same on the other channel
--   when it is ok, at once; else queued again on its own channel after
--   smsdispatch.retry_delay (event 'retried'): a level nobody could be sent
--   does not count as tried.
-- An alarm of which nobody on the current level holds the SMS and every
-- recipient waiting for it is stuck with no other channel to take it (none
-- ok, or none to fail over to) is
-- undeliverable: event 'undeliverable', a WARNING and NOTIFY
-- smsdispatch_alarm (smsdispatch.alarm_alert), once per level; it stays
-- open. With smsdispatch.failover_verification on, queued verification and
-- 2FA SMS fail over too. next_check: when a channel that SMS wait on
-- reaches its failover_after.
-- The worker keeps these plans until something invalidates them, so they
-- must not depend on how big the log was when they were made: a log that
-- was tiny then may hold a backlog of 100,000 now, and a scan of it for
-- each waiting recipient made every pass take seconds (test/t/043). So
-- each recipient's SMS is looked up by its key: the LATERAL subquery keeps
-- the recipients first, whatever the log's size.
CREATE OR REPLACE FUNCTION smsdispatch.failover(batch int DEFAULT 1000,
	OUT checked int, OUT failed_over int, OUT retried int, OUT undeliverable int,
	OUT next_check timestamptz)
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
	after interval := smsdispatch.setting('smsdispatch.failover_after')::interval;
	back interval := smsdispatch.setting('smsdispatch.failback_after')::interval;
	hc text[];
	hs text[];
	hsince timestamptz[];
	herr text[];
	hsaid text[];
	ht text[];
	leaving text[];
	c record;
	v record;
	new_id bigint;
	tries int;
	stuck bigint[] := '{}';
	why text[] := '{}';
	alarms bigint[] := '{}';
	gone record;
	w_rids bigint[];
	w_alarms bigint[];
	w_why text[];
BEGIN
	IF batch IS NULL OR batch < 1 THEN
		RAISE EXCEPTION 'batch % must be a positive number of SMS', coalesce(batch::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	checked := 0;
	failed_over := 0;
	retried := 0;
	undeliverable := 0;

	-- the channels' health and failover targets, read once; hsaid is the
	-- state as the failover messages name it: an ok channel that still
	-- fails over is back
	SELECT array_agg(h.channel), array_agg(h.state),
		   array_agg(coalesce(h.since, '-infinity')), array_agg(h.last_error),
		   array_agg(CASE WHEN h.state = 'ok'
					 THEN 'back, for less than smsdispatch.failback_after,'
					 ELSE h.state END),
		   array_agg(smsdispatch.failover_target(h.channel))
	  INTO hc, hs, hsince, herr, hsaid, ht
	  FROM smsdispatch.channel_health h;

	-- a channel with a failover target not ok for failover_after fails
	-- over; one ok again for failback_after takes its SMS back, one never
	-- seen before at once
	INSERT INTO smsdispatch.channel_failover (channel, never_seen)
	SELECT h.channel, h.since = '-infinity'
	  FROM unnest(hc, hs, hsince, ht) AS h(channel, state, since, target)
	 WHERE h.state <> 'ok' AND h.since <= now() - after AND h.target IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM smsdispatch.channel_failover f WHERE f.channel = h.channel)
	ON CONFLICT (channel) DO NOTHING;
	DELETE FROM smsdispatch.channel_failover f
	 USING unnest(hc, hs, hsince) AS h(channel, state, since)
	 WHERE f.channel = h.channel AND h.state = 'ok'
	   AND (f.never_seen OR h.since <= now() - back);
	-- the channels whose SMS that may fail over leave on the other one now
	leaving := smsdispatch.failing_over_channels();

	FOR c IN
		SELECT r.id AS rid, r.message_id, r.level, r.phone, m.number,
			   l.id AS lid, l.channel::text AS channel, l.send_state::text AS send_state,
			   l.type::text AS type, l.body, l.priority, l.last_error,
			   h.said AS ch_state, h.since AS ch_since,
			   o.channel AS other, o.state AS other_state,
			   coalesce(o.state = 'ok', false) AS other_ok
		  FROM smsdispatch.message_recipient r
		  JOIN smsdispatch.message m
			ON m.id = r.message_id AND m.state = 'open' AND m.level = r.level
		 CROSS JOIN LATERAL (SELECT * FROM verification.sms_log s
							  WHERE s.id = r.sms_log_id OFFSET 0) l
		  JOIN unnest(hc, hs, hsince, hsaid, ht) AS h(channel, state, since, said, target)
			ON h.channel = l.channel::text
		  LEFT JOIN unnest(hc, hs) AS o(channel, state) ON o.channel = h.target
		 WHERE r.status = 'NOT_SENT' AND r.sms_log_id IS NOT NULL
		   AND ((l.send_state = 'queued' AND h.channel = ANY (leaving))
				OR (l.send_state = 'failed' AND l.gateway_status IS NULL
					AND smsdispatch.failed_in_transport(l.send_state, l.gateway_status,
														 l.attempts)))
		 ORDER BY m.id, r.id
		 LIMIT batch
		 FOR NO KEY UPDATE OF m, r SKIP LOCKED
	LOOP
		checked := checked + 1;
		-- the SMS itself, unless a channel took it meanwhile
		PERFORM 1 FROM verification.sms_log l
		 WHERE l.id = c.lid AND l.send_state = c.send_state
		   FOR UPDATE SKIP LOCKED;
		CONTINUE WHEN NOT FOUND;

		IF c.other_ok THEN
			INSERT INTO verification.sms_log (phone_number, type, body, channel, message_id,
											  priority)
				VALUES (c.phone, c.type, c.body, c.other, c.message_id, c.priority)
				RETURNING id INTO new_id;
			UPDATE smsdispatch.message_recipient SET sms_log_id = new_id WHERE id = c.rid;
			IF c.send_state = 'queued' THEN
				UPDATE verification.sms_log
				   SET send_state = 'failed', updated_at = now(),
					   last_error = format('failed over to %s as sms_log %s: channel %s is %s',
										   c.other, new_id, c.channel, c.ch_state)
				 WHERE id = c.lid;
			END IF;
			INSERT INTO smsdispatch.event (message_id, kind, level, phone, detail)
				VALUES (c.message_id, 'failover', c.level, c.phone,
						format('%s to %s as sms_log %s: %s', c.channel, c.other, new_id,
							   CASE WHEN c.send_state = 'failed' THEN c.last_error
									ELSE format('channel %s is %s%s', c.channel, c.ch_state,
												smsdispatch.since_text(c.ch_since)) END));
			failed_over := failed_over + 1;
			CONTINUE;
		END IF;

		-- failed in transport, no other channel: not tried yet, so queued
		-- again on its channel, with backoff
		SELECT count(*) INTO tries FROM verification.sms_log l
		  JOIN smsdispatch.message m ON m.id = l.message_id
		 WHERE l.message_id = c.message_id AND l.phone_number = c.phone
		   AND l.inserted_at >= m.level_started_at;
		INSERT INTO verification.sms_log (phone_number, type, body, channel, message_id,
										  priority, next_attempt_at)
			VALUES (c.phone, c.type, c.body, c.channel, c.message_id, c.priority,
					now() + smsdispatch.retry_delay(tries))
			RETURNING id INTO new_id;
		UPDATE smsdispatch.message_recipient SET sms_log_id = new_id WHERE id = c.rid;
		INSERT INTO smsdispatch.event (message_id, kind, level, phone, detail)
			VALUES (c.message_id, 'retried', c.level, c.phone,
					format('%s again in %s as sms_log %s after: %s', c.channel,
						   smsdispatch.retry_delay(tries), new_id, c.last_error));
		retried := retried + 1;
		stuck := stuck || c.rid;
		alarms := alarms || c.message_id;
		why := why || format('its SMS to %s failed on channel %s (%s) and is retried; %s',
							 c.phone, c.channel, c.last_error,
							 CASE WHEN c.other IS NULL
								  THEN format('channel %s fails over to no other', c.channel)
								  ELSE format('no other channel is ok (%s is %s)', c.other,
											  coalesce(c.other_state, 'not a channel')) END);
	END LOOP;

	-- SMS that can only wait, queued on a channel that is not ok: for its
	-- channel's failover_after (next_check), or with no other channel ok at
	-- all (stuck)
	SELECT min(h.since + after) FILTER (WHERE o.state = 'ok' AND h.channel <> ALL (leaving)),
		   array_agg(r.id) FILTER (WHERE o.state IS DISTINCT FROM 'ok'),
		   array_agg(r.message_id) FILTER (WHERE o.state IS DISTINCT FROM 'ok'),
		   array_agg(format('channel %s is %s%s (%s), and %s',
							l.channel, h.state, smsdispatch.since_text(h.since), h.last_error,
							CASE WHEN h.target IS NULL THEN 'it fails over to no other'
								 ELSE 'no other channel is ok' END))
			   FILTER (WHERE o.state IS DISTINCT FROM 'ok')
	  INTO next_check, w_rids, w_alarms, w_why
	  FROM smsdispatch.message_recipient r
	  JOIN smsdispatch.message m
		ON m.id = r.message_id AND m.state = 'open' AND m.level = r.level
	 CROSS JOIN LATERAL (SELECT * FROM verification.sms_log s
						  WHERE s.id = r.sms_log_id OFFSET 0) l
	  JOIN unnest(hc, hs, hsince, herr, ht) AS h(channel, state, since, last_error, target)
		ON h.channel = l.channel::text
	  LEFT JOIN unnest(hc, hs) AS o(channel, state) ON o.channel = h.target
	 WHERE r.status = 'NOT_SENT' AND r.sms_log_id IS NOT NULL
	   AND l.send_state = 'queued' AND h.state <> 'ok';
	stuck := stuck || coalesce(w_rids, '{}');
	alarms := alarms || coalesce(w_alarms, '{}');
	why := why || coalesce(w_why, '{}');

	-- alarms nobody on the current level holds and nobody can be sent
	FOR gone IN
		SELECT m.id, m.number, m.level,
			   (SELECT w.reason FROM unnest(alarms, why) AS w(message_id, reason)
				 WHERE w.message_id = m.id LIMIT 1) AS reason
		  FROM smsdispatch.message m
		 WHERE m.id = ANY (alarms)
		   AND NOT EXISTS (SELECT 1 FROM smsdispatch.message_recipient r
						   WHERE r.message_id = m.id AND r.level = m.level
							 AND (r.status = 'NOT_YET_ACK'
								  OR (r.status = 'NOT_SENT' AND r.id <> ALL (stuck))))
		   AND NOT EXISTS (SELECT 1 FROM smsdispatch.event e
						   WHERE e.message_id = m.id AND e.kind = 'undeliverable'
							 AND e.at >= m.level_started_at)
		 ORDER BY m.id
		 LIMIT batch
	LOOP
		INSERT INTO smsdispatch.event (message_id, kind, level, detail)
			VALUES (gone.id, 'undeliverable', gone.level, gone.reason);
		PERFORM smsdispatch.alarm_alert(gone.number, 'undeliverable',
			format('nobody on level %s can be sent it: %s', gone.level, gone.reason));
		undeliverable := undeliverable + 1;
	END LOOP;

	-- verification codes, when asked for: queued on a channel whose SMS
	-- leave on the other one
	IF leaving <> '{}'
	   AND smsdispatch.setting('smsdispatch.failover_verification')::boolean THEN
		FOR v IN
			SELECT l.id, l.phone_number, l.type::text AS type, l.body, l.priority,
				   l.verification_id, l.channel::text AS channel, h.said, h.target AS other
			  FROM unnest(hc, hsaid, ht) AS h(channel, said, target)
			  JOIN verification.sms_log l
				ON l.channel = h.channel::smsdispatch.channel AND l.send_state = 'queued'
			 WHERE h.channel = ANY (leaving)
			   AND l.message_id IS NULL AND l.type IN ('verification', '2FA')
			 LIMIT batch
			 FOR UPDATE OF l SKIP LOCKED
		LOOP
			INSERT INTO verification.sms_log (phone_number, type, body, channel, priority,
											  verification_id)
				VALUES (v.phone_number, v.type, v.body, v.other, v.priority, v.verification_id)
				RETURNING id INTO new_id;
			UPDATE verification.sms_log
			   SET send_state = 'failed', updated_at = now(),
				   last_error = format('failed over to %s as sms_log %s: channel %s is %s',
									   v.other, new_id, v.channel, v.said)
			 WHERE id = v.id;
			failed_over := failed_over + 1;
		END LOOP;
	END IF;
END;
$$;

-- src/sql/72_callbacks.sql: Kannel's delivery reports and received SMS,
-- as the smsdispatch-http sidecar hands them in

-- The key of the delivery report tokens: one row, made at CREATE EXTENSION
-- from pg_strong_random. No role but the extension's owner reads it: a
-- token is smsdispatch.callback_token(id), an HMAC-SHA256 of the sms_log id
-- under this key, so whoever can reach the sidecar cannot forge a report
-- for a row it was not given the URL of. Not dumped: a restored database
-- makes a key of its own, and reports still under way for the old rows are
-- refused (403).
CREATE TABLE smsdispatch.callback_key (
	one			boolean PRIMARY KEY DEFAULT true CHECK (one),
	key			bytea NOT NULL CHECK (octet_length(key) >= 32),
	created_at	timestamptz NOT NULL DEFAULT now()
);

-- 32 bytes from the server's strong random source.
CREATE FUNCTION smsdispatch.callback_key_generate()
RETURNS bytea
AS 'MODULE_PATHNAME', 'sms_callback_key_generate'
LANGUAGE C VOLATILE STRICT
SET search_path = pg_catalog, pg_temp;

INSERT INTO smsdispatch.callback_key (key) VALUES (smsdispatch.callback_key_generate());

-- The token that a delivery report for sms_log row id must carry: 64 hex
-- digits, the HMAC-SHA256 of the id under smsdispatch.callback_key. The
-- channel that sends through Kannel puts it into the SMS's dlr-url.
CREATE FUNCTION smsdispatch.callback_token(id bigint)
RETURNS text
AS 'MODULE_PATHNAME', 'sms_callback_token'
LANGUAGE C STABLE STRICT
SET search_path = pg_catalog, pg_temp;

-- Whether token is the callback token of row id, compared in constant time.
CREATE FUNCTION smsdispatch.callback_token_matches(id bigint, token text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'sms_callback_token_matches'
LANGUAGE C STABLE STRICT
SET search_path = pg_catalog, pg_temp;

-- Records a Kannel delivery report on its sms_log row. status is Kannel's
-- DLR type: 1 delivered -> Delivered, 2 failed -> Undeliverable, 16 SMSC
-- rejected -> Rejected, 8 SMSC accepted -> Accepted, 4 buffered -> Enroute.
-- at is when the SMSC reported (%T), answer its words (%A), kept in
-- last_error when the SMS failed. A report settles a row in doubt (unknown
-- after a crash, or queued again by an operator since): it left, so it
-- becomes submitted and is never sent again. As the modem's status reports,
-- a final failure is never overwritten and a pending word never overwrites
-- Delivered. A token that is not the row's is refused (42501) and changes
-- nothing. Returns 'recorded', 'unchanged' (a report that changes nothing,
-- such as one Kannel sent again, or one for a row that failed) or 'no_row'
-- (the row is gone).
CREATE FUNCTION smsdispatch.delivery_report(id bigint, token text, status int,
	answer text DEFAULT NULL, at timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	word text;
BEGIN
	IF id IS NULL OR token IS NULL
	   OR NOT smsdispatch.callback_token_matches(id, token) THEN
		RAISE EXCEPTION 'the callback token for sms_log id % does not match', id
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'A delivery report must carry the token of its own row, smsdispatch.callback_token(id), as the SMS''s dlr-url gave it.';
	END IF;
	word := CASE status
		WHEN 1 THEN 'Delivered'
		WHEN 2 THEN 'Undeliverable'
		WHEN 16 THEN 'Rejected'
		WHEN 8 THEN 'Accepted'
		WHEN 4 THEN 'Enroute'
		END;
	IF word IS NULL THEN
		RAISE EXCEPTION 'delivery report status "%" of sms_log id % is not a Kannel DLR type',
			status, id
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Kannel''s dlr-url passes %d: 1 (delivered), 2 (failed), 4 (buffered), 8 (SMSC accepted) or 16 (SMSC rejected).';
	END IF;
	PERFORM FROM verification.sms_log l WHERE l.id = delivery_report.id FOR UPDATE;
	IF NOT FOUND THEN
		RETURN 'no_row';
	END IF;
	UPDATE verification.sms_log l
	   SET gateway_status = word,
		   status_changed_at = coalesce(at, now()),
		   send_state = CASE WHEN l.send_state IN ('unknown', 'queued') THEN 'submitted'
						ELSE l.send_state END,
		   submitted_at = coalesce(l.submitted_at, now()),
		   next_attempt_at = CASE WHEN l.send_state = 'queued' THEN NULL
							 ELSE l.next_attempt_at END,
		   last_error = CASE
				WHEN smsdispatch.gateway_status_class(word) = 'failed' THEN answer
				WHEN l.send_state = 'unknown' THEN
					'settled by a delivery report: the SMS had left'
				ELSE l.last_error END,
		   updated_at = now()
	 WHERE l.id = delivery_report.id AND l.send_state <> 'failed'
	   AND (l.gateway_status IS DISTINCT FROM word OR l.send_state IN ('unknown', 'queued'))
	   AND smsdispatch.gateway_status_class(l.gateway_status) IS DISTINCT FROM 'failed'
	   AND (smsdispatch.gateway_status_class(word) <> 'pending'
			OR smsdispatch.gateway_status_class(l.gateway_status) IS DISTINCT FROM 'delivered');
	RETURN CASE WHEN FOUND THEN 'recorded' ELSE 'unchanged' END;
END;
$$;

-- Hands an SMS that Kannel received to sms_receive: its outcome (ack,
-- duplicate_ack, unknown_number, not_recipient, no_number). Under a name
-- of the schema smsdispatch, so that the sidecar calls it qualified
-- wherever the extension's own schema is.
CREATE FUNCTION smsdispatch.callback_receive(sender text, body text)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
	SELECT @extschema@.sms_receive(sender, body);
END;

-- Privileges: the key is the owner's alone; the smsdispatch-http sidecar
-- logs in as an admin (or a role granted smsdispatch_admin) and records
-- reports and received SMS. callback_token and callback_token_matches stay
-- the owner's (the worker's): a role that may compute tokens may forge
-- reports.
REVOKE ALL ON smsdispatch.callback_key FROM PUBLIC;
REVOKE ALL ON FUNCTION smsdispatch.callback_key_generate(), smsdispatch.callback_token(bigint),
	smsdispatch.callback_token_matches(bigint, text),
	smsdispatch.delivery_report(bigint, text, int, text, timestamptz),
	smsdispatch.callback_receive(text, text)
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.delivery_report(bigint, text, int, text, timestamptz),
	smsdispatch.callback_receive(text, text)
	TO smsdispatch_admin;

-- src/sql/80_reports.sql

-- The report functions get standard SQL bodies: their names are bound when
-- they are created, not through the search_path of the role that reads the
-- reports (a superuser's may hold a schema the database owner writes to).

CREATE OR REPLACE FUNCTION smsdispatch.delivery_stats_per(grain text, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (period timestamptz, type text, channel text, logged bigint, sent bigint,
	delivered bigint, failed bigint, expired bigint, deleted bigint,
	undeliverable bigint, rejected bigint, unaccepted bigint, terminated bigint,
	send_failed bigint, send_unknown bigint, pending bigint,
	delivery_ratio numeric, error_rate numeric, median_delivery_s numeric,
	p95_delivery_s numeric)
LANGUAGE sql STABLE
BEGIN ATOMIC
	SELECT d.period, d.type, d.channel, d.logged, d.sent, d.delivered, d.failed,
		   d.expired, d.deleted, d.undeliverable, d.rejected, d.unaccepted,
		   d.terminated, d.send_failed, d.send_unknown, d.pending,
		   round(d.delivered::numeric / nullif(d.logged - d.pending, 0), 4),
		   round(d.failed::numeric / nullif(d.logged - d.pending, 0), 4),
		   round(d.median_s::numeric, 1), round(d.p95_s::numeric, 1)
	  FROM (SELECT c.*, c.expired + c.deleted + c.undeliverable + c.rejected
					   + c.unaccepted + c.terminated + c.send_failed AS failed
			  FROM (SELECT date_trunc(grain, l.inserted_at) AS period, l.type, l.channel,
				   count(*) AS logged,
				   count(*) FILTER (WHERE l.send_state = 'submitted'
									  AND l.gateway_status IS DISTINCT FROM 'Rejected'
									  AND l.gateway_status IS DISTINCT FROM 'Unaccepted') AS sent,
				   count(*) FILTER (WHERE o.outcome = 'delivered') AS delivered,
				   count(*) FILTER (WHERE o.outcome = 'expired') AS expired,
				   count(*) FILTER (WHERE o.outcome = 'deleted') AS deleted,
				   count(*) FILTER (WHERE o.outcome = 'undeliverable') AS undeliverable,
				   count(*) FILTER (WHERE o.outcome = 'rejected') AS rejected,
				   count(*) FILTER (WHERE o.outcome = 'unaccepted') AS unaccepted,
				   count(*) FILTER (WHERE o.outcome = 'terminated') AS terminated,
				   count(*) FILTER (WHERE o.outcome = 'send_failed') AS send_failed,
				   count(*) FILTER (WHERE o.outcome = 'send_unknown') AS send_unknown,
				   count(*) FILTER (WHERE o.outcome = 'pending') AS pending,
				   percentile_cont(0.5) WITHIN GROUP (ORDER BY smsdispatch.delivery_seconds(
					   l.inserted_at, l.status_changed_at, l.updated_at))
					   FILTER (WHERE o.outcome = 'delivered') AS median_s,
				   percentile_cont(0.95) WITHIN GROUP (ORDER BY smsdispatch.delivery_seconds(
					   l.inserted_at, l.status_changed_at, l.updated_at))
					   FILTER (WHERE o.outcome = 'delivered') AS p95_s
			  FROM verification.sms_log l
			 CROSS JOIN LATERAL (SELECT smsdispatch.sms_outcome(l.send_state,
										l.gateway_status) AS outcome) o
			 WHERE l.inserted_at >= "from" AND l.inserted_at < "to"
			 GROUP BY 1, 2, 3) c) d;
END;

CREATE OR REPLACE FUNCTION smsdispatch.delivery_stats("from" timestamptz, "to" timestamptz)
RETURNS TABLE (day date, type text, channel text, logged bigint, sent bigint,
	delivered bigint, failed bigint, expired bigint, deleted bigint,
	undeliverable bigint, rejected bigint, unaccepted bigint, terminated bigint,
	send_failed bigint, send_unknown bigint, pending bigint,
	delivery_ratio numeric, error_rate numeric, median_delivery_s numeric,
	p95_delivery_s numeric)
LANGUAGE sql STABLE
BEGIN ATOMIC
	SELECT d.period::date, d.type, d.channel, d.logged, d.sent, d.delivered, d.failed,
		   d.expired, d.deleted, d.undeliverable, d.rejected, d.unaccepted,
		   d.terminated, d.send_failed, d.send_unknown, d.pending, d.delivery_ratio,
		   d.error_rate, d.median_delivery_s, d.p95_delivery_s
	  FROM smsdispatch.delivery_stats_per('day', "from", "to") d;
END;

CREATE OR REPLACE FUNCTION smsdispatch.delivery_stats_hourly("from" timestamptz, "to" timestamptz)
RETURNS TABLE (hour timestamptz, type text, channel text, logged bigint, sent bigint,
	delivered bigint, failed bigint, expired bigint, deleted bigint,
	undeliverable bigint, rejected bigint, unaccepted bigint, terminated bigint,
	send_failed bigint, send_unknown bigint, pending bigint,
	delivery_ratio numeric, error_rate numeric, median_delivery_s numeric,
	p95_delivery_s numeric)
LANGUAGE sql STABLE
BEGIN ATOMIC
	SELECT * FROM smsdispatch.delivery_stats_per('hour', "from", "to");
END;

CREATE OR REPLACE FUNCTION smsdispatch.escalation_stats("from" timestamptz, "to" timestamptz)
RETURNS TABLE (list text, alarms bigint, open bigint, acked bigint,
	acked_level_1 bigint, acked_level_2 bigint, acked_level_3 bigint,
	exhausted bigint, cancelled bigint, median_ack_s numeric, p95_ack_s numeric)
LANGUAGE sql STABLE
BEGIN ATOMIC
	WITH m AS (
		SELECT m.list, m.state, smsdispatch.acked_level(m.id) AS level,
			   extract(epoch FROM m.acked_at - m.created_at)::float8 AS ack_s
		  FROM smsdispatch.message m
		 WHERE m.created_at >= "from" AND m.created_at < "to"
	)
	SELECT l.list, count(m.list), count(*) FILTER (WHERE m.state = 'open'),
		   count(*) FILTER (WHERE m.state = 'acked'),
		   count(*) FILTER (WHERE m.state = 'acked' AND m.level = 1),
		   count(*) FILTER (WHERE m.state = 'acked' AND m.level = 2),
		   count(*) FILTER (WHERE m.state = 'acked' AND m.level = 3),
		   count(*) FILTER (WHERE m.state = 'exhausted'),
		   count(*) FILTER (WHERE m.state = 'cancelled'),
		   round((percentile_cont(0.5) WITHIN GROUP (ORDER BY m.ack_s)
				  FILTER (WHERE m.state = 'acked'))::numeric, 1),
		   round((percentile_cont(0.95) WITHIN GROUP (ORDER BY m.ack_s)
				  FILTER (WHERE m.state = 'acked'))::numeric, 1)
	  FROM (SELECT r.name AS list FROM smsdispatch.recipient_list r
			UNION
			SELECT m.list FROM m) l
	  LEFT JOIN m ON m.list = l.list
	 GROUP BY l.list;
END;

CREATE OR REPLACE FUNCTION smsdispatch.gateway_stats("from" timestamptz, "to" timestamptz)
RETURNS TABLE (hour timestamptz, snapshots bigint, requests_send bigint,
	requests_status bigint, answers_accepted bigint, answers_enroute bigint,
	answers_delivered bigint, answers_expired bigint, answers_deleted bigint,
	answers_undeliverable bigint, answers_rejected bigint, answers_unknown bigint,
	answers_unaccepted bigint, answers_terminated bigint, answers_pending bigint,
	errors_connect bigint, errors_timeout bigint, errors_http_5xx bigint,
	errors_http_401 bigint, errors_http_other bigint, errors_parse bigint,
	retries bigint, latency_mean_ms numeric, latency_p95_le_ms float8)
LANGUAGE sql STABLE
BEGIN ATOMIC
	WITH snapshot AS (
		SELECT c.* FROM smsdispatch.counter_snapshot c
		 WHERE c.taken_at >= coalesce((SELECT max(b.taken_at)
										 FROM smsdispatch.counter_snapshot b
										WHERE b.taken_at < "from"), "from")
		   AND c.taken_at < "to"
		UNION ALL
		SELECT n.* FROM smsdispatch.counters_now() n
		 WHERE n.taken_at >= "from" AND n.taken_at < "to"
	), increase AS (
		SELECT s.taken_at, s.name,
			   CASE WHEN s.prev_value IS NULL THEN
						CASE WHEN s.server_started_at >= "from" THEN s.value END
					WHEN s.value < s.prev_value
						 OR s.server_started_at <> s.prev_started_at THEN s.value
					ELSE s.value - s.prev_value
			   END AS delta
		  FROM (SELECT c.*,
					   lag(c.value) OVER w AS prev_value,
					   lag(c.server_started_at) OVER w AS prev_started_at
				  FROM snapshot c
				WINDOW w AS (PARTITION BY c.name ORDER BY c.taken_at)) s
		 WHERE s.taken_at >= "from"
	), hourly AS (
		SELECT date_trunc('hour', i.taken_at) AS hour,
			   count(DISTINCT i.taken_at) AS snapshots,
			   i.name, coalesce(sum(i.delta), 0)::bigint AS n
		  FROM increase i
		 GROUP BY 1, 3
	)
	SELECT h.hour, max(h.snapshots) AS snapshots,
		   sum(h.n) FILTER (WHERE h.name = 'requests_send')::bigint AS requests_send,
		   sum(h.n) FILTER (WHERE h.name = 'requests_status')::bigint AS requests_status,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Accepted')::bigint AS answers_accepted,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Enroute')::bigint AS answers_enroute,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Delivered')::bigint AS answers_delivered,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Expired')::bigint AS answers_expired,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Deleted')::bigint AS answers_deleted,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Undeliverable')::bigint AS answers_undeliverable,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Rejected')::bigint AS answers_rejected,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Unknown')::bigint AS answers_unknown,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Unaccepted')::bigint AS answers_unaccepted,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Terminated')::bigint AS answers_terminated,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Pending')::bigint AS answers_pending,
		   sum(h.n) FILTER (WHERE h.name = 'errors_connect')::bigint AS errors_connect,
		   sum(h.n) FILTER (WHERE h.name = 'errors_timeout')::bigint AS errors_timeout,
		   sum(h.n) FILTER (WHERE h.name = 'errors_http_5xx')::bigint AS errors_http_5xx,
		   sum(h.n) FILTER (WHERE h.name = 'errors_http_401')::bigint AS errors_http_401,
		   sum(h.n) FILTER (WHERE h.name = 'errors_http_other')::bigint AS errors_http_other,
		   sum(h.n) FILTER (WHERE h.name = 'errors_parse')::bigint AS errors_parse,
		   sum(h.n) FILTER (WHERE h.name = 'retries')::bigint AS retries,
		   round(sum(h.n) FILTER (WHERE h.name = 'latency_us_sum') / 1000.0
				 / nullif(sum(h.n) FILTER (WHERE h.name = 'latency_count'), 0), 1)
			   AS latency_mean_ms,
		   smsdispatch.histogram_quantile(0.95,
			   '{10,50,100,500,1000,5000,Infinity}',
			   ARRAY[coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_10ms'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_50ms'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_100ms'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_500ms'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_1s'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_5s'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_gt_5s'), 0)]::bigint[])
			   AS latency_p95_le_ms
	  FROM hourly h
	 GROUP BY h.hour;
END;

-- The retention also deletes refused spool files' rows, and its last NOTICE
-- says what it deleted and what it kept, and why.

-- One batch of the retention: of one kind of rows past its cutoff, at most
-- batch_size, skipping rows that others have locked (the next run takes
-- them). Kinds: alarms (closed before the cutoff and out of number
-- quarantine, with their recipients and events), log_rows (SMS no longer
-- queued or sending that belong to no remaining alarm, neither as its page
-- nor as its confirmation), inbox_rows,
-- snapshots, spool_failures (refused spool files, by failed_at), and
-- redacted: SMS in a final state for longer than
-- smsdispatch.redact_after get an empty body, their length and parts kept.
-- after_id is where the previous batch of the same kind stopped (the
-- redacted rows stay, so their kind walks by id); n is how many rows the
-- batch did and last_id where it stopped. The statements are fixed, one per
-- kind, and run under a pinned search_path.
CREATE OR REPLACE FUNCTION smsdispatch.purge_batch(kind text, older_than interval,
	started timestamptz, batch_size int, after_id bigint,
	OUT n bigint, OUT last_id bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cutoff timestamptz := started - older_than;
BEGIN
	last_id := after_id;
	CASE kind
	WHEN 'alarms' THEN
		cutoff := least(cutoff, started - smsdispatch.number_quarantine());
		DELETE FROM smsdispatch.message WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM smsdispatch.message
			 WHERE state <> 'open' AND closed_at < cutoff
			 LIMIT batch_size FOR UPDATE SKIP LOCKED));
	WHEN 'log_rows' THEN
		DELETE FROM verification.sms_log WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM verification.sms_log
			 WHERE inserted_at < cutoff AND send_state <> ALL ('{queued,sending}')
			   AND message_id IS NULL AND confirms IS NULL
			 LIMIT batch_size FOR UPDATE SKIP LOCKED));
	WHEN 'inbox_rows' THEN
		DELETE FROM smsdispatch.inbox WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM smsdispatch.inbox WHERE received_at < cutoff
			 LIMIT batch_size FOR UPDATE SKIP LOCKED));
	WHEN 'snapshots' THEN
		DELETE FROM smsdispatch.counter_snapshot WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM smsdispatch.counter_snapshot WHERE taken_at < cutoff
			 LIMIT batch_size FOR UPDATE SKIP LOCKED));
	WHEN 'spool_failures' THEN
		DELETE FROM smsdispatch.spool_failure WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM smsdispatch.spool_failure WHERE failed_at < cutoff
			 LIMIT batch_size FOR UPDATE SKIP LOCKED));
	WHEN 'redacted' THEN
		IF smsdispatch.redact_after() IS NULL THEN
			n := 0;
			RETURN;
		END IF;
		cutoff := started - smsdispatch.redact_after();
		WITH batch AS (
			SELECT l.id FROM verification.sms_log l
			 WHERE l.id > after_id AND l.inserted_at < cutoff AND l.updated_at < cutoff
			   AND l.redacted_at IS NULL
			   AND smsdispatch.sms_outcome(l.send_state, l.gateway_status) <> 'pending'
			 ORDER BY l.id LIMIT batch_size FOR UPDATE SKIP LOCKED
		), done AS (
			UPDATE verification.sms_log l
			   SET body = '', body_length = length(l.body),
				   body_parts = (@extschema@.sms_segments(l.body)).parts,
				   redacted_at = now()
			  FROM batch WHERE l.id = batch.id
			RETURNING l.id
		)
		SELECT count(*), coalesce(max(id), after_id) INTO n, last_id FROM done;
		RETURN;
	ELSE
		RAISE EXCEPTION 'unknown kind of purge batch "%"', kind
			USING ERRCODE = 'invalid_parameter_value';
	END CASE;
	GET DIAGNOSTICS n = ROW_COUNT;
END;
$$;

-- Removes what is no longer needed and blanks what must not be kept, in
-- batches of batch_size rows, each in its own short transaction (see
-- smsdispatch.purge_batch for what goes); a NOTICE after each batch tells how
-- far it got, and a last one what it deleted and what it kept of what is
-- older than older_than, and why (open, in number quarantine, unfinished,
-- part of a kept alarm, locked), so that a purge that deletes nothing says
-- why. The count of refused spool files deleted is in that NOTICE only: the
-- result columns stay those of 1.1. A PROCEDURE because only a procedure
-- can COMMIT between batches: row locks are held for one batch only and the
-- deleted space becomes reusable as the purge goes. So it must be called
-- outside a transaction block: CALL smsdispatch.purge('90 days').
-- A procedure that commits cannot carry SET search_path; instead it pins the
-- path itself at the start of each of its transactions, before anything
-- else is resolved (pg_cron may run it as a superuser with a search_path the
-- database owner chose).
CREATE OR REPLACE PROCEDURE smsdispatch.purge(older_than interval, batch_size int DEFAULT 10000,
	INOUT alarms bigint DEFAULT NULL, INOUT log_rows bigint DEFAULT NULL,
	INOUT inbox_rows bigint DEFAULT NULL, INOUT snapshots bigint DEFAULT NULL,
	INOUT redacted bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
	started timestamptz;
	kind text;
	total bigint;
	after bigint;
	b record;
	spool_failures bigint;
	cutoff timestamptz;
	quarantine interval;
	kept record;
BEGIN
	PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
	PERFORM smsdispatch.prevent_in_transaction_block('CALL smsdispatch.purge()');
	IF older_than IS NULL THEN
		RAISE EXCEPTION 'older_than must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'For example CALL smsdispatch.purge(''90 days'').';
	END IF;
	IF older_than < interval '0' THEN
		RAISE EXCEPTION 'older_than "%" must not be negative', older_than
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example CALL smsdispatch.purge(''90 days'').';
	END IF;
	IF batch_size IS NULL OR batch_size < 1 THEN
		RAISE EXCEPTION 'batch_size % must be at least 1', batch_size
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	started := now();
	FOREACH kind IN ARRAY ARRAY['alarms', 'log_rows', 'inbox_rows', 'snapshots',
								 'spool_failures', 'redacted']
	LOOP
		total := 0;
		after := 0;
		LOOP
			SELECT * INTO b FROM smsdispatch.purge_batch(kind, older_than, started,
														   batch_size, after);
			total := total + b.n;
			after := b.last_id;
			COMMIT;
			PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
			EXIT WHEN b.n < batch_size;
			RAISE NOTICE 'smsdispatch.purge: % % so far', total, replace(kind, '_', ' ');
		END LOOP;
		CASE kind
			WHEN 'alarms' THEN alarms := total;
			WHEN 'log_rows' THEN log_rows := total;
			WHEN 'inbox_rows' THEN inbox_rows := total;
			WHEN 'snapshots' THEN snapshots := total;
			WHEN 'spool_failures' THEN spool_failures := total;
			ELSE redacted := total;
		END CASE;
	END LOOP;

	-- what is older than the cutoff and still there, by why it stayed;
	-- "locked" is what another session held (or what became due meanwhile):
	-- the next purge takes it
	cutoff := started - older_than;
	quarantine := smsdispatch.number_quarantine();
	SELECT m.open, m.quarantined, l.unfinished, l.of_alarms,
		   m.locked + l.locked
		   + (SELECT count(*) FROM smsdispatch.inbox i WHERE i.received_at < cutoff)
		   + (SELECT count(*) FROM smsdispatch.counter_snapshot c WHERE c.taken_at < cutoff)
		   + (SELECT count(*) FROM smsdispatch.spool_failure f WHERE f.failed_at < cutoff)
		   AS locked
	  INTO kept
	  FROM (SELECT count(*) FILTER (WHERE a.state = 'open' AND a.created_at < cutoff) AS open,
				   count(*) FILTER (WHERE a.state <> 'open' AND a.closed_at < cutoff
									  AND a.closed_at >= started - quarantine) AS quarantined,
				   count(*) FILTER (WHERE a.state <> 'open'
									  AND a.closed_at < least(cutoff, started - quarantine)) AS locked
			  FROM smsdispatch.message a) m,
		   (SELECT count(*) FILTER (WHERE s.send_state = ANY ('{queued,sending}')) AS unfinished,
				   count(*) FILTER (WHERE s.send_state <> ALL ('{queued,sending}')
									  AND (s.message_id IS NOT NULL OR s.confirms IS NOT NULL)) AS of_alarms,
				   count(*) FILTER (WHERE s.send_state <> ALL ('{queued,sending}')
									  AND s.message_id IS NULL AND s.confirms IS NULL) AS locked
			  FROM verification.sms_log s
			 WHERE s.inserted_at < cutoff) l;
	RAISE NOTICE 'smsdispatch.purge deleted alarms: %, log rows: %, inbox rows: %, counter snapshots: %, spool failures: %; bodies blanked: %',
		alarms, log_rows, inbox_rows, snapshots, spool_failures, redacted
		USING DETAIL = format('Kept although older than %s: open alarms: %s, alarms closed within '
							  'smsdispatch.number_quarantine (%s): %s, log rows queued or sending: %s, '
							  'log rows of kept alarms: %s, rows locked by another session (the next '
							  'purge takes them): %s.',
							  older_than, kept.open, quarantine, kept.quarantined, kept.unfinished,
							  kept.of_alarms, kept.locked);
END;
$$;

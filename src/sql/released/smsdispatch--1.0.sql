-- smsdispatch: tables of the dispatcher (schema smsdispatch) and the SMS log
-- (schema verification, shared with the application that owns verifications).

\echo Use "CREATE EXTENSION smsdispatch" to load this file. \quit

CREATE SCHEMA smsdispatch;
-- The application may have schema verification already (its verifications
-- table lives there). The extension adopts it as a member either way: pg_dump
-- then leaves its creation to CREATE EXTENSION, which a restore runs before
-- the application's tables (a separate CREATE SCHEMA would come after it and
-- fail). To drop the extension and keep the schema, first
-- ALTER EXTENSION smsdispatch DROP SCHEMA verification.
DO $$
BEGIN
	IF to_regnamespace('verification') IS NULL THEN
		CREATE SCHEMA verification;
	ELSE
		ALTER EXTENSION smsdispatch ADD SCHEMA verification;
	END IF;
END;
$$;

-- The enumerated values of the log are domains rather than table CHECKs: a
-- table CHECK is read back from its stored text on every INSERT and UPDATE
-- of its table (four of them cost as much as the rest of a log row), while
-- a domain's CHECK is parsed once per session and cached.
CREATE DOMAIN smsdispatch.sms_type AS text
	CHECK (VALUE IN ('verification', 'medication_request', 'text', '2FA'));
CREATE DOMAIN smsdispatch.channel AS text
	CHECK (VALUE IN ('ip2sms', 'modem'));
CREATE DOMAIN smsdispatch.send_state AS text
	CHECK (VALUE IN ('queued', 'sending', 'submitted', 'failed', 'unknown'));
CREATE DOMAIN smsdispatch.gateway_status AS text
	CHECK (VALUE IN ('Accepted', 'Enroute', 'Delivered', 'Expired', 'Deleted',
					 'Undeliverable', 'Rejected', 'Unknown', 'Unaccepted',
					 'Terminated', 'Pending'));

-- A named group of on-duty people, each on an escalation level.
CREATE TABLE smsdispatch.recipient_list (
	id			bigserial PRIMARY KEY,
	name		text NOT NULL UNIQUE CHECK (name <> ''),
	description	text,
	repeat		int NOT NULL DEFAULT 0 CHECK (repeat BETWEEN 0 AND 100),
	created_at	timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE smsdispatch.list_member (
	id			bigserial PRIMARY KEY,
	list		text NOT NULL REFERENCES smsdispatch.recipient_list (name)
				ON UPDATE CASCADE ON DELETE CASCADE,
	phone		text NOT NULL CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
	name		text,
	level		int NOT NULL DEFAULT 1 CHECK (level BETWEEN 1 AND 3),
	ack_timeout	interval NOT NULL DEFAULT '15 min' CHECK (ack_timeout > '0'),
	UNIQUE (list, phone, level)
);

-- One alarm. number is unique among open alarms and recently closed ones; the
-- allocator in sms_enqueue enforces the time part, the index the open part.
CREATE TABLE smsdispatch.message (
	id				bigserial PRIMARY KEY,
	number			text NOT NULL CHECK (number ~ '^[0-9]{4}$'),
	body			text NOT NULL,
	list			text NOT NULL,
	state			text NOT NULL DEFAULT 'open'
					CHECK (state IN ('open', 'acked', 'exhausted', 'cancelled')),
	level			int NOT NULL DEFAULT 1 CHECK (level BETWEEN 1 AND 3),
	round			int NOT NULL DEFAULT 1 CHECK (round >= 1),
	level_started_at timestamptz,
	acked_at		timestamptz,
	acked_by		text,
	closed_at		timestamptz,
	source			text NOT NULL DEFAULT 'sql' CHECK (source IN ('sql', 'spool')),
	channel			smsdispatch.channel NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT now(),
	-- when the escalation must next look at this alarm: the earliest deadline
	-- on its level, or now when a recipient failed; NULL = nothing to wait for
	check_at		timestamptz,
	CHECK ((state = 'open') = (closed_at IS NULL))
);
CREATE UNIQUE INDEX message_open_number_idx ON smsdispatch.message (number)
	WHERE state = 'open';
CREATE INDEX message_number_closed_idx ON smsdispatch.message (number, closed_at DESC);
CREATE INDEX message_open_idx ON smsdispatch.message (id) WHERE state = 'open';
-- the escalation finds due alarms here, however many closed ones there are
CREATE INDEX message_check_idx ON smsdispatch.message (check_at) WHERE state = 'open';

-- One row per (alarm, recipient); status names are the seed's.
CREATE TABLE smsdispatch.message_recipient (
	id			bigserial PRIMARY KEY,
	message_id	bigint NOT NULL REFERENCES smsdispatch.message ON DELETE CASCADE,
	phone		text NOT NULL,
	name		text,
	level		int NOT NULL CHECK (level BETWEEN 1 AND 3),
	ack_timeout	interval NOT NULL,
	status		text NOT NULL DEFAULT 'NOT_SENT'
				CHECK (status IN ('NOT_SENT', 'NOT_YET_ACK', 'ACK', 'ACK_TIME_OVER')),
	sent_at		timestamptz,
	deadline	timestamptz,
	acked_at	timestamptz,
	sms_log_id	bigint,
	UNIQUE (message_id, phone, level)
);
CREATE INDEX message_recipient_phone_idx ON smsdispatch.message_recipient (phone);
CREATE INDEX message_recipient_sms_log_idx ON smsdispatch.message_recipient (sms_log_id)
	WHERE sms_log_id IS NOT NULL;
CREATE INDEX message_recipient_waiting_idx ON smsdispatch.message_recipient (deadline)
	WHERE status = 'NOT_YET_ACK';

-- Every SMS that leaves or is meant to leave: the seed's columns, then the
-- dispatch state of the channels.
CREATE TABLE verification.sms_log (
	id					bigserial PRIMARY KEY,
	phone_number		text NOT NULL,
	type				smsdispatch.sms_type NOT NULL DEFAULT 'text',
	body				text NOT NULL,
	gateway_id			text,
	gateway_status		smsdispatch.gateway_status,
	status_changed_at	timestamptz,
	updated_at			timestamptz NOT NULL DEFAULT now(),
	inserted_at			timestamptz NOT NULL DEFAULT now(),
	channel				smsdispatch.channel NOT NULL DEFAULT 'ip2sms',
	send_state			smsdispatch.send_state NOT NULL DEFAULT 'queued',
	attempts			int NOT NULL DEFAULT 0,
	next_attempt_at		timestamptz,
	last_error			text,
	next_poll_at		timestamptz,
	submitted_at		timestamptz,
	claimed_by			text,
	lease_until			timestamptz,
	message_id			bigint REFERENCES smsdispatch.message ON DELETE SET NULL,
	verification_id		text
);
-- The channels find their work through these partial indexes, never by a scan.
CREATE INDEX sms_log_queued_idx ON verification.sms_log (channel, next_attempt_at, id)
	WHERE send_state = 'queued';
CREATE INDEX sms_log_sending_idx ON verification.sms_log (channel, lease_until)
	WHERE send_state = 'sending';
CREATE INDEX sms_log_poll_idx ON verification.sms_log (next_poll_at)
	WHERE next_poll_at IS NOT NULL;
CREATE INDEX sms_log_phone_idx ON verification.sms_log (phone_number, inserted_at);
CREATE INDEX sms_log_gateway_id_idx ON verification.sms_log (gateway_id)
	WHERE gateway_id IS NOT NULL;
CREATE INDEX sms_log_message_idx ON verification.sms_log (message_id)
	WHERE message_id IS NOT NULL;
CREATE INDEX sms_log_inserted_idx ON verification.sms_log (inserted_at);

-- Every received SMS, matched or not, and what it did.
CREATE TABLE smsdispatch.inbox (
	id			bigserial PRIMARY KEY,
	sender		text NOT NULL,
	body		text NOT NULL,
	outcome		text NOT NULL CHECK (outcome IN
				('ack', 'duplicate_ack', 'unknown_number', 'not_recipient', 'no_number')),
	number		text,
	message_id	bigint REFERENCES smsdispatch.message ON DELETE SET NULL,
	received_at	timestamptz NOT NULL DEFAULT now()
);

-- The audit trail of each alarm.
CREATE TABLE smsdispatch.event (
	id			bigserial PRIMARY KEY,
	message_id	bigint NOT NULL REFERENCES smsdispatch.message ON DELETE CASCADE,
	at			timestamptz NOT NULL DEFAULT now(),
	kind		text NOT NULL CHECK (kind IN ('enqueued', 'sent', 'level_started',
				'timed_out', 'escalated', 'repeated', 'acked', 'duplicate_ack',
				'exhausted', 'cancelled', 'send_failed')),
	level		int,
	phone		text,
	detail		text
);
CREATE INDEX event_message_idx ON smsdispatch.event (message_id, at);

-- The four-digit number allocator's cursor: one row, locked by each enqueue.
-- The first enqueue creates the row (smsdispatch.allocate_number), so that
-- pg_dump's copy of it is the only one after a restore.
CREATE TABLE smsdispatch.number_cursor (
	only_row	boolean PRIMARY KEY DEFAULT true CHECK (only_row),
	last_number	int NOT NULL DEFAULT 0 CHECK (last_number BETWEEN 0 AND 9999)
);

SELECT pg_catalog.pg_extension_config_dump('smsdispatch.recipient_list', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.recipient_list_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.list_member', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.list_member_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.message', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.message_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.message_recipient', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.message_recipient_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('verification.sms_log', '');
SELECT pg_catalog.pg_extension_config_dump('verification.sms_log_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.inbox', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.inbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.event', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.number_cursor', '');
-- SQL declarations of the functions written in C (src/*.c).

CREATE FUNCTION sms_normalize_phone(phone text)
RETURNS text
AS 'MODULE_PATHNAME', 'sms_normalize_phone'
LANGUAGE C STABLE PARALLEL SAFE;

-- The E.164 form of a phone number, or NULL when it has none.
CREATE FUNCTION smsdispatch.try_normalize_phone(phone text)
RETURNS text
AS 'MODULE_PATHNAME', 'sms_try_normalize_phone_sql'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE FUNCTION sms_segments(body text,
	OUT encoding text, OUT units int, OUT parts int)
RETURNS record
AS 'MODULE_PATHNAME', 'sms_segments'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- sms_send and the verification trigger write the log row as the log's
-- owner from C (see sms_queue_insert in queue.c), so they are not SECURITY
-- DEFINER: they run as the caller and need no SET search_path.
CREATE FUNCTION sms_send(phone text, body text, type text DEFAULT 'text',
	channel text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'sms_send'
LANGUAGE C VOLATILE;

-- Checks an SMS text against smsdispatch.max_parts; field names the argument
-- in the error message.
CREATE FUNCTION smsdispatch.check_body(body text, field text DEFAULT 'body')
RETURNS void
AS 'MODULE_PATHNAME', 'sms_check_body'
LANGUAGE C STABLE;

CREATE FUNCTION smsdispatch.verification_trigger()
RETURNS trigger
AS 'MODULE_PATHNAME', 'sms_verification_trigger'
LANGUAGE C;

-- The value of an smsdispatch.* setting. Unlike current_setting(), calling
-- it loads the module first, so the settings exist even in a session of a
-- server that does not preload smsdispatch.
CREATE FUNCTION smsdispatch.setting(name text)
RETURNS text
AS 'MODULE_PATHNAME', 'sms_setting'
LANGUAGE C STABLE STRICT;

-- Wakes the background worker and, by NOTIFY smsdispatch_modem, the modem
-- sidecars when the transaction that queued SMS commits.
CREATE FUNCTION smsdispatch.wake_on_change()
RETURNS trigger
AS 'MODULE_PATHNAME', 'sms_wake_on_change'
LANGUAGE C;

-- The channel a call asked for (checked), or smsdispatch.default_channel.
-- In C so that the settings exist even in a session that has not loaded the
-- library yet (it is not always preloaded).
CREATE FUNCTION smsdispatch.resolve_channel(channel text)
RETURNS text
AS 'MODULE_PATHNAME', 'sms_resolve_channel_sql'
LANGUAGE C STABLE;

-- smsdispatch.number_quarantine as an interval, for the same reason.
CREATE FUNCTION smsdispatch.number_quarantine()
RETURNS interval
AS 'MODULE_PATHNAME', 'sms_number_quarantine'
LANGUAGE C STABLE;
-- Recipient lists and alarms: the SQL API that needs no C.

CREATE FUNCTION sms_list_create(name text, description text DEFAULT NULL,
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

CREATE FUNCTION sms_list_add(list text, phone text, level int DEFAULT 1,
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

-- The text an alarm's recipients receive: the number first, so that a reply
-- can quote it.
CREATE FUNCTION smsdispatch.alarm_text(number text, body text)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT '[' || number || '] ' || body $$;

-- Hands one level of each given alarm to its channel: one queued sms_log
-- row per recipient on that level, the recipients waiting for it to be
-- submitted. Set-based, so that the escalation starts any number of levels
-- in a few statements.
CREATE FUNCTION smsdispatch.start_levels(message_ids bigint[], levels int[])
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
-- a small set of alarms, each reached by index: nested loops over the
-- per-alarm indexes, never a hash or merge join over a scan of the history
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
	-- the level first: the statements below find each alarm's recipients
	-- through it, linear in the number of alarms. Nothing to wait for until
	-- a channel submits the level.
	UPDATE smsdispatch.message m
	   SET level = p.level, level_started_at = now(), check_at = NULL
	  FROM unnest(message_ids, levels) AS p(message_id, level)
	 WHERE m.id = p.message_id;

	WITH due AS (
		SELECT r.id, r.phone, m.id AS message_id, m.number, m.body, m.channel
		  FROM smsdispatch.message m
		  JOIN smsdispatch.message_recipient r
			ON r.message_id = m.id AND r.level = m.level
		 WHERE m.id = ANY (message_ids)
	), queued AS (
		INSERT INTO verification.sms_log (phone_number, type, body, channel, message_id)
		SELECT due.phone, 'text', smsdispatch.alarm_text(due.number, due.body),
			   due.channel, due.message_id
		  FROM due
		 ORDER BY due.id
		RETURNING id, message_id, phone_number
	)
	UPDATE smsdispatch.message_recipient r
	   SET sms_log_id = q.id, status = 'NOT_SENT', sent_at = NULL,
		   deadline = NULL, acked_at = NULL
	  FROM queued q
	  JOIN smsdispatch.message m ON m.id = q.message_id
	 WHERE r.message_id = q.message_id AND r.phone = q.phone_number
	   AND r.level = m.level;

	INSERT INTO smsdispatch.event (message_id, kind, level, detail)
	SELECT m.id, 'level_started', m.level, 'round ' || m.round
	  FROM smsdispatch.message m
	 WHERE m.id = ANY (message_ids);
$$;

-- Hands the first level at or after from_level that has recipients to the
-- channel. Returns the level started, or NULL when no later level has
-- anyone on it.
CREATE FUNCTION smsdispatch.start_level(message_id bigint, from_level int)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	lvl int;
BEGIN
	SELECT min(r.level) INTO lvl FROM smsdispatch.message_recipient r
	 WHERE r.message_id = start_level.message_id AND r.level >= from_level;
	IF lvl IS NOT NULL THEN
		PERFORM smsdispatch.start_levels(ARRAY[message_id], ARRAY[lvl]);
	END IF;
	RETURN lvl;
END;
$$;

-- Picks the next free four-digit number after the last one given. The cursor
-- row lock serialises concurrent enqueues, and each statement after it sees
-- what the previous holder committed.
CREATE FUNCTION smsdispatch.allocate_number()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	last_given int;
	quarantine interval := smsdispatch.number_quarantine();
	candidate text;
BEGIN
	SELECT c.last_number INTO last_given FROM smsdispatch.number_cursor c FOR UPDATE;
	IF NOT FOUND THEN
		INSERT INTO smsdispatch.number_cursor DEFAULT VALUES ON CONFLICT DO NOTHING;
		SELECT c.last_number INTO last_given FROM smsdispatch.number_cursor c FOR UPDATE;
	END IF;
	-- probe one number at a time: the next one is almost always free
	FOR step IN 1..10000 LOOP
		candidate := lpad(((last_given + step) % 10000)::text, 4, '0');
		IF NOT EXISTS (
			SELECT 1 FROM smsdispatch.message m
			 WHERE m.number = candidate
			   AND (m.state = 'open' OR m.closed_at > now() - quarantine)) THEN
			UPDATE smsdispatch.number_cursor SET last_number = candidate::int;
			RETURN candidate;
		END IF;
	END LOOP;
	RAISE EXCEPTION 'all 10000 alarm numbers are in use'
		USING ERRCODE = 'configuration_limit_exceeded',
			  DETAIL = format('Every number belongs to an open alarm or to one closed less than smsdispatch.number_quarantine (%s) ago.',
							 current_setting('smsdispatch.number_quarantine')),
			  HINT = 'Close or cancel alarms, or lower smsdispatch.number_quarantine.';
END;
$$;

CREATE FUNCTION sms_enqueue(body text, list text, channel text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	chosen text := smsdispatch.resolve_channel(channel);
	msg_id bigint;
	num text;
BEGIN
	IF list IS NULL OR btrim(list) = '' THEN
		RAISE EXCEPTION 'recipient list name must not be empty'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM smsdispatch.recipient_list l WHERE l.name = sms_enqueue.list) THEN
		RAISE EXCEPTION 'recipient list "%" does not exist', list
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with sms_list_create() and add members with sms_list_add().';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM smsdispatch.list_member m WHERE m.list = sms_enqueue.list) THEN
		RAISE EXCEPTION 'recipient list "%" has no members', list
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Add members with sms_list_add().';
	END IF;
	-- the recipients receive the text behind the number: check what they get
	PERFORM smsdispatch.check_body(body);
	PERFORM smsdispatch.check_body(smsdispatch.alarm_text('0000', body),
								   'body with its alarm number "[0000] "');

	num := smsdispatch.allocate_number();
	INSERT INTO smsdispatch.message (number, body, list, channel)
		VALUES (num, sms_enqueue.body, sms_enqueue.list, chosen)
		RETURNING id INTO msg_id;
	INSERT INTO smsdispatch.message_recipient (message_id, phone, name, level, ack_timeout)
	SELECT msg_id, m.phone, m.name, m.level, m.ack_timeout
	  FROM smsdispatch.list_member m
	 WHERE m.list = sms_enqueue.list;
	INSERT INTO smsdispatch.event (message_id, kind, detail)
		VALUES (msg_id, 'enqueued', 'list ' || list);
	PERFORM smsdispatch.start_level(msg_id, 1);
	RETURN num;
END;
$$;

-- The alarm a number refers to now: the open one, else the most recently
-- closed one still in quarantine.
CREATE FUNCTION smsdispatch.find_alarm(number text)
RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT m.id FROM smsdispatch.message m
	 WHERE m.number = find_alarm.number
	   AND (m.state = 'open'
			OR m.closed_at > now() - smsdispatch.number_quarantine())
	 ORDER BY (m.state = 'open') DESC, m.closed_at DESC
	 LIMIT 1
$$;

-- The recipient row of an alarm that a phone answers for: exact E.164 match,
-- else the last nine digits. Only recipients already sent the alarm count.
CREATE FUNCTION smsdispatch.match_recipient(message_id bigint, phone text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e164 text;
	found_id bigint;
	tail text := right(regexp_replace(coalesce(phone, ''), '[^0-9]', '', 'g'), 9);
BEGIN
	e164 := smsdispatch.try_normalize_phone(phone);
	SELECT r.id INTO found_id FROM smsdispatch.message_recipient r
	 WHERE r.message_id = match_recipient.message_id AND r.sms_log_id IS NOT NULL
	   AND r.phone = e164
	 ORDER BY r.level LIMIT 1;
	IF found_id IS NULL AND length(tail) = 9 THEN
		SELECT r.id INTO found_id FROM smsdispatch.message_recipient r
		 WHERE r.message_id = match_recipient.message_id AND r.sms_log_id IS NOT NULL
		   AND right(r.phone, 9) = tail
		 ORDER BY r.level LIMIT 1;
	END IF;
	RETURN found_id;
END;
$$;

-- Records an acknowledgement. Returns 'ack' when it ended the alarm,
-- 'duplicate_ack' when the alarm was already acknowledged, and
-- 'cancelled' when it was cancelled first. The message row lock orders an ack
-- against a concurrent cancel or ack.
CREATE FUNCTION smsdispatch.record_ack(message_id bigint, recipient_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	m smsdispatch.message;
	r smsdispatch.message_recipient;
BEGIN
	SELECT * INTO m FROM smsdispatch.message WHERE id = message_id FOR UPDATE;
	SELECT * INTO r FROM smsdispatch.message_recipient WHERE id = recipient_id;
	IF m.state = 'cancelled' THEN
		RETURN 'cancelled';
	END IF;
	IF m.state = 'acked' THEN
		INSERT INTO smsdispatch.event (message_id, kind, level, phone)
			VALUES (m.id, 'duplicate_ack', r.level, r.phone);
		RETURN 'duplicate_ack';
	END IF;
	UPDATE smsdispatch.message_recipient
	   SET status = 'ACK', acked_at = now()
	 WHERE id = recipient_id;
	UPDATE smsdispatch.message
	   SET state = 'acked', acked_at = now(), acked_by = r.phone, closed_at = now()
	 WHERE id = m.id;
	-- nobody else is sent the alarm once someone has it
	UPDATE verification.sms_log
	   SET send_state = 'failed', last_error = 'alarm acknowledged before sending',
		   updated_at = now()
	 WHERE sms_log.message_id = m.id AND send_state = 'queued';
	INSERT INTO smsdispatch.event (message_id, kind, level, phone, detail)
		VALUES (m.id, 'acked', r.level, r.phone,
				CASE WHEN m.state = 'exhausted' THEN 'after exhaustion' END);
	RETURN 'ack';
END;
$$;

CREATE FUNCTION sms_ack(number text, phone text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	msg_id bigint := smsdispatch.find_alarm(number);
	recipient_id bigint;
	outcome text;
BEGIN
	IF phone IS NULL THEN
		RAISE EXCEPTION 'phone must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF msg_id IS NULL THEN
		RAISE EXCEPTION 'no alarm has number "%"', number
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Alarm numbers are four digits, as shown by sms_enqueue().';
	END IF;
	recipient_id := smsdispatch.match_recipient(msg_id, phone);
	IF recipient_id IS NULL THEN
		RAISE EXCEPTION 'phone "%" was never sent alarm "%"', phone, number
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	outcome := smsdispatch.record_ack(msg_id, recipient_id);
	IF outcome = 'cancelled' THEN
		RAISE EXCEPTION 'alarm "%" is cancelled', number
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	RETURN outcome = 'ack';
END;
$$;

CREATE FUNCTION sms_receive(sender text, body text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	token text;
	msg_id bigint;
	recipient_id bigint;
	outcome text := 'no_number';
	first_token text;
	first_msg bigint;
BEGIN
	IF sender IS NULL OR body IS NULL THEN
		RAISE EXCEPTION 'sender and body of a received SMS must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- every standalone four-digit token, in order; the first that names an
	-- alarm this sender was sent decides
	FOR token IN
		SELECT t[1] FROM regexp_matches(body, '(?:^|[^0-9])([0-9]{4})(?=[^0-9]|$)', 'g') AS t
	LOOP
		first_token := coalesce(first_token, token);
		msg_id := smsdispatch.find_alarm(token);
		-- a cancelled alarm's number answers as if unknown, to anyone
		IF msg_id IS NULL OR EXISTS (SELECT 1 FROM smsdispatch.message m
									 WHERE m.id = msg_id AND m.state = 'cancelled') THEN
			CONTINUE;
		END IF;
		first_msg := coalesce(first_msg, msg_id);
		recipient_id := smsdispatch.match_recipient(msg_id, sender);
		IF recipient_id IS NOT NULL THEN
			outcome := smsdispatch.record_ack(msg_id, recipient_id);
			IF outcome = 'cancelled' THEN
				outcome := 'unknown_number';
			END IF;
			INSERT INTO smsdispatch.inbox (sender, body, outcome, number, message_id)
				VALUES (sender, body, outcome, token, msg_id);
			RETURN outcome;
		END IF;
	END LOOP;
	IF first_msg IS NOT NULL THEN
		outcome := 'not_recipient';
	ELSIF first_token IS NOT NULL THEN
		outcome := 'unknown_number';
	END IF;
	INSERT INTO smsdispatch.inbox (sender, body, outcome, number, message_id)
		VALUES (sender, body, outcome, first_token, first_msg);
	RETURN outcome;
END;
$$;

CREATE FUNCTION sms_cancel(number text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	msg_id bigint := smsdispatch.find_alarm(number);
	m smsdispatch.message;
BEGIN
	IF msg_id IS NULL THEN
		RAISE EXCEPTION 'no alarm has number "%"', number
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT * INTO m FROM smsdispatch.message WHERE id = msg_id FOR UPDATE;
	IF m.state <> 'open' THEN
		RAISE EXCEPTION 'alarm "%" is already %', number, m.state
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Only open alarms can be cancelled.';
	END IF;
	UPDATE smsdispatch.message SET state = 'cancelled', closed_at = now() WHERE id = msg_id;
	UPDATE verification.sms_log
	   SET send_state = 'failed', last_error = 'alarm cancelled before sending',
		   updated_at = now()
	 WHERE message_id = msg_id AND send_state = 'queued';
	INSERT INTO smsdispatch.event (message_id, kind, level) VALUES (msg_id, 'cancelled', m.level);
	RETURN true;
END;
$$;

-- Keeps each alarm recipient in step with its SMS: submitted (or possibly
-- submitted) starts the ack timeout; a final failure means the recipient
-- cannot be reached, so escalation does not wait for them. Either way the
-- alarm's check_at tells the escalation when to look at it next.
CREATE FUNCTION smsdispatch.sms_log_progress()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	changed int;
BEGIN
	-- the alarm first, then its recipients: the order acks and the
	-- escalation use, so that a channel never deadlocks with them
	PERFORM 1 FROM smsdispatch.message m WHERE m.id = NEW.message_id FOR NO KEY UPDATE;
	IF NEW.send_state = 'failed'
	   OR NEW.gateway_status IN ('Expired', 'Deleted', 'Undeliverable', 'Rejected',
								 'Unaccepted', 'Terminated') THEN
		WITH unreached AS (
			UPDATE smsdispatch.message_recipient
			   SET status = 'ACK_TIME_OVER', deadline = least(deadline, now()),
				   sent_at = coalesce(sent_at, NEW.submitted_at)
			 WHERE sms_log_id = NEW.id AND status IN ('NOT_SENT', 'NOT_YET_ACK')
			   -- SMS withdrawn by an ack or a cancel leave their recipients as they are
			   AND EXISTS (SELECT 1 FROM smsdispatch.message m
						   WHERE m.id = NEW.message_id AND m.state IN ('open', 'exhausted'))
			RETURNING message_id, level, phone)
		INSERT INTO smsdispatch.event (message_id, kind, level, phone, detail)
		SELECT message_id, 'send_failed', level, phone,
			   coalesce(NEW.last_error, NEW.gateway_status, NEW.send_state)
		  FROM unreached;
		GET DIAGNOSTICS changed = ROW_COUNT;
		-- the level may be over now
		IF changed > 0 THEN
			UPDATE smsdispatch.message
			   SET check_at = least(check_at, now())
			 WHERE id = NEW.message_id AND state = 'open';
		END IF;
	ELSIF NEW.send_state IN ('submitted', 'unknown') THEN
		WITH sent AS (
			UPDATE smsdispatch.message_recipient
			   SET status = 'NOT_YET_ACK',
				   sent_at = coalesce(NEW.submitted_at, now()),
				   deadline = coalesce(NEW.submitted_at, now()) + ack_timeout
			 WHERE sms_log_id = NEW.id AND status = 'NOT_SENT'
			RETURNING message_id, level, phone, deadline),
		logged AS (
			INSERT INTO smsdispatch.event (message_id, kind, level, phone, detail)
			SELECT message_id, 'sent', level, phone, NEW.channel || ' ' || NEW.send_state
			  FROM sent)
		UPDATE smsdispatch.message
		   SET check_at = least(check_at, (SELECT min(deadline) FROM sent))
		 WHERE id = NEW.message_id AND state = 'open'
		   AND EXISTS (SELECT 1 FROM sent);
	END IF;
	RETURN NULL;
END;
$$;

CREATE TRIGGER sms_log_progress
	AFTER UPDATE OF send_state, gateway_status ON verification.sms_log
	FOR EACH ROW
	WHEN (NEW.message_id IS NOT NULL
		  AND (OLD.send_state IS DISTINCT FROM NEW.send_state
			   OR OLD.gateway_status IS DISTINCT FROM NEW.gateway_status))
	EXECUTE FUNCTION smsdispatch.sms_log_progress();

-- New and re-queued SMS, and status changes the escalation must see, wake
-- the worker at COMMIT; SMS queued on the modem wake the sidecars by NOTIFY.
CREATE TRIGGER sms_log_wake
	BEFORE INSERT OR UPDATE OF send_state ON verification.sms_log
	FOR EACH ROW EXECUTE FUNCTION smsdispatch.wake_on_change();
-- The background worker's database duties (src/worker.c runs them, each in a
-- short transaction; smsdispatch.run_once() runs them in the caller's).

-- One escalation step for the due open alarms (check_at passed), at most
-- batch of them: recipients of the current level past their deadline become
-- ACK_TIME_OVER; an alarm whose current level has nobody left waiting moves
-- to its next level with recipients, else starts another round when its
-- list's repeat allows, else is exhausted. Alarms that an ack or a channel
-- holds locked are skipped and seen on the next pass. Set-based: a fixed
-- number of statements whatever the batch, every one of them found through
-- message_check_idx and the per-alarm indexes, never by a scan of history.
CREATE FUNCTION smsdispatch.escalate(batch int DEFAULT 1000,
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
		END IF;

		-- the alarms still waiting: next look at their earliest deadline
		UPDATE smsdispatch.message m
		   SET check_at = (SELECT min(r.deadline) FROM smsdispatch.message_recipient r
							WHERE r.message_id = m.id AND r.level = m.level
							  AND r.status = 'NOT_YET_ACK')
		 WHERE m.id = ANY (due) AND m.state = 'open';
	END IF;

	SELECT min(m.check_at) INTO next_check
	  FROM smsdispatch.message m
	 WHERE m.state = 'open';
END;
$$;

-- The test channel (smsdispatch.loopback_channel): marks due queued SMS of
-- every channel submitted, without sending anything, so that the escalation
-- can be tested without a gateway or a modem. Nothing is ever left
-- 'sending'. The alarms are locked before their SMS, in the order acks use.
CREATE FUNCTION smsdispatch.loopback_submit(batch int DEFAULT 1000,
	OUT submitted int, OUT next_due timestamptz)
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
	alarms bigint[];
	picked bigint[];
BEGIN
	SELECT array_agg(s.id) INTO alarms FROM (
		SELECT m.id FROM smsdispatch.message m
		 WHERE m.id IN (SELECT l.message_id FROM verification.sms_log l
						 WHERE l.send_state = 'queued' AND l.message_id IS NOT NULL
						   AND coalesce(l.next_attempt_at, '-infinity') <= now()
						 LIMIT batch)
		 ORDER BY m.id
		 FOR NO KEY UPDATE) AS s;

	SELECT array_agg(d.id) INTO picked FROM (
		SELECT d.id FROM verification.sms_log d
		 WHERE d.send_state = 'queued'
		   AND coalesce(d.next_attempt_at, '-infinity') <= now()
		   AND (d.message_id IS NULL OR d.message_id = ANY (alarms))
		 LIMIT batch
		 FOR UPDATE SKIP LOCKED) AS d;
	UPDATE verification.sms_log l
	   SET send_state = 'submitted', submitted_at = now(), updated_at = now(),
		   gateway_id = 'loopback-' || l.id, attempts = l.attempts + 1
	 WHERE l.id = ANY (picked);
	GET DIAGNOSTICS submitted = ROW_COUNT;

	SELECT min(coalesce(l.next_attempt_at, now())) INTO next_due
	  FROM verification.sms_log l
	 WHERE l.send_state = 'queued';
END;
$$;

-- Spool files already imported, so that a file is never imported twice: not
-- when the worker stops between the commit and moving the file, nor when
-- run_once() and the worker meet on the same file.
CREATE TABLE smsdispatch.spool_file (
	id			bigserial PRIMARY KEY,
	name		text NOT NULL,
	size		bigint NOT NULL,
	mtime		timestamptz NOT NULL,
	md5			text NOT NULL,
	imported_at	timestamptz NOT NULL DEFAULT now(),
	message_id	bigint REFERENCES smsdispatch.message ON DELETE SET NULL,
	sms_log_ids	bigint[],
	UNIQUE (name, mtime, md5)
);
CREATE INDEX spool_file_mtime_idx ON smsdispatch.spool_file (mtime);
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.spool_file', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.spool_file_id_seq', '');

-- Imports one parsed spool file: an alarm to a list, or one SMS per phone.
-- Returns what it did, or NULL when the file was imported before. Bad
-- content raises the error of sms_enqueue() or sms_send(); the importer
-- writes it into the file's .reason.
CREATE FUNCTION smsdispatch.spool_enqueue(file_name text, file_size bigint,
	file_mtime timestamptz, file_md5 text, list text, body text,
	phones text[], type text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	file_id bigint;
	num text;
	msg_id bigint;
	phone text;
	ids bigint[] := '{}';
BEGIN
	INSERT INTO smsdispatch.spool_file (name, size, mtime, md5)
		VALUES (file_name, file_size, file_mtime, file_md5)
		ON CONFLICT DO NOTHING
		RETURNING id INTO file_id;
	IF file_id IS NULL THEN
		RETURN NULL;
	END IF;

	IF list IS NOT NULL THEN
		num := @extschema@.sms_enqueue(body, list);
		UPDATE smsdispatch.message m SET source = 'spool'
		 WHERE m.number = num AND m.state = 'open'
		RETURNING m.id INTO msg_id;
		UPDATE smsdispatch.spool_file SET message_id = msg_id WHERE id = file_id;
		RETURN 'alarm ' || num;
	END IF;

	FOREACH phone IN ARRAY phones LOOP
		ids := ids || @extschema@.sms_send(phone, body, coalesce(type, 'text'));
	END LOOP;
	UPDATE smsdispatch.spool_file SET sms_log_ids = ids WHERE id = file_id;
	RETURN cardinality(ids) || ' SMS';
END;
$$;

-- Forgets imported spool files older than smsdispatch.spool_max_age and a
-- day: a file that old is refused by its age before its record is looked up.
CREATE FUNCTION smsdispatch.housekeeping()
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
	DELETE FROM smsdispatch.spool_file
	 WHERE mtime < now() - smsdispatch.setting('smsdispatch.spool_max_age')::interval
				   - interval '1 day';
$$;

-- One pass of the worker's database duties in the calling session: spool
-- import, escalation, the loopback channel when it is on, housekeeping. No
-- network I/O: it runs inside the caller's transaction.
CREATE FUNCTION smsdispatch.run_once()
RETURNS jsonb
AS 'MODULE_PATHNAME', 'sms_run_once'
LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
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
-- The IP2SMS channel: its status-poll schedule and its counters.

-- How long to wait before the next status poll of an SMS submitted elapsed
-- ago, with base = smsdispatch.ip2sms_poll_interval: 1, 3, 6, 12, then 30
-- times base (10 s, 30 s, 1 min, 2 min, 5 min, 5 min... for 10 s).
CREATE FUNCTION smsdispatch.ip2sms_poll_delay(elapsed interval, base interval)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT base * CASE
		WHEN elapsed < base THEN 1
		WHEN elapsed < base * 4 THEN 3
		WHEN elapsed < base * 10 THEN 6
		WHEN elapsed < base * 22 THEN 12
		ELSE 30 END
$$;

-- Counters of the IP2SMS channel since the server started (or the last
-- stats_reset): requests by kind, answers by state, transport errors by
-- class, retries, request latency.
CREATE FUNCTION smsdispatch.stats()
RETURNS TABLE (name text, value bigint)
AS 'MODULE_PATHNAME', 'sms_stats'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION smsdispatch.stats_reset()
RETURNS void
AS 'MODULE_PATHNAME', 'sms_stats_reset'
LANGUAGE C VOLATILE STRICT;
-- The modem channel: what the smsdispatch-modem sidecars (one per GSM modem)
-- call. Each sidecar claims queued 'modem' rows under a lease, sends them
-- outside any transaction, and records the outcome in one short transaction.

-- One row per sidecar, refreshed every heartbeat.
CREATE TABLE smsdispatch.modem (
	name			text PRIMARY KEY CHECK (name <> ''),
	imei			text,
	imsi			text,
	operator		text,
	signal_percent	int CHECK (signal_percent BETWEEN 0 AND 100),
	heartbeat		interval NOT NULL DEFAULT '60 s' CHECK (heartbeat > '0'),
	started_at		timestamptz NOT NULL DEFAULT now(),
	last_seen		timestamptz NOT NULL DEFAULT now(),
	sent			bigint NOT NULL DEFAULT 0,
	received		bigint NOT NULL DEFAULT 0,
	status_reports	bigint NOT NULL DEFAULT 0,
	modem_errors	bigint NOT NULL DEFAULT 0,
	resets			bigint NOT NULL DEFAULT 0,
	sim_full		boolean NOT NULL DEFAULT false,
	last_error		text
);

-- Modems whose sidecar missed three heartbeats: stopped, hung or cut off.
CREATE VIEW smsdispatch.modem_stale AS
	SELECT m.name, m.imei, m.operator, m.last_seen, now() - m.last_seen AS silent_for,
		   m.sim_full, m.last_error
	  FROM smsdispatch.modem m
	 WHERE m.last_seen < now() - 3 * m.heartbeat;

-- Received SMS already handed to sms_receive, so that a message read twice
-- (notification and poll, or a delete that failed) is handled once.
CREATE TABLE smsdispatch.modem_received (
	digest		text PRIMARY KEY,
	modem		text NOT NULL,
	received_at	timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX modem_received_at_idx ON smsdispatch.modem_received (received_at);

SELECT pg_catalog.pg_extension_config_dump('smsdispatch.modem', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.modem_received', '');

-- Refuses an empty or NULL modem name: every row a sidecar touches carries it.
CREATE FUNCTION smsdispatch.modem_check_name(modem text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
	IF modem IS NULL OR modem = '' THEN
		RAISE EXCEPTION 'modem name must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Start smsdispatch-modem with --name, or let it default to the gammurc section.';
	END IF;
END;
$$;

-- Takes the next due queued modem row for this modem: marks it sending with
-- a lease and counts the attempt. SKIP LOCKED lets several sidecars claim
-- side by side without ever taking the same row.
CREATE FUNCTION smsdispatch.modem_claim(modem text, lease interval DEFAULT '2 min')
RETURNS TABLE (id bigint, phone_number text, body text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM smsdispatch.modem_check_name(modem);
	IF lease IS NULL OR lease <= interval '0' THEN
		RAISE EXCEPTION 'lease "%" must be positive', lease
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY
	WITH due AS (
		SELECT l.id FROM verification.sms_log l
		 WHERE l.channel = 'modem' AND l.send_state = 'queued'
		   AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= now())
		 ORDER BY l.next_attempt_at, l.id
		 LIMIT 1
		 FOR UPDATE SKIP LOCKED)
	UPDATE verification.sms_log l
	   SET send_state = 'sending', claimed_by = modem, lease_until = now() + lease,
		   attempts = l.attempts + 1, updated_at = now()
	  FROM due
	 WHERE l.id = due.id
	RETURNING l.id, l.phone_number, l.body;
END;
$$;

-- Records what became of a claimed row. outcome: 'submitted' (the modem
-- gave a message reference; gateway_id holds the references of all parts),
-- 'retry' (the modem refused it before anything left: queued again with
-- backoff, failed after smsdispatch.max_attempts), 'failed' (final),
-- 'unknown' (it may have left: never re-sent), 'released' (never tried:
-- back to queued, the attempt not counted). A row whose lease expired and
-- was recovered as unknown still takes the outcome its sidecar learnt.
-- Returns false when the row is not this modem's to finish.
CREATE FUNCTION smsdispatch.modem_finish(id bigint, modem text, outcome text,
	gateway_id text DEFAULT NULL, error text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	max_attempts int := smsdispatch.setting('smsdispatch.max_attempts')::int;
BEGIN
	PERFORM smsdispatch.modem_check_name(modem);
	IF outcome IS NULL OR outcome NOT IN ('submitted', 'retry', 'failed', 'unknown', 'released') THEN
		RAISE EXCEPTION 'unknown modem send outcome "%"', outcome
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Outcomes are submitted, retry, failed, unknown and released.';
	END IF;
	IF outcome = 'submitted' AND (gateway_id IS NULL OR gateway_id = '') THEN
		RAISE EXCEPTION 'a submitted modem SMS needs its message reference'
			USING ERRCODE = 'null_value_not_allowed',
				  DETAIL = format('sms_log id %s has no gateway_id.', id);
	END IF;
	UPDATE verification.sms_log l
	   SET send_state = CASE
				WHEN outcome = 'retry' AND l.attempts >= max_attempts THEN 'failed'
				WHEN outcome IN ('retry', 'released') THEN 'queued'
				ELSE outcome END,
		   gateway_id = coalesce(modem_finish.gateway_id, l.gateway_id),
		   gateway_status = CASE WHEN outcome = 'submitted' THEN 'Accepted'
							ELSE l.gateway_status END,
		   status_changed_at = CASE WHEN outcome = 'submitted' THEN now()
							   ELSE l.status_changed_at END,
		   submitted_at = CASE WHEN outcome = 'submitted' THEN now() ELSE l.submitted_at END,
		   attempts = CASE WHEN outcome = 'released' THEN greatest(l.attempts - 1, 0)
					  ELSE l.attempts END,
		   next_attempt_at = CASE WHEN outcome = 'retry' THEN
				now() + least(interval '30 s' * 2 ^ greatest(l.attempts - 1, 0), interval '10 min')
				ELSE l.next_attempt_at END,
		   last_error = CASE
				WHEN outcome = 'retry' AND l.attempts >= max_attempts THEN
					format('%s (gave up after %s attempts)', error, l.attempts)
				WHEN outcome = 'released' THEN l.last_error
				ELSE error END,
		   claimed_by = CASE WHEN outcome IN ('retry', 'released') THEN NULL ELSE l.claimed_by END,
		   lease_until = NULL,
		   updated_at = now()
	 WHERE l.id = modem_finish.id AND l.claimed_by = modem
	   AND l.channel = 'modem' AND l.send_state IN ('sending', 'unknown');
	RETURN FOUND;
END;
$$;

-- Turns rows left 'sending' into 'unknown' (they may have left; never
-- silently re-sent): those whose lease expired and, with a modem name, all
-- of that modem's (its sidecar starts afresh). Returns how many.
CREATE FUNCTION smsdispatch.modem_recover(modem text DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	n int;
BEGIN
	UPDATE verification.sms_log l
	   SET send_state = 'unknown',
		   last_error = format('sidecar %s stopped or lost its lease while sending; not re-sent',
							   l.claimed_by),
		   lease_until = NULL, updated_at = now()
	 WHERE l.channel = 'modem' AND l.send_state = 'sending'
	   AND (l.lease_until < now() OR l.claimed_by = modem);
	GET DIAGNOSTICS n = ROW_COUNT;
	RETURN n;
END;
$$;

-- Pairs a status report with the row it reports on (same modem, same
-- recipient, the message reference among the row's parts; the most recent
-- such row, references wrap at 256; the recipient by its last nine digits
-- when the report writes the number differently) and records the TP-Status word. A
-- final failure of one part is not overwritten by another part's success.
-- Returns the sms_log id, or NULL when nothing matched.
CREATE FUNCTION smsdispatch.modem_status_report(modem text, phone text,
	reference int, status text, changed_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e164 text;
	tail text := right(regexp_replace(coalesce(phone, ''), '[^0-9]', '', 'g'), 9);
	found_id bigint;
BEGIN
	PERFORM smsdispatch.modem_check_name(modem);
	IF status IS NULL OR status NOT IN ('Delivered', 'Enroute', 'Undeliverable', 'Expired',
										'Deleted', 'Rejected', 'Unknown') THEN
		RAISE EXCEPTION 'unknown status report word "%"', status
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Words are Delivered, Enroute, Undeliverable, Expired, Deleted, Rejected and Unknown.';
	END IF;
	e164 := smsdispatch.try_normalize_phone(phone);
	SELECT l.id INTO found_id FROM verification.sms_log l
	 WHERE l.phone_number = e164 AND l.inserted_at > now() - interval '7 days'
	   AND l.channel = 'modem' AND l.claimed_by = modem
	   AND l.send_state IN ('submitted', 'unknown')
	   AND reference::text = ANY (string_to_array(l.gateway_id, ','))
	 ORDER BY l.submitted_at DESC NULLS LAST, l.id DESC
	 LIMIT 1
	 FOR UPDATE;
	-- a number in another format than we sent to: its last nine digits
	IF found_id IS NULL AND length(tail) = 9 THEN
		SELECT l.id INTO found_id FROM verification.sms_log l
		 WHERE right(l.phone_number, 9) = tail AND l.inserted_at > now() - interval '7 days'
		   AND l.channel = 'modem' AND l.claimed_by = modem
		   AND l.send_state IN ('submitted', 'unknown')
		   AND reference::text = ANY (string_to_array(l.gateway_id, ','))
		 ORDER BY l.submitted_at DESC NULLS LAST, l.id DESC
		 LIMIT 1
		 FOR UPDATE;
	END IF;
	IF found_id IS NULL THEN
		RETURN NULL;
	END IF;
	UPDATE verification.sms_log l
	   SET gateway_status = status, status_changed_at = coalesce(changed_at, now()),
		   updated_at = now()
	 WHERE l.id = found_id
	   AND l.gateway_status IS DISTINCT FROM status
	   AND coalesce(l.gateway_status, '') NOT IN ('Undeliverable', 'Expired', 'Deleted', 'Rejected')
	   AND NOT (status = 'Enroute' AND l.gateway_status = 'Delivered');
	RETURN found_id;
END;
$$;

-- Hands a received SMS (multipart already joined) to sms_receive once:
-- returns sms_receive's outcome, or 'seen' for a message handled before.
CREATE FUNCTION smsdispatch.modem_receive(modem text, sender text, body text,
	sent_at timestamptz)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM smsdispatch.modem_check_name(modem);
	INSERT INTO smsdispatch.modem_received (digest, modem)
		VALUES (md5(concat_ws(E'\x1f', modem, sender, sent_at::text, body)), modem)
		ON CONFLICT DO NOTHING;
	IF NOT FOUND THEN
		RETURN 'seen';
	END IF;
	RETURN @extschema@.sms_receive(sender, body);
END;
$$;

-- The heartbeat: the modem's identity and health, plus the counts since
-- the previous heartbeat. Also forgets received-message digests older than
-- a week (no modem keeps a message that long).
CREATE FUNCTION smsdispatch.modem_heartbeat(modem text, heartbeat interval,
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
		   last_error = coalesce(EXCLUDED.last_error, m.last_error);
	DELETE FROM smsdispatch.modem_received r WHERE r.received_at < now() - interval '7 days';
END;
$$;
-- Reports for operators: delivery and escalation statistics, the gateway's
-- counters per hour, the console view of the queue, a self-contained HTML
-- report, and retention (purge) scheduled with pg_cron.

-- The purge finds closed alarms and old received SMS through these.
CREATE INDEX message_closed_idx ON smsdispatch.message (closed_at) WHERE state <> 'open';
CREATE INDEX inbox_received_idx ON smsdispatch.inbox (received_at);

-- Snapshots of the IP2SMS channel's cumulative counters (smsdispatch.stats()),
-- taken every minute by smsdispatch.snapshot_counters(). A counter goes back
-- to zero when the server restarts; server_started_at tells such resets apart.
CREATE TABLE smsdispatch.counter_snapshot (
	taken_at			timestamptz NOT NULL,
	server_started_at	timestamptz NOT NULL,
	name				text NOT NULL,
	value				bigint NOT NULL,
	PRIMARY KEY (name, taken_at)
);
CREATE INDEX counter_snapshot_taken_idx ON smsdispatch.counter_snapshot (taken_at);
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.counter_snapshot', '');

-- Copies the current counters into counter_snapshot; returns the rows written.
CREATE FUNCTION smsdispatch.snapshot_counters()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	written integer;
BEGIN
	INSERT INTO smsdispatch.counter_snapshot (taken_at, server_started_at, name, value)
	SELECT now(), pg_postmaster_start_time(), s.name, s.value
	  FROM smsdispatch.stats() AS s
	ON CONFLICT DO NOTHING;
	GET DIAGNOSTICS written = ROW_COUNT;
	RETURN written;
END;
$$;

-- What became of one SMS, from its dispatch state and the gateway's word:
-- delivered, one of the gateway's final failures (lower case), send_failed
-- (never accepted by a channel), send_unknown (lost in a crash while sending)
-- or pending. Every report classifies rows through this one function.
CREATE FUNCTION smsdispatch.sms_outcome(send_state text, gateway_status text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT CASE
		WHEN gateway_status = 'Delivered' THEN 'delivered'
		WHEN gateway_status IN ('Expired', 'Deleted', 'Undeliverable', 'Rejected',
								'Unaccepted', 'Terminated') THEN lower(gateway_status)
		WHEN send_state = 'failed' THEN 'send_failed'
		WHEN send_state = 'unknown' THEN 'send_unknown'
		ELSE 'pending'
	END
$$;

-- Seconds from queueing to delivery: the gateway's date of the Delivered
-- state, or the time the row was last updated when the gateway gave none.
CREATE FUNCTION smsdispatch.delivery_seconds(inserted_at timestamptz,
	status_changed_at timestamptz, updated_at timestamptz)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT extract(epoch FROM coalesce(status_changed_at, updated_at) - inserted_at)::float8
$$;

-- Delivery statistics of the SMS queued in ["from", "to"), per day (in the
-- session's TimeZone) x type x channel. A plain SQL function, so the planner
-- inlines it and the range uses the index on inserted_at.
CREATE FUNCTION smsdispatch.delivery_stats("from" timestamptz, "to" timestamptz)
RETURNS TABLE (day date, type text, channel text, logged bigint, sent bigint,
	delivered bigint, failed bigint, expired bigint, deleted bigint,
	undeliverable bigint, rejected bigint, unaccepted bigint, terminated bigint,
	send_failed bigint, send_unknown bigint, pending bigint,
	delivery_ratio numeric, median_delivery_s numeric, p95_delivery_s numeric)
LANGUAGE sql STABLE
AS $$
	SELECT d.day, d.type, d.channel, d.logged, d.sent, d.delivered,
		   d.expired + d.deleted + d.undeliverable + d.rejected + d.unaccepted
		   + d.terminated + d.send_failed,
		   d.expired, d.deleted, d.undeliverable, d.rejected, d.unaccepted,
		   d.terminated, d.send_failed, d.send_unknown, d.pending,
		   round(d.delivered::numeric / nullif(d.logged - d.pending, 0), 4),
		   round(d.median_s::numeric, 1), round(d.p95_s::numeric, 1)
	  FROM (SELECT l.inserted_at::date AS day, l.type, l.channel,
				   count(*) AS logged,
				   count(*) FILTER (WHERE l.send_state = 'submitted'
									   OR l.gateway_status IS NOT NULL) AS sent,
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
			 GROUP BY 1, 2, 3) d
$$;

-- Every day: the function over all time.
CREATE VIEW smsdispatch.delivery_stats AS
	SELECT * FROM smsdispatch.delivery_stats('-infinity', 'infinity');

-- Escalation statistics of the alarms created in ["from", "to"), per
-- recipient list (lists without alarms show zeros). "Acked at level N" is the
-- escalation level the alarm had reached when someone acknowledged it; time
-- to ack runs from the alarm's creation.
CREATE FUNCTION smsdispatch.escalation_stats("from" timestamptz, "to" timestamptz)
RETURNS TABLE (list text, alarms bigint, open bigint, acked bigint,
	acked_level_1 bigint, acked_level_2 bigint, acked_level_3 bigint,
	exhausted bigint, cancelled bigint, median_ack_s numeric, p95_ack_s numeric)
LANGUAGE sql STABLE
AS $$
	WITH m AS (
		SELECT m.list, m.state, m.level,
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
	 GROUP BY l.list
$$;

CREATE VIEW smsdispatch.escalation_stats AS
	SELECT * FROM smsdispatch.escalation_stats('-infinity', 'infinity');

-- The upper bound of the histogram bucket that holds quantile q, given
-- disjoint buckets with those upper bounds (the last one may be 'Infinity').
-- NULL when the histogram is empty.
CREATE FUNCTION smsdispatch.histogram_quantile(q float8, bounds float8[], counts bigint[])
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT b.bound
	  FROM (SELECT u.bound,
				   sum(u.n) OVER (ORDER BY u.i) AS cumulative,
				   sum(u.n) OVER () AS total
			  FROM unnest(bounds, counts) WITH ORDINALITY AS u(bound, n, i)) b
	 WHERE b.total > 0 AND b.cumulative >= q * b.total
	 ORDER BY b.cumulative
	 LIMIT 1
$$;

-- The gateway per hour for the snapshots taken in ["from", "to"), from the
-- counter snapshots: what happened between consecutive snapshots counts in
-- the hour of the later one, so the last snapshot before "from" is read as
-- the baseline. A counter that went down, or a new server start, is a reset:
-- the later value is then the whole increase. The first snapshot of a
-- counter has no increase.
CREATE FUNCTION smsdispatch.gateway_stats("from" timestamptz, "to" timestamptz)
RETURNS TABLE (hour timestamptz, snapshots bigint, requests_send bigint,
	requests_status bigint, answers_accepted bigint, answers_enroute bigint,
	answers_delivered bigint, answers_expired bigint, answers_deleted bigint,
	answers_undeliverable bigint, answers_rejected bigint, answers_unknown bigint,
	answers_unaccepted bigint, answers_terminated bigint, answers_pending bigint,
	errors_connect bigint, errors_timeout bigint, errors_http_5xx bigint,
	errors_http_401 bigint, errors_http_other bigint, errors_parse bigint,
	retries bigint, latency_mean_ms numeric, latency_p95_le_ms float8)
LANGUAGE sql STABLE
AS $$
	WITH increase AS (
		SELECT s.taken_at, s.name,
			   CASE WHEN s.prev_value IS NULL THEN NULL
					WHEN s.value < s.prev_value
						 OR s.server_started_at <> s.prev_started_at THEN s.value
					ELSE s.value - s.prev_value
			   END AS delta
		  FROM (SELECT c.*,
					   lag(c.value) OVER w AS prev_value,
					   lag(c.server_started_at) OVER w AS prev_started_at
				  FROM smsdispatch.counter_snapshot c
				 WHERE c.taken_at >= coalesce((SELECT max(b.taken_at)
												 FROM smsdispatch.counter_snapshot b
												WHERE b.taken_at < "from"), "from")
				   AND c.taken_at < "to"
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
	 GROUP BY h.hour
$$;

CREATE VIEW smsdispatch.gateway_stats AS
	SELECT * FROM smsdispatch.gateway_stats('-infinity', 'infinity');

-- The console view of the seed: every alarm still in the queue (open, or
-- closed less than smsdispatch.number_quarantine ago, so its number still
-- means it), with each recipient and its status.
CREATE VIEW smsdispatch.queue AS
	SELECT m.number, m.list, m.state, m.level, m.created_at AS created,
		   m.body AS text, r.level AS recipient_level, r.name AS recipient,
		   r.phone, r.status, r.sent_at, r.deadline, r.acked_at
	  FROM smsdispatch.message m
	  JOIN smsdispatch.message_recipient r ON r.message_id = m.id
	 WHERE m.state = 'open'
		OR m.closed_at > now() - smsdispatch.number_quarantine()
	 ORDER BY m.created_at, m.number, r.level, r.phone;

-- Text made safe for HTML element content and attribute values.
CREATE FUNCTION smsdispatch.html_escape(t text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
	SELECT replace(replace(replace(replace(replace(coalesce(t, ''),
		'&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;')
$$;

-- A bar chart as inline SVG. vals holds one value per (category, series),
-- category-major: vals[(c - 1) * number of series + s]. Stacked draws one
-- bar per category; otherwise the series stand side by side.
CREATE FUNCTION smsdispatch.svg_bar_chart(title text, unit text, categories text[],
	series text[], colors text[], vals float8[], stacked boolean)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	width constant int := 760;
	height constant int := 300;
	left_m constant int := 70;
	top_m constant int := 50;
	plot_w constant int := 670;
	plot_h constant int := 190;
	ncat int := coalesce(array_length(categories, 1), 0);
	nser int := array_length(series, 1);
	top_value float8 := 0;
	magnitude float8;
	slot float8;
	bar_w float8;
	x float8;
	base float8;
	bar_h float8;
	v float8;
	label_step int;
	svg text;
	c int;
	s int;
BEGIN
	FOR c IN 1..ncat LOOP
		IF stacked THEN
			SELECT greatest(top_value, coalesce(sum(vals[(c - 1) * nser + g]), 0))
			  INTO top_value FROM generate_series(1, nser) g;
		ELSE
			SELECT greatest(top_value, coalesce(max(vals[(c - 1) * nser + g]), 0))
			  INTO top_value FROM generate_series(1, nser) g;
		END IF;
	END LOOP;
	-- a round top for the axis: 37 -> 40, 0.8 -> 0.8, 1234 -> 2000
	IF top_value > 0 THEN
		magnitude := power(10, floor(log(top_value)));
		top_value := ceil(top_value / magnitude) * magnitude;
	END IF;

	svg := format('<figure><svg class="chart" role="img" aria-label="%s" width="%s" height="%s" viewBox="0 0 %s %s">',
				  smsdispatch.html_escape(title), width, height, width, height)
		|| format('<text x="%s" y="22" class="title">%s</text>', left_m,
				  smsdispatch.html_escape(title))
		|| format('<text x="12" y="%s" class="axis" transform="rotate(-90 12 %s)" text-anchor="middle">%s</text>',
				  top_m + plot_h / 2, top_m + plot_h / 2, smsdispatch.html_escape(unit))
		|| format('<line x1="%s" y1="%s" x2="%s" y2="%s" class="frame"/>',
				  left_m, top_m + plot_h, left_m + plot_w, top_m + plot_h)
		|| format('<line x1="%s" y1="%s" x2="%s" y2="%s" class="frame"/>',
				  left_m, top_m, left_m, top_m + plot_h);

	-- legend, top right
	FOR s IN 1..nser LOOP
		svg := svg || format('<rect x="%s" y="30" width="10" height="10" fill="%s"/><text x="%s" y="39" class="axis">%s</text>',
							 left_m + plot_w - 130 * (nser - s + 1), colors[s],
							 left_m + plot_w - 130 * (nser - s + 1) + 14,
							 smsdispatch.html_escape(series[s]));
	END LOOP;

	IF ncat = 0 OR top_value = 0 THEN
		RETURN svg || format('<text x="%s" y="%s" class="axis" text-anchor="middle">no data in this range</text></svg></figure>',
							 left_m + plot_w / 2, top_m + plot_h / 2);
	END IF;

	-- y axis: 0, half and top
	FOR s IN 0..2 LOOP
		svg := svg || format('<text x="%s" y="%s" class="axis" text-anchor="end">%s</text><line x1="%s" y1="%s" x2="%s" y2="%s" class="grid"/>',
							 left_m - 6, top_m + plot_h - plot_h * s / 2 + 4,
							 round((top_value * s / 2)::numeric, 1)::float8,
							 left_m, top_m + plot_h - plot_h * s / 2,
							 left_m + plot_w, top_m + plot_h - plot_h * s / 2);
	END LOOP;

	slot := plot_w::float8 / ncat;
	bar_w := CASE WHEN stacked THEN slot * 0.7 ELSE slot * 0.8 / nser END;
	label_step := ceil(ncat / 12.0);
	FOR c IN 1..ncat LOOP
		base := 0;
		FOR s IN 1..nser LOOP
			v := coalesce(vals[(c - 1) * nser + s], 0);
			x := left_m + (c - 1) * slot
				+ CASE WHEN stacked THEN slot * 0.15 ELSE slot * 0.1 + (s - 1) * bar_w END;
			bar_h := plot_h * v / top_value;
			IF v > 0 THEN
				svg := svg || format('<rect x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s</title></rect>',
									 round(x::numeric, 1),
									 round((top_m + plot_h - base - bar_h)::numeric, 1),
									 round(bar_w::numeric, 1), round(bar_h::numeric, 1),
									 colors[s],
									 smsdispatch.html_escape(format('%s, %s: %s %s', categories[c],
											series[s], round(v::numeric, 1)::float8, unit)));
			END IF;
			IF stacked THEN
				base := base + bar_h;
			END IF;
		END LOOP;
		IF (c - 1) % label_step = 0 THEN
			svg := svg || format('<text x="%s" y="%s" class="axis" text-anchor="middle">%s</text>',
								 round((left_m + (c - 0.5) * slot)::numeric, 1),
								 top_m + plot_h + 18, smsdispatch.html_escape(categories[c]));
		END IF;
	END LOOP;
	RETURN svg || '</svg></figure>';
END;
$$;

-- The rows of a query as an HTML table, every value escaped; numbers are
-- right-aligned. The header comes from the query's columns even when it
-- returns no row.
CREATE FUNCTION smsdispatch.html_table(caption text, query text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	header json;
	rows json;
	out text;
BEGIN
	-- one row of NULLs named like the query's columns (t.* expanded, so the
	-- row itself is not NULL), without running the query
	EXECUTE format('SELECT row_to_json(h) FROM (SELECT t.* FROM (SELECT) AS d LEFT JOIN (%s) AS t ON false) AS h',
				   query)
		INTO header;
	EXECUTE format('SELECT json_agg(t) FROM (%s) AS t', query) INTO rows;
	SELECT format('<div class="scroll"><table><caption>%s</caption><thead><tr>%s</tr></thead><tbody>',
				  smsdispatch.html_escape(caption),
				  string_agg('<th>' || smsdispatch.html_escape(k) || '</th>', '' ORDER BY n))
	  INTO out
	  FROM json_object_keys(header) WITH ORDINALITY AS h(k, n);
	IF rows IS NULL THEN
		RETURN out || format('<tr><td colspan="%s" class="empty">no rows</td></tr></tbody></table></div>',
							 (SELECT count(*) FROM json_object_keys(header)));
	END IF;
	SELECT out || string_agg(r.cells, '' ORDER BY r.n) || '</tbody></table></div>'
	  INTO out
	  FROM (SELECT t.n, '<tr>' || string_agg(
					   CASE WHEN json_typeof(e.value) = 'number'
							THEN '<td class="num">' ELSE '<td>' END
					   || smsdispatch.html_escape(t.row ->> e.key) || '</td>', '' ORDER BY e.n)
				   || '</tr>' AS cells
			  FROM json_array_elements(rows) WITH ORDINALITY AS t(row, n)
			 CROSS JOIN LATERAL json_each(t.row) WITH ORDINALITY AS e(key, value, n)
			 GROUP BY t.n) r;
	RETURN out;
END;
$$;

-- One self-contained HTML page for ["from", "to"): three inline SVG charts
-- (daily volume by final status, delivery time distribution, ack time per
-- level) and the report tables. No scripts, fonts, images or links: a
-- Content-Security-Policy of default-src 'none' keeps the page from loading
-- anything even if it tried.
CREATE FUNCTION sms_report_html("from" timestamptz, "to" timestamptz)
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	days text[];
	daily float8[];
	delivery_buckets constant text[] := ARRAY['< 10 s', '10-30 s', '30-60 s', '1-2 min',
		'2-5 min', '5-15 min', '15-60 min', '>= 1 h'];
	delivery_hist float8[];
	ack float8[];
	range_literal text := format('%L::timestamptz, %L::timestamptz', "from", "to");
BEGIN
	IF "from" IS NULL OR "to" IS NULL OR isfinite("from") IS NOT TRUE
	   OR isfinite("to") IS NOT TRUE OR "from" >= "to" THEN
		RAISE EXCEPTION 'report range from "%" to "%" is not a finite, non-empty range', "from", "to"
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give two timestamps, the first earlier, e.g. sms_report_html(now() - interval ''7 days'', now()).';
	END IF;
	IF "to" - "from" > interval '366 days' THEN
		RAISE EXCEPTION 'report range from "%" to "%" is longer than 366 days', "from", "to"
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Write one report per year or shorter period.';
	END IF;

	-- chart 1: per day, delivered / failed / lost / pending
	SELECT array_agg(to_char(g.day, 'MM-DD') ORDER BY g.day)
	  INTO days
	  FROM generate_series("from"::date, ("to" - interval '1 microsecond')::date,
						   interval '1 day') AS g(day);
	WITH d AS (
		SELECT s.day, sum(s.delivered) AS delivered, sum(s.failed) AS failed,
			   sum(s.send_unknown) AS lost, sum(s.pending) AS pending
		  FROM smsdispatch.delivery_stats("from", "to") AS s
		 GROUP BY s.day
	)
	SELECT array_agg(coalesce(CASE k WHEN 1 THEN d.delivered WHEN 2 THEN d.failed
									 WHEN 3 THEN d.lost ELSE d.pending END, 0)::float8
					 ORDER BY g.day, k)
	  INTO daily
	  FROM generate_series("from"::date, ("to" - interval '1 microsecond')::date,
						   interval '1 day') AS g(day)
	 CROSS JOIN generate_series(1, 4) AS k
	  LEFT JOIN d ON d.day = g.day::date;

	-- chart 2: seconds from queueing to delivery
	SELECT array_agg(coalesce(h.n, 0)::float8 ORDER BY b.i)
	  INTO delivery_hist
	  FROM generate_series(0, 7) AS b(i)
	  LEFT JOIN (SELECT width_bucket(smsdispatch.delivery_seconds(l.inserted_at,
										l.status_changed_at, l.updated_at),
									 ARRAY[10, 30, 60, 120, 300, 900, 3600]::float8[]) AS i,
						count(*) AS n
				   FROM verification.sms_log l
				  WHERE l.inserted_at >= "from" AND l.inserted_at < "to"
					AND smsdispatch.sms_outcome(l.send_state, l.gateway_status) = 'delivered'
				  GROUP BY 1) h ON h.i = b.i;

	-- chart 3: median and p95 time to ack per level reached
	WITH a AS (
		SELECT m.level, percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY
				   extract(epoch FROM m.acked_at - m.created_at)::float8) AS p
		  FROM smsdispatch.message m
		 WHERE m.state = 'acked' AND m.created_at >= "from" AND m.created_at < "to"
		 GROUP BY m.level
	)
	SELECT array_agg(coalesce(a.p[k], 0) ORDER BY lvl, k)
	  INTO ack
	  FROM generate_series(1, 3) AS lvl
	 CROSS JOIN generate_series(1, 2) AS k
	  LEFT JOIN a ON a.level = lvl;

	RETURN '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
		|| '<meta http-equiv="Content-Security-Policy" content="default-src ''none''; style-src ''unsafe-inline''">'
		|| '<meta name="viewport" content="width=device-width, initial-scale=1">'
		|| format('<title>SMS report %s - %s</title>', smsdispatch.html_escape("from"::text),
				  smsdispatch.html_escape("to"::text))
		|| '<style>body{font-family:sans-serif;margin:24px;color:#212121;background:#fff}'
		|| 'h1{font-size:22px}h2{font-size:18px;margin-top:32px}figure{margin:8px 0}'
		|| '.chart .title{font-size:15px;font-weight:bold}.chart .axis{font-size:11px;fill:#424242}'
		|| '.chart .frame{stroke:#424242}.chart .grid{stroke:#e0e0e0}'
		|| 'table{border-collapse:collapse;margin:8px 0 24px;font-size:12px}'
		|| 'caption{text-align:left;font-weight:bold;padding:4px 0}'
		|| '.scroll{overflow-x:auto}th,td{border:1px solid #bdbdbd;padding:3px 6px;white-space:nowrap}'
		|| 'th{background:#eeeeee}'
		|| 'td.num{text-align:right}td.empty{color:#757575}</style></head><body>'
		|| format('<h1>SMS dispatch report</h1><p>From %s to %s, generated %s.</p>',
				  smsdispatch.html_escape("from"::text), smsdispatch.html_escape("to"::text),
				  smsdispatch.html_escape(now()::text))
		|| '<h2>Charts</h2>'
		|| smsdispatch.svg_bar_chart('Daily volume by final status', 'SMS', days,
				ARRAY['delivered', 'failed', 'lost', 'pending'],
				ARRAY['#2e7d32', '#c62828', '#616161', '#f9a825'], daily, true)
		|| smsdispatch.svg_bar_chart('Delivery time distribution', 'SMS', delivery_buckets,
				ARRAY['delivered SMS'], ARRAY['#1565c0'], delivery_hist, false)
		|| smsdispatch.svg_bar_chart('Time to acknowledge per level reached', 'seconds',
				ARRAY['level 1', 'level 2', 'level 3'], ARRAY['median', '95th percentile'],
				ARRAY['#00838f', '#6a1b9a'], ack, false)
		|| '<h2>Tables</h2>'
		|| smsdispatch.html_table('Delivery per day, type and channel',
				format('SELECT * FROM smsdispatch.delivery_stats(%s) ORDER BY day, type, channel', range_literal))
		|| smsdispatch.html_table('Gateway per hour',
				format('SELECT * FROM smsdispatch.gateway_stats(date_trunc(''hour'', %L::timestamptz), %L) ORDER BY hour',
					   "from", "to"))
		|| smsdispatch.html_table('Escalation per recipient list',
				format('SELECT * FROM smsdispatch.escalation_stats(%s) ORDER BY list', range_literal))
		|| smsdispatch.html_table('Queue now', 'SELECT * FROM smsdispatch.queue')
		|| '</body></html>';
END;
$$;

-- Deletes the rows of tbl that match condition ($1 is the cutoff),
-- batch_size at a time with a COMMIT after each batch, so that no transaction
-- holds many row locks; rows locked by others are left for the next run.
CREATE PROCEDURE smsdispatch.delete_in_batches(tbl regclass, condition text,
	cutoff timestamptz, batch_size int, INOUT deleted bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
	n bigint;
BEGIN
	deleted := 0;
	LOOP
		EXECUTE format('DELETE FROM %s WHERE ctid = ANY (ARRAY('
					   'SELECT ctid FROM %s WHERE %s LIMIT $2 FOR UPDATE SKIP LOCKED))',
					   tbl, tbl, condition)
			USING cutoff, batch_size;
		GET DIAGNOSTICS n = ROW_COUNT;
		deleted := deleted + n;
		COMMIT;
		EXIT WHEN n < batch_size;
	END LOOP;
END;
$$;

-- Removes what is no longer needed, in batches of batch_size rows, each in
-- its own short transaction: closed alarms (with their recipients and events)
-- closed before now() - older_than and out of number quarantine, SMS log rows
-- queued before it that are no longer queued or sending and belong to no
-- remaining alarm, received SMS and counter snapshots older than it.
-- A PROCEDURE because only a procedure can COMMIT between batches: row locks
-- are held for one batch only and the deleted space becomes reusable as the
-- purge goes. Call it outside a transaction block: CALL smsdispatch.purge('90 days').
-- No SET search_path (a procedure with SET cannot COMMIT): every table is
-- schema-qualified and pg_catalog is always searched first.
CREATE PROCEDURE smsdispatch.purge(older_than interval, batch_size int DEFAULT 10000,
	INOUT alarms bigint DEFAULT NULL, INOUT log_rows bigint DEFAULT NULL,
	INOUT inbox_rows bigint DEFAULT NULL, INOUT snapshots bigint DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
	cutoff timestamptz;
	alarm_cutoff timestamptz;
	n bigint;
BEGIN
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
	cutoff := now() - older_than;
	alarm_cutoff := least(cutoff, now() - smsdispatch.number_quarantine());

	CALL smsdispatch.delete_in_batches('smsdispatch.message',
		$c$state <> 'open' AND closed_at < $1$c$, alarm_cutoff, batch_size, alarms);
	CALL smsdispatch.delete_in_batches('verification.sms_log',
		$c$inserted_at < $1 AND send_state <> ALL ('{queued,sending}') AND message_id IS NULL$c$,
		cutoff, batch_size, log_rows);
	CALL smsdispatch.delete_in_batches('smsdispatch.inbox',
		'received_at < $1', cutoff, batch_size, inbox_rows);
	CALL smsdispatch.delete_in_batches('smsdispatch.counter_snapshot',
		'taken_at < $1', cutoff, batch_size, snapshots);
END;
$$;

-- Creates (or updates) the pg_cron jobs that keep the tables small and the
-- gateway statistics fed: the purge every day and a counter snapshot every
-- minute. pg_cron must be installed in this database.
CREATE FUNCTION smsdispatch.schedule_maintenance(retention interval DEFAULT '90 days',
	purge_schedule text DEFAULT '30 3 * * *')
RETURNS TABLE (jobid bigint, jobname text, schedule text, command text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in database "%"', current_database()
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('Add pg_cron to shared_preload_libraries, set cron.database_name = %L, '
								'restart the server and run CREATE EXTENSION pg_cron; or schedule '
								'CALL smsdispatch.purge(...) and SELECT smsdispatch.snapshot_counters() '
								'with any other scheduler.', current_database());
	END IF;
	IF retention IS NULL OR retention < interval '0' THEN
		RAISE EXCEPTION 'retention "%" must be a non-negative interval', retention
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example smsdispatch.schedule_maintenance(''90 days'').';
	END IF;
	PERFORM cron.schedule('smsdispatch-purge', purge_schedule,
						  format('CALL smsdispatch.purge(%L)', retention));
	PERFORM cron.schedule('smsdispatch-snapshot', '* * * * *',
						  'SELECT smsdispatch.snapshot_counters()');
	RETURN QUERY
		SELECT j.jobid, j.jobname::text, j.schedule, j.command
		  FROM cron.job j
		 WHERE j.jobname IN ('smsdispatch-purge', 'smsdispatch-snapshot')
		   AND j.username = current_user
		 ORDER BY j.jobname;
END;
$$;
-- Roles and privileges. PUBLIC gets nothing; the three roles are cluster-wide
-- and outlive DROP EXTENSION.
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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA smsdispatch FROM PUBLIC;
REVOKE ALL ON FUNCTION sms_normalize_phone(text), sms_segments(text),
	sms_send(text, text, text, text), sms_list_create(text, text, int),
	sms_list_add(text, text, int, interval, text), sms_enqueue(text, text, text),
	sms_ack(text, text), sms_receive(text, text), sms_cancel(text) FROM PUBLIC;

GRANT USAGE ON SCHEMA smsdispatch, verification
	TO smsdispatch_sender, smsdispatch_admin, smsdispatch_reader;

-- senders queue SMS and alarms and report replies; they read no lists
GRANT EXECUTE ON FUNCTION sms_normalize_phone(text), sms_segments(text),
	sms_send(text, text, text, text), sms_enqueue(text, text, text),
	sms_ack(text, text), sms_receive(text, text), sms_cancel(text)
	TO smsdispatch_sender;

-- admins do all of that and manage lists and the log
GRANT smsdispatch_sender TO smsdispatch_admin;
GRANT EXECUTE ON FUNCTION sms_list_create(text, text, int),
	sms_list_add(text, text, int, interval, text),
	smsdispatch.watch_verifications(regclass, name, name),
	smsdispatch.run_once()
	TO smsdispatch_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA smsdispatch TO smsdispatch_admin;
GRANT SELECT, UPDATE ON verification.sms_log TO smsdispatch_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA smsdispatch TO smsdispatch_admin;

-- readers see the log, the alarms and the statistics, not who is on call
GRANT SELECT ON verification.sms_log, smsdispatch.message, smsdispatch.event,
	smsdispatch.inbox, smsdispatch.recipient_list TO smsdispatch_reader;

-- the modem sidecar logs in as an admin (or a role granted smsdispatch_admin)
GRANT EXECUTE ON FUNCTION smsdispatch.modem_claim(text, interval),
	smsdispatch.modem_finish(bigint, text, text, text, text),
	smsdispatch.modem_recover(text),
	smsdispatch.modem_status_report(text, text, int, text, timestamptz),
	smsdispatch.modem_receive(text, text, text, timestamptz),
	smsdispatch.modem_heartbeat(text, interval, text, text, text, int, int, int, int, int, int, boolean, text, boolean)
	TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.modem, smsdispatch.modem_stale TO smsdispatch_reader;
-- Privileges on the IP2SMS channel's functions (after 90_roles.sql made the
-- roles): readers and admins see the counters, only admins reset them.
REVOKE ALL ON FUNCTION smsdispatch.ip2sms_poll_delay(interval, interval),
	smsdispatch.stats(), smsdispatch.stats_reset() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.stats() TO smsdispatch_reader, smsdispatch_admin;
GRANT EXECUTE ON FUNCTION smsdispatch.stats_reset() TO smsdispatch_admin;
-- Privileges on the reports (80_reports.sql), granted once the roles exist.
-- Readers see the statistics, the queue and the HTML report; admins also run
-- the retention.

REVOKE ALL ON FUNCTION sms_report_html(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint),
	smsdispatch.delete_in_batches(regclass, text, timestamptz, int, bigint) FROM PUBLIC;

GRANT SELECT ON smsdispatch.delivery_stats, smsdispatch.gateway_stats,
	smsdispatch.escalation_stats, smsdispatch.queue, smsdispatch.counter_snapshot
	TO smsdispatch_reader;
-- the range forms of the statistics run with the caller's rights: readers
-- already read sms_log, message, recipient_list and counter_snapshot
GRANT EXECUTE ON FUNCTION smsdispatch.delivery_stats(timestamptz, timestamptz),
	smsdispatch.escalation_stats(timestamptz, timestamptz),
	smsdispatch.gateway_stats(timestamptz, timestamptz),
	smsdispatch.histogram_quantile(float8, float8[], bigint[]),
	smsdispatch.sms_outcome(text, text),
	smsdispatch.delivery_seconds(timestamptz, timestamptz, timestamptz),
	smsdispatch.number_quarantine(),
	sms_report_html(timestamptz, timestamptz)
	TO smsdispatch_reader;

-- admins read everything readers read
GRANT smsdispatch_reader TO smsdispatch_admin;
GRANT EXECUTE ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint),
	smsdispatch.delete_in_batches(regclass, text, timestamptz, int, bigint)
	TO smsdispatch_admin;
GRANT DELETE ON verification.sms_log TO smsdispatch_admin;

-- the gateway counters (Prometheus exporter, snapshots) are statistics too
DO $$
BEGIN
	IF to_regprocedure('smsdispatch.stats()') IS NOT NULL THEN
		GRANT EXECUTE ON FUNCTION smsdispatch.stats() TO smsdispatch_reader;
	END IF;
END;
$$;

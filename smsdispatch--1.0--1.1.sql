-- smsdispatch 1.0 -> 1.1. Every change to the extension's objects made in
-- src/sql/ since 1.0 is made here too, so that an upgraded database equals
-- a fresh install of 1.1 (test/t/012_upgrade.pl checks it). Each object is
-- made once, in its final text, where what it needs at creation exists
-- (test/t/014_upgrade_scripts_define_once.pl checks it). The parts follow
-- the areas of src/sql: tables, C functions, alarms, on-call, the worker,
-- the send path, confirmations, verification, IP2SMS, the modem, channel
-- health, reports, and last the privileges of them all.

\echo Use "ALTER EXTENSION smsdispatch UPDATE TO '1.1'" to load this file. \quit

-- ==== Tables (10_tables.sql; the new tables of 31_oncall.sql and
-- 36_spool_failure.sql): new columns, constraints and indexes, and the
-- tables added in 1.1.

-- what a redacted body was
ALTER TABLE verification.sms_log ADD COLUMN body_length int;
ALTER TABLE verification.sms_log ADD COLUMN body_parts int;
ALTER TABLE verification.sms_log ADD COLUMN redacted_at timestamptz;

-- the priority of an SMS, 1 (alarms) to 9; a type's default comes from
-- smsdispatch.default_priority
ALTER TABLE verification.sms_log ADD COLUMN priority int NOT NULL DEFAULT 7;

-- confirmations (a list's choice; the rows of sms_log confirming an alarm;
-- the CLOSED recipient) and send windows (held_until, released_at)
ALTER TABLE smsdispatch.recipient_list ADD COLUMN confirmations boolean NOT NULL DEFAULT true;
ALTER TABLE smsdispatch.message_recipient DROP CONSTRAINT message_recipient_status_check;
ALTER TABLE smsdispatch.message_recipient ADD CONSTRAINT message_recipient_status_check
	CHECK (status IN ('NOT_SENT', 'NOT_YET_ACK', 'ACK', 'ACK_TIME_OVER', 'CLOSED'));
ALTER TABLE verification.sms_log
	ADD COLUMN confirms bigint REFERENCES smsdispatch.message ON DELETE SET NULL;
ALTER TABLE verification.sms_log ADD COLUMN held_until timestamptz;
ALTER TABLE verification.sms_log ADD COLUMN released_at timestamptz;

-- the claim index, by channel and priority, leaves rows held for their send
-- window out; they are found by when they are released
DROP INDEX verification.sms_log_queued_idx;
CREATE INDEX sms_log_queued_idx ON verification.sms_log
	(channel, priority, next_attempt_at NULLS FIRST, id)
	WHERE send_state = 'queued' AND held_until IS NULL;
CREATE INDEX sms_log_held_idx ON verification.sms_log (held_until)
	WHERE send_state = 'queued' AND held_until IS NOT NULL;

-- the inbox keeps the normalised sender and the inbound handler's work
ALTER TABLE smsdispatch.inbox ADD COLUMN sender_e164 text;
ALTER TABLE smsdispatch.inbox
	ADD COLUMN handler_state text CHECK (handler_state IN ('pending', 'done', 'failed'));
ALTER TABLE smsdispatch.inbox ADD COLUMN handled_at timestamptz;
ALTER TABLE smsdispatch.inbox ADD COLUMN handler_error text;
CREATE INDEX inbox_pending_idx ON smsdispatch.inbox (id)
	WHERE handler_state = 'pending';

-- the event kinds of confirmations, failover, retries and undeliverable
-- alarms
ALTER TABLE smsdispatch.event DROP CONSTRAINT event_kind_check;
ALTER TABLE smsdispatch.event ADD CONSTRAINT event_kind_check
	CHECK (kind IN ('enqueued', 'sent', 'level_started',
				'timed_out', 'escalated', 'repeated', 'acked', 'duplicate_ack',
				'exhausted', 'cancelled', 'send_failed',
				'confirmation',
				'failover', 'retried', 'undeliverable'));

-- The gateway state words and their class are defined once in C and read
-- by SQL through smsdispatch.gateway_status_class: the domain's CHECK,
-- sms_outcome, modem_status_report and the alarm trigger.
CREATE FUNCTION smsdispatch.gateway_status_class(word text)
RETURNS text
AS 'MODULE_PATHNAME', 'sms_gateway_status_class'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

ALTER DOMAIN smsdispatch.gateway_status DROP CONSTRAINT gateway_status_check;
ALTER DOMAIN smsdispatch.gateway_status ADD CONSTRAINT gateway_status_check
	CHECK (VALUE IS NULL OR smsdispatch.gateway_status_class(VALUE) IS NOT NULL);

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

-- A level of a list whose members take turns instead of all being paged:
-- in the order they were added to the level, each for period_days days,
-- handing off at handoff_time on the wall clock of time_zone; the first
-- member's first turn begins at handoff_time on the date starts, and
-- nobody of the level is on duty before that.
CREATE TABLE smsdispatch.rotation (
	id				bigserial PRIMARY KEY,
	list			text NOT NULL REFERENCES smsdispatch.recipient_list (name)
					ON UPDATE CASCADE ON DELETE CASCADE,
	level			int NOT NULL CHECK (level BETWEEN 1 AND 3),
	period_days		int NOT NULL CHECK (period_days BETWEEN 1 AND 366),
	handoff_time	time NOT NULL,
	time_zone		text NOT NULL,
	starts			date NOT NULL,
	UNIQUE (list, level)
);

-- Someone on duty at a level of a list from starts_at until ends_at, in
-- place of the level's members (or of the rotation's current one).
CREATE TABLE smsdispatch.duty_override (
	id			bigserial PRIMARY KEY,
	list		text NOT NULL REFERENCES smsdispatch.recipient_list (name)
				ON UPDATE CASCADE ON DELETE CASCADE,
	level		int NOT NULL CHECK (level BETWEEN 1 AND 3),
	phone		text NOT NULL CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
	name		text,
	ack_timeout	interval NOT NULL CHECK (ack_timeout > '0'),
	starts_at	timestamptz NOT NULL,
	ends_at		timestamptz NOT NULL,
	CHECK (ends_at > starts_at)
);
CREATE INDEX duty_override_list_idx ON smsdispatch.duty_override (list, ends_at);

-- A member of a list (a phone, on every level it is on) off duty from
-- starts_at until ends_at: a holiday.
CREATE TABLE smsdispatch.member_pause (
	id			bigserial PRIMARY KEY,
	list		text NOT NULL REFERENCES smsdispatch.recipient_list (name)
				ON UPDATE CASCADE ON DELETE CASCADE,
	phone		text NOT NULL,
	starts_at	timestamptz NOT NULL,
	ends_at		timestamptz NOT NULL,
	CHECK (ends_at > starts_at)
);
CREATE INDEX member_pause_list_idx ON smsdispatch.member_pause (list, phone);

SELECT pg_catalog.pg_extension_config_dump('smsdispatch.rotation', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.rotation_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.duty_override', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.duty_override_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.member_pause', '');
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.member_pause_id_seq', '');

-- ==== C functions (20_functions_c.sql, 21_phone_plan.sql)

-- smsdispatch.max_inbound_length in bytes and smsdispatch.redact_after as
-- an interval (NULL = off), likewise.
CREATE FUNCTION smsdispatch.max_inbound_length()
RETURNS integer
AS 'MODULE_PATHNAME', 'sms_max_inbound_length_sql'
LANGUAGE C STABLE;
CREATE FUNCTION smsdispatch.redact_after()
RETURNS interval
AS 'MODULE_PATHNAME', 'sms_redact_after_sql'
LANGUAGE C STABLE;

-- Refuses to go on inside a transaction block, as VACUUM does, for the
-- procedures that COMMIT as they go (what names the statement).
CREATE FUNCTION smsdispatch.prevent_in_transaction_block(what text)
RETURNS void
AS 'MODULE_PATHNAME', 'sms_prevent_in_transaction_block'
LANGUAGE C VOLATILE STRICT;

-- The priority an SMS of a type gets when its sender names none: 3 for
-- verification and 2FA, 5 for medication_request, 7 for text (alarms: 1).
CREATE FUNCTION smsdispatch.default_priority(type text)
RETURNS int
AS 'MODULE_PATHNAME', 'sms_default_priority_sql'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

-- How long an SMS of a type may wait to be submitted
-- (smsdispatch.validity_<type>); NULL = for ever. Alarms' SMS never expire.
CREATE FUNCTION smsdispatch.validity(type text)
RETURNS interval
AS 'MODULE_PATHNAME', 'sms_validity'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- sms_send() gains priority: 1 (most urgent, as alarms) to 9; NULL = the
-- type's default (smsdispatch.default_priority). The longer argument list
-- makes another function, so the old one goes.
DROP FUNCTION sms_send(text, text, text, text);
CREATE FUNCTION sms_send(phone text, body text, type text DEFAULT 'text',
	channel text DEFAULT NULL, priority int DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'sms_send'
LANGUAGE C VOLATILE;

-- Wakes the background worker when the calling transaction commits.
CREATE FUNCTION smsdispatch.wake_at_commit()
RETURNS void
AS 'MODULE_PATHNAME', 'sms_wake_at_commit_sql'
LANGUAGE C VOLATILE;
CREATE FUNCTION smsdispatch.send_window_opens(type text)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'sms_send_window_opens'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
-- NULL when a send window (as a setting would give it) is open at a time,
-- else when it next opens: for trying a window before setting it.
CREATE FUNCTION smsdispatch.send_window_next(send_window text, at timestamptz DEFAULT now())
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'sms_send_window_next'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

-- The country codes whose national number lengths sms_normalize_phone
-- checks, with those lengths (ITU-T E.164 national plans; a focused subset,
-- other country codes are held to 7 to 15 digits only).
CREATE FUNCTION smsdispatch.phone_plan()
RETURNS TABLE (country_code text, min_digits int, max_digits int)
AS 'MODULE_PATHNAME', 'sms_phone_plan'
LANGUAGE C IMMUTABLE STRICT;

-- Rows made by 1.0 get what the new columns say: SMS still waiting take the
-- priority they would get now, and every received SMS its normalised sender.
UPDATE verification.sms_log
   SET priority = CASE WHEN message_id IS NOT NULL THEN 1
					   ELSE smsdispatch.default_priority(type) END
 WHERE send_state IN ('queued', 'sending');
UPDATE smsdispatch.inbox SET sender_e164 = smsdispatch.try_normalize_phone(sender);

-- ==== Alarms (30_alarms.sql): matching a reply to its recipient,
-- confirmations on close, a level paging whoever is on duty when it starts;
-- a claim or a put-back no longer fires the alarm trigger, and a transport
-- failure no longer ends an alarm's recipient.

-- Whether a sender's number, written as the network or a person gave it,
-- is the E.164 number e164 when normalising it did not say so: its digits
-- (without a trunk or international prefix of zeros) and e164's overlap at
-- the end by nine digits or more, the shorter being a tail of the longer.
-- So 0501000099 and 380501000099 are +380501000099, while +15501000099,
-- another country's number with the same last nine digits, is not.
CREATE FUNCTION smsdispatch.same_subscriber(sender text, e164 text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT length(s.d) >= 9 AND length(t.d) >= 9
		   AND (right(t.d, length(s.d)) = s.d OR right(s.d, length(t.d)) = t.d)
	  FROM (SELECT ltrim(regexp_replace(coalesce(sender, ''), '[^0-9]', '', 'g'), '0') AS d) s,
		   (SELECT ltrim(regexp_replace(coalesce(e164, ''), '[^0-9]', '', 'g'), '0') AS d) t;
END;

-- The recipient row of an alarm that a phone answers for: exact E.164 match,
-- else smsdispatch.same_subscriber. Only recipients already sent the alarm
-- count.
CREATE OR REPLACE FUNCTION smsdispatch.match_recipient(message_id bigint, phone text)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e164 text;
	found_id bigint;
BEGIN
	e164 := smsdispatch.try_normalize_phone(phone);
	SELECT r.id INTO found_id FROM smsdispatch.message_recipient r
	 WHERE r.message_id = match_recipient.message_id AND r.sms_log_id IS NOT NULL
	   AND r.phone = e164
	 ORDER BY r.level LIMIT 1;
	IF found_id IS NULL THEN
		SELECT r.id INTO found_id FROM smsdispatch.message_recipient r
		 WHERE r.message_id = match_recipient.message_id AND r.sms_log_id IS NOT NULL
		   AND smsdispatch.same_subscriber(match_recipient.phone, r.phone)
		 ORDER BY r.level LIMIT 1;
	END IF;
	RETURN found_id;
END;
$$;

-- An alarm's SMS text: its number in brackets, then the body.
CREATE OR REPLACE FUNCTION smsdispatch.alarm_text(number text, body text)
RETURNS text
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
	SELECT '[' || number || '] ' || body;
END;

-- Keeps a received SMS in the inbox with the sender as given and in E.164,
-- and announces it with NOTIFY smsdispatch_inbox, payload {"id": 17,
-- "outcome": "no_number"} (sent at COMMIT). An SMS that is not an ack
-- waits for the inbound handler when smsdispatch.inbound_handler names one
-- (src/inbound.c), and wakes the worker for it at COMMIT.
CREATE FUNCTION smsdispatch.inbox_record(sender text, body text, outcome text,
	number text, message_id bigint)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	pending boolean := outcome NOT IN ('ack', 'duplicate_ack')
		AND smsdispatch.setting('smsdispatch.inbound_handler') <> '';
	inbox_id bigint;
BEGIN
	INSERT INTO smsdispatch.inbox (sender, sender_e164, body, outcome, number, message_id,
								   handler_state)
		VALUES (sender, smsdispatch.try_normalize_phone(sender), body, outcome, number,
				message_id, CASE WHEN pending THEN 'pending' END)
		RETURNING id INTO inbox_id;
	PERFORM pg_notify('smsdispatch_inbox',
					  json_build_object('id', inbox_id, 'outcome', outcome)::text);
	IF pending THEN
		PERFORM smsdispatch.wake_at_commit();
	END IF;
	RETURN inbox_id;
END;
$$;

-- Records an acknowledgement. Returns 'ack' when it ended the alarm,
-- 'duplicate_ack' when the alarm was already acknowledged, and
-- 'cancelled' when it was cancelled first. The message row lock orders an ack
-- against a concurrent cancel or ack.
CREATE OR REPLACE FUNCTION smsdispatch.record_ack(message_id bigint, recipient_id bigint)
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
	-- the acker and everyone else paged are told, in this transaction
	PERFORM smsdispatch.confirm_closed(ARRAY[m.id], 'acked', recipient_id);
	RETURN 'ack';
END;
$$;

-- An incoming SMS: refuses a body longer than smsdispatch.max_inbound_length,
-- acks the alarm whose number it names when the sender was sent it
-- (smsdispatch.match_recipient, smsdispatch.record_ack), and keeps it in the
-- inbox (smsdispatch.inbox_record).
CREATE OR REPLACE FUNCTION sms_receive(sender text, body text)
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
	IF octet_length(body) > smsdispatch.max_inbound_length() THEN
		RAISE EXCEPTION 'body of a received SMS from "%" is % bytes, longer than smsdispatch.max_inbound_length (% bytes)',
			left(sender, 32), octet_length(body), smsdispatch.max_inbound_length()
			USING ERRCODE = 'program_limit_exceeded',
				  HINT = 'A real SMS, even of 255 parts, is far shorter; raise the setting if your application passes longer texts.';
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
			PERFORM smsdispatch.inbox_record(sender, body, outcome, token, msg_id);
			RETURN outcome;
		END IF;
	END LOOP;
	IF first_msg IS NOT NULL THEN
		outcome := 'not_recipient';
	ELSIF first_token IS NOT NULL THEN
		outcome := 'unknown_number';
	END IF;
	PERFORM smsdispatch.inbox_record(sender, body, outcome, first_token, first_msg);
	RETURN outcome;
END;
$$;

-- Stops an open alarm; those already paged get a confirmation
-- (smsdispatch.confirm_closed).
CREATE OR REPLACE FUNCTION sms_cancel(number text)
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
	PERFORM smsdispatch.confirm_closed(ARRAY[msg_id], 'cancelled');
	RETURN true;
END;
$$;

-- Starts a level of each given alarm and hands it to its channel: one
-- queued sms_log row per recipient, each waiting for it to be submitted.
-- Who is paged is decided now, not at enqueue: whoever is on duty at that
-- level at this moment (smsdispatch.on_duty: the level's members, or the
-- rotation's current one, or an override; paused members skipped). A level
-- above the alarm's current one is an escalation and goes on from the next
-- level; any other level starts a round at level 1. The level started is
-- the first from there with anyone on duty; recipient rows of people off
-- duty go (those sent the alarm in an earlier round stay, ACK_TIME_OVER, so
-- they can still ack). When nobody is on duty at any later level, the
-- alarm's rows from there become ACK_TIME_OVER and it is due at once: the
-- escalation repeats or exhausts it, it never waits for nobody. Set-based:
-- a few statements for any number of alarms.
CREATE OR REPLACE FUNCTION smsdispatch.start_levels(message_ids bigint[], levels int[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- a small set of alarms, each reached by index: nested loops over the
-- per-alarm indexes, never a hash or merge join over a scan of the history
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
	ids bigint[];
	froms int[];
	targets int[];
	duty_lists text[];
	duty_levels int[];
	duty_phones text[];
	duty_names text[];
	duty_timeouts interval[];
BEGIN
	-- who is on duty now at each level of these alarms' lists, asked once
	SELECT array_agg(l.list), array_agg(d.level), array_agg(d.phone), array_agg(d.name),
		   array_agg(d.ack_timeout)
	  INTO duty_lists, duty_levels, duty_phones, duty_names, duty_timeouts
	  FROM (SELECT DISTINCT m.list FROM smsdispatch.message m WHERE m.id = ANY (message_ids)) l
	 CROSS JOIN LATERAL smsdispatch.on_duty(l.list, now()) d;

	WITH req AS (
		SELECT p.message_id, m.list,
			   CASE WHEN p.level > m.level THEN m.level + 1 ELSE 1 END AS from_level
		  FROM unnest(message_ids, levels) AS p(message_id, level)
		  JOIN smsdispatch.message m ON m.id = p.message_id
	), duty AS MATERIALIZED (
		SELECT * FROM unnest(duty_lists, duty_levels) AS d(list, level)
	)
	SELECT array_agg(req.message_id ORDER BY req.message_id),
		   array_agg(req.from_level ORDER BY req.message_id),
		   array_agg((SELECT min(duty.level) FROM duty
					   WHERE duty.list = req.list AND duty.level >= req.from_level)
					 ORDER BY req.message_id)
	  INTO ids, froms, targets
	  FROM req;

	-- recipients not on duty at the levels passed over and the one started
	WITH t AS (
		SELECT t.message_id, t.from_level, t.target, m.list
		  FROM unnest(ids, froms, targets) AS t(message_id, from_level, target)
		  JOIN smsdispatch.message m ON m.id = t.message_id
	), duty AS MATERIALIZED (
		SELECT * FROM unnest(duty_lists, duty_levels, duty_phones) AS d(list, level, phone)
	), off AS (
		SELECT r.id, r.sms_log_id IS NULL AND t.target IS NOT NULL AS never_sent
		  FROM t
		  JOIN smsdispatch.message_recipient r ON r.message_id = t.message_id
		 WHERE r.status = 'NOT_SENT' AND r.level >= t.from_level
		   AND (t.target IS NULL
				OR (r.level <= t.target
					AND NOT EXISTS (SELECT 1 FROM duty d
									 WHERE d.list = t.list AND d.level = r.level
									   AND d.phone = r.phone)))
	), gone AS (
		DELETE FROM smsdispatch.message_recipient r
		 USING off WHERE r.id = off.id AND off.never_sent
	)
	UPDATE smsdispatch.message_recipient r SET status = 'ACK_TIME_OVER'
	  FROM off WHERE r.id = off.id AND NOT off.never_sent;

	-- everyone on duty at the level started has a row, with today's name
	-- and timeout
	WITH t AS (
		SELECT t.message_id, t.target, m.list
		  FROM unnest(ids, targets) AS t(message_id, target)
		  JOIN smsdispatch.message m ON m.id = t.message_id
	), list_duty AS MATERIALIZED (
		SELECT * FROM unnest(duty_lists, duty_levels, duty_phones, duty_names, duty_timeouts)
			AS d(list, level, phone, name, ack_timeout)
	), duty AS MATERIALIZED (
		SELECT t.message_id, d.phone, d.name, d.level, d.ack_timeout
		  FROM t JOIN list_duty d ON d.list = t.list AND d.level = t.target
	), kept AS (
		UPDATE smsdispatch.message_recipient r
		   SET name = duty.name, ack_timeout = duty.ack_timeout
		  FROM duty
		 WHERE r.message_id = duty.message_id AND r.phone = duty.phone
		   AND r.level = duty.level
		   AND (r.name IS DISTINCT FROM duty.name OR r.ack_timeout <> duty.ack_timeout)
		RETURNING r.id
	)
	INSERT INTO smsdispatch.message_recipient (message_id, phone, name, level, ack_timeout)
	SELECT duty.message_id, duty.phone, duty.name, duty.level, duty.ack_timeout
	  FROM duty
	 WHERE NOT EXISTS (SELECT 1 FROM smsdispatch.message_recipient r
						WHERE r.message_id = duty.message_id AND r.phone = duty.phone
						  AND r.level = duty.level);

	-- the level next: the statements below find each alarm's recipients
	-- through it, linear in the number of alarms. Nothing to wait for until
	-- a channel submits the level; with nobody on it, due at once.
	UPDATE smsdispatch.message m
	   SET level = coalesce(t.target, (SELECT max(r.level) FROM smsdispatch.message_recipient r
									   WHERE r.message_id = m.id)),
		   level_started_at = now(),
		   check_at = CASE WHEN t.target IS NULL THEN now() END
	  FROM unnest(ids, targets) AS t(message_id, target)
	 WHERE m.id = t.message_id;

	WITH due AS (
		SELECT r.id, r.phone, m.id AS message_id, m.number, m.body, m.channel
		  FROM smsdispatch.message m
		  JOIN smsdispatch.message_recipient r
			ON r.message_id = m.id AND r.level = m.level
		 WHERE m.id = ANY (ids) AND r.status = 'NOT_SENT'
	), queued AS (
		-- alarms go before every other SMS (priority 1)
		INSERT INTO verification.sms_log (phone_number, type, body, channel, message_id,
										  priority)
		SELECT due.phone, 'text', smsdispatch.alarm_text(due.number, due.body),
			   due.channel, due.message_id, 1
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
	SELECT m.id, 'level_started', m.level,
		   'round ' || m.round
		   || CASE WHEN t.target IS NULL THEN
					format('; nobody on duty at level %s or later', t.from_level)
				   WHEN t.target = t.from_level + 1 THEN
					format('; nobody on duty at level %s', t.from_level)
				   WHEN t.target > t.from_level THEN
					format('; nobody on duty at levels %s to %s', t.from_level, t.target - 1)
				   ELSE '' END
	  FROM unnest(ids, froms, targets) AS t(message_id, from_level, target)
	  JOIN smsdispatch.message m ON m.id = t.message_id;
END;
$$;

-- An alarm with escalation: its first level pages whoever is on duty now
-- (smsdispatch.on_duty).
CREATE OR REPLACE FUNCTION sms_enqueue(body text, list text, channel text DEFAULT NULL)
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
	-- the list stays as it is until this alarm commits (sms_list_drop and
	-- sms_list_rename wait for it)
	PERFORM 1 FROM smsdispatch.recipient_list l WHERE l.name = sms_enqueue.list FOR KEY SHARE;
	IF NOT FOUND THEN
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
	-- the levels it escalates through, each with who is on duty there now
	-- (a level with nobody on duty now keeps all its members): start_levels
	-- decides who is paged when the level starts
	WITH duty AS MATERIALIZED (
		SELECT * FROM smsdispatch.on_duty(sms_enqueue.list, now())
	)
	INSERT INTO smsdispatch.message_recipient (message_id, phone, name, level, ack_timeout)
	SELECT msg_id, d.phone, d.name, d.level, d.ack_timeout
	  FROM duty d
	UNION ALL
	SELECT msg_id, m.phone, m.name, m.level, m.ack_timeout
	  FROM smsdispatch.list_member m
	 WHERE m.list = sms_enqueue.list
	   AND NOT EXISTS (SELECT 1 FROM duty d WHERE d.level = m.level);
	INSERT INTO smsdispatch.event (message_id, kind, detail)
		VALUES (msg_id, 'enqueued', 'list ' || list);
	PERFORM smsdispatch.start_level(msg_id, 1);
	RETURN num;
END;
$$;

-- Claiming ('sending') and putting back ('queued') change nothing for the
-- alarm: they do not fire it, so that a claim never waits for an alarm's lock.
DROP TRIGGER sms_log_progress ON verification.sms_log;
CREATE TRIGGER sms_log_progress
	AFTER UPDATE OF send_state, gateway_status ON verification.sms_log
	FOR EACH ROW
	WHEN (NEW.message_id IS NOT NULL
		  AND ((OLD.send_state IS DISTINCT FROM NEW.send_state
				AND NEW.send_state::text IN ('submitted', 'unknown', 'failed'))
			   OR OLD.gateway_status IS DISTINCT FROM NEW.gateway_status))
	EXECUTE FUNCTION smsdispatch.sms_log_progress();

-- Keeps each alarm recipient in step with its SMS: submitted (or possibly
-- submitted) starts the ack timeout; a final failure means the recipient
-- cannot be reached, so escalation does not wait for them. A failure in
-- transport (smsdispatch.failed_in_transport: the channel could not send it)
-- is the channel's, not the recipient's: the recipient stays NOT_SENT, so
-- the level does not count as tried, and smsdispatch.failover sends the SMS
-- again, on the other channel or later on this one. Either way the alarm's
-- check_at tells the escalation when to look at it next.
CREATE OR REPLACE FUNCTION smsdispatch.sms_log_progress()
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
	IF smsdispatch.failed_in_transport(NEW.send_state, NEW.gateway_status, NEW.attempts) THEN
		INSERT INTO smsdispatch.event (message_id, kind, level, phone, detail)
		SELECT r.message_id, 'send_failed', r.level, r.phone,
			   coalesce(NEW.last_error, NEW.send_state) || ' (a channel failure: sent again)'
		  FROM smsdispatch.message_recipient r
		  JOIN smsdispatch.message m ON m.id = r.message_id AND m.state = 'open'
		 WHERE r.sms_log_id = NEW.id AND r.status = 'NOT_SENT';
	ELSIF NEW.send_state = 'failed'
	   OR smsdispatch.gateway_status_class(NEW.gateway_status) = 'failed' THEN
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

-- ==== On-call (31_oncall.sql): list upkeep (remove, change, rename, drop,
-- pause and resume members), rotations and overrides, sms_oncall.

-- The hand-off of a rotation that began its current turn, as a count of
-- periods since starts: the last one at or before "at" of the local dates
-- starts + k * period_days. The local date of "at" gives k or k + 1.
CREATE FUNCTION smsdispatch.rotation_periods(period_days int, starts date, local date)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN floor((local - starts)::numeric / period_days)::int;

-- The number of hand-offs of a rotation up to "at" (0 in the first turn),
-- or NULL before its first turn begins. Hand-offs are instants of the
-- local wall clock, so a weekly one stays at 09:00 across the changes of
-- daylight saving time (that week is an hour shorter or longer). A single
-- expression, so that the planner inlines it.
CREATE FUNCTION smsdispatch.rotation_turn(period_days int, handoff_time time,
	time_zone text, starts date, at timestamptz)
RETURNS int
LANGUAGE sql STABLE PARALLEL SAFE
RETURN nullif(greatest(
	smsdispatch.rotation_periods(period_days, starts, (at AT TIME ZONE time_zone)::date)
	- CASE WHEN ((starts + smsdispatch.rotation_periods(period_days, starts,
								(at AT TIME ZONE time_zone)::date) * period_days)
				 + handoff_time) AT TIME ZONE time_zone > at
		   THEN 1 ELSE 0 END, -1), -1);

-- Who is on duty at each level of a list at a time: the level's members,
-- or the rotation's member whose turn it is; a member paused then is not;
-- an override covering that time replaces the level's people.
CREATE FUNCTION smsdispatch.on_duty(list text, at timestamptz)
RETURNS TABLE (level int, phone text, name text, ack_timeout interval, duty text)
LANGUAGE plpgsql STABLE ROWS 5
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	-- PL/pgSQL rather than SQL: its plan is made once per session, while
	-- callers (each level start) would plan an inlined SQL body every time
	RETURN QUERY
	WITH member AS (
		SELECT m.level, m.phone, m.name, m.ack_timeout, r.id IS NOT NULL AS rotating,
			   row_number() OVER (PARTITION BY m.level ORDER BY m.id) - 1 AS place,
			   count(*) OVER (PARTITION BY m.level) AS members,
			   CASE WHEN r.id IS NOT NULL THEN
					smsdispatch.rotation_turn(r.period_days, r.handoff_time, r.time_zone,
											  r.starts, on_duty.at) END AS turn
		  FROM smsdispatch.list_member m
		  LEFT JOIN smsdispatch.rotation r ON r.list = m.list AND r.level = m.level
		 WHERE m.list = on_duty.list
	), scheduled AS (
		SELECT s.level, s.phone, s.name, s.ack_timeout,
			   CASE WHEN s.rotating THEN 'rotation' ELSE 'member' END AS duty
		  FROM member s
		 WHERE (NOT s.rotating OR s.turn % s.members = s.place)
		   AND NOT EXISTS (SELECT 1 FROM smsdispatch.member_pause p
							WHERE p.list = on_duty.list AND p.phone = s.phone
							  AND p.starts_at <= on_duty.at AND p.ends_at > on_duty.at)
	), covering AS (
		SELECT DISTINCT ON (o.level, o.phone) o.level, o.phone, o.name, o.ack_timeout,
			   'override' AS duty
		  FROM smsdispatch.duty_override o
		 WHERE o.list = on_duty.list AND o.starts_at <= on_duty.at AND o.ends_at > on_duty.at
		 ORDER BY o.level, o.phone, o.starts_at DESC
	)
	SELECT s.level, s.phone, s.name, s.ack_timeout, s.duty FROM scheduled s
	 WHERE NOT EXISTS (SELECT 1 FROM covering c WHERE c.level = s.level)
	UNION ALL
	SELECT c.level, c.phone, c.name, c.ack_timeout, c.duty FROM covering c
	 ORDER BY 1, 2;
END;
$$;

-- The list row of a list function, locked against concurrent upkeep and
-- enqueues; a missing list is 42704.
CREATE FUNCTION smsdispatch.lock_list(list text)
RETURNS smsdispatch.recipient_list
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	l smsdispatch.recipient_list;
BEGIN
	SELECT * INTO l FROM smsdispatch.recipient_list r WHERE r.name = lock_list.list FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'recipient list "%" does not exist', list
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it first with sms_list_create().';
	END IF;
	RETURN l;
END;
$$;

-- A level argument of the list functions: 1, 2 or 3 (NULL when allowed).
CREATE FUNCTION smsdispatch.check_level(level int, arg text DEFAULT 'level',
	allow_null boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF (level IS NULL AND NOT allow_null) OR level NOT BETWEEN 1 AND 3 THEN
		RAISE EXCEPTION 'escalation level % is out of range', coalesce(level::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('Argument %s.', arg),
				  HINT = 'Levels are 1, 2 and 3.';
	END IF;
END;
$$;

-- A phone argument of the list functions, E.164, that must be a member of
-- the list (on the given level, or on any): 42704 otherwise.
CREATE FUNCTION smsdispatch.member_phone(list text, phone text, level int DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e164 text := @extschema@.sms_normalize_phone(phone);
BEGIN
	IF NOT EXISTS (SELECT 1 FROM smsdispatch.list_member m
				   WHERE m.list = member_phone.list AND m.phone = e164
					 AND (member_phone.level IS NULL OR m.level = member_phone.level)) THEN
		RAISE EXCEPTION 'phone "%" is not on %recipient list "%"', e164,
			coalesce('level ' || level || ' of ', ''), list
			USING ERRCODE = 'undefined_object',
				  HINT = format('See its members with SELECT * FROM smsdispatch.list_member WHERE list = %L.', list);
	END IF;
	RETURN e164;
END;
$$;

-- Removes a member from a list: from one level, or from every level it is
-- on. Returns how many memberships went. Levels of open alarms not started
-- yet no longer page them; those already sent the alarm can still ack it.
CREATE FUNCTION sms_list_remove(list text, phone text, level int DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e164 text;
	removed int;
BEGIN
	PERFORM smsdispatch.lock_list(list);
	PERFORM smsdispatch.check_level(level, allow_null => true);
	e164 := smsdispatch.member_phone(list, phone, level);
	DELETE FROM smsdispatch.list_member m
	 WHERE m.list = sms_list_remove.list AND m.phone = e164
	   AND (sms_list_remove.level IS NULL OR m.level = sms_list_remove.level);
	GET DIAGNOSTICS removed = ROW_COUNT;
	-- a pause belongs to a member: gone with the last membership
	DELETE FROM smsdispatch.member_pause p
	 WHERE p.list = sms_list_remove.list AND p.phone = e164
	   AND NOT EXISTS (SELECT 1 FROM smsdispatch.list_member m
					   WHERE m.list = sms_list_remove.list AND m.phone = e164);
	RETURN removed;
END;
$$;

-- Changes a member of a list: its level, phone, ack timeout or name (NULL
-- leaves a value as it is; name '' removes the name). level picks the
-- membership when the phone is on several levels; without it a new phone,
-- timeout or name applies to all of them. Returns how many memberships
-- changed.
CREATE FUNCTION sms_list_change(list text, phone text, level int DEFAULT NULL,
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

-- Refuses upkeep that would pull a list from under its open alarms.
CREATE FUNCTION smsdispatch.check_no_open_alarms(list text, action text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	open_numbers text;
BEGIN
	SELECT string_agg(m.number, ', ' ORDER BY m.number) INTO open_numbers
	  FROM smsdispatch.message m
	 WHERE m.list = check_no_open_alarms.list AND m.state = 'open';
	IF open_numbers IS NOT NULL THEN
		RAISE EXCEPTION 'cannot % recipient list "%": it has open alarms', action, list
			USING ERRCODE = 'object_in_use',
				  DETAIL = format('Open alarms: %s.', open_numbers),
				  HINT = 'Wait until they are acknowledged or exhausted, or stop them with sms_cancel().';
	END IF;
END;
$$;

-- Renames a list; its members, rotations, overrides, pauses and its closed
-- alarms follow.
CREATE FUNCTION sms_list_rename(list text, new_name text)
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
	IF EXISTS (SELECT 1 FROM smsdispatch.recipient_list l WHERE l.name = new_name) THEN
		RAISE EXCEPTION 'recipient list "%" already exists', new_name
			USING ERRCODE = 'duplicate_object';
	END IF;
	PERFORM smsdispatch.check_no_open_alarms(list, 'rename');
	UPDATE smsdispatch.recipient_list l SET name = new_name WHERE l.name = sms_list_rename.list;
	UPDATE smsdispatch.message m SET list = new_name WHERE m.list = sms_list_rename.list;
END;
$$;

-- Drops a list with its members, rotations, overrides and pauses. Closed
-- alarms keep its name.
CREATE FUNCTION sms_list_drop(list text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM smsdispatch.lock_list(list);
	PERFORM smsdispatch.check_no_open_alarms(list, 'drop');
	DELETE FROM smsdispatch.recipient_list l WHERE l.name = sms_list_drop.list;
END;
$$;

-- Takes a member (on every level it is on) off duty from "from" until
-- "until": alarms starting one of its levels meanwhile skip it.
CREATE FUNCTION sms_list_pause(list text, phone text, "until" timestamptz,
	"from" timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e164 text;
BEGIN
	PERFORM smsdispatch.lock_list(list);
	e164 := smsdispatch.member_phone(list, phone);
	IF "until" IS NULL OR "from" IS NULL THEN
		RAISE EXCEPTION 'pause of phone "%" needs "until" and "from"', e164
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF "until" <= now() THEN
		RAISE EXCEPTION 'pause of phone "%" until "%" would end in the past', e164, "until"
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give the time the member is back on duty.';
	END IF;
	IF "until" <= "from" THEN
		RAISE EXCEPTION 'pause of phone "%" from "%" until "%" ends before it starts', e164, "from", "until"
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO smsdispatch.member_pause (list, phone, starts_at, ends_at)
		VALUES (sms_list_pause.list, e164, "from", "until");
END;
$$;

-- Puts a paused member back on duty now: its current and future pauses
-- end. Returns how many pauses it ended.
CREATE FUNCTION sms_list_resume(list text, phone text)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e164 text;
	ended int;
	resumed int;
BEGIN
	PERFORM smsdispatch.lock_list(list);
	e164 := smsdispatch.member_phone(list, phone);
	DELETE FROM smsdispatch.member_pause p
	 WHERE p.list = sms_list_resume.list AND p.phone = e164 AND p.starts_at >= now();
	GET DIAGNOSTICS ended = ROW_COUNT;
	UPDATE smsdispatch.member_pause p SET ends_at = now()
	 WHERE p.list = sms_list_resume.list AND p.phone = e164 AND p.ends_at > now();
	GET DIAGNOSTICS resumed = ROW_COUNT;
	RETURN ended + resumed;
END;
$$;

-- Makes a level of a list a rotation: its members take turns, each for
-- period (whole days: '1 day', '1 week', '3 days'), handing off at
-- handoff_time in time_zone, the first member's first turn starting on
-- the date starts.
CREATE FUNCTION sms_rotation_create(list text, level int,
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
	IF period IS NULL OR period <> make_interval(days => days) OR days NOT BETWEEN 1 AND 366 THEN
		RAISE EXCEPTION 'rotation period "%" is not a whole number of days', coalesce(period::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give 1 to 366 days: ''1 day'', ''1 week'', ''3 days''.';
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

-- Makes a rotation's level fixed members again: all of them are paged.
CREATE FUNCTION sms_rotation_drop(list text, level int)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM smsdispatch.lock_list(list);
	PERFORM smsdispatch.check_level(level);
	DELETE FROM smsdispatch.rotation r
	 WHERE r.list = sms_rotation_drop.list AND r.level = sms_rotation_drop.level;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'level % of recipient list "%" is not a rotation', level, list
			USING ERRCODE = 'undefined_object';
	END IF;
END;
$$;

-- Puts someone on duty at a level of a list from starts_at until ends_at,
-- in place of the level's members. Returns the override's id.
CREATE FUNCTION sms_override_add(list text, level int, phone text,
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

-- Removes an override.
CREATE FUNCTION sms_override_remove(id bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	DELETE FROM smsdispatch.duty_override o WHERE o.id = sms_override_remove.id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'override % does not exist', coalesce(id::text, 'NULL')
			USING ERRCODE = 'undefined_object',
				  HINT = 'See them with SELECT * FROM smsdispatch.duty_override.';
	END IF;
END;
$$;

-- Who is on duty at each level of a list at a time (default now): what an
-- alarm starting that level then pages. duty says why: member, rotation or
-- override.
CREATE FUNCTION sms_oncall(list text, at timestamptz DEFAULT now())
RETURNS TABLE (level int, phone text, name text, ack_timeout interval, duty text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM smsdispatch.recipient_list l WHERE l.name = sms_oncall.list) THEN
		RAISE EXCEPTION 'recipient list "%" does not exist', list
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it first with sms_list_create().';
	END IF;
	IF at IS NULL THEN
		RAISE EXCEPTION 'at must not be NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	RETURN QUERY SELECT * FROM smsdispatch.on_duty(list, at);
END;
$$;

-- ==== The worker's duties (35_worker.sql): spool files may name their
-- channel; an alarm that reaches nobody is loud.

-- spool_enqueue() gains the file's channel
DROP FUNCTION smsdispatch.spool_enqueue(text, bigint, timestamptz, text, text, text, text[], text);

-- Imports one parsed spool file: an alarm to a list, or one SMS per phone;
-- channel NULL is smsdispatch.default_channel.
-- Returns what it did, or NULL when the file was imported before. Bad
-- content raises the error of sms_enqueue() or sms_send(); the importer
-- writes it into the file's .reason.
CREATE FUNCTION smsdispatch.spool_enqueue(file_name text, file_size bigint,
	file_mtime timestamptz, file_md5 text, list text, body text,
	phones text[], type text, channel text DEFAULT NULL)
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
		num := @extschema@.sms_enqueue(body, list, channel);
		UPDATE smsdispatch.message m SET source = 'spool'
		 WHERE m.number = num AND m.state = 'open'
		RETURNING m.id INTO msg_id;
		UPDATE smsdispatch.spool_file SET message_id = msg_id WHERE id = file_id;
		RETURN 'alarm ' || num;
	END IF;

	FOREACH phone IN ARRAY phones LOOP
		ids := ids || @extschema@.sms_send(phone, body, coalesce(type, 'text'), channel);
	END LOOP;
	UPDATE smsdispatch.spool_file SET sms_log_ids = ids WHERE id = file_id;
	RETURN cardinality(ids) || ' SMS';
END;
$$;

-- Makes an alarm that reaches nobody loud: a WARNING in the server log
-- naming it and why, and NOTIFY smsdispatch_alarm with a JSON payload
-- {"number": "0042", "state": "exhausted", "reason": "..."} that an
-- application or a pager bridge can LISTEN for (sent at COMMIT).
CREATE FUNCTION smsdispatch.alarm_alert(number text, state text, reason text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE WARNING 'smsdispatch: alarm % is %: %', number, state, reason;
	PERFORM pg_notify('smsdispatch_alarm',
					  json_build_object('number', number, 'state', state,
										'reason', reason)::text);
END;
$$;

-- One escalation step for the due open alarms (check_at passed), at most
-- batch of them: recipients of the current level past their deadline become
-- ACK_TIME_OVER; an alarm whose current level has nobody left waiting moves
-- to its next level with recipients, else starts another round when its
-- list's repeat allows, else is exhausted. Alarms that an ack or a channel
-- holds locked are skipped and seen on the next pass. Set-based: a fixed
-- number of statements whatever the batch, every one of them found through
-- message_check_idx and the per-alarm indexes, never by a scan of history.
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
					format('nobody on list "%s" acknowledged it in %s round(s)',
						   gone.list, gone.round));
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

-- ==== The send path (36_send_path.sql): one backoff and one claim for both
-- channels, validity before sending, send windows.

-- The pause before attempt attempts + 1 after a transport failure: 1 s,
-- doubling, at most 5 min. One policy for every channel.
CREATE FUNCTION smsdispatch.retry_delay(attempts int)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT least(interval '1 s' * (2 ^ least(greatest(attempts - 1, 0), 9)), interval '5 min')
$$;

-- IP2SMS rows still in a pollable state after the status window become
-- Terminated and are no longer polled. Rows or alarms another session holds
-- are left for the next call, so this never waits.
CREATE FUNCTION smsdispatch.ip2sms_terminate_polls(status_window int)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	alarms bigint[];
BEGIN
	SELECT array_agg(m.id) INTO alarms FROM (
		SELECT m.id FROM smsdispatch.message m
		 WHERE m.id IN (SELECT l.message_id FROM verification.sms_log l
						 WHERE l.next_poll_at <= now() AND l.channel = 'ip2sms'
						   AND l.submitted_at <= now() - make_interval(secs => status_window)
						   AND l.message_id IS NOT NULL)
		 ORDER BY m.id
		 FOR NO KEY UPDATE SKIP LOCKED) AS m;
	UPDATE verification.sms_log l
	   SET gateway_status = 'Terminated', status_changed_at = now(),
		   next_poll_at = NULL, updated_at = now()
	 WHERE l.id IN (SELECT p.id FROM verification.sms_log p
					 WHERE p.next_poll_at <= now() AND p.channel = 'ip2sms'
					   AND p.submitted_at <= now() - make_interval(secs => status_window)
					   AND (p.message_id IS NULL OR p.message_id = ANY (alarms))
					 FOR UPDATE SKIP LOCKED);
END;
$$;

-- Queued rows whose send window has opened (held_until passed) go back to
-- the claims, at most batch of them, their validity counting from now on:
-- a duty of the worker and of run_once(). Setting send_state wakes the
-- worker and, for modem rows, the sidecars (sms_log_wake). Returns the rows
-- released and when the next held row is due.
CREATE FUNCTION smsdispatch.release_held(batch int DEFAULT 1000,
	OUT released int, OUT next_due timestamptz)
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	UPDATE verification.sms_log l
	   SET send_state = 'queued', held_until = NULL, released_at = now(), updated_at = now()
	 WHERE l.id IN (SELECT h.id FROM verification.sms_log h
					 WHERE h.send_state = 'queued' AND h.held_until <= now()
					 ORDER BY h.held_until
					 LIMIT batch
					 FOR UPDATE SKIP LOCKED);
	GET DIAGNOSTICS released = ROW_COUNT;
	SELECT min(h.held_until) INTO next_due FROM verification.sms_log h
	 WHERE h.send_state = 'queued' AND h.held_until IS NOT NULL;
END;
$$;

-- Claims up to n due queued rows of a channel, most urgent first (priority,
-- then fresh rows, then retries by their time, then age): they become
-- 'sending' with the attempt counted, under claimer and a lease when given.
-- A row not claimed within its type's validity (smsdispatch.validity) is
-- not sent late: it becomes 'failed', "expired before sending", and is not
-- returned. A row outside its type's send window (smsdispatch.send_window_opens)
-- stays queued, held until the window opens: out of the claim index, so a
-- held backlog of any size costs later claims nothing; the worker releases
-- it when the window opens (smsdispatch.release_held), and its validity
-- counts from its release.
-- Alarms' SMS and their confirmations neither expire nor wait. Rows other
-- sessions hold are skipped, so a claim never waits.
CREATE FUNCTION smsdispatch.claim_sends(channel text, n int,
	claimer text DEFAULT NULL, lease interval DEFAULT NULL)
RETURNS TABLE (id bigint, phone_number text, body text, attempts int, message_id bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
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
		   AND l.held_until IS NULL
		   AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= now())
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
	SELECT c.id, c.phone_number, c.body, c.attempts, c.message_id
	  FROM claimed c
	 WHERE c.send_state = 'sending'
	 ORDER BY c.priority, c.id;
END;
$$;

-- ==== Confirmations (37_confirmations.sql)

-- Closes the waiting of the given alarms' recipients and queues their
-- confirmations; called by smsdispatch.record_ack ('acked', with the acking
-- recipient), sms_cancel ('cancelled') and smsdispatch.escalate
-- ('exhausted'), with the alarms already locked and closed. Recipients
-- still waiting for an ack, or whose SMS a channel has in hand, become
-- CLOSED. "Paged" means a channel took the recipient's SMS (sending,
-- submitted or unknown); one confirmation per phone, on the channel of
-- that SMS, at alarm priority. Confirmation rows carry confirms, not
-- message_id: they are nobody's page, so the escalation and
-- sms_log_progress never take them for one. Lists with confirmations off
-- (sms_list_confirmations) get none. Returns the confirmations queued.
CREATE FUNCTION smsdispatch.confirm_closed(message_ids bigint[], closed_as text,
	acker bigint DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
	queued int;
BEGIN
	IF closed_as IS NULL OR closed_as NOT IN ('acked', 'cancelled', 'exhausted') THEN
		RAISE EXCEPTION 'unknown way "%" for an alarm to close', closed_as
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Alarms close as acked, cancelled or exhausted.';
	END IF;

	UPDATE smsdispatch.message_recipient r
	   SET status = 'CLOSED'
	 WHERE r.message_id = ANY (message_ids) AND r.id IS DISTINCT FROM acker
	   AND (r.status = 'NOT_YET_ACK'
			OR (r.status = 'NOT_SENT'
				AND EXISTS (SELECT 1 FROM verification.sms_log l
							 WHERE l.id = r.sms_log_id AND l.send_state = 'sending')));

	WITH paged AS (
		SELECT DISTINCT ON (r.message_id, r.phone)
			   r.message_id, r.phone, r.level, r.id = acker AS is_acker, l.channel
		  FROM smsdispatch.message_recipient r
		  JOIN verification.sms_log l ON l.id = r.sms_log_id
		 WHERE r.message_id = ANY (message_ids)
		   AND l.send_state IN ('sending', 'submitted', 'unknown')
		 ORDER BY r.message_id, r.phone, r.id = acker DESC, r.level
	), worded AS (
		SELECT p.*, m.number,
			   '[' || m.number || '] ' ||
			   CASE WHEN p.is_acker THEN 'acknowledged'
					WHEN closed_as = 'acked' THEN
						'taken by ' || left(coalesce(a.name, a.phone), 60)
					WHEN closed_as = 'cancelled' THEN 'cancelled'
					ELSE 'exhausted: nobody acknowledged it' END AS body
		  FROM paged p
		  JOIN smsdispatch.message m ON m.id = p.message_id
		  LEFT JOIN smsdispatch.message_recipient a ON a.id = acker
		 WHERE NOT EXISTS (SELECT 1 FROM smsdispatch.recipient_list rl
							WHERE rl.name = m.list AND NOT rl.confirmations)
	), sent AS (
		INSERT INTO verification.sms_log (phone_number, type, body, channel, priority,
										  confirms)
		SELECT t.phone, 'text', t.body, t.channel, 1, t.message_id
		  FROM worded t
		 ORDER BY t.message_id, t.is_acker DESC, t.level, t.phone
		RETURNING confirms, phone_number, body
	)
	INSERT INTO smsdispatch.event (message_id, kind, phone, detail)
	SELECT s.confirms, 'confirmation', s.phone_number, s.body
	  FROM sent s;
	GET DIAGNOSTICS queued = ROW_COUNT;
	RETURN queued;
END;
$$;

-- Turns the confirmations of a list on or off (on for a new list).
CREATE FUNCTION sms_list_confirmations(list text, enabled boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF enabled IS NULL THEN
		RAISE EXCEPTION 'enabled must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass true to confirm acks, cancels and exhaustion by SMS, false not to.';
	END IF;
	UPDATE smsdispatch.recipient_list l SET confirmations = enabled
	 WHERE l.name = sms_list_confirmations.list;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'recipient list "%" does not exist', list
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it first with sms_list_create().';
	END IF;
END;
$$;

-- ==== Verification (40_verification.sql): DROP EXTENSION keeps the
-- application's tables.

-- Refuses DROP EXTENSION smsdispatch CASCADE while schema verification (a
-- member) holds the application's tables, which the cascade would drop.
CREATE FUNCTION smsdispatch.drop_guard()
RETURNS event_trigger
LANGUAGE C
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'sms_drop_guard';
CREATE EVENT TRIGGER smsdispatch_drop_guard ON ddl_command_start
	WHEN TAG IN ('DROP EXTENSION')
	EXECUTE FUNCTION smsdispatch.drop_guard();

-- ==== IP2SMS (50_ip2sms.sql): the counters outlive a clean restart.

-- When the counters last started from zero; NULL when not preloaded.
CREATE FUNCTION smsdispatch.stats_since()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'sms_stats_since'
LANGUAGE C VOLATILE;

-- How long to wait before the next status poll of an SMS submitted elapsed
-- ago, with base = smsdispatch.ip2sms_poll_interval: 1, 3, 6, 12, then 30
-- times base. A standard SQL body: its names are bound when it is created,
-- so the worker's call looks nothing up through a search_path.
CREATE OR REPLACE FUNCTION smsdispatch.ip2sms_poll_delay(elapsed interval, base interval)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT base * CASE
		WHEN elapsed < base THEN 1
		WHEN elapsed < base * 4 THEN 3
		WHEN elapsed < base * 10 THEN 6
		WHEN elapsed < base * 22 THEN 12
		ELSE 30 END;
END;

-- ==== The modem (70_modem.sql)

-- Refuses an empty or NULL modem name: every row a sidecar touches carries it.
CREATE OR REPLACE FUNCTION smsdispatch.modem_check_name(modem text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF modem IS NULL OR modem = '' THEN
		RAISE EXCEPTION 'modem name must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Start smsdispatch-modem with --name, or let it default to the gammurc section.';
	END IF;
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
CREATE OR REPLACE FUNCTION smsdispatch.modem_finish(id bigint, modem text, outcome text,
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
				now() + smsdispatch.retry_delay(l.attempts)
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

-- Takes the next due queued modem row for this modem, the most urgent first
-- (smsdispatch.claim_sends, as the IP2SMS channel claims): marks it sending
-- with a lease and counts the attempt. SKIP LOCKED lets several sidecars
-- claim side by side without ever taking the same row. A row the claim
-- holds for its send window takes none of this modem's turn: it claims
-- again while due rows are left (at most 16 times).
CREATE OR REPLACE FUNCTION smsdispatch.modem_claim(modem text, lease interval DEFAULT '2 min')
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
	FOR attempt IN 1..16 LOOP
		RETURN QUERY
		SELECT c.id, c.phone_number, c.body
		  FROM smsdispatch.claim_sends('modem', 1, modem, lease) c;
		EXIT WHEN FOUND OR NOT EXISTS (
			SELECT 1 FROM verification.sms_log l
			 WHERE l.channel = 'modem' AND l.send_state = 'queued' AND l.held_until IS NULL
			   AND (l.next_attempt_at IS NULL OR l.next_attempt_at <= now()));
	END LOOP;
END;
$$;

-- Pairs a status report with the row it reports on (same modem, same
-- recipient, the message reference among the row's parts; the recipient by
-- smsdispatch.same_subscriber when the report writes the number differently)
-- and records the TP-Status word. Returns the sms_log id, or NULL when
-- nothing matched.
CREATE OR REPLACE FUNCTION smsdispatch.modem_status_report(modem text, phone text,
	reference int, status text, changed_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	e164 text;
	found_id bigint;
BEGIN
	PERFORM smsdispatch.modem_check_name(modem);
	IF smsdispatch.gateway_status_class(status) IS NULL THEN
		RAISE EXCEPTION 'unknown status report word "%"', status
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A status report carries a gateway state word, such as Delivered, Enroute or Undeliverable (smsdispatch.gateway_status_class() knows them all).';
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
	-- a number in another format than we sent to
	IF found_id IS NULL THEN
		SELECT l.id INTO found_id FROM verification.sms_log l
		 WHERE smsdispatch.same_subscriber(modem_status_report.phone, l.phone_number)
		   AND l.inserted_at > now() - interval '7 days'
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
	   AND smsdispatch.gateway_status_class(l.gateway_status) IS DISTINCT FROM 'failed'
	   AND NOT (smsdispatch.gateway_status_class(status) = 'pending'
				AND smsdispatch.gateway_status_class(l.gateway_status) = 'delivered');
	RETURN found_id;
END;
$$;

-- ==== Channel health (71_channel_health.sql)

-- Channel health and failover: each channel's state (smsdispatch.channel_health),
-- and the worker's duty that sends an alarm's SMS on the other channel when
-- its own cannot send it, retries it when it failed for a transport reason,
-- and makes an alarm that can reach nobody loud (smsdispatch.failover).

-- The IP2SMS channel as the worker last found it (src/channel_health.c):
-- 'ok', 'auth_failed' (HTTP 401, or no usable password file), 'down' (the
-- gateway cannot be reached, or no worker runs), 'unconfigured' (no send
-- URL); since when, and the last error.
CREATE FUNCTION smsdispatch.ip2sms_health(OUT state text, OUT since timestamptz,
	OUT last_error text)
RETURNS record
AS 'MODULE_PATHNAME', 'sms_ip2sms_health'
LANGUAGE C VOLATILE;

-- One row per channel: its state, since when, and what went wrong last. A
-- modem channel with no sidecar seen within three of its heartbeats is
-- 'no_sidecar', since the third heartbeat was missed (NULL when none ever
-- connected).
CREATE VIEW smsdispatch.channel_health AS
	SELECT 'ip2sms'::text AS channel, h.state, h.since, h.last_error
	  FROM smsdispatch.ip2sms_health() AS h
	UNION ALL
	SELECT 'modem'::text,
		   CASE WHEN s.fresh THEN 'ok' ELSE 'no_sidecar' END,
		   CASE WHEN s.fresh THEN s.up_since ELSE s.gone_since END,
		   CASE WHEN s.fresh THEN NULL
				WHEN s.gone_since IS NULL THEN 'no modem sidecar has connected'
				ELSE format('no sidecar seen within three heartbeats; the last one, %s, was last seen at %s',
							s.last_name, s.last_seen) END
	  FROM (SELECT coalesce(bool_or(m.last_seen >= now() - 3 * m.heartbeat), false) AS fresh,
				   min(m.started_at) FILTER (WHERE m.last_seen >= now() - 3 * m.heartbeat) AS up_since,
				   max(m.last_seen + 3 * m.heartbeat) AS gone_since,
				   max(m.last_seen) AS last_seen,
				   (SELECT n.name FROM smsdispatch.modem n
					 ORDER BY n.last_seen DESC LIMIT 1) AS last_name
			  FROM smsdispatch.modem m) AS s;

-- Whether an SMS failed for good for a transport reason (the channel could
-- not deliver it to the gateway or the modem within smsdispatch.max_attempts),
-- as opposed to a refusal or a delivery failure the gateway reported.
CREATE FUNCTION smsdispatch.failed_in_transport(send_state text, gateway_status text,
	attempts int)
RETURNS boolean
LANGUAGE sql STABLE
BEGIN ATOMIC
	SELECT send_state = 'failed' AND gateway_status IS NULL
	   AND attempts >= smsdispatch.setting('smsdispatch.max_attempts')::int;
END;

-- ' since <time>' for the messages of the failover duty; nothing when the
-- state has no known start.
CREATE FUNCTION smsdispatch.since_text(since timestamptz)
RETURNS text
LANGUAGE sql STABLE
BEGIN ATOMIC
	SELECT CASE WHEN isfinite(since) THEN ' since ' || since::text ELSE '' END;
END;

-- Alarm recipients waiting for an SMS of the current level: the failover
-- duty looks at these only, however many alarms there are.
CREATE INDEX message_recipient_unsent_idx ON smsdispatch.message_recipient (message_id)
	WHERE status = 'NOT_SENT' AND sms_log_id IS NOT NULL;

-- The failover duty (the worker runs it after each escalation step, and so
-- does run_once()). For each recipient of an open alarm's current level
-- whose SMS has not left, at most batch of them a pass (checked counts
-- those acted on; SMS that can only wait are not held locked):
-- - queued on a channel that is not ok: when the other channel is ok, and
--   for smsdispatch.failover_after this one has not been ok and the SMS
--   has waited, the SMS goes
--   out on the other channel: a new sms_log row with the alarm's
--   message_id, event 'failover', the old row failed "failed over"; the
--   recipient's deadline counts from the new row's submission;
-- - failed for good for a transport reason: the same on the other channel
--   when it is ok, at once; else queued again on its own channel after
--   smsdispatch.retry_delay (event 'retried'): a level nobody could be sent
--   does not count as tried.
-- An alarm of which nobody on the current level holds the SMS and every
-- recipient waiting for it is stuck with no other channel to take it is
-- undeliverable: event 'undeliverable', a WARNING and NOTIFY
-- smsdispatch_alarm (smsdispatch.alarm_alert), once per level; it stays
-- open. With smsdispatch.failover_verification on, queued verification and
-- 2FA SMS fail over too. next_check: when the next SMS waiting for its
-- failover_after is due.
-- The worker keeps these plans until something invalidates them, so they
-- must not depend on how big the log was when they were made: a log that
-- was tiny then may hold a backlog of 100,000 now, and a scan of it for
-- each waiting recipient made every pass take seconds (test/t/043). So
-- each recipient's SMS is looked up by its key: the LATERAL subquery keeps
-- the recipients first, whatever the log's size.
CREATE FUNCTION smsdispatch.failover(batch int DEFAULT 1000,
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
	hc text[];
	hs text[];
	hsince timestamptz[];
	herr text[];
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

	-- the channels' health, read once
	SELECT array_agg(h.channel), array_agg(h.state),
		   array_agg(coalesce(h.since, '-infinity')), array_agg(h.last_error)
	  INTO hc, hs, hsince, herr
	  FROM smsdispatch.channel_health h;

	FOR c IN
		SELECT r.id AS rid, r.message_id, r.level, r.phone, m.number,
			   l.id AS lid, l.channel::text AS channel, l.send_state::text AS send_state,
			   l.type::text AS type, l.body, l.priority, l.last_error,
			   h.state AS ch_state, h.since AS ch_since,
			   o.channel AS other, o.state AS other_state,
			   o.state = 'ok' AS other_ok
		  FROM smsdispatch.message_recipient r
		  JOIN smsdispatch.message m
			ON m.id = r.message_id AND m.state = 'open' AND m.level = r.level
		 CROSS JOIN LATERAL (SELECT * FROM verification.sms_log s
							  WHERE s.id = r.sms_log_id OFFSET 0) l
		  JOIN unnest(hc, hs, hsince, herr) AS h(channel, state, since, last_error)
			ON h.channel = l.channel::text
		  JOIN unnest(hc, hs) AS o(channel, state) ON o.channel <> l.channel::text
		 WHERE r.status = 'NOT_SENT' AND r.sms_log_id IS NOT NULL
		   AND ((l.send_state = 'queued' AND h.state <> 'ok' AND o.state = 'ok'
				 AND greatest(l.inserted_at, h.since) <= now() - after)
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
		why := why || format('its SMS to %s failed on channel %s (%s) and is retried; no other channel is ok (%s is %s)',
							 c.phone, c.channel, c.last_error, c.other, c.other_state);
	END LOOP;

	-- SMS that can only wait, queued on a channel that is not ok: for the
	-- other channel's failover_after (next_check), or with no other channel
	-- ok at all (stuck)
	SELECT min(greatest(l.inserted_at, h.since) + after) FILTER (WHERE o.state = 'ok'),
		   array_agg(r.id) FILTER (WHERE o.state <> 'ok'),
		   array_agg(r.message_id) FILTER (WHERE o.state <> 'ok'),
		   array_agg(format('channel %s is %s%s (%s), and no other channel is ok',
							l.channel, h.state, smsdispatch.since_text(h.since), h.last_error))
			   FILTER (WHERE o.state <> 'ok')
	  INTO next_check, w_rids, w_alarms, w_why
	  FROM smsdispatch.message_recipient r
	  JOIN smsdispatch.message m
		ON m.id = r.message_id AND m.state = 'open' AND m.level = r.level
	 CROSS JOIN LATERAL (SELECT * FROM verification.sms_log s
						  WHERE s.id = r.sms_log_id OFFSET 0) l
	  JOIN unnest(hc, hs, hsince, herr) AS h(channel, state, since, last_error)
		ON h.channel = l.channel::text
	  JOIN unnest(hc, hs) AS o(channel, state) ON o.channel <> l.channel::text
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

	-- verification codes, when asked for: queued on a channel that has not
	-- been ok for failover_after, and the other one is
	IF NOT ('ok' = ALL (hs))
	   AND smsdispatch.setting('smsdispatch.failover_verification')::boolean THEN
		FOR v IN
			SELECT l.id, l.phone_number, l.type::text AS type, l.body, l.priority,
				   l.verification_id, l.channel::text AS channel, h.state, o.channel AS other
			  FROM unnest(hc, hs, hsince) AS h(channel, state, since)
			  JOIN unnest(hc, hs) AS o(channel, state) ON o.channel <> h.channel AND o.state = 'ok'
			  JOIN verification.sms_log l
				ON l.channel = h.channel::smsdispatch.channel AND l.send_state = 'queued'
			 WHERE h.state <> 'ok' AND greatest(h.since, l.inserted_at) <= now() - after
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
									   v.other, new_id, v.channel, v.state)
			 WHERE id = v.id;
			failed_over := failed_over + 1;
		END LOOP;
	END IF;
END;
$$;

-- ==== Reports and retention (80_reports.sql): the live counters, delivery
-- statistics with an error rate, an hourly grain and a sent count without
-- gateway refusals; schedule_maintenance() checks that pg_cron can connect;
-- escalation statistics per level of the acking recipient; the HTML report
-- fits 1,200 px; smsdispatch.queue shows open alarms and queue_history every
-- alarm, with the tables' column names; the retention runs fixed
-- statements and redacts old bodies.

-- Copies the current counters into counter_snapshot; returns the rows written.
CREATE OR REPLACE FUNCTION smsdispatch.snapshot_counters()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	written integer;
BEGIN
	INSERT INTO smsdispatch.counter_snapshot (taken_at, server_started_at, name, value)
	SELECT now(), smsdispatch.stats_since(), s.name, s.value
	  FROM smsdispatch.stats() AS s
	ON CONFLICT DO NOTHING;
	GET DIAGNOSTICS written = ROW_COUNT;
	RETURN written;
END;
$$;

-- The counters as they are now, shaped like counter_snapshot rows; no row
-- when the library is not preloaded. gateway_stats() reads them as a last
-- snapshot, so the current hour shows before any snapshot was taken.
CREATE FUNCTION smsdispatch.counters_now()
RETURNS SETOF smsdispatch.counter_snapshot
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	since timestamptz := smsdispatch.stats_since();
BEGIN
	IF since IS NOT NULL THEN
		RETURN QUERY SELECT now(), since, s.name, s.value FROM smsdispatch.stats() AS s;
	END IF;
END;
$$;

-- delivery_stats() gains error_rate: its result type changes, so it and its
-- view are made again
DROP VIEW smsdispatch.delivery_stats;
DROP FUNCTION smsdispatch.delivery_stats(timestamptz, timestamptz);

-- Delivery statistics of the SMS queued in ["from", "to"), per period
-- (date_trunc(grain, inserted_at) in the session's TimeZone: 'hour' or
-- 'day') x type x channel. sent counts the SMS a channel accepted (submitted,
-- and not refused by the gateway: a Rejected or Unaccepted row is a refusal,
-- never sent); delivery_ratio and error_rate are delivered and failed over
-- the SMS whose outcome is known (logged - pending). A plain SQL function,
-- so the planner inlines it and the range uses the index on inserted_at.
CREATE FUNCTION smsdispatch.delivery_stats_per(grain text, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (period timestamptz, type text, channel text, logged bigint, sent bigint,
	delivered bigint, failed bigint, expired bigint, deleted bigint,
	undeliverable bigint, rejected bigint, unaccepted bigint, terminated bigint,
	send_failed bigint, send_unknown bigint, pending bigint,
	delivery_ratio numeric, error_rate numeric, median_delivery_s numeric,
	p95_delivery_s numeric)
LANGUAGE sql STABLE
AS $$
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
			 GROUP BY 1, 2, 3) c) d
$$;

-- Per day (the session's TimeZone) x type x channel.
CREATE FUNCTION smsdispatch.delivery_stats("from" timestamptz, "to" timestamptz)
RETURNS TABLE (day date, type text, channel text, logged bigint, sent bigint,
	delivered bigint, failed bigint, expired bigint, deleted bigint,
	undeliverable bigint, rejected bigint, unaccepted bigint, terminated bigint,
	send_failed bigint, send_unknown bigint, pending bigint,
	delivery_ratio numeric, error_rate numeric, median_delivery_s numeric,
	p95_delivery_s numeric)
LANGUAGE sql STABLE
AS $$
	SELECT d.period::date, d.type, d.channel, d.logged, d.sent, d.delivered, d.failed,
		   d.expired, d.deleted, d.undeliverable, d.rejected, d.unaccepted,
		   d.terminated, d.send_failed, d.send_unknown, d.pending, d.delivery_ratio,
		   d.error_rate, d.median_delivery_s, d.p95_delivery_s
	  FROM smsdispatch.delivery_stats_per('day', "from", "to") d
$$;

-- Per hour x type x channel: the same columns, the hour first.
CREATE FUNCTION smsdispatch.delivery_stats_hourly("from" timestamptz, "to" timestamptz)
RETURNS TABLE (hour timestamptz, type text, channel text, logged bigint, sent bigint,
	delivered bigint, failed bigint, expired bigint, deleted bigint,
	undeliverable bigint, rejected bigint, unaccepted bigint, terminated bigint,
	send_failed bigint, send_unknown bigint, pending bigint,
	delivery_ratio numeric, error_rate numeric, median_delivery_s numeric,
	p95_delivery_s numeric)
LANGUAGE sql STABLE
AS $$
	SELECT * FROM smsdispatch.delivery_stats_per('hour', "from", "to")
$$;

-- Every day: the function over all time.
CREATE VIEW smsdispatch.delivery_stats AS
	SELECT * FROM smsdispatch.delivery_stats('-infinity', 'infinity');

-- The gateway per hour for the snapshots taken in ["from", "to"), and the
-- counters as they are now when now() is in the range: what happened between
-- consecutive snapshots counts in the hour of the later one, so the last
-- snapshot before "from" is read as the baseline. A counter that went down,
-- or a new server_started_at (a crash or stats_reset()), is a reset: the
-- later value is then the whole increase. A counter's first snapshot has no
-- baseline: its value counts in full when the counters started from zero
-- inside the range, else its increase is unknown.
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
AS $$
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
	 GROUP BY h.hour
$$;

-- The rows of a query as an HTML table, every value escaped; numbers are
-- right-aligned, timestamps shown to the second in the session's TimeZone
-- (as their JSON form, ISO 8601 with a T and an offset, is recognised).
-- Headers may break after an underscore, so that narrow numeric columns stay
-- narrow. The header comes from the query's columns even when it returns no
-- row.
CREATE OR REPLACE FUNCTION smsdispatch.html_table(caption text, query text)
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
				  string_agg('<th>' || replace(smsdispatch.html_escape(k), '_', '_<wbr>') || '</th>',
							 '' ORDER BY n))
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
					   || smsdispatch.html_escape(CASE
							WHEN json_typeof(e.value) = 'string' AND (t.row ->> e.key)
								 ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d(:\d\d)?$'
							THEN to_char((t.row ->> e.key)::timestamptz, 'YYYY-MM-DD HH24:MI:SS')
							ELSE t.row ->> e.key END) || '</td>', '' ORDER BY e.n)
				   || '</tr>' AS cells
			  FROM json_array_elements(rows) WITH ORDINALITY AS t(row, n)
			 CROSS JOIN LATERAL json_each(t.row) WITH ORDINALITY AS e(key, value, n)
			 GROUP BY t.n) r;
	RETURN out;
END;
$$;

-- Creates (or updates) the pg_cron jobs that keep the tables small and the
-- gateway statistics fed: the purge every day and a counter snapshot every
-- minute. pg_cron must be installed in this database, and able to connect
-- (it is refused when its jobs could only fail).
CREATE OR REPLACE FUNCTION smsdispatch.schedule_maintenance(retention interval DEFAULT '90 days',
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
	-- pg_cron runs a job through a libpq connection to cron.host unless
	-- cron.use_background_workers is on; a host name cannot reach a server
	-- that listens on a Unix socket only, and every run would fail
	IF current_setting('cron.use_background_workers', true) IS DISTINCT FROM 'on'
	   AND left(coalesce(current_setting('cron.host', true), 'localhost'), 1) <> '/'
	   AND current_setting('listen_addresses') = '' THEN
		RAISE EXCEPTION 'pg_cron could not run the maintenance jobs: cron.host is "%" but the server listens on no TCP address',
			coalesce(current_setting('cron.host', true), 'localhost')
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('Set cron.use_background_workers = on (with max_worker_processes to spare), '
								'or cron.host = %L, in postgresql.conf and restart the server.',
								btrim(split_part(current_setting('unix_socket_directories'), ',', 1)));
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

-- Helpers of the reports, bound when created (standard SQL bodies).
-- Seconds from queueing to delivery: the gateway's date of the Delivered
-- state, or the time the row was last updated when the gateway gave none.
CREATE OR REPLACE FUNCTION smsdispatch.delivery_seconds(inserted_at timestamptz,
	status_changed_at timestamptz, updated_at timestamptz)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT extract(epoch FROM coalesce(status_changed_at, updated_at) - inserted_at)::float8;
END;

-- Text made safe for HTML element content and attribute values.
CREATE OR REPLACE FUNCTION smsdispatch.html_escape(t text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT replace(replace(replace(replace(replace(coalesce(t, ''),
		'&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;');
END;

-- The upper bound of the histogram bucket that holds quantile q, given
-- disjoint buckets with those upper bounds (the last one may be 'Infinity').
-- NULL when the histogram is empty.
CREATE OR REPLACE FUNCTION smsdispatch.histogram_quantile(q float8, bounds float8[], counts bigint[])
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT b.bound
	  FROM (SELECT u.bound,
				   sum(u.n) OVER (ORDER BY u.i) AS cumulative,
				   sum(u.n) OVER () AS total
			  FROM unnest(bounds, counts) WITH ORDINALITY AS u(bound, n, i)) b
	 WHERE b.total > 0 AND b.cumulative >= q * b.total
	 ORDER BY b.cumulative
	 LIMIT 1;
END;

-- What became of one SMS, from its dispatch state and the gateway's word
-- (its class from smsdispatch.gateway_status_class): every report
-- classifies rows through this one function.
CREATE OR REPLACE FUNCTION smsdispatch.sms_outcome(send_state text, gateway_status text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT CASE smsdispatch.gateway_status_class(gateway_status)
		WHEN 'delivered' THEN 'delivered'
		WHEN 'failed' THEN lower(gateway_status)
		ELSE CASE send_state
			WHEN 'failed' THEN 'send_failed'
			WHEN 'unknown' THEN 'send_unknown'
			ELSE 'pending'
		END
	END;
END;

-- the retention: fixed statements per kind in place of a condition text
DROP PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint);
DROP PROCEDURE smsdispatch.delete_in_batches(regclass, text, timestamptz, int, bigint);

CREATE PROCEDURE smsdispatch.purge(older_than interval, batch_size int DEFAULT 10000,
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
	FOREACH kind IN ARRAY ARRAY['alarms', 'log_rows', 'inbox_rows', 'snapshots', 'redacted']
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
			ELSE redacted := total;
		END CASE;
	END LOOP;
END;
$$;

-- One batch of the retention: of one kind of rows past its cutoff, at most
-- batch_size, skipping rows that others have locked (the next run takes
-- them). Kinds: alarms (closed before the cutoff and out of number
-- quarantine, with their recipients and events), log_rows (SMS no longer
-- queued or sending that belong to no remaining alarm, neither as its page
-- nor as its confirmation), inbox_rows,
-- snapshots, and redacted: SMS in a final state for longer than
-- smsdispatch.redact_after get an empty body, their length and parts kept.
-- after_id is where the previous batch of the same kind stopped (the
-- redacted rows stay, so their kind walks by id); n is how many rows the
-- batch did and last_id where it stopped. The statements are fixed, one per
-- kind, and run under a pinned search_path.
CREATE FUNCTION smsdispatch.purge_batch(kind text, older_than interval,
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

-- Escalation statistics of the alarms created in ["from", "to"), per
-- recipient list (lists without alarms show zeros). "Acked at level N"
-- counts the alarms acknowledged by a recipient of level N
-- (smsdispatch.acked_level): who took it, not how far the escalation had
-- gone (a level-1 recipient acking after level 2 was paged counts at
-- level 1). Time to ack runs from the alarm's creation.
-- The escalation level of the recipient who acknowledged an alarm (the
-- lowest, for a phone on several levels); NULL when nobody did.
CREATE FUNCTION smsdispatch.acked_level(message_id bigint)
RETURNS int
LANGUAGE sql STABLE
BEGIN ATOMIC
	SELECT min(r.level) FROM smsdispatch.message_recipient r
	 WHERE r.message_id = acked_level.message_id AND r.status = 'ACK';
END;

CREATE OR REPLACE FUNCTION smsdispatch.escalation_stats("from" timestamptz, "to" timestamptz)
RETURNS TABLE (list text, alarms bigint, open bigint, acked bigint,
	acked_level_1 bigint, acked_level_2 bigint, acked_level_3 bigint,
	exhausted bigint, cancelled bigint, median_ack_s numeric, p95_ack_s numeric)
LANGUAGE sql STABLE
AS $$
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
	 GROUP BY l.list
$$;

-- One self-contained HTML page for ["from", "to"): three inline SVG charts
-- (daily volume by final status, delivery time distribution, ack time per
-- level) and the report tables. No scripts, fonts, images or links: a
-- Content-Security-Policy of default-src 'none' keeps the page from loading
-- anything even if it tried.
CREATE OR REPLACE FUNCTION sms_report_html("from" timestamptz, "to" timestamptz)
RETURNS text
LANGUAGE plpgsql STABLE
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
	-- times as people read them: to the minute, in the session's TimeZone
	shown constant text := 'YYYY-MM-DD HH24:MI TZ';
	range_shown text := format('from %s to %s', to_char("from", 'YYYY-MM-DD HH24:MI'),
							   to_char("to", shown));
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

	-- chart 1: per day, delivered / failed / send_unknown / pending
	SELECT array_agg(to_char(g.day, 'MM-DD') ORDER BY g.day)
	  INTO days
	  FROM generate_series("from"::date, ("to" - interval '1 microsecond')::date,
						   interval '1 day') AS g(day);
	WITH d AS (
		SELECT s.day, sum(s.delivered) AS delivered, sum(s.failed) AS failed,
			   sum(s.send_unknown) AS send_unknown, sum(s.pending) AS pending
		  FROM smsdispatch.delivery_stats("from", "to") AS s
		 GROUP BY s.day
	)
	SELECT array_agg(coalesce(CASE k WHEN 1 THEN d.delivered WHEN 2 THEN d.failed
									 WHEN 3 THEN d.send_unknown ELSE d.pending END, 0)::float8
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

	-- chart 3: median and p95 time to ack per level of the acking recipient
	WITH a AS (
		SELECT smsdispatch.acked_level(m.id) AS level, percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY
				   extract(epoch FROM m.acked_at - m.created_at)::float8) AS p
		  FROM smsdispatch.message m
		 WHERE m.state = 'acked' AND m.created_at >= "from" AND m.created_at < "to"
		 GROUP BY 1
	)
	SELECT array_agg(coalesce(a.p[k], 0) ORDER BY lvl, k)
	  INTO ack
	  FROM generate_series(1, 3) AS lvl
	 CROSS JOIN generate_series(1, 2) AS k
	  LEFT JOIN a ON a.level = lvl;

	RETURN '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
		|| '<meta http-equiv="Content-Security-Policy" content="default-src ''none''; style-src ''unsafe-inline''">'
		|| '<meta name="viewport" content="width=device-width, initial-scale=1">'
		|| format('<title>SMS report %s</title>', smsdispatch.html_escape(range_shown))
		|| '<style>body{font-family:sans-serif;margin:24px;color:#212121;background:#fff}'
		|| 'h1{font-size:22px}h2{font-size:18px;margin-top:32px}figure{margin:8px 0}'
		|| '.chart .title{font-size:15px;font-weight:bold}.chart .axis{font-size:11px;fill:#424242}'
		|| '.chart .frame{stroke:#424242}.chart .grid{stroke:#e0e0e0}'
		|| 'table{border-collapse:collapse;margin:8px 0 24px;font-size:12px}'
		|| 'caption{text-align:left;font-weight:bold;padding:4px 0}'
		|| '.scroll{overflow-x:auto}th,td{border:1px solid #bdbdbd;padding:3px 6px}'
		|| 'td{white-space:nowrap}th{background:#eeeeee;vertical-align:bottom}'
		|| 'td.num{text-align:right}td.empty{color:#757575}</style></head><body>'
		|| format('<h1>SMS dispatch report</h1><p>SMS and alarms %s; generated %s.</p>',
				  smsdispatch.html_escape(range_shown),
				  smsdispatch.html_escape(to_char(now(), shown)))
		|| '<h2>Charts</h2>'
		|| smsdispatch.svg_bar_chart('Daily volume by final status', 'SMS', days,
				ARRAY['delivered', 'failed', 'send_unknown', 'pending'],
				ARRAY['#2e7d32', '#c62828', '#616161', '#f9a825'], daily, true)
		|| smsdispatch.svg_bar_chart('Delivery time distribution', 'SMS', delivery_buckets,
				ARRAY['delivered SMS'], ARRAY['#1565c0'], delivery_hist, false)
		|| smsdispatch.svg_bar_chart('Time to acknowledge per level of the acker', 'seconds',
				ARRAY['level 1', 'level 2', 'level 3'], ARRAY['median', '95th percentile'],
				ARRAY['#00838f', '#6a1b9a'], ack, false)
		|| '<h2>Tables</h2>'
		|| smsdispatch.html_table('Delivery per day, type and channel',
				format('SELECT day, type, channel, logged, sent, delivered, failed, send_unknown, '
					   'pending, delivery_ratio, error_rate, median_delivery_s, p95_delivery_s '
					   'FROM smsdispatch.delivery_stats(%s) ORDER BY day, type, channel', range_literal))
		|| smsdispatch.html_table('Failures per day, type and channel',
				format('SELECT day, type, channel, failed, expired, deleted, undeliverable, rejected, '
					   'unaccepted, terminated, send_failed '
					   'FROM smsdispatch.delivery_stats(%s) WHERE failed > 0 ORDER BY day, type, channel',
					   range_literal))
		|| smsdispatch.html_table('Gateway requests per hour',
				format('SELECT hour, snapshots, requests_send, requests_status, retries, errors_connect, '
					   'errors_timeout, errors_http_5xx, errors_http_401, errors_http_other, errors_parse, '
					   'latency_mean_ms, latency_p95_le_ms '
					   'FROM smsdispatch.gateway_stats(date_trunc(''hour'', %L::timestamptz), %L) ORDER BY hour',
					   "from", "to"))
		|| smsdispatch.html_table('Gateway answers per hour',
				format('SELECT hour, answers_accepted, answers_enroute, answers_delivered, answers_expired, '
					   'answers_deleted, answers_undeliverable, answers_rejected, answers_unknown, '
					   'answers_unaccepted, answers_terminated, answers_pending '
					   'FROM smsdispatch.gateway_stats(date_trunc(''hour'', %L::timestamptz), %L) ORDER BY hour',
					   "from", "to"))
		|| smsdispatch.html_table('Escalation per recipient list',
				format('SELECT * FROM smsdispatch.escalation_stats(%s) ORDER BY list', range_literal))
		|| CASE WHEN has_table_privilege('smsdispatch.queue', 'SELECT')
				THEN smsdispatch.html_table('Open alarms now',
					'SELECT number, list, level, created_at, body, recipient_level, recipient_name, '
					'phone, status, sent_at, deadline FROM smsdispatch.queue')
				ELSE '<p>Open alarms (who is paged, and the alarms'' texts) are shown to smsdispatch_admin only.</p>' END
		|| '</body></html>';
END;
$$;

-- smsdispatch.queue takes the tables' column names: its columns change, so
-- it is made again, with queue_history beside it.
DROP VIEW smsdispatch.queue;

-- The console: every open alarm with each recipient and its status, the
-- alarm's columns named as in smsdispatch.message (body, created_at...) and
-- the recipient's as in smsdispatch.message_recipient, prefixed
-- recipient_ where both tables have one. queue_history is the same for
-- every alarm, closed ones included.
CREATE VIEW smsdispatch.queue_history AS
	SELECT m.number, m.list, m.state, m.level, m.round, m.created_at,
		   m.level_started_at, m.body, m.acked_by, m.closed_at,
		   r.level AS recipient_level, r.name AS recipient_name, r.phone, r.status,
		   r.sent_at, r.deadline, r.acked_at
	  FROM smsdispatch.message m
	  JOIN smsdispatch.message_recipient r ON r.message_id = m.id
	 ORDER BY m.created_at, m.number, r.level, r.phone;
CREATE VIEW smsdispatch.queue AS
	SELECT m.number, m.list, m.state, m.level, m.round, m.created_at,
		   m.level_started_at, m.body,
		   r.level AS recipient_level, r.name AS recipient_name, r.phone, r.status,
		   r.sent_at, r.deadline, r.acked_at
	  FROM smsdispatch.message m
	  JOIN smsdispatch.message_recipient r ON r.message_id = m.id
	 WHERE m.state = 'open'
	 ORDER BY m.created_at, m.number, r.level, r.phone;

-- ==== Privileges (90_roles.sql to 97_*.sql), in the order of the
-- statements that set them: an object's privileges list its grants in the
-- order they were made.

-- reports, spool failures and the phone plan (90_roles.sql, 95_reports_roles.sql)
REVOKE ALL ON FUNCTION smsdispatch.stats_since(), smsdispatch.counters_now(),
	smsdispatch.delivery_stats_per(text, timestamptz, timestamptz),
	smsdispatch.delivery_stats(timestamptz, timestamptz),
	smsdispatch.delivery_stats_hourly(timestamptz, timestamptz),
	smsdispatch.spool_enqueue(text, bigint, timestamptz, text, text, text, text[], text, text),
	smsdispatch.phone_plan() FROM PUBLIC;
-- (in a fresh install's order: the admins' grant, then the readers')
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.delivery_stats TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.delivery_stats TO smsdispatch_reader;
GRANT EXECUTE ON FUNCTION smsdispatch.delivery_stats(timestamptz, timestamptz) TO smsdispatch_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.spool_failure TO smsdispatch_admin;
GRANT USAGE ON SEQUENCE smsdispatch.spool_failure_id_seq TO smsdispatch_admin;

-- Privileges on objects added in 1.1: readers see the hourly delivery
-- statistics and the live counters (80_reports.sql).
GRANT EXECUTE ON FUNCTION smsdispatch.delivery_stats_per(text, timestamptz, timestamptz),
	smsdispatch.delivery_stats_hourly(timestamptz, timestamptz),
	smsdispatch.counters_now(),
	smsdispatch.stats_since()
	TO smsdispatch_reader;
-- readers see which spool files were refused, and why
GRANT SELECT ON smsdispatch.spool_failure TO smsdispatch_reader;
-- everyone who may normalise a number may see the plan it is checked against
GRANT EXECUTE ON FUNCTION smsdispatch.phone_plan()
	TO smsdispatch_sender, smsdispatch_admin, smsdispatch_reader;

-- No function of the schema runs for PUBLIC; admins may attach the
-- verification trigger.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA smsdispatch FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.verification_trigger() TO smsdispatch_admin;

-- Readers (reports, the metrics exporter) see the statistics: every column
-- of the log, the alarms, their events and the received SMS except those
-- that say who (phones) or what (texts, verification codes, error texts that
-- quote a number, the sender as received and in E.164, the inbound
-- handler's error). Column privileges, so the reports' functions run as
-- the reader and the planner still inlines them.
DO $$
DECLARE
	t record;
BEGIN
	FOR t IN
		SELECT v.tbl::regclass AS tbl, v.secret
		  FROM (VALUES
			('verification.sms_log', '{phone_number,body,last_error,verification_id,gateway_id,claimed_by}'::name[]),
			('smsdispatch.message', '{body,acked_by}'),
			('smsdispatch.event', '{phone,detail}'),
			('smsdispatch.inbox', '{sender,body,sender_e164,handler_error}')) AS v(tbl, secret)
	LOOP
		EXECUTE format('REVOKE SELECT ON %s FROM smsdispatch_reader', t.tbl);
		EXECUTE (SELECT format('GRANT SELECT (%s) ON %s TO smsdispatch_reader',
							   string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum), t.tbl)
				   FROM pg_attribute a
				  WHERE a.attrelid = t.tbl AND a.attnum > 0 AND NOT a.attisdropped
					AND a.attname <> ALL (t.secret));
	END LOOP;
END;
$$;

REVOKE ALL ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint, bigint)
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.html_escape(text), smsdispatch.html_table(text, text),
	smsdispatch.svg_bar_chart(text, text, text[], text[], text[], float8[], boolean)
	TO smsdispatch_reader;
GRANT EXECUTE ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint, bigint)
	TO smsdispatch_admin;
GRANT EXECUTE ON FUNCTION smsdispatch.prevent_in_transaction_block(text), smsdispatch.redact_after()
	TO smsdispatch_admin;

REVOKE ALL ON FUNCTION sms_send(text, text, text, text, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_send(text, text, text, text, int) TO smsdispatch_sender;

REVOKE ALL ON FUNCTION smsdispatch.default_priority(text), smsdispatch.validity(text),
	smsdispatch.retry_delay(int), smsdispatch.ip2sms_terminate_polls(int) FROM PUBLIC;

REVOKE ALL ON FUNCTION smsdispatch.alarm_alert(text, text, text) FROM PUBLIC;

REVOKE ALL ON FUNCTION smsdispatch.claim_sends(text, int, text, interval) FROM PUBLIC;

REVOKE ALL ON FUNCTION smsdispatch.purge_batch(text, interval, timestamptz, int, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.purge_batch(text, interval, timestamptz, int, bigint)
	TO smsdispatch_admin;

REVOKE ALL ON FUNCTION smsdispatch.wake_at_commit(), smsdispatch.send_window_opens(text),
	smsdispatch.send_window_next(text, timestamptz),
	smsdispatch.confirm_closed(bigint[], text, bigint),
	smsdispatch.inbox_record(text, text, text, text, bigint),
	smsdispatch.release_held(int) FROM PUBLIC;
-- Privileges of the confirmations (37_confirmations.sql): admins turn a
-- list's confirmations on and off.
REVOKE ALL ON FUNCTION sms_list_confirmations(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_list_confirmations(text, boolean) TO smsdispatch_admin;
-- and may try a send window before setting it
GRANT EXECUTE ON FUNCTION smsdispatch.send_window_next(text, timestamptz) TO smsdispatch_admin;

REVOKE ALL ON FUNCTION smsdispatch.gateway_status_class(text) FROM PUBLIC;
-- The gateway state classifier is called by the domain
-- smsdispatch.gateway_status (an admin who corrects a row's status) and by
-- the reports (smsdispatch.sms_outcome, inlined into a reader's query).
GRANT EXECUTE ON FUNCTION smsdispatch.gateway_status_class(text)
	TO smsdispatch_sender, smsdispatch_admin, smsdispatch_reader;

REVOKE ALL ON FUNCTION smsdispatch.rotation_turn(int, time, text, date, timestamptz),
	smsdispatch.rotation_periods(int, date, date),
	smsdispatch.on_duty(text, timestamptz), smsdispatch.lock_list(text),
	smsdispatch.check_level(int, text, boolean), smsdispatch.member_phone(text, text, int),
	smsdispatch.check_no_open_alarms(text, text), smsdispatch.acked_level(bigint)
	FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.rotation, smsdispatch.duty_override,
	smsdispatch.member_pause TO smsdispatch_admin;
GRANT USAGE ON SEQUENCE smsdispatch.rotation_id_seq, smsdispatch.duty_override_id_seq,
	smsdispatch.member_pause_id_seq TO smsdispatch_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.queue, smsdispatch.queue_history
	TO smsdispatch_admin;

REVOKE ALL ON FUNCTION sms_list_remove(text, text, int),
	sms_list_change(text, text, int, int, text, interval, text),
	sms_list_rename(text, text), sms_list_drop(text),
	sms_list_pause(text, text, timestamptz, timestamptz), sms_list_resume(text, text),
	sms_rotation_create(text, int, interval, time, text, date), sms_rotation_drop(text, int),
	sms_override_add(text, int, text, timestamptz, timestamptz, text, interval),
	sms_override_remove(bigint), sms_oncall(text, timestamptz)
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_list_remove(text, text, int),
	sms_list_change(text, text, int, int, text, interval, text),
	sms_list_rename(text, text), sms_list_drop(text),
	sms_list_pause(text, text, timestamptz, timestamptz), sms_list_resume(text, text),
	sms_rotation_create(text, int, interval, time, text, date), sms_rotation_drop(text, int),
	sms_override_add(text, int, text, timestamptz, timestamptz, text, interval),
	sms_override_remove(bigint), sms_oncall(text, timestamptz)
	TO smsdispatch_admin;
-- readers count acks per level of the acking recipient (escalation_stats):
-- the recipients' levels and statuses, not who they are
GRANT SELECT (message_id, level, status) ON smsdispatch.message_recipient TO smsdispatch_reader;
GRANT EXECUTE ON FUNCTION smsdispatch.acked_level(bigint) TO smsdispatch_reader;

REVOKE ALL ON FUNCTION smsdispatch.ip2sms_health(),
	smsdispatch.failed_in_transport(text, text, int),
	smsdispatch.since_text(timestamptz),
	smsdispatch.failover(int) FROM PUBLIC;
-- Privileges on channel health and failover (71_channel_health.sql): readers
-- see each channel's state, for dashboards and the metrics exporter.
-- as for every table and view of the schema (90_roles.sql)
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.channel_health TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.channel_health TO smsdispatch_reader;
GRANT EXECUTE ON FUNCTION smsdispatch.ip2sms_health() TO smsdispatch_reader;

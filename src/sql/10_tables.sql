-- smsdispatch: tables of the dispatcher (schema smsdispatch) and the SMS log
-- (schema verification, shared with the application that owns verifications).

CREATE SCHEMA smsdispatch;
-- The application may have schema verification already (its verifications
-- table lives there). The extension adopts it as a member either way: pg_dump
-- then leaves its creation to CREATE EXTENSION, which a restore runs before
-- the application's tables (a separate CREATE SCHEMA would come after it and
-- fail). So that DROP EXTENSION ... CASCADE cannot take the application's
-- tables with the schema, smsdispatch.drop_guard refuses it while the schema
-- holds tables of others (40_verification.sql). To drop the extension and
-- keep the schema, first ALTER EXTENSION smsdispatch DROP SCHEMA verification.
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
-- A channel: ip2sms, modem, or the name of a registered one
-- (smsdispatch.channel_registry); smsdispatch.resolve_channel refuses a
-- name that is none of them, which a domain's CHECK cannot look up.
CREATE DOMAIN smsdispatch.channel AS text
	CONSTRAINT channel_check CHECK (VALUE ~ '^[a-z][a-z0-9_]{0,31}$');
CREATE DOMAIN smsdispatch.send_state AS text
	CHECK (VALUE IN ('queued', 'sending', 'submitted', 'failed', 'unknown'));
-- The gateway's state words and their class, written once in C
-- (src/ip2sms_xml.c) for the channel and for SQL: 'pending' (polled again),
-- 'delivered' or 'failed' (both final), NULL for a word that is none.
CREATE FUNCTION smsdispatch.gateway_status_class(word text)
RETURNS text
AS 'MODULE_PATHNAME', 'sms_gateway_status_class'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE DOMAIN smsdispatch.gateway_status AS text
	CHECK (VALUE IS NULL OR smsdispatch.gateway_status_class(VALUE) IS NOT NULL);

-- A named group of on-duty people, each on an escalation level.
CREATE TABLE smsdispatch.recipient_list (
	id			bigserial PRIMARY KEY,
	name		text NOT NULL UNIQUE CHECK (name <> ''),
	description	text,
	repeat		int NOT NULL DEFAULT 0 CHECK (repeat BETWEEN 0 AND 100),
	created_at	timestamptz NOT NULL DEFAULT now(),
	-- whether the people paged are told when the alarm closes (an ack, a
	-- cancel, exhaustion): smsdispatch.confirm_closed
	confirmations boolean NOT NULL DEFAULT true
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
	-- CLOSED: the alarm closed (acked by another, cancelled) while this
	-- recipient was still waiting for their ack or their SMS was on its way
	status		text NOT NULL DEFAULT 'NOT_SENT'
				CHECK (status IN ('NOT_SENT', 'NOT_YET_ACK', 'ACK', 'ACK_TIME_OVER',
								  'CLOSED')),
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
	verification_id		text,
	-- set when smsdispatch.redact_after blanked the body: what it was
	body_length			int,
	body_parts			int,
	redacted_at			timestamptz,
	-- 1 is the most urgent, 9 the least; both channels claim by priority
	-- first. sms_send() and the verification trigger set it from the type
	-- (smsdispatch.default_priority), alarms' SMS are 1.
	priority			int NOT NULL DEFAULT 7,
	-- a confirmation ("[0042] taken by Ben") tells a person paged for this
	-- alarm that it closed; such rows have no message_id: they are nobody's
	-- page, so the escalation and sms_log_progress never see them
	confirms			bigint REFERENCES smsdispatch.message ON DELETE SET NULL,
	-- outside its type's send window a queued row waits, out of the claim
	-- index, until held_until (smsdispatch.send_window_<type>);
	-- released_at is when its window let it go: its validity counts from then
	held_until			timestamptz,
	released_at			timestamptz
);
-- The channels find their work through these partial indexes, never by a scan:
-- the most urgent first, within a priority fresh rows, then retries by time.
CREATE INDEX sms_log_queued_idx ON verification.sms_log
	(channel, priority, next_attempt_at NULLS FIRST, id)
	WHERE send_state = 'queued' AND held_until IS NULL;
-- rows held for their send window, released by smsdispatch.release_held
CREATE INDEX sms_log_held_idx ON verification.sms_log (held_until)
	WHERE send_state = 'queued' AND held_until IS NOT NULL;
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
	sender		text NOT NULL,			-- as the network or the caller gave it
	body		text NOT NULL,
	outcome		text NOT NULL CHECK (outcome IN
				('ack', 'duplicate_ack', 'unknown_number', 'not_recipient', 'no_number')),
	number		text,
	message_id	bigint REFERENCES smsdispatch.message ON DELETE SET NULL,
	received_at	timestamptz NOT NULL DEFAULT now(),
	-- the sender in E.164 (NULL when it cannot be normalised)
	sender_e164	text,
	-- the inbound hook (smsdispatch.inbound_handler): 'pending' while a
	-- non-ack SMS waits for the worker to call the handler, then 'done' or
	-- 'failed' (its error in handler_error); NULL when no handler was set
	handler_state text CHECK (handler_state IN ('pending', 'done', 'failed')),
	handled_at	timestamptz,
	handler_error text
);
CREATE INDEX inbox_pending_idx ON smsdispatch.inbox (id)
	WHERE handler_state = 'pending';

-- The audit trail of each alarm.
CREATE TABLE smsdispatch.event (
	id			bigserial PRIMARY KEY,
	message_id	bigint NOT NULL REFERENCES smsdispatch.message ON DELETE CASCADE,
	at			timestamptz NOT NULL DEFAULT now(),
	kind		text NOT NULL CHECK (kind IN ('enqueued', 'sent', 'level_started',
				'timed_out', 'escalated', 'repeated', 'acked', 'duplicate_ack',
				'exhausted', 'cancelled', 'send_failed',
				'confirmation',
				'failover', 'retried', 'undeliverable')),
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

-- Privileges on the schemas, the tables and the classifier. Admins manage
-- lists and the log (they may not insert into the log: rows enter it through
-- sms_send and the alarms).
GRANT USAGE ON SCHEMA smsdispatch, verification
	TO smsdispatch_sender, smsdispatch_admin, smsdispatch_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.recipient_list, smsdispatch.list_member,
	smsdispatch.message, smsdispatch.message_recipient, smsdispatch.inbox, smsdispatch.event,
	smsdispatch.number_cursor
	TO smsdispatch_admin;
GRANT SELECT, UPDATE, DELETE ON verification.sms_log TO smsdispatch_admin;
GRANT USAGE ON SEQUENCE smsdispatch.recipient_list_id_seq, smsdispatch.list_member_id_seq,
	smsdispatch.message_id_seq, smsdispatch.message_recipient_id_seq,
	smsdispatch.inbox_id_seq, smsdispatch.event_id_seq
	TO smsdispatch_admin;

-- Readers (reports, the metrics exporter) see the statistics: every column
-- of the log, the alarms, their events and the received SMS except those
-- that say who (phones) or what (texts, verification codes, error texts that
-- quote a number); of the recipients, their levels and statuses, for the
-- acks per level. Column privileges, so the reports' functions run as the
-- reader and the planner still inlines them.
GRANT SELECT ON smsdispatch.recipient_list TO smsdispatch_reader;
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
		EXECUTE (SELECT format('GRANT SELECT (%s) ON %s TO smsdispatch_reader',
							   string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum), t.tbl)
				   FROM pg_attribute a
				  WHERE a.attrelid = t.tbl AND a.attnum > 0 AND NOT a.attisdropped
					AND a.attname <> ALL (t.secret));
	END LOOP;
END;
$$;
GRANT SELECT (message_id, level, status) ON smsdispatch.message_recipient TO smsdispatch_reader;

-- the classifier is called by the domain gateway_status (an admin who
-- corrects a row's status) and by the reports (smsdispatch.sms_outcome,
-- inlined into a reader's query)
GRANT EXECUTE ON FUNCTION smsdispatch.gateway_status_class(text)
	TO smsdispatch_sender, smsdispatch_admin, smsdispatch_reader;

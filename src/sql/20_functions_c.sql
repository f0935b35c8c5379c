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
-- priority: 1 (most urgent, as alarms) to 9; NULL = the type's default
-- (smsdispatch.default_priority).
CREATE FUNCTION sms_send(phone text, body text, type text DEFAULT 'text',
	channel text DEFAULT NULL, priority int DEFAULT NULL)
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
-- NULL while the send window of an SMS type (smsdispatch.send_window_<type>,
-- in smsdispatch.timezone) is open at now(), else when it next opens.
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

-- Privileges: senders queue SMS; admins watch tables, try a send window
-- before setting it and run the retention; readers see the quarantine the
-- reports count with.
REVOKE ALL ON FUNCTION sms_normalize_phone(text), sms_segments(text),
	sms_send(text, text, text, text, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_normalize_phone(text), sms_segments(text),
	sms_send(text, text, text, text, int)
	TO smsdispatch_sender;
GRANT EXECUTE ON FUNCTION smsdispatch.verification_trigger(),
	smsdispatch.send_window_next(text, timestamptz),
	smsdispatch.prevent_in_transaction_block(text), smsdispatch.redact_after()
	TO smsdispatch_admin;
GRANT EXECUTE ON FUNCTION smsdispatch.number_quarantine() TO smsdispatch_reader;

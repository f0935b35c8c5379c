-- Kannel's callbacks, as the smsdispatch-http sidecar hands them in: the
-- delivery reports of the SMS we sent (at the dlr-url each SMS carries) and
-- the SMS Kannel received (its sms-service get-url).

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

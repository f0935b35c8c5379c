-- The modem channel: what the smsdispatch-modem sidecars (one per GSM modem)
-- call. Each sidecar claims queued 'modem' rows under a lease, sends them
-- outside any transaction, and records the outcome in one short transaction.

-- One row per sidecar, refreshed every heartbeat. stopped_at: when its
-- sidecar said goodbye at a clean stop (NULL while it runs).
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
	last_error		text,
	stopped_at		timestamptz
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

-- Takes the next due queued modem row for this modem, the most urgent first
-- (smsdispatch.claim_sends, as the IP2SMS channel claims): marks it sending
-- with a lease and counts the attempt. SKIP LOCKED lets several sidecars
-- claim side by side without ever taking the same row. A row the claim
-- holds for its send window takes none of this modem's turn: it claims
-- again while due rows are left (at most 16 times).
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
-- such row, references wrap at 256; the recipient by
-- smsdispatch.same_subscriber when the report writes the number differently) and records the TP-Status word. A
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
-- the previous heartbeat; a heartbeat after a goodbye means the sidecar
-- runs again. Also forgets received-message digests older than
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

-- Privileges: the modem sidecar logs in as an admin (or a role granted
-- smsdispatch_admin); readers see the modems' state.
GRANT EXECUTE ON FUNCTION smsdispatch.modem_claim(text, interval),
	smsdispatch.modem_finish(bigint, text, text, text, text),
	smsdispatch.modem_recover(text),
	smsdispatch.modem_status_report(text, text, int, text, timestamptz),
	smsdispatch.modem_receive(text, text, text, timestamptz),
	smsdispatch.modem_heartbeat(text, interval, text, text, text, int, int, int, int, int, int, boolean, text, boolean),
	smsdispatch.modem_goodbye(text)
	TO smsdispatch_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.modem, smsdispatch.modem_received
	TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.modem_stale TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.modem, smsdispatch.modem_stale TO smsdispatch_reader;

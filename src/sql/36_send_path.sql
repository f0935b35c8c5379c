-- The send lifecycle both channels share: claiming due rows by priority,
-- the retry backoff, validity before sending. The IP2SMS channel (src/ip2sms_db.c)
-- and the modem sidecars (smsdispatch.modem_claim) both claim through
-- smsdispatch.claim_sends.

-- The pause before attempt attempts + 1 after a transport failure: 1 s,
-- doubling, at most 5 min. One policy for every channel.
CREATE FUNCTION smsdispatch.retry_delay(attempts int)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT least(interval '1 s' * (2 ^ least(greatest(attempts - 1, 0), 9)), interval '5 min')
$$;

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

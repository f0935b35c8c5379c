-- Channel health and failover: each channel's state (smsdispatch.channel_health),
-- and the worker's duty that sends an alarm's SMS on the other channel when
-- its own cannot send it, retries it when it failed for a transport reason,
-- and makes an alarm that can reach nobody loud (smsdispatch.failover).

-- The IP2SMS channel as the worker's sends last found it (src/channel_health.c
-- names the states and keeps the circuit): 'ok', 'degraded' (the last sends
-- failed for a reason of the channel, the circuit still closed), 'down' (a
-- run of such failures opened the circuit, or no worker runs), 'auth_failed'
-- (HTTP 401 or 403, or no usable password file), 'unconfigured' (no send
-- URL), 'unserved' (no worker serves this database: smsdispatch.database
-- does not name it, or smsdispatch.max_databases others are served);
-- since when, and the last error.
CREATE FUNCTION smsdispatch.ip2sms_health(OUT state text, OUT since timestamptz,
	OUT last_error text)
RETURNS record
AS 'MODULE_PATHNAME', 'sms_ip2sms_health'
LANGUAGE C VOLATILE;

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

-- Alarm recipients waiting for an SMS of the current level: the failover
-- duty looks at these only, however many alarms there are.
CREATE INDEX message_recipient_unsent_idx ON smsdispatch.message_recipient (message_id)
	WHERE status = 'NOT_SENT' AND sms_log_id IS NOT NULL;

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

-- readers see each channel's state, for dashboards and the metrics exporter
GRANT SELECT ON smsdispatch.channel_health TO smsdispatch_admin, smsdispatch_reader;
GRANT EXECUTE ON FUNCTION smsdispatch.ip2sms_health() TO smsdispatch_reader;
-- the failover duty, run by smsdispatch.run_once() as an admin, keeps the
-- channels that failed over; readers see them
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.channel_failover TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.channel_failover TO smsdispatch_reader;

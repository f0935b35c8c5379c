-- The background worker's database duties (src/worker.c runs them, each in a
-- short transaction; smsdispatch.run_once() runs them in the caller's).

-- Makes an alarm that reaches nobody loud: a WARNING in the server log
-- naming it and why, and NOTIFY smsdispatch_alarm with a JSON payload
-- {"number": "0042", "state": "exhausted", "reason": "..."} that an
-- application or a pager bridge can LISTEN for (sent at COMMIT). A payload
-- has at most 8000 bytes, and a NOTIFY that does not fit fails the
-- escalation pass that raised it: the reason is cut after 1000 characters
-- (JSON escapes make them 6000 bytes at most), in the log line too.
CREATE FUNCTION smsdispatch.alarm_alert(number text, state text, reason text)
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

-- Tells the launcher that this database has the extension now, so that its
-- worker starts at once (at COMMIT), or warns that no worker serves this
-- database (smsdispatch.database does not name it): its SMS would stay
-- queued. Run once below, by CREATE EXTENSION and ALTER EXTENSION UPDATE.
CREATE FUNCTION smsdispatch.announce_extension()
RETURNS void
AS 'MODULE_PATHNAME', 'sms_announce_extension'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
SELECT smsdispatch.announce_extension();

-- Privileges: admins may run a pass of the worker by hand (or from pg_cron)
-- and see which spool files were taken.
GRANT EXECUTE ON FUNCTION smsdispatch.run_once() TO smsdispatch_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.spool_file TO smsdispatch_admin;
GRANT USAGE ON SEQUENCE smsdispatch.spool_file_id_seq TO smsdispatch_admin;

-- Recipient lists and alarms: the SQL API that needs no C.

-- Refuses a name or a description longer than max_chars characters before
-- the API stores it: names go into SMS, log lines, events and NOTIFY
-- payloads (at most 8000 bytes), which must hold whatever a user typed.
-- List names are identifiers, 63 characters at most; people's names and
-- descriptions 200. field names the argument in the error.
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

-- A list name as an alarm's reason or a log line shows it: double-quoted
-- with JSON's escapes, so that a quote, a backslash or a newline in the name
-- cannot forge the text around it, and cut after 63 characters with "...",
-- since names stored before 1.2 may be of any length.
CREATE FUNCTION smsdispatch.quote_name(name text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT to_json(CASE WHEN length(name) > 63 THEN left(name, 63) || '...'
						ELSE name END)::text;
END;
REVOKE ALL ON FUNCTION smsdispatch.quote_name(text) FROM PUBLIC;

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

-- The text an alarm's recipients receive: the number first, so that a reply
-- can quote it.
CREATE FUNCTION smsdispatch.alarm_text(number text, body text)
RETURNS text
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
	SELECT '[' || number || '] ' || body;
END;

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
CREATE FUNCTION smsdispatch.start_levels(message_ids bigint[], levels int[])
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
CREATE FUNCTION smsdispatch.allocate_number()
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
CREATE FUNCTION smsdispatch.match_recipient(message_id bigint, phone text)
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
	-- the acker and everyone else paged are told, in this transaction
	PERFORM smsdispatch.confirm_closed(ARRAY[m.id], 'acked', recipient_id);
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
	PERFORM smsdispatch.confirm_closed(ARRAY[msg_id], 'cancelled');
	RETURN true;
END;
$$;

-- Keeps each alarm recipient in step with its SMS: submitted (or possibly
-- submitted) starts the ack timeout; a final failure means the recipient
-- cannot be reached, so escalation does not wait for them. A failure in
-- transport (smsdispatch.failed_in_transport: the channel could not send it)
-- is the channel's, not the recipient's: the recipient stays NOT_SENT, so
-- the level does not count as tried, and smsdispatch.failover sends the SMS
-- again, on the other channel or later on this one. Either way the alarm's
-- check_at tells the escalation when to look at it next.
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

-- Claiming ('sending') and putting back ('queued') change nothing for the
-- alarm: they do not fire it, so that a claim never waits for an alarm's lock.
CREATE TRIGGER sms_log_progress
	AFTER UPDATE OF send_state, gateway_status ON verification.sms_log
	FOR EACH ROW
	WHEN (NEW.message_id IS NOT NULL
		  AND ((OLD.send_state IS DISTINCT FROM NEW.send_state
				AND NEW.send_state::text IN ('submitted', 'unknown', 'failed'))
			   OR OLD.gateway_status IS DISTINCT FROM NEW.gateway_status))
	EXECUTE FUNCTION smsdispatch.sms_log_progress();

-- New and re-queued SMS, and status changes the escalation must see, wake
-- the worker at COMMIT; SMS queued on the modem wake the sidecars by NOTIFY.
CREATE TRIGGER sms_log_wake
	BEFORE INSERT OR UPDATE OF send_state ON verification.sms_log
	FOR EACH ROW EXECUTE FUNCTION smsdispatch.wake_on_change();

-- Privileges: senders queue alarms and report replies, they read no lists;
-- admins make the lists.
REVOKE ALL ON FUNCTION sms_list_create(text, text, int),
	sms_list_add(text, text, int, interval, text), sms_enqueue(text, text, text),
	sms_ack(text, text), sms_receive(text, text), sms_cancel(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_enqueue(text, text, text), sms_ack(text, text),
	sms_receive(text, text), sms_cancel(text)
	TO smsdispatch_sender;
GRANT EXECUTE ON FUNCTION sms_list_create(text, text, int),
	sms_list_add(text, text, int, interval, text)
	TO smsdispatch_admin;

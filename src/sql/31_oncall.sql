-- On-call duty: rotations, overrides and pauses, and who is on duty at a
-- given time (smsdispatch.on_duty, the public sms_oncall). An alarm pages,
-- at each level it starts, whoever is on duty then (smsdispatch.start_levels).

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

-- The hand-off of a rotation that began its current turn, as a count of
-- periods since starts: the last one at or before "at" of the local dates
-- starts + k * period_days. The local date of "at" gives k or k + 1.
CREATE FUNCTION smsdispatch.rotation_periods(period_days int, starts date, local date)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN floor((local - starts)::numeric / period_days)::int;

-- The instant a rotation's turn number "turn" begins (0: the first):
-- handoff_time on the wall clock of time_zone, turn * period_days days
-- after starts. Both who is on duty (rotation_turn) and when that changes
-- (sms_oncall_calendar) take hand-offs from here.
CREATE FUNCTION smsdispatch.rotation_handoff(period_days int, handoff_time time,
	time_zone text, starts date, turn int)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ((starts + turn * period_days) + handoff_time) AT TIME ZONE time_zone;
REVOKE ALL ON FUNCTION smsdispatch.rotation_handoff(int, time, text, date, int) FROM PUBLIC;

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
	- CASE WHEN smsdispatch.rotation_handoff(period_days, handoff_time, time_zone, starts,
				smsdispatch.rotation_periods(period_days, starts,
											 (at AT TIME ZONE time_zone)::date)) > at
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
	PERFORM smsdispatch.check_length(name, 'member name', 200);
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
	PERFORM smsdispatch.check_length(new_name, 'recipient list name', 63);
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
	IF period IS NULL OR period <> make_interval(days => days) THEN
		RAISE EXCEPTION 'rotation period "%" is not a whole number of days', coalesce(period::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give 1 to 366 days: ''1 day'', ''1 week'', ''3 days''.';
	END IF;
	IF days NOT BETWEEN 1 AND 366 THEN
		RAISE EXCEPTION 'rotation period "%" is out of range', period
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A rotation period is 1 to 366 days.';
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
	PERFORM smsdispatch.check_length(name, 'override name', 200);
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

-- The arguments of a question about duty (sms_oncall, sms_oncall_calendar):
-- the list must exist (42704), and a time, named arg in the messages, must
-- be given (22004) and finite (22008: rotations count their turns in days
-- since they began).
CREATE FUNCTION smsdispatch.check_duty_question(list text, at timestamptz, arg text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM smsdispatch.recipient_list l
				   WHERE l.name = check_duty_question.list) THEN
		RAISE EXCEPTION 'recipient list "%" does not exist', list
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it first with sms_list_create().';
	END IF;
	IF at IS NULL THEN
		RAISE EXCEPTION '% must not be NULL', arg
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT isfinite(at) THEN
		RAISE EXCEPTION '% "%" is not a finite time', arg, at
			USING ERRCODE = 'datetime_field_overflow',
				  HINT = 'Ask who is on duty at a given time, such as now() or now() + ''1 week''.';
	END IF;
END;
$$;
REVOKE ALL ON FUNCTION smsdispatch.check_duty_question(text, timestamptz, text) FROM PUBLIC;

-- Who is on duty at each level of a list at a time (default now): what an
-- alarm starting that level then pages. duty says why: member, rotation or
-- override.
CREATE FUNCTION sms_oncall(list text, at timestamptz DEFAULT now())
RETURNS TABLE (level int, phone text, name text, ack_timeout interval, duty text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM smsdispatch.check_duty_question(list, at, 'at');
	RETURN QUERY SELECT * FROM smsdispatch.on_duty(list, at);
END;
$$;

-- Who is on duty at each level of a list from "from" until "to": a row per
-- person and stretch of duty, with the columns of sms_oncall, that
-- sms_oncall would give for every instant of the stretch; and, for a
-- stretch in which a level the list has members on has nobody on duty (an
-- alarm would pass it over), a row with duty 'nobody' and no phone. The
-- rule is on_duty's alone: the calendar asks it at "from" and at every
-- instant its answer can change (rotation hand-offs, starts and ends of
-- overrides and pauses), then joins the consecutive stretches in which a
-- row stays the same. At most 366 days at a time.
CREATE FUNCTION sms_oncall_calendar(list text, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (level int, phone text, name text, ack_timeout interval, duty text,
	since timestamptz, "until" timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM smsdispatch.check_duty_question(list, "from", 'from');
	PERFORM smsdispatch.check_duty_question(list, "to", 'to');
	IF "to" <= "from" THEN
		RAISE EXCEPTION 'calendar from "%" to "%" is not a time range', "from", "to"
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Give "to" later than "from".';
	END IF;
	IF "to" - "from" > interval '366 days' THEN
		RAISE EXCEPTION 'calendar from "%" to "%" is longer than 366 days', "from", "to"
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Ask for a year or less at a time.';
	END IF;
	RETURN QUERY
	WITH change (at) AS (
		SELECT "from"
		UNION
		SELECT smsdispatch.rotation_handoff(r.period_days, r.handoff_time, r.time_zone,
											r.starts, k.turn)
		  FROM smsdispatch.rotation r
		 CROSS JOIN LATERAL generate_series(
				greatest(0, smsdispatch.rotation_periods(r.period_days, r.starts,
														 ("from" AT TIME ZONE r.time_zone)::date)),
				smsdispatch.rotation_periods(r.period_days, r.starts,
											 ("to" AT TIME ZONE r.time_zone)::date)) AS k (turn)
		 WHERE r.list = sms_oncall_calendar.list
		UNION
		SELECT b.at
		  FROM smsdispatch.duty_override o
		 CROSS JOIN LATERAL (VALUES (o.starts_at), (o.ends_at)) AS b (at)
		 WHERE o.list = sms_oncall_calendar.list AND o.ends_at > "from" AND o.starts_at < "to"
		UNION
		SELECT b.at
		  FROM smsdispatch.member_pause p
		 CROSS JOIN LATERAL (VALUES (p.starts_at), (p.ends_at)) AS b (at)
		 WHERE p.list = sms_oncall_calendar.list AND p.ends_at > "from" AND p.starts_at < "to"
	), stretch (n, since, till) AS (
		SELECT row_number() OVER w, c.at, coalesce(lead(c.at) OVER w, "to")
		  FROM change c
		 WHERE c.at >= "from" AND c.at < "to"
		WINDOW w AS (ORDER BY c.at)
	), answer AS MATERIALIZED (
		SELECT s.n, s.since, s.till, d.level, d.phone, d.name, d.ack_timeout, d.duty
		  FROM stretch s
		 CROSS JOIN LATERAL smsdispatch.on_duty(sms_oncall_calendar.list, s.since) d
	), duty_row AS (
		SELECT a.n, a.since, a.till, a.level, a.phone, a.name, a.ack_timeout, a.duty
		  FROM answer a
		UNION ALL
		SELECT s.n, s.since, s.till, l.level, NULL, NULL, NULL, 'nobody'
		  FROM stretch s
		 CROSS JOIN (SELECT DISTINCT m.level FROM smsdispatch.list_member m
					  WHERE m.list = sms_oncall_calendar.list) l
		 WHERE NOT EXISTS (SELECT 1 FROM answer a WHERE a.n = s.n AND a.level = l.level)
	), island AS (
		-- the stretches of one row that follow each other share n - its rank
		SELECT r.*, r.n - row_number() OVER (PARTITION BY r.level, r.phone, r.name,
											 r.ack_timeout, r.duty ORDER BY r.n) AS island
		  FROM duty_row r
	)
	SELECT i.level, i.phone, i.name, i.ack_timeout, i.duty, min(i.since), max(i.till)
	  FROM island i
	 GROUP BY i.level, i.phone, i.name, i.ack_timeout, i.duty, i.island
	 ORDER BY 1, 6, 2;
END;
$$;

-- Privileges on list upkeep and on-call duty: admins only; senders queue
-- alarms but cannot change who they page.
GRANT SELECT, INSERT, UPDATE, DELETE
	ON smsdispatch.rotation, smsdispatch.duty_override, smsdispatch.member_pause
	TO smsdispatch_admin;
GRANT USAGE ON SEQUENCE smsdispatch.rotation_id_seq, smsdispatch.duty_override_id_seq,
	smsdispatch.member_pause_id_seq
	TO smsdispatch_admin;
REVOKE ALL ON FUNCTION sms_list_remove(text, text, int),
	sms_list_change(text, text, int, int, text, interval, text),
	sms_list_rename(text, text), sms_list_drop(text),
	sms_list_pause(text, text, timestamptz, timestamptz), sms_list_resume(text, text),
	sms_rotation_create(text, int, interval, time, text, date), sms_rotation_drop(text, int),
	sms_override_add(text, int, text, timestamptz, timestamptz, text, interval),
	sms_override_remove(bigint), sms_oncall(text, timestamptz),
	sms_oncall_calendar(text, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_list_remove(text, text, int),
	sms_list_change(text, text, int, int, text, interval, text),
	sms_list_rename(text, text), sms_list_drop(text),
	sms_list_pause(text, text, timestamptz, timestamptz), sms_list_resume(text, text),
	sms_rotation_create(text, int, interval, time, text, date), sms_rotation_drop(text, int),
	sms_override_add(text, int, text, timestamptz, timestamptz, text, interval),
	sms_override_remove(bigint), sms_oncall(text, timestamptz),
	sms_oncall_calendar(text, timestamptz, timestamptz)
	TO smsdispatch_admin;

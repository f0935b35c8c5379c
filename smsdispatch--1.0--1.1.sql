-- smsdispatch 1.0 -> 1.1. Every change to the extension's objects made in
-- src/sql/ since 1.0 is made here too, so that an upgraded database equals
-- a fresh install of 1.1 (test/t/012_upgrade.pl checks it).

\echo Use "ALTER EXTENSION smsdispatch UPDATE TO '1.1'" to load this file. \quit

-- issue 10: the worker never runs another role's code, secrets leave the
-- settings, readers see statistics only, DROP EXTENSION keeps the
-- application's tables

-- what a redacted body was
ALTER TABLE verification.sms_log ADD COLUMN body_length int;
ALTER TABLE verification.sms_log ADD COLUMN body_parts int;
ALTER TABLE verification.sms_log ADD COLUMN redacted_at timestamptz;

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
			INSERT INTO smsdispatch.inbox (sender, body, outcome, number, message_id)
				VALUES (sender, body, outcome, token, msg_id);
			RETURN outcome;
		END IF;
	END LOOP;
	IF first_msg IS NOT NULL THEN
		outcome := 'not_recipient';
	ELSIF first_token IS NOT NULL THEN
		outcome := 'unknown_number';
	END IF;
	INSERT INTO smsdispatch.inbox (sender, body, outcome, number, message_id)
		VALUES (sender, body, outcome, first_token, first_msg);
	RETURN outcome;
END;
$$;

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
	IF status IS NULL OR status NOT IN ('Delivered', 'Enroute', 'Undeliverable', 'Expired',
										'Deleted', 'Rejected', 'Unknown') THEN
		RAISE EXCEPTION 'unknown status report word "%"', status
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Words are Delivered, Enroute, Undeliverable, Expired, Deleted, Rejected and Unknown.';
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
	   AND coalesce(l.gateway_status, '') NOT IN ('Undeliverable', 'Expired', 'Deleted', 'Rejected')
	   AND NOT (status = 'Enroute' AND l.gateway_status = 'Delivered');
	RETURN found_id;
END;
$$;

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

	-- chart 1: per day, delivered / failed / lost / pending
	SELECT array_agg(to_char(g.day, 'MM-DD') ORDER BY g.day)
	  INTO days
	  FROM generate_series("from"::date, ("to" - interval '1 microsecond')::date,
						   interval '1 day') AS g(day);
	WITH d AS (
		SELECT s.day, sum(s.delivered) AS delivered, sum(s.failed) AS failed,
			   sum(s.send_unknown) AS lost, sum(s.pending) AS pending
		  FROM smsdispatch.delivery_stats("from", "to") AS s
		 GROUP BY s.day
	)
	SELECT array_agg(coalesce(CASE k WHEN 1 THEN d.delivered WHEN 2 THEN d.failed
									 WHEN 3 THEN d.lost ELSE d.pending END, 0)::float8
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

	-- chart 3: median and p95 time to ack per level reached
	WITH a AS (
		SELECT m.level, percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY
				   extract(epoch FROM m.acked_at - m.created_at)::float8) AS p
		  FROM smsdispatch.message m
		 WHERE m.state = 'acked' AND m.created_at >= "from" AND m.created_at < "to"
		 GROUP BY m.level
	)
	SELECT array_agg(coalesce(a.p[k], 0) ORDER BY lvl, k)
	  INTO ack
	  FROM generate_series(1, 3) AS lvl
	 CROSS JOIN generate_series(1, 2) AS k
	  LEFT JOIN a ON a.level = lvl;

	RETURN '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
		|| '<meta http-equiv="Content-Security-Policy" content="default-src ''none''; style-src ''unsafe-inline''">'
		|| '<meta name="viewport" content="width=device-width, initial-scale=1">'
		|| format('<title>SMS report %s - %s</title>', smsdispatch.html_escape("from"::text),
				  smsdispatch.html_escape("to"::text))
		|| '<style>body{font-family:sans-serif;margin:24px;color:#212121;background:#fff}'
		|| 'h1{font-size:22px}h2{font-size:18px;margin-top:32px}figure{margin:8px 0}'
		|| '.chart .title{font-size:15px;font-weight:bold}.chart .axis{font-size:11px;fill:#424242}'
		|| '.chart .frame{stroke:#424242}.chart .grid{stroke:#e0e0e0}'
		|| 'table{border-collapse:collapse;margin:8px 0 24px;font-size:12px}'
		|| 'caption{text-align:left;font-weight:bold;padding:4px 0}'
		|| '.scroll{overflow-x:auto}th,td{border:1px solid #bdbdbd;padding:3px 6px;white-space:nowrap}'
		|| 'th{background:#eeeeee}'
		|| 'td.num{text-align:right}td.empty{color:#757575}</style></head><body>'
		|| format('<h1>SMS dispatch report</h1><p>From %s to %s, generated %s.</p>',
				  smsdispatch.html_escape("from"::text), smsdispatch.html_escape("to"::text),
				  smsdispatch.html_escape(now()::text))
		|| '<h2>Charts</h2>'
		|| smsdispatch.svg_bar_chart('Daily volume by final status', 'SMS', days,
				ARRAY['delivered', 'failed', 'lost', 'pending'],
				ARRAY['#2e7d32', '#c62828', '#616161', '#f9a825'], daily, true)
		|| smsdispatch.svg_bar_chart('Delivery time distribution', 'SMS', delivery_buckets,
				ARRAY['delivered SMS'], ARRAY['#1565c0'], delivery_hist, false)
		|| smsdispatch.svg_bar_chart('Time to acknowledge per level reached', 'seconds',
				ARRAY['level 1', 'level 2', 'level 3'], ARRAY['median', '95th percentile'],
				ARRAY['#00838f', '#6a1b9a'], ack, false)
		|| '<h2>Tables</h2>'
		|| smsdispatch.html_table('Delivery per day, type and channel',
				format('SELECT * FROM smsdispatch.delivery_stats(%s) ORDER BY day, type, channel', range_literal))
		|| smsdispatch.html_table('Gateway per hour',
				format('SELECT * FROM smsdispatch.gateway_stats(date_trunc(''hour'', %L::timestamptz), %L) ORDER BY hour',
					   "from", "to"))
		|| smsdispatch.html_table('Escalation per recipient list',
				format('SELECT * FROM smsdispatch.escalation_stats(%s) ORDER BY list', range_literal))
		|| CASE WHEN has_table_privilege('smsdispatch.queue', 'SELECT')
				THEN smsdispatch.html_table('Queue now', 'SELECT * FROM smsdispatch.queue')
				ELSE '<p>The queue (who is paged, and the alarms'' texts) is shown to smsdispatch_admin only.</p>' END
		|| '</body></html>';
END;
$$;

-- the retention: fixed statements per kind in place of a condition text
DROP PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint);
DROP PROCEDURE smsdispatch.delete_in_batches(regclass, text, timestamptz, int, bigint);

-- One batch of the retention: of one kind of rows past its cutoff, at most
-- batch_size, skipping rows that others have locked (the next run takes
-- them). Kinds: alarms (closed before the cutoff and out of number
-- quarantine, with their recipients and events), log_rows (SMS no longer
-- queued or sending that belong to no remaining alarm), inbox_rows,
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
			   AND message_id IS NULL
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

-- privileges
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA smsdispatch FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.verification_trigger() TO smsdispatch_admin;

-- Readers (reports, the metrics exporter) see the statistics: every column
-- of the log, the alarms, their events and the received SMS except those
-- that say who (phones) or what (texts, verification codes, error texts that
-- quote a number). Column privileges, so the reports' functions run as the
-- reader and the planner still inlines them.
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
			('smsdispatch.inbox', '{sender,body}')) AS v(tbl, secret)
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
REVOKE SELECT ON smsdispatch.queue FROM smsdispatch_reader;
REVOKE ALL ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint, bigint)
	FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.html_escape(text), smsdispatch.html_table(text, text),
	smsdispatch.svg_bar_chart(text, text, text[], text[], text[], float8[], boolean)
	TO smsdispatch_reader;
GRANT EXECUTE ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint, bigint)
	TO smsdispatch_admin;
GRANT EXECUTE ON FUNCTION smsdispatch.purge_batch(text, interval, timestamptz, int, bigint),
	smsdispatch.prevent_in_transaction_block(text), smsdispatch.redact_after()
	TO smsdispatch_admin;

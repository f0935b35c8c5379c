-- smsdispatch 1.1 -> 1.2. src/sql/ is the source of a fresh install; this
-- script makes each change of 1.2 to an existing 1.1 database, once per
-- object, in the order of the src/sql/ fragments that define them, so that
-- an upgraded database equals a fresh install (test/t/012_upgrade.pl).

\echo Use "ALTER EXTENSION smsdispatch UPDATE TO '1.2'" to load this file. \quit

-- src/sql/30_alarms.sql: alarm numbers are reserved without waiting for
-- another session's open enqueue
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
CREATE OR REPLACE FUNCTION smsdispatch.allocate_number()
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

-- src/sql/36_spool_failure.sql: readers see reasons without the values they
-- quote
-- A refusal's reason without the values it quotes: every quoted value (a
-- phone number, a list name, bytes of the text) becomes "...", every byte
-- written 0x.. becomes 0x.., every run of digits #. What the readers see of
-- smsdispatch.spool_failure, which must not show whom an alarm was for or
-- what it said. A standard SQL body: nothing in it is looked up through
-- the search_path when it runs.
CREATE FUNCTION smsdispatch.redact_reason(reason text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.regexp_replace(
	pg_catalog.regexp_replace(
		pg_catalog.regexp_replace(reason, '"[^"]*("|$)|''[^''[:space:]]*''', '"..."', 'g'),
		'0x[0-9A-Fa-f]+', '0x..', 'g'),
	'[0-9]+', '#', 'g');
REVOKE ALL ON FUNCTION smsdispatch.redact_reason(text) FROM PUBLIC;

ALTER TABLE smsdispatch.spool_failure
	ADD COLUMN redacted_reason text GENERATED ALWAYS AS (smsdispatch.redact_reason(reason)) STORED;

-- src/sql/80_reports.sql

-- The report functions get standard SQL bodies: their names are bound when
-- they are created, not through the search_path of the role that reads the
-- reports (a superuser's may hold a schema the database owner writes to).

CREATE OR REPLACE FUNCTION smsdispatch.delivery_stats_per(grain text, "from" timestamptz, "to" timestamptz)
RETURNS TABLE (period timestamptz, type text, channel text, logged bigint, sent bigint,
	delivered bigint, failed bigint, expired bigint, deleted bigint,
	undeliverable bigint, rejected bigint, unaccepted bigint, terminated bigint,
	send_failed bigint, send_unknown bigint, pending bigint,
	delivery_ratio numeric, error_rate numeric, median_delivery_s numeric,
	p95_delivery_s numeric)
LANGUAGE sql STABLE
BEGIN ATOMIC
	SELECT d.period, d.type, d.channel, d.logged, d.sent, d.delivered, d.failed,
		   d.expired, d.deleted, d.undeliverable, d.rejected, d.unaccepted,
		   d.terminated, d.send_failed, d.send_unknown, d.pending,
		   round(d.delivered::numeric / nullif(d.logged - d.pending, 0), 4),
		   round(d.failed::numeric / nullif(d.logged - d.pending, 0), 4),
		   round(d.median_s::numeric, 1), round(d.p95_s::numeric, 1)
	  FROM (SELECT c.*, c.expired + c.deleted + c.undeliverable + c.rejected
					   + c.unaccepted + c.terminated + c.send_failed AS failed
			  FROM (SELECT date_trunc(grain, l.inserted_at) AS period, l.type, l.channel,
				   count(*) AS logged,
				   count(*) FILTER (WHERE l.send_state = 'submitted'
									  AND l.gateway_status IS DISTINCT FROM 'Rejected'
									  AND l.gateway_status IS DISTINCT FROM 'Unaccepted') AS sent,
				   count(*) FILTER (WHERE o.outcome = 'delivered') AS delivered,
				   count(*) FILTER (WHERE o.outcome = 'expired') AS expired,
				   count(*) FILTER (WHERE o.outcome = 'deleted') AS deleted,
				   count(*) FILTER (WHERE o.outcome = 'undeliverable') AS undeliverable,
				   count(*) FILTER (WHERE o.outcome = 'rejected') AS rejected,
				   count(*) FILTER (WHERE o.outcome = 'unaccepted') AS unaccepted,
				   count(*) FILTER (WHERE o.outcome = 'terminated') AS terminated,
				   count(*) FILTER (WHERE o.outcome = 'send_failed') AS send_failed,
				   count(*) FILTER (WHERE o.outcome = 'send_unknown') AS send_unknown,
				   count(*) FILTER (WHERE o.outcome = 'pending') AS pending,
				   percentile_cont(0.5) WITHIN GROUP (ORDER BY smsdispatch.delivery_seconds(
					   l.inserted_at, l.status_changed_at, l.updated_at))
					   FILTER (WHERE o.outcome = 'delivered') AS median_s,
				   percentile_cont(0.95) WITHIN GROUP (ORDER BY smsdispatch.delivery_seconds(
					   l.inserted_at, l.status_changed_at, l.updated_at))
					   FILTER (WHERE o.outcome = 'delivered') AS p95_s
			  FROM verification.sms_log l
			 CROSS JOIN LATERAL (SELECT smsdispatch.sms_outcome(l.send_state,
										l.gateway_status) AS outcome) o
			 WHERE l.inserted_at >= "from" AND l.inserted_at < "to"
			 GROUP BY 1, 2, 3) c) d;
END;

CREATE OR REPLACE FUNCTION smsdispatch.delivery_stats("from" timestamptz, "to" timestamptz)
RETURNS TABLE (day date, type text, channel text, logged bigint, sent bigint,
	delivered bigint, failed bigint, expired bigint, deleted bigint,
	undeliverable bigint, rejected bigint, unaccepted bigint, terminated bigint,
	send_failed bigint, send_unknown bigint, pending bigint,
	delivery_ratio numeric, error_rate numeric, median_delivery_s numeric,
	p95_delivery_s numeric)
LANGUAGE sql STABLE
BEGIN ATOMIC
	SELECT d.period::date, d.type, d.channel, d.logged, d.sent, d.delivered, d.failed,
		   d.expired, d.deleted, d.undeliverable, d.rejected, d.unaccepted,
		   d.terminated, d.send_failed, d.send_unknown, d.pending, d.delivery_ratio,
		   d.error_rate, d.median_delivery_s, d.p95_delivery_s
	  FROM smsdispatch.delivery_stats_per('day', "from", "to") d;
END;

CREATE OR REPLACE FUNCTION smsdispatch.delivery_stats_hourly("from" timestamptz, "to" timestamptz)
RETURNS TABLE (hour timestamptz, type text, channel text, logged bigint, sent bigint,
	delivered bigint, failed bigint, expired bigint, deleted bigint,
	undeliverable bigint, rejected bigint, unaccepted bigint, terminated bigint,
	send_failed bigint, send_unknown bigint, pending bigint,
	delivery_ratio numeric, error_rate numeric, median_delivery_s numeric,
	p95_delivery_s numeric)
LANGUAGE sql STABLE
BEGIN ATOMIC
	SELECT * FROM smsdispatch.delivery_stats_per('hour', "from", "to");
END;

CREATE OR REPLACE FUNCTION smsdispatch.escalation_stats("from" timestamptz, "to" timestamptz)
RETURNS TABLE (list text, alarms bigint, open bigint, acked bigint,
	acked_level_1 bigint, acked_level_2 bigint, acked_level_3 bigint,
	exhausted bigint, cancelled bigint, median_ack_s numeric, p95_ack_s numeric)
LANGUAGE sql STABLE
BEGIN ATOMIC
	WITH m AS (
		SELECT m.list, m.state, smsdispatch.acked_level(m.id) AS level,
			   extract(epoch FROM m.acked_at - m.created_at)::float8 AS ack_s
		  FROM smsdispatch.message m
		 WHERE m.created_at >= "from" AND m.created_at < "to"
	)
	SELECT l.list, count(m.list), count(*) FILTER (WHERE m.state = 'open'),
		   count(*) FILTER (WHERE m.state = 'acked'),
		   count(*) FILTER (WHERE m.state = 'acked' AND m.level = 1),
		   count(*) FILTER (WHERE m.state = 'acked' AND m.level = 2),
		   count(*) FILTER (WHERE m.state = 'acked' AND m.level = 3),
		   count(*) FILTER (WHERE m.state = 'exhausted'),
		   count(*) FILTER (WHERE m.state = 'cancelled'),
		   round((percentile_cont(0.5) WITHIN GROUP (ORDER BY m.ack_s)
				  FILTER (WHERE m.state = 'acked'))::numeric, 1),
		   round((percentile_cont(0.95) WITHIN GROUP (ORDER BY m.ack_s)
				  FILTER (WHERE m.state = 'acked'))::numeric, 1)
	  FROM (SELECT r.name AS list FROM smsdispatch.recipient_list r
			UNION
			SELECT m.list FROM m) l
	  LEFT JOIN m ON m.list = l.list
	 GROUP BY l.list;
END;

CREATE OR REPLACE FUNCTION smsdispatch.gateway_stats("from" timestamptz, "to" timestamptz)
RETURNS TABLE (hour timestamptz, snapshots bigint, requests_send bigint,
	requests_status bigint, answers_accepted bigint, answers_enroute bigint,
	answers_delivered bigint, answers_expired bigint, answers_deleted bigint,
	answers_undeliverable bigint, answers_rejected bigint, answers_unknown bigint,
	answers_unaccepted bigint, answers_terminated bigint, answers_pending bigint,
	errors_connect bigint, errors_timeout bigint, errors_http_5xx bigint,
	errors_http_401 bigint, errors_http_other bigint, errors_parse bigint,
	retries bigint, latency_mean_ms numeric, latency_p95_le_ms float8)
LANGUAGE sql STABLE
BEGIN ATOMIC
	WITH snapshot AS (
		SELECT c.* FROM smsdispatch.counter_snapshot c
		 WHERE c.taken_at >= coalesce((SELECT max(b.taken_at)
										 FROM smsdispatch.counter_snapshot b
										WHERE b.taken_at < "from"), "from")
		   AND c.taken_at < "to"
		UNION ALL
		SELECT n.* FROM smsdispatch.counters_now() n
		 WHERE n.taken_at >= "from" AND n.taken_at < "to"
	), increase AS (
		SELECT s.taken_at, s.name,
			   CASE WHEN s.prev_value IS NULL THEN
						CASE WHEN s.server_started_at >= "from" THEN s.value END
					WHEN s.value < s.prev_value
						 OR s.server_started_at <> s.prev_started_at THEN s.value
					ELSE s.value - s.prev_value
			   END AS delta
		  FROM (SELECT c.*,
					   lag(c.value) OVER w AS prev_value,
					   lag(c.server_started_at) OVER w AS prev_started_at
				  FROM snapshot c
				WINDOW w AS (PARTITION BY c.name ORDER BY c.taken_at)) s
		 WHERE s.taken_at >= "from"
	), hourly AS (
		SELECT date_trunc('hour', i.taken_at) AS hour,
			   count(DISTINCT i.taken_at) AS snapshots,
			   i.name, coalesce(sum(i.delta), 0)::bigint AS n
		  FROM increase i
		 GROUP BY 1, 3
	)
	SELECT h.hour, max(h.snapshots) AS snapshots,
		   sum(h.n) FILTER (WHERE h.name = 'requests_send')::bigint AS requests_send,
		   sum(h.n) FILTER (WHERE h.name = 'requests_status')::bigint AS requests_status,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Accepted')::bigint AS answers_accepted,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Enroute')::bigint AS answers_enroute,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Delivered')::bigint AS answers_delivered,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Expired')::bigint AS answers_expired,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Deleted')::bigint AS answers_deleted,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Undeliverable')::bigint AS answers_undeliverable,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Rejected')::bigint AS answers_rejected,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Unknown')::bigint AS answers_unknown,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Unaccepted')::bigint AS answers_unaccepted,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Terminated')::bigint AS answers_terminated,
		   sum(h.n) FILTER (WHERE h.name = 'answers_Pending')::bigint AS answers_pending,
		   sum(h.n) FILTER (WHERE h.name = 'errors_connect')::bigint AS errors_connect,
		   sum(h.n) FILTER (WHERE h.name = 'errors_timeout')::bigint AS errors_timeout,
		   sum(h.n) FILTER (WHERE h.name = 'errors_http_5xx')::bigint AS errors_http_5xx,
		   sum(h.n) FILTER (WHERE h.name = 'errors_http_401')::bigint AS errors_http_401,
		   sum(h.n) FILTER (WHERE h.name = 'errors_http_other')::bigint AS errors_http_other,
		   sum(h.n) FILTER (WHERE h.name = 'errors_parse')::bigint AS errors_parse,
		   sum(h.n) FILTER (WHERE h.name = 'retries')::bigint AS retries,
		   round(sum(h.n) FILTER (WHERE h.name = 'latency_us_sum') / 1000.0
				 / nullif(sum(h.n) FILTER (WHERE h.name = 'latency_count'), 0), 1)
			   AS latency_mean_ms,
		   smsdispatch.histogram_quantile(0.95,
			   '{10,50,100,500,1000,5000,Infinity}',
			   ARRAY[coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_10ms'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_50ms'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_100ms'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_500ms'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_1s'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_le_5s'), 0),
					 coalesce(sum(h.n) FILTER (WHERE h.name = 'latency_gt_5s'), 0)]::bigint[])
			   AS latency_p95_le_ms
	  FROM hourly h
	 GROUP BY h.hour;
END;

-- src/sql/96_roles_1_1.sql
REVOKE SELECT ON smsdispatch.spool_failure FROM smsdispatch_reader;
GRANT SELECT (id, name, size, mtime, failed_at, redacted_reason)
	ON smsdispatch.spool_failure TO smsdispatch_reader;


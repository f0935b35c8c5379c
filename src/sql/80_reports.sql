-- Reports for operators: delivery and escalation statistics, the gateway's
-- counters per hour, the console view of the queue, a self-contained HTML
-- report, and retention (purge) scheduled with pg_cron.

-- The purge finds closed alarms and old received SMS through these.
CREATE INDEX message_closed_idx ON smsdispatch.message (closed_at) WHERE state <> 'open';
CREATE INDEX inbox_received_idx ON smsdispatch.inbox (received_at);

-- Snapshots of the IP2SMS channel's cumulative counters (smsdispatch.stats()),
-- taken every minute by smsdispatch.snapshot_counters(). server_started_at
-- is when the counters last started from zero (smsdispatch.stats_since():
-- they outlive a clean restart, a crash or stats_reset() zeroes them), so
-- that a reset is told apart from a restart.
CREATE TABLE smsdispatch.counter_snapshot (
	taken_at			timestamptz NOT NULL,
	server_started_at	timestamptz NOT NULL,
	name				text NOT NULL,
	value				bigint NOT NULL,
	PRIMARY KEY (name, taken_at)
);
CREATE INDEX counter_snapshot_taken_idx ON smsdispatch.counter_snapshot (taken_at);
SELECT pg_catalog.pg_extension_config_dump('smsdispatch.counter_snapshot', '');

-- Copies the current counters into counter_snapshot; returns the rows written.
CREATE FUNCTION smsdispatch.snapshot_counters()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	written integer;
BEGIN
	INSERT INTO smsdispatch.counter_snapshot (taken_at, server_started_at, name, value)
	SELECT now(), smsdispatch.stats_since(), s.name, s.value
	  FROM smsdispatch.stats() AS s
	ON CONFLICT DO NOTHING;
	GET DIAGNOSTICS written = ROW_COUNT;
	RETURN written;
END;
$$;

-- The counters as they are now, shaped like counter_snapshot rows; no row
-- when the library is not preloaded. gateway_stats() reads them as a last
-- snapshot, so the current hour shows before any snapshot was taken.
CREATE FUNCTION smsdispatch.counters_now()
RETURNS SETOF smsdispatch.counter_snapshot
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	since timestamptz := smsdispatch.stats_since();
BEGIN
	IF since IS NOT NULL THEN
		RETURN QUERY SELECT now(), since, s.name, s.value FROM smsdispatch.stats() AS s;
	END IF;
END;
$$;

-- What became of one SMS, from its dispatch state and the gateway's word:
-- delivered, one of the gateway's final failures (lower case), send_failed
-- (never accepted by a channel), send_unknown (lost in a crash while sending)
-- or pending. Every report classifies rows through this one function.
CREATE FUNCTION smsdispatch.sms_outcome(send_state text, gateway_status text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT CASE smsdispatch.gateway_status_class(gateway_status)
		WHEN 'delivered' THEN 'delivered'
		WHEN 'failed' THEN lower(gateway_status)
		ELSE CASE send_state
			WHEN 'failed' THEN 'send_failed'
			WHEN 'unknown' THEN 'send_unknown'
			ELSE 'pending'
		END
	END;
END;

-- Seconds from queueing to delivery: the gateway's date of the Delivered
-- state, or the time the row was last updated when the gateway gave none.
CREATE FUNCTION smsdispatch.delivery_seconds(inserted_at timestamptz,
	status_changed_at timestamptz, updated_at timestamptz)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT extract(epoch FROM coalesce(status_changed_at, updated_at) - inserted_at)::float8;
END;

-- Delivery statistics of the SMS queued in ["from", "to"), per period
-- (date_trunc(grain, inserted_at) in the session's TimeZone: 'hour' or
-- 'day') x type x channel. sent counts the SMS a channel accepted (submitted,
-- and not refused by the gateway: a Rejected or Unaccepted row is a refusal,
-- never sent); delivery_ratio and error_rate are delivered and failed over
-- the SMS whose outcome is known (logged - pending).
-- Like every report function, a standard SQL body: its names are bound when
-- it is created, so a superuser reading the reports never runs what a
-- schema earlier in their search_path holds (a SET search_path would do
-- that too, but keeps the planner from inlining the function, and then the
-- range and a view's WHERE day = ... no longer use the index on
-- inserted_at).
CREATE FUNCTION smsdispatch.delivery_stats_per(grain text, "from" timestamptz, "to" timestamptz)
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

-- Per day (the session's TimeZone) x type x channel.
CREATE FUNCTION smsdispatch.delivery_stats("from" timestamptz, "to" timestamptz)
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

-- Per hour x type x channel: the same columns, the hour first.
CREATE FUNCTION smsdispatch.delivery_stats_hourly("from" timestamptz, "to" timestamptz)
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

-- Every day: the function over all time.
CREATE VIEW smsdispatch.delivery_stats AS
	SELECT * FROM smsdispatch.delivery_stats('-infinity', 'infinity');

-- Escalation statistics of the alarms created in ["from", "to"), per
-- recipient list (lists without alarms show zeros). "Acked at level N"
-- counts the alarms acknowledged by a recipient of level N
-- (smsdispatch.acked_level): who took it, not how far the escalation had
-- gone (a level-1 recipient acking after level 2 was paged counts at
-- level 1). Time to ack runs from the alarm's creation.
-- The escalation level of the recipient who acknowledged an alarm (the
-- lowest, for a phone on several levels); NULL when nobody did.
CREATE FUNCTION smsdispatch.acked_level(message_id bigint)
RETURNS int
LANGUAGE sql STABLE
BEGIN ATOMIC
	SELECT min(r.level) FROM smsdispatch.message_recipient r
	 WHERE r.message_id = acked_level.message_id AND r.status = 'ACK';
END;

CREATE FUNCTION smsdispatch.escalation_stats("from" timestamptz, "to" timestamptz)
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

CREATE VIEW smsdispatch.escalation_stats AS
	SELECT * FROM smsdispatch.escalation_stats('-infinity', 'infinity');

-- The upper bound of the histogram bucket that holds quantile q, given
-- disjoint buckets with those upper bounds (the last one may be 'Infinity').
-- NULL when the histogram is empty.
CREATE FUNCTION smsdispatch.histogram_quantile(q float8, bounds float8[], counts bigint[])
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT b.bound
	  FROM (SELECT u.bound,
				   sum(u.n) OVER (ORDER BY u.i) AS cumulative,
				   sum(u.n) OVER () AS total
			  FROM unnest(bounds, counts) WITH ORDINALITY AS u(bound, n, i)) b
	 WHERE b.total > 0 AND b.cumulative >= q * b.total
	 ORDER BY b.cumulative
	 LIMIT 1;
END;

-- The gateway per hour for the snapshots taken in ["from", "to"), and the
-- counters as they are now when now() is in the range: what happened between
-- consecutive snapshots counts in the hour of the later one, so the last
-- snapshot before "from" is read as the baseline. A counter that went down,
-- or a new server_started_at (a crash or stats_reset()), is a reset: the
-- later value is then the whole increase. A counter's first snapshot has no
-- baseline: its value counts in full when the counters started from zero
-- inside the range, else its increase is unknown.
CREATE FUNCTION smsdispatch.gateway_stats("from" timestamptz, "to" timestamptz)
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

CREATE VIEW smsdispatch.gateway_stats AS
	SELECT * FROM smsdispatch.gateway_stats('-infinity', 'infinity');

-- The console: every open alarm with each recipient and its status, the
-- alarm's columns named as in smsdispatch.message (body, created_at...) and
-- the recipient's as in smsdispatch.message_recipient, prefixed
-- recipient_ where both tables have one. queue_history is the same for
-- every alarm, closed ones included.
CREATE VIEW smsdispatch.queue_history AS
	SELECT m.number, m.list, m.state, m.level, m.round, m.created_at,
		   m.level_started_at, m.body, m.acked_by, m.closed_at,
		   r.level AS recipient_level, r.name AS recipient_name, r.phone, r.status,
		   r.sent_at, r.deadline, r.acked_at
	  FROM smsdispatch.message m
	  JOIN smsdispatch.message_recipient r ON r.message_id = m.id
	 ORDER BY m.created_at, m.number, r.level, r.phone;
CREATE VIEW smsdispatch.queue AS
	SELECT m.number, m.list, m.state, m.level, m.round, m.created_at,
		   m.level_started_at, m.body,
		   r.level AS recipient_level, r.name AS recipient_name, r.phone, r.status,
		   r.sent_at, r.deadline, r.acked_at
	  FROM smsdispatch.message m
	  JOIN smsdispatch.message_recipient r ON r.message_id = m.id
	 WHERE m.state = 'open'
	 ORDER BY m.created_at, m.number, r.level, r.phone;

-- Text made safe for HTML element content and attribute values.
CREATE FUNCTION smsdispatch.html_escape(t text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT replace(replace(replace(replace(replace(coalesce(t, ''),
		'&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;');
END;

-- A bar chart as inline SVG. vals holds one value per (category, series),
-- category-major: vals[(c - 1) * number of series + s]. Stacked draws one
-- bar per category; otherwise the series stand side by side.
CREATE FUNCTION smsdispatch.svg_bar_chart(title text, unit text, categories text[],
	series text[], colors text[], vals float8[], stacked boolean)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	width constant int := 760;
	height constant int := 300;
	left_m constant int := 70;
	top_m constant int := 50;
	plot_w constant int := 670;
	plot_h constant int := 190;
	ncat int := coalesce(array_length(categories, 1), 0);
	nser int := array_length(series, 1);
	top_value float8 := 0;
	magnitude float8;
	slot float8;
	bar_w float8;
	x float8;
	base float8;
	bar_h float8;
	v float8;
	label_step int;
	svg text;
	c int;
	s int;
BEGIN
	FOR c IN 1..ncat LOOP
		IF stacked THEN
			SELECT greatest(top_value, coalesce(sum(vals[(c - 1) * nser + g]), 0))
			  INTO top_value FROM generate_series(1, nser) g;
		ELSE
			SELECT greatest(top_value, coalesce(max(vals[(c - 1) * nser + g]), 0))
			  INTO top_value FROM generate_series(1, nser) g;
		END IF;
	END LOOP;
	-- a round top for the axis: 37 -> 40, 0.8 -> 0.8, 1234 -> 2000
	IF top_value > 0 THEN
		magnitude := power(10, floor(log(top_value)));
		top_value := ceil(top_value / magnitude) * magnitude;
	END IF;

	svg := format('<figure><svg class="chart" role="img" aria-label="%s" width="%s" height="%s" viewBox="0 0 %s %s">',
				  smsdispatch.html_escape(title), width, height, width, height)
		|| format('<text x="%s" y="22" class="title">%s</text>', left_m,
				  smsdispatch.html_escape(title))
		|| format('<text x="12" y="%s" class="axis" transform="rotate(-90 12 %s)" text-anchor="middle">%s</text>',
				  top_m + plot_h / 2, top_m + plot_h / 2, smsdispatch.html_escape(unit))
		|| format('<line x1="%s" y1="%s" x2="%s" y2="%s" class="frame"/>',
				  left_m, top_m + plot_h, left_m + plot_w, top_m + plot_h)
		|| format('<line x1="%s" y1="%s" x2="%s" y2="%s" class="frame"/>',
				  left_m, top_m, left_m, top_m + plot_h);

	-- legend, top right
	FOR s IN 1..nser LOOP
		svg := svg || format('<rect x="%s" y="30" width="10" height="10" fill="%s"/><text x="%s" y="39" class="axis">%s</text>',
							 left_m + plot_w - 130 * (nser - s + 1), colors[s],
							 left_m + plot_w - 130 * (nser - s + 1) + 14,
							 smsdispatch.html_escape(series[s]));
	END LOOP;

	IF ncat = 0 OR top_value = 0 THEN
		RETURN svg || format('<text x="%s" y="%s" class="axis" text-anchor="middle">no data in this range</text></svg></figure>',
							 left_m + plot_w / 2, top_m + plot_h / 2);
	END IF;

	-- y axis: 0, half and top
	FOR s IN 0..2 LOOP
		svg := svg || format('<text x="%s" y="%s" class="axis" text-anchor="end">%s</text><line x1="%s" y1="%s" x2="%s" y2="%s" class="grid"/>',
							 left_m - 6, top_m + plot_h - plot_h * s / 2 + 4,
							 round((top_value * s / 2)::numeric, 1)::float8,
							 left_m, top_m + plot_h - plot_h * s / 2,
							 left_m + plot_w, top_m + plot_h - plot_h * s / 2);
	END LOOP;

	slot := plot_w::float8 / ncat;
	bar_w := CASE WHEN stacked THEN slot * 0.7 ELSE slot * 0.8 / nser END;
	label_step := ceil(ncat / 12.0);
	FOR c IN 1..ncat LOOP
		base := 0;
		FOR s IN 1..nser LOOP
			v := coalesce(vals[(c - 1) * nser + s], 0);
			x := left_m + (c - 1) * slot
				+ CASE WHEN stacked THEN slot * 0.15 ELSE slot * 0.1 + (s - 1) * bar_w END;
			bar_h := plot_h * v / top_value;
			IF v > 0 THEN
				svg := svg || format('<rect x="%s" y="%s" width="%s" height="%s" fill="%s"><title>%s</title></rect>',
									 round(x::numeric, 1),
									 round((top_m + plot_h - base - bar_h)::numeric, 1),
									 round(bar_w::numeric, 1), round(bar_h::numeric, 1),
									 colors[s],
									 smsdispatch.html_escape(format('%s, %s: %s %s', categories[c],
											series[s], round(v::numeric, 1)::float8, unit)));
			END IF;
			IF stacked THEN
				base := base + bar_h;
			END IF;
		END LOOP;
		IF (c - 1) % label_step = 0 THEN
			svg := svg || format('<text x="%s" y="%s" class="axis" text-anchor="middle">%s</text>',
								 round((left_m + (c - 0.5) * slot)::numeric, 1),
								 top_m + plot_h + 18, smsdispatch.html_escape(categories[c]));
		END IF;
	END LOOP;
	RETURN svg || '</svg></figure>';
END;
$$;

-- The rows of a query as an HTML table, every value escaped; numbers are
-- right-aligned, timestamps shown to the second in the session's TimeZone
-- (as their JSON form, ISO 8601 with a T and an offset, is recognised).
-- Headers may break after an underscore, so that narrow numeric columns stay
-- narrow. The header comes from the query's columns even when it returns no
-- row.
CREATE FUNCTION smsdispatch.html_table(caption text, query text)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	header json;
	rows json;
	out text;
BEGIN
	-- one row of NULLs named like the query's columns (t.* expanded, so the
	-- row itself is not NULL), without running the query
	EXECUTE format('SELECT row_to_json(h) FROM (SELECT t.* FROM (SELECT) AS d LEFT JOIN (%s) AS t ON false) AS h',
				   query)
		INTO header;
	EXECUTE format('SELECT json_agg(t) FROM (%s) AS t', query) INTO rows;
	SELECT format('<div class="scroll"><table><caption>%s</caption><thead><tr>%s</tr></thead><tbody>',
				  smsdispatch.html_escape(caption),
				  string_agg('<th>' || replace(smsdispatch.html_escape(k), '_', '_<wbr>') || '</th>',
							 '' ORDER BY n))
	  INTO out
	  FROM json_object_keys(header) WITH ORDINALITY AS h(k, n);
	IF rows IS NULL THEN
		RETURN out || format('<tr><td colspan="%s" class="empty">no rows</td></tr></tbody></table></div>',
							 (SELECT count(*) FROM json_object_keys(header)));
	END IF;
	SELECT out || string_agg(r.cells, '' ORDER BY r.n) || '</tbody></table></div>'
	  INTO out
	  FROM (SELECT t.n, '<tr>' || string_agg(
					   CASE WHEN json_typeof(e.value) = 'number'
							THEN '<td class="num">' ELSE '<td>' END
					   || smsdispatch.html_escape(CASE
							WHEN json_typeof(e.value) = 'string' AND (t.row ->> e.key)
								 ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d(:\d\d)?$'
							THEN to_char((t.row ->> e.key)::timestamptz, 'YYYY-MM-DD HH24:MI:SS')
							ELSE t.row ->> e.key END) || '</td>', '' ORDER BY e.n)
				   || '</tr>' AS cells
			  FROM json_array_elements(rows) WITH ORDINALITY AS t(row, n)
			 CROSS JOIN LATERAL json_each(t.row) WITH ORDINALITY AS e(key, value, n)
			 GROUP BY t.n) r;
	RETURN out;
END;
$$;

-- One self-contained HTML page for ["from", "to"): three inline SVG charts
-- (daily volume by final status, delivery time distribution, ack time per
-- level) and the report tables. No scripts, fonts, images or links: a
-- Content-Security-Policy of default-src 'none' keeps the page from loading
-- anything even if it tried.
CREATE FUNCTION sms_report_html("from" timestamptz, "to" timestamptz)
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
	-- times as people read them: to the minute, in the session's TimeZone
	shown constant text := 'YYYY-MM-DD HH24:MI TZ';
	range_shown text := format('from %s to %s', to_char("from", 'YYYY-MM-DD HH24:MI'),
							   to_char("to", shown));
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

	-- chart 1: per day, delivered / failed / send_unknown / pending
	SELECT array_agg(to_char(g.day, 'MM-DD') ORDER BY g.day)
	  INTO days
	  FROM generate_series("from"::date, ("to" - interval '1 microsecond')::date,
						   interval '1 day') AS g(day);
	WITH d AS (
		SELECT s.day, sum(s.delivered) AS delivered, sum(s.failed) AS failed,
			   sum(s.send_unknown) AS send_unknown, sum(s.pending) AS pending
		  FROM smsdispatch.delivery_stats("from", "to") AS s
		 GROUP BY s.day
	)
	SELECT array_agg(coalesce(CASE k WHEN 1 THEN d.delivered WHEN 2 THEN d.failed
									 WHEN 3 THEN d.send_unknown ELSE d.pending END, 0)::float8
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

	-- chart 3: median and p95 time to ack per level of the acking recipient
	WITH a AS (
		SELECT smsdispatch.acked_level(m.id) AS level, percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY
				   extract(epoch FROM m.acked_at - m.created_at)::float8) AS p
		  FROM smsdispatch.message m
		 WHERE m.state = 'acked' AND m.created_at >= "from" AND m.created_at < "to"
		 GROUP BY 1
	)
	SELECT array_agg(coalesce(a.p[k], 0) ORDER BY lvl, k)
	  INTO ack
	  FROM generate_series(1, 3) AS lvl
	 CROSS JOIN generate_series(1, 2) AS k
	  LEFT JOIN a ON a.level = lvl;

	RETURN '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
		|| '<meta http-equiv="Content-Security-Policy" content="default-src ''none''; style-src ''unsafe-inline''">'
		|| '<meta name="viewport" content="width=device-width, initial-scale=1">'
		|| format('<title>SMS report %s</title>', smsdispatch.html_escape(range_shown))
		|| '<style>body{font-family:sans-serif;margin:24px;color:#212121;background:#fff}'
		|| 'h1{font-size:22px}h2{font-size:18px;margin-top:32px}figure{margin:8px 0}'
		|| '.chart .title{font-size:15px;font-weight:bold}.chart .axis{font-size:11px;fill:#424242}'
		|| '.chart .frame{stroke:#424242}.chart .grid{stroke:#e0e0e0}'
		|| 'table{border-collapse:collapse;margin:8px 0 24px;font-size:12px}'
		|| 'caption{text-align:left;font-weight:bold;padding:4px 0}'
		|| '.scroll{overflow-x:auto}th,td{border:1px solid #bdbdbd;padding:3px 6px}'
		|| 'td{white-space:nowrap}th{background:#eeeeee;vertical-align:bottom}'
		|| 'td.num{text-align:right}td.empty{color:#757575}</style></head><body>'
		|| format('<h1>SMS dispatch report</h1><p>SMS and alarms %s; generated %s.</p>',
				  smsdispatch.html_escape(range_shown),
				  smsdispatch.html_escape(to_char(now(), shown)))
		|| '<h2>Charts</h2>'
		|| smsdispatch.svg_bar_chart('Daily volume by final status', 'SMS', days,
				ARRAY['delivered', 'failed', 'send_unknown', 'pending'],
				ARRAY['#2e7d32', '#c62828', '#616161', '#f9a825'], daily, true)
		|| smsdispatch.svg_bar_chart('Delivery time distribution', 'SMS', delivery_buckets,
				ARRAY['delivered SMS'], ARRAY['#1565c0'], delivery_hist, false)
		|| smsdispatch.svg_bar_chart('Time to acknowledge per level of the acker', 'seconds',
				ARRAY['level 1', 'level 2', 'level 3'], ARRAY['median', '95th percentile'],
				ARRAY['#00838f', '#6a1b9a'], ack, false)
		|| '<h2>Tables</h2>'
		|| smsdispatch.html_table('Delivery per day, type and channel',
				format('SELECT day, type, channel, logged, sent, delivered, failed, send_unknown, '
					   'pending, delivery_ratio, error_rate, median_delivery_s, p95_delivery_s '
					   'FROM smsdispatch.delivery_stats(%s) ORDER BY day, type, channel', range_literal))
		|| smsdispatch.html_table('Failures per day, type and channel',
				format('SELECT day, type, channel, failed, expired, deleted, undeliverable, rejected, '
					   'unaccepted, terminated, send_failed '
					   'FROM smsdispatch.delivery_stats(%s) WHERE failed > 0 ORDER BY day, type, channel',
					   range_literal))
		|| smsdispatch.html_table('Gateway requests per hour',
				format('SELECT hour, snapshots, requests_send, requests_status, retries, errors_connect, '
					   'errors_timeout, errors_http_5xx, errors_http_401, errors_http_other, errors_parse, '
					   'latency_mean_ms, latency_p95_le_ms '
					   'FROM smsdispatch.gateway_stats(date_trunc(''hour'', %L::timestamptz), %L) ORDER BY hour',
					   "from", "to"))
		|| smsdispatch.html_table('Gateway answers per hour',
				format('SELECT hour, answers_accepted, answers_enroute, answers_delivered, answers_expired, '
					   'answers_deleted, answers_undeliverable, answers_rejected, answers_unknown, '
					   'answers_unaccepted, answers_terminated, answers_pending '
					   'FROM smsdispatch.gateway_stats(date_trunc(''hour'', %L::timestamptz), %L) ORDER BY hour',
					   "from", "to"))
		|| smsdispatch.html_table('Escalation per recipient list',
				format('SELECT * FROM smsdispatch.escalation_stats(%s) ORDER BY list', range_literal))
		|| CASE WHEN has_table_privilege('smsdispatch.queue', 'SELECT')
				THEN smsdispatch.html_table('Open alarms now',
					'SELECT number, list, level, created_at, body, recipient_level, recipient_name, '
					'phone, status, sent_at, deadline FROM smsdispatch.queue')
				ELSE '<p>Open alarms (who is paged, and the alarms'' texts) are shown to smsdispatch_admin only.</p>' END
		|| '</body></html>';
END;
$$;

-- One batch of the retention: of one kind of rows past its cutoff, at most
-- batch_size, skipping rows that others have locked (the next run takes
-- them). Kinds: alarms (closed before the cutoff and out of number
-- quarantine, with their recipients and events), log_rows (SMS no longer
-- queued or sending that belong to no remaining alarm, neither as its page
-- nor as its confirmation), inbox_rows,
-- snapshots, spool_failures (refused spool files, by failed_at), and
-- redacted: SMS in a final state for longer than
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
			   AND message_id IS NULL AND confirms IS NULL
			 LIMIT batch_size FOR UPDATE SKIP LOCKED));
	WHEN 'inbox_rows' THEN
		DELETE FROM smsdispatch.inbox WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM smsdispatch.inbox WHERE received_at < cutoff
			 LIMIT batch_size FOR UPDATE SKIP LOCKED));
	WHEN 'snapshots' THEN
		DELETE FROM smsdispatch.counter_snapshot WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM smsdispatch.counter_snapshot WHERE taken_at < cutoff
			 LIMIT batch_size FOR UPDATE SKIP LOCKED));
	WHEN 'spool_failures' THEN
		DELETE FROM smsdispatch.spool_failure WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM smsdispatch.spool_failure WHERE failed_at < cutoff
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

-- Removes what is no longer needed and blanks what must not be kept, in
-- batches of batch_size rows, each in its own short transaction (see
-- smsdispatch.purge_batch for what goes); a NOTICE after each batch tells how
-- far it got, and a last one what it deleted and what it kept of what is
-- older than older_than, and why (open, in number quarantine, unfinished,
-- part of a kept alarm, locked), so that a purge that deletes nothing says
-- why. The count of refused spool files deleted is in that NOTICE only: the
-- result columns stay those of 1.1. A PROCEDURE because only a procedure
-- can COMMIT between batches: row locks are held for one batch only and the
-- deleted space becomes reusable as the purge goes. So it must be called
-- outside a transaction block: CALL smsdispatch.purge('90 days').
-- A procedure that commits cannot carry SET search_path; instead it pins the
-- path itself at the start of each of its transactions, before anything
-- else is resolved (pg_cron may run it as a superuser with a search_path the
-- database owner chose).
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
	spool_failures bigint;
	cutoff timestamptz;
	quarantine interval;
	kept record;
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
	FOREACH kind IN ARRAY ARRAY['alarms', 'log_rows', 'inbox_rows', 'snapshots',
								 'spool_failures', 'redacted']
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
			WHEN 'spool_failures' THEN spool_failures := total;
			ELSE redacted := total;
		END CASE;
	END LOOP;

	-- what is older than the cutoff and still there, by why it stayed;
	-- "locked" is what another session held (or what became due meanwhile):
	-- the next purge takes it
	cutoff := started - older_than;
	quarantine := smsdispatch.number_quarantine();
	SELECT m.open, m.quarantined, l.unfinished, l.of_alarms,
		   m.locked + l.locked
		   + (SELECT count(*) FROM smsdispatch.inbox i WHERE i.received_at < cutoff)
		   + (SELECT count(*) FROM smsdispatch.counter_snapshot c WHERE c.taken_at < cutoff)
		   + (SELECT count(*) FROM smsdispatch.spool_failure f WHERE f.failed_at < cutoff)
		   AS locked
	  INTO kept
	  FROM (SELECT count(*) FILTER (WHERE a.state = 'open' AND a.created_at < cutoff) AS open,
				   count(*) FILTER (WHERE a.state <> 'open' AND a.closed_at < cutoff
									  AND a.closed_at >= started - quarantine) AS quarantined,
				   count(*) FILTER (WHERE a.state <> 'open'
									  AND a.closed_at < least(cutoff, started - quarantine)) AS locked
			  FROM smsdispatch.message a) m,
		   (SELECT count(*) FILTER (WHERE s.send_state = ANY ('{queued,sending}')) AS unfinished,
				   count(*) FILTER (WHERE s.send_state <> ALL ('{queued,sending}')
									  AND (s.message_id IS NOT NULL OR s.confirms IS NOT NULL)) AS of_alarms,
				   count(*) FILTER (WHERE s.send_state <> ALL ('{queued,sending}')
									  AND s.message_id IS NULL AND s.confirms IS NULL) AS locked
			  FROM verification.sms_log s
			 WHERE s.inserted_at < cutoff) l;
	RAISE NOTICE 'smsdispatch.purge deleted alarms: %, log rows: %, inbox rows: %, counter snapshots: %, spool failures: %; bodies blanked: %',
		alarms, log_rows, inbox_rows, snapshots, spool_failures, redacted
		USING DETAIL = format('Kept although older than %s: open alarms: %s, alarms closed within '
							  'smsdispatch.number_quarantine (%s): %s, log rows queued or sending: %s, '
							  'log rows of kept alarms: %s, rows locked by another session (the next '
							  'purge takes them): %s.',
							  older_than, kept.open, quarantine, kept.quarantined, kept.unfinished,
							  kept.of_alarms, kept.locked);
END;
$$;

-- Creates (or updates) the pg_cron jobs that keep the tables small and the
-- gateway statistics fed: the purge every day and a counter snapshot every
-- minute. pg_cron must be installed in this database, and able to connect
-- (it is refused when its jobs could only fail).
CREATE FUNCTION smsdispatch.schedule_maintenance(retention interval DEFAULT '90 days',
	purge_schedule text DEFAULT '30 3 * * *')
RETURNS TABLE (jobid bigint, jobname text, schedule text, command text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in database "%"', current_database()
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('Add pg_cron to shared_preload_libraries, set cron.database_name = %L, '
								'restart the server and run CREATE EXTENSION pg_cron; or schedule '
								'CALL smsdispatch.purge(...) and SELECT smsdispatch.snapshot_counters() '
								'with any other scheduler.', current_database());
	END IF;
	-- pg_cron runs a job through a libpq connection to cron.host unless
	-- cron.use_background_workers is on; a host name cannot reach a server
	-- that listens on a Unix socket only, and every run would fail
	IF current_setting('cron.use_background_workers', true) IS DISTINCT FROM 'on'
	   AND left(coalesce(current_setting('cron.host', true), 'localhost'), 1) <> '/'
	   AND current_setting('listen_addresses') = '' THEN
		RAISE EXCEPTION 'pg_cron could not run the maintenance jobs: cron.host is "%" but the server listens on no TCP address',
			coalesce(current_setting('cron.host', true), 'localhost')
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('Set cron.use_background_workers = on (with max_worker_processes to spare), '
								'or cron.host = %L, in postgresql.conf and restart the server.',
								btrim(split_part(current_setting('unix_socket_directories'), ',', 1)));
	END IF;
	IF retention IS NULL OR retention < interval '0' THEN
		RAISE EXCEPTION 'retention "%" must be a non-negative interval', retention
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example smsdispatch.schedule_maintenance(''90 days'').';
	END IF;
	PERFORM cron.schedule('smsdispatch-purge', purge_schedule,
						  format('CALL smsdispatch.purge(%L)', retention));
	PERFORM cron.schedule('smsdispatch-snapshot', '* * * * *',
						  'SELECT smsdispatch.snapshot_counters()');
	RETURN QUERY
		SELECT j.jobid, j.jobname::text, j.schedule, j.command
		  FROM cron.job j
		 WHERE j.jobname IN ('smsdispatch-purge', 'smsdispatch-snapshot')
		   AND j.username = current_user
		 ORDER BY j.jobname;
END;
$$;

-- Privileges: readers see the statistics and the HTML report (the range
-- forms run with the caller's rights: readers read the columns they count);
-- admins also see the queue (who is paged, with the alarms' texts) and run
-- the retention.
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.counter_snapshot TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.delivery_stats, smsdispatch.gateway_stats,
	smsdispatch.escalation_stats, smsdispatch.queue, smsdispatch.queue_history
	TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.delivery_stats, smsdispatch.gateway_stats,
	smsdispatch.escalation_stats, smsdispatch.counter_snapshot
	TO smsdispatch_reader;
REVOKE ALL ON FUNCTION sms_report_html(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.delivery_stats(timestamptz, timestamptz),
	smsdispatch.escalation_stats(timestamptz, timestamptz),
	smsdispatch.gateway_stats(timestamptz, timestamptz),
	smsdispatch.delivery_stats_per(text, timestamptz, timestamptz),
	smsdispatch.delivery_stats_hourly(timestamptz, timestamptz),
	smsdispatch.counters_now(), smsdispatch.acked_level(bigint),
	smsdispatch.histogram_quantile(float8, float8[], bigint[]),
	smsdispatch.sms_outcome(text, text),
	smsdispatch.delivery_seconds(timestamptz, timestamptz, timestamptz),
	smsdispatch.html_escape(text), smsdispatch.html_table(text, text),
	smsdispatch.svg_bar_chart(text, text, text[], text[], text[], float8[], boolean),
	sms_report_html(timestamptz, timestamptz)
	TO smsdispatch_reader;
REVOKE ALL ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint, bigint)
	FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint, bigint)
	TO smsdispatch_admin;
GRANT EXECUTE ON FUNCTION smsdispatch.purge_batch(text, interval, timestamptz, int, bigint)
	TO smsdispatch_admin;

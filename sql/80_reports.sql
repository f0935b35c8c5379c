-- Reports: every view's numbers on a log and alarms with fixed timestamps,
-- the HTML report, retention and the maintenance schedule.
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'iso_8601';
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS smsdispatch;
RESET client_min_messages;
TRUNCATE verification.sms_log, smsdispatch.message CASCADE;
TRUNCATE smsdispatch.inbox, smsdispatch.recipient_list CASCADE;

-- the log: one row per case of smsdispatch.sms_outcome()
INSERT INTO verification.sms_log (phone_number, type, body, channel, send_state,
	gateway_id, gateway_status, inserted_at, status_changed_at, updated_at) VALUES
 ('+380500000001', 'verification', 'code 1', 'ip2sms', 'submitted', '1', 'Delivered', '2026-03-01 10:00:00', '2026-03-01 10:00:05', '2026-03-01 10:00:06'),
 ('+380500000002', 'verification', 'code 2', 'ip2sms', 'submitted', '2', 'Delivered', '2026-03-01 10:01:00', '2026-03-01 10:01:20', '2026-03-01 10:01:21'),
 ('+380500000003', 'verification', 'code 3', 'ip2sms', 'submitted', '3', 'Delivered', '2026-03-01 10:02:00', '2026-03-01 10:03:00', '2026-03-01 10:03:01'),
 ('+380500000004', 'verification', 'code 4', 'ip2sms', 'submitted', '4', 'Delivered', '2026-03-01 10:03:00', NULL, '2026-03-01 10:03:40'),
 ('+380500000005', 'verification', 'code 5', 'ip2sms', 'submitted', '5', 'Expired', '2026-03-01 10:04:00', '2026-03-01 12:04:00', '2026-03-01 12:04:00'),
 ('+380500000006', 'verification', 'code 6', 'ip2sms', 'submitted', '6', 'Undeliverable', '2026-03-01 10:05:00', '2026-03-01 10:05:09', '2026-03-01 10:05:10'),
 ('+380500000007', 'verification', 'code 7', 'ip2sms', 'failed', NULL, 'Rejected', '2026-03-01 10:06:00', '2026-03-01 10:06:01', '2026-03-01 10:06:01'),
 ('+380500000008', 'verification', 'code 8', 'ip2sms', 'failed', NULL, NULL, '2026-03-01 10:07:00', NULL, '2026-03-01 10:09:00'),
 ('+380500000009', 'verification', 'code 9', 'ip2sms', 'unknown', NULL, NULL, '2026-03-01 10:08:00', NULL, '2026-03-01 10:08:00'),
 ('+380500000010', 'verification', 'code 10', 'ip2sms', 'queued', NULL, NULL, '2026-03-01 10:09:00', NULL, '2026-03-01 10:09:00'),
 ('+380500000011', 'verification', 'code 11', 'ip2sms', 'submitted', '11', 'Enroute', '2026-03-01 10:10:00', '2026-03-01 10:10:30', '2026-03-01 10:10:30'),
 ('+380500000012', 'text', 'hello', 'modem', 'submitted', '12', 'Delivered', '2026-03-01 23:59:59', '2026-03-02 00:00:29', '2026-03-02 00:00:30'),
 ('+380500000013', 'text', 'hello', 'modem', 'submitted', '13', 'Terminated', '2026-03-01 11:00:00', '2026-03-01 11:30:00', '2026-03-01 11:30:00'),
 ('+380500000014', '2FA', 'code 14', 'ip2sms', 'submitted', '14', 'Delivered', '2026-03-02 00:00:00', '2026-03-02 00:00:02', '2026-03-02 00:00:03'),
 ('+380500000015', '2FA', 'code 15', 'ip2sms', 'submitted', '15', 'Deleted', '2026-03-02 00:10:00', '2026-03-02 00:20:00', '2026-03-02 00:20:00'),
 ('+380500000016', '2FA', 'code 16', 'ip2sms', 'submitted', '16', 'Unaccepted', '2026-03-02 00:20:00', '2026-03-02 00:20:01', '2026-03-02 00:20:01'),
 ('+380500000017', '2FA', 'code 17', 'ip2sms', 'submitted', '17', 'Delivered', '2026-02-28 23:59:59.999', '2026-03-01 00:00:09', '2026-03-01 00:00:09');

SELECT * FROM smsdispatch.delivery_stats ORDER BY day, type, channel;
-- the range form: [from, to), the same numbers
SELECT day, type, channel, logged, delivered, failed, pending, delivery_ratio
  FROM smsdispatch.delivery_stats('2026-03-01', '2026-03-02') ORDER BY 1, 2, 3;
SELECT day, type, logged FROM smsdispatch.delivery_stats('2026-03-02', '2026-03-02 00:10') ORDER BY 1, 2;
-- per hour: the same columns; sent leaves out the Rejected row (10:06), and
-- delivery_ratio and error_rate are delivered and failed over logged - pending
SELECT hour, type, channel, logged, sent, delivered, failed, pending, delivery_ratio, error_rate
  FROM smsdispatch.delivery_stats_hourly('2026-03-01 10:00', '2026-03-01 12:00') ORDER BY 1, 2, 3;
SELECT hour, type, logged FROM smsdispatch.delivery_stats_hourly('2026-03-01 23:00', '2026-03-02 01:00') ORDER BY 1, 2;
-- the range form is inlined, so a one-day query can use the index on inserted_at
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM smsdispatch.delivery_stats('2026-03-01', '2026-03-02');
RESET enable_seqscan;

-- alarms with fixed timestamps
SELECT sms_list_create('oncall'), sms_list_create('db'), sms_list_create('empty');
SELECT sms_list_add('oncall', '+380501111111', 1, '5 min', 'Alice'),
	   sms_list_add('oncall', '+380502222222', 2, '5 min', 'Bob');
INSERT INTO smsdispatch.message (id, number, body, list, state, level, created_at,
	acked_at, acked_by, closed_at, channel) VALUES
 (1, '0001', 'disk full', 'oncall', 'acked', 2, '2026-03-01 10:00', '2026-03-01 10:02', '+380501111111', '2026-03-01 10:02', 'ip2sms'),
 (2, '0002', 'load high', 'oncall', 'acked', 2, '2026-03-01 11:00', '2026-03-01 11:20', '+380502222222', '2026-03-01 11:20', 'ip2sms'),
 (3, '0003', 'db down', 'oncall', 'exhausted', 3, '2026-03-01 12:00', NULL, NULL, '2026-03-01 12:45', 'ip2sms'),
 (4, '0004', 'false alarm', 'oncall', 'cancelled', 1, '2026-03-01 13:00', NULL, NULL, '2026-03-01 13:01', 'ip2sms'),
 (5, '0005', '<script>alert("x")</script> & it''s', 'oncall', 'open', 1, '2026-03-01 14:00', NULL, NULL, NULL, 'ip2sms'),
 (6, '0006', 'old list', 'gone', 'acked', 1, '2026-03-02 09:00', '2026-03-02 09:01', '+380503333333', '2026-03-02 09:01', 'modem'),
 (7, '0007', 'replica lag', 'db', 'acked', 1, '2026-03-01 15:00', '2026-03-01 15:00:30', '+380504444444', now() - interval '1 hour', 'ip2sms');
INSERT INTO smsdispatch.message_recipient (message_id, phone, name, level, ack_timeout,
	status, sent_at, deadline, acked_at) VALUES
 (5, '+380501111111', 'Alice', 1, '5 min', 'NOT_YET_ACK', '2026-03-01 14:00:05', '2026-03-01 14:05:05', NULL),
 (5, '+380502222222', 'Bob', 2, '5 min', 'NOT_SENT', NULL, NULL, NULL),
 (7, '+380504444444', NULL, 1, '5 min', 'ACK', '2026-03-01 15:00:02', '2026-03-01 15:05:02', '2026-03-01 15:00:30'),
 (1, '+380501111111', 'Alice', 1, '5 min', 'ACK', '2026-03-01 10:00:01', '2026-03-01 10:05:01', '2026-03-01 10:02'),
 (1, '+380502222222', 'Bob', 2, '5 min', 'NOT_YET_ACK', '2026-03-01 10:01:01', '2026-03-01 10:06:01', NULL),
 (2, '+380501111111', 'Alice', 1, '5 min', 'ACK_TIME_OVER', '2026-03-01 11:00:01', '2026-03-01 11:05:01', NULL),
 (2, '+380502222222', 'Bob', 2, '5 min', 'ACK', '2026-03-01 11:05:02', '2026-03-01 11:10:02', '2026-03-01 11:20'),
 (6, '+380503333333', NULL, 1, '5 min', 'ACK', '2026-03-02 09:00:01', '2026-03-02 09:05:01', '2026-03-02 09:01');
-- each alarm's SMS are in the log too
INSERT INTO verification.sms_log (phone_number, type, body, channel, send_state,
	gateway_status, inserted_at, status_changed_at, message_id) VALUES
 ('+380501111111', 'text', '[0001] disk full', 'ip2sms', 'submitted', 'Delivered', '2026-03-01 10:00', '2026-03-01 10:00:10', 1),
 ('+380501111111', 'text', '[0005] ...', 'ip2sms', 'submitted', 'Enroute', '2026-03-01 14:00', '2026-03-01 14:00:02', 5);
INSERT INTO smsdispatch.event (message_id, at, kind) VALUES
 (1, '2026-03-01 10:00', 'enqueued'), (5, '2026-03-01 14:00', 'enqueued');
INSERT INTO smsdispatch.inbox (sender, body, outcome, number, received_at) VALUES
 ('+380501111111', '0001 ok', 'ack', '0001', '2026-03-01 10:02'),
 ('+380509999999', 'hi', 'no_number', NULL, now());

-- an ack counts at the level of the recipient who acked: alarm 0001 had
-- reached level 2 when Alice of level 1 acked it, so it counts at level 1
SELECT * FROM smsdispatch.escalation_stats ORDER BY list;
SELECT * FROM smsdispatch.escalation_stats('2026-03-01', '2026-03-01 12:00') ORDER BY list;
-- the console shows the open alarm; the history shows every alarm
SELECT * FROM smsdispatch.queue;
SELECT number, state, recipient_level, recipient_name, status
  FROM smsdispatch.queue_history;
-- the text-type rows of the alarms joined the text/ip2sms line
SELECT day, type, channel, logged, delivered, pending, median_delivery_s
  FROM smsdispatch.delivery_stats WHERE type = 'text' ORDER BY 1, 2, 3;

-- gateway counters: snapshots with fixed timestamps; the counters restart
-- from zero between 10:59 and 11:10 (server_started_at changes: a crash or
-- stats_reset), and requests_status goes down at 10:59 without that. The
-- first snapshot counts in full over all time (the counters started at
-- 00:00), and in no range that starts after 00:00.
INSERT INTO smsdispatch.counter_snapshot (taken_at, server_started_at, name, value)
SELECT t.at, t.started, c.name, c.v[t.i]
  FROM (VALUES (1, timestamptz '2026-03-01 10:00', timestamptz '2026-03-01 00:00'),
			   (2, '2026-03-01 10:30', '2026-03-01 00:00'),
			   (3, '2026-03-01 10:59', '2026-03-01 00:00'),
			   (4, '2026-03-01 11:10', '2026-03-01 11:05'),
			   (5, '2026-03-01 11:40', '2026-03-01 11:05')) AS t(i, at, started)
 CROSS JOIN (VALUES
	('requests_send', '{100,150,200,20,50}'::bigint[]),
	('requests_status', '{10,40,5,7,9}'),
	('answers_Delivered', '{0,30,60,10,25}'),
	('answers_Rejected', '{0,0,1,0,0}'),
	('errors_timeout', '{1,1,3,0,1}'),
	('errors_http_5xx', '{0,0,0,0,0}'),
	('retries', '{2,2,4,0,1}'),
	('latency_us_sum', '{0,1000000,2000000,3000000,6000000}'),
	('latency_count', '{0,50,100,20,50}'),
	('latency_le_10ms', '{0,20,40,0,0}'),
	('latency_le_50ms', '{0,25,50,0,0}'),
	('latency_le_100ms', '{0,0,5,10,10}'),
	('latency_le_500ms', '{0,5,5,10,35}'),
	('latency_le_1s', '{0,0,0,0,3}'),
	('latency_le_5s', '{0,0,0,0,0}'),
	('latency_gt_5s', '{0,0,0,0,2}')) AS c(name, v);
SELECT * FROM smsdispatch.gateway_stats WHERE hour < '2026-04-01' ORDER BY hour;
SELECT hour, snapshots, requests_send
  FROM smsdispatch.gateway_stats('2026-03-01 09:00', '2026-03-01 10:45') ORDER BY hour;
-- the counters as they are now are a last snapshot when now() is in the
-- range, so the current hour shows before any snapshot job ran
SELECT count(*) AS hours, bool_and(snapshots = 1) AS live_only,
	   bool_and(requests_send = (SELECT value FROM smsdispatch.stats() WHERE name = 'requests_send')) AS live_value
  FROM smsdispatch.gateway_stats(now() - interval '1 hour', now() + interval '1 hour');
SELECT count(*) AS hours FROM smsdispatch.gateway_stats('2026-03-01 12:00', '2026-03-01 13:00');
SELECT smsdispatch.stats_since() <= now() AS since_known,
	   (SELECT count(*) FROM smsdispatch.counters_now()) = (SELECT count(*) FROM smsdispatch.stats()) AS live_rows;
-- a range starting at 11:00 reads the 10:59 snapshot as its baseline
SELECT hour, snapshots, requests_send, requests_status, answers_delivered, latency_mean_ms
  FROM smsdispatch.gateway_stats('2026-03-01 11:00', '2026-03-01 12:00');
SELECT hour, snapshots, requests_send FROM smsdispatch.gateway_stats('2026-03-01 10:15', '2026-03-01 10:45');
SELECT smsdispatch.histogram_quantile(0.5, '{1,2,Infinity}', '{0,0,0}') AS empty,
	   smsdispatch.histogram_quantile(0.95, '{1,2,Infinity}', '{1,0,99}') AS beyond;

-- the HTML report: every chart bar says what it is, text is escaped, and
-- nothing refers outside the page
CREATE TEMP TABLE report AS
	SELECT sms_report_html('2026-03-01 00:00+00', '2026-03-03 00:00+00') AS html;
SELECT (SELECT count(*) FROM regexp_matches(html, '<svg ', 'g')) AS charts,
	   html LIKE '<!DOCTYPE html>%</html>' AS whole_page,
	   html LIKE '%<meta http-equiv="Content-Security-Policy" content="default-src ''none''; style-src ''unsafe-inline''">%' AS csp,
	   html ~* '<script|https?:|//|src=|href=|@import|url\(' AS refers_outside,
	   position('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; it&#39;s' IN html) > 0 AS escaped
  FROM report;
SELECT m[1] AS bar FROM report, regexp_matches(html, '<rect [^>]*><title>([^<]*)</title>', 'g') AS m;
SELECT m[1] AS caption FROM report, regexp_matches(html, '<caption>([^<]*)</caption>', 'g') AS m;
SELECT m[1] AS header FROM report, regexp_matches(html, '<thead><tr>(.*?)</tr></thead>', 'g') AS m;
-- the tables hold the views' numbers
SELECT m[1] AS delivery_row FROM report,
	regexp_matches(html, '<tr><td>2026-03-01</td><td>verification</td>(.*?)</tr>', 'g') AS m;
-- a range without data still has its three charts
SELECT (SELECT count(*) FROM regexp_matches(html, 'no data in this range', 'g')) AS empty_charts,
	   (SELECT string_agg(m[1], ',') FROM regexp_matches(html,
			'<td colspan="([0-9]+)" class="empty">no rows</td>', 'g') AS m) AS empty_table_widths
  FROM (SELECT sms_report_html('2020-01-01', '2020-01-02') AS html) r;

-- bad ranges
SELECT sms_report_html(NULL, '2026-03-01');
SELECT sms_report_html('2026-03-02', '2026-03-01');
SELECT sms_report_html('-infinity', '2026-03-01');
SELECT sms_report_html('2024-01-01', '2026-01-01');

-- readers see the statistics and the report, and purge nothing
SET ROLE smsdispatch_reader;
SELECT (SELECT count(*) FROM smsdispatch.delivery_stats) AS delivery,
	   (SELECT count(*) FROM smsdispatch.escalation_stats) AS escalation,
	   (SELECT count(*) FROM smsdispatch.gateway_stats) AS gateway,
	   length(sms_report_html('2026-03-01', '2026-03-02')) > 1000 AS report,
	   position('Open alarms now' IN sms_report_html('2026-03-01', '2026-03-02')) > 0 AS report_shows_queue;
CALL smsdispatch.purge('1 day');
RESET ROLE;
-- admins read the same, the queue too, and may purge
SET ROLE smsdispatch_admin;
SELECT (SELECT count(*) FROM smsdispatch.queue) AS queue,
	   position('Open alarms now' IN sms_report_html('2026-03-01', '2026-03-02')) > 0 AS report_shows_queue;
RESET ROLE;
SELECT has_function_privilege('smsdispatch_admin', 'sms_report_html(timestamptz, timestamptz)', 'EXECUTE') AS admin_report,
	   has_function_privilege('smsdispatch_admin', 'smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint, bigint)', 'EXECUTE') AS admin_purge,
	   has_function_privilege('smsdispatch_sender', 'smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint, bigint)', 'EXECUTE') AS sender_purge,
	   has_table_privilege('smsdispatch_sender', 'smsdispatch.delivery_stats', 'SELECT') AS sender_stats;

-- retention
CALL smsdispatch.purge(NULL);
CALL smsdispatch.purge('-1 day');
CALL smsdispatch.purge('1 day', 0);
BEGIN;
CALL smsdispatch.purge('1 day', 2);
ROLLBACK;
-- refused spool files: one of March, one of now
INSERT INTO smsdispatch.spool_failure (name, size, mtime, reason, failed_at) VALUES
 ('march.xml', 10, '2026-03-01 09:00', 'no <MSG>', '2026-03-01 09:00'),
 ('today.xml', 10, now(), 'no <MSG>', now());
-- batches of two: closed alarms (1, 2, 3, 4, 6; 7 is in number quarantine),
-- then the log rows that are final and belong to no alarm left, the old
-- received SMS, snapshots and refused spool files; the last NOTICE counts
-- them, and what it kept of March: the open alarm and its SMS, the
-- queued SMS
CALL smsdispatch.purge('1 day', 2);
SELECT name FROM smsdispatch.spool_failure;
SELECT id, state FROM smsdispatch.message ORDER BY id;
SELECT message_id, count(*) FROM smsdispatch.message_recipient GROUP BY 1 ORDER BY 1;
SELECT message_id, count(*) FROM smsdispatch.event GROUP BY 1 ORDER BY 1;
SELECT phone_number, send_state, message_id FROM verification.sms_log ORDER BY id;
SELECT sender FROM smsdispatch.inbox;
SELECT count(*) AS snapshots FROM smsdispatch.counter_snapshot;
-- nothing left to purge
CALL smsdispatch.purge('1 day');
-- everything up to now: alarm 7, closed an hour ago, stays in number
-- quarantine; today's spool failure goes
CALL smsdispatch.purge('0 s');
SELECT id, state FROM smsdispatch.message ORDER BY id;
SELECT count(*) AS spool_failures FROM smsdispatch.spool_failure;

-- pg_cron is not loaded in this instance
SELECT * FROM smsdispatch.schedule_maintenance();

-- leave no alarm behind for later suites
TRUNCATE verification.sms_log, smsdispatch.message, smsdispatch.inbox,
	smsdispatch.recipient_list CASCADE;

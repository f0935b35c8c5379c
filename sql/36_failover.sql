-- The failover duty called directly: here IP2SMS is unconfigured (no send
-- URL) and a heartbeat row stands for a modem sidecar. An alarm's SMS queued
-- on a channel that is not ok goes out on the other one; a transport failure
-- does not end a recipient: the level is retried, and an alarm nobody can be
-- sent is undeliverable (event and WARNING; test/t/040 LISTENs for its NOTIFY).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS smsdispatch CASCADE;
RESET client_min_messages;
CREATE EXTENSION smsdispatch;
SELECT smsdispatch.modem_heartbeat('m1', '1 hour', NULL, NULL, NULL, NULL,
	0, 0, 0, 0, 0, false, NULL, true);
SELECT channel, state, since IS NOT NULL AS since_known, last_error
  FROM smsdispatch.channel_health ORDER BY channel;

SELECT sms_list_create('fo');
SELECT sms_list_add('fo', '+380506000001', 1, '10 min');
SELECT sms_list_add('fo', '+380506000005', 2, '10 min');
SELECT sms_enqueue('valve 7 stuck', 'fo') AS number \gset

-- queued on ip2sms, which has been unconfigured for as long as anyone knows
-- (longer than failover_after): the channel fails over, and the modem takes
-- the SMS at once
SELECT checked, failed_over, retried, undeliverable, next_check FROM smsdispatch.failover();
SELECT channel FROM smsdispatch.channel_failover;
SELECT id, channel, send_state, last_error, message_id FROM verification.sms_log ORDER BY id;
SELECT r.phone, r.status, l.channel FROM smsdispatch.message_recipient r
  LEFT JOIN verification.sms_log l ON l.id = r.sms_log_id ORDER BY r.level;
SELECT kind, level, phone, detail FROM smsdispatch.event WHERE kind = 'failover';
-- nothing more to do
SELECT checked, failed_over, retried, undeliverable FROM smsdispatch.failover();

-- the modem fails it in transport: the recipient is not ended, the level
-- does not count as tried, and with no other channel ok it is retried on
-- the modem and the alarm is loud
UPDATE verification.sms_log SET send_state = 'failed', attempts = 5, last_error = 'no network'
 WHERE channel = 'modem';
SELECT phone, status FROM smsdispatch.message_recipient ORDER BY level;
SELECT kind, detail FROM smsdispatch.event WHERE kind = 'send_failed';
SELECT alarms_checked, escalated, exhausted FROM smsdispatch.escalate();
SELECT checked, failed_over, retried, undeliverable FROM smsdispatch.failover();
SELECT id, channel, send_state, next_attempt_at > now() AS later FROM verification.sms_log
 WHERE send_state = 'queued';
SELECT kind, level, detail FROM smsdispatch.event WHERE kind IN ('retried', 'undeliverable') ORDER BY id;
SELECT state, level FROM smsdispatch.message;

-- the sidecar goes silent: no_sidecar; still undeliverable, but said once a level
UPDATE smsdispatch.modem SET last_seen = now() - interval '4 hours';
SELECT channel, state, last_error LIKE 'no sidecar seen within three heartbeats%' AS why
  FROM smsdispatch.channel_health WHERE channel = 'modem';
SELECT checked, failed_over, retried, undeliverable FROM smsdispatch.failover();
-- an SMS that can only wait is not counted: a batch of them never asks the
-- worker for another pass at once
SELECT checked FROM smsdispatch.failover(1);
-- a modem never seen fails over (no sidecar has started yet), and takes its
-- SMS back at its first heartbeat, not failback_after later: it has not
-- flapped
DELETE FROM smsdispatch.modem;
DELETE FROM smsdispatch.channel_failover;
SELECT channel, state, since FROM smsdispatch.channel_health WHERE channel = 'modem';
SELECT count(*) >= 0 AS ran FROM smsdispatch.failover();
SELECT channel, never_seen FROM smsdispatch.channel_failover ORDER BY channel;
SELECT smsdispatch.modem_heartbeat('m2', '1 hour', NULL, NULL, NULL, NULL,
	0, 0, 0, 0, 0, false, NULL, true);
SELECT count(*) >= 0 AS ran FROM smsdispatch.failover();
SELECT channel, never_seen FROM smsdispatch.channel_failover ORDER BY channel;

-- whether a failure was the channel's
SELECT smsdispatch.failed_in_transport('failed', NULL, 5) AS gave_up,
	   smsdispatch.failed_in_transport('failed', NULL, 1) AS refused_early,
	   smsdispatch.failed_in_transport('failed', 'Rejected', 5) AS gateway_refused,
	   smsdispatch.failed_in_transport('submitted', NULL, 5) AS sent;

-- bad input
SELECT * FROM smsdispatch.failover(0);
SELECT * FROM smsdispatch.failover(NULL);

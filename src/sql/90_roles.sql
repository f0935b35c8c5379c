-- Roles and privileges. PUBLIC gets nothing; the three roles are cluster-wide
-- and outlive DROP EXTENSION.
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['smsdispatch_sender', 'smsdispatch_admin', 'smsdispatch_reader']
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
			EXECUTE format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END;
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA smsdispatch FROM PUBLIC;
REVOKE ALL ON FUNCTION sms_normalize_phone(text), sms_segments(text),
	sms_send(text, text, text, text, int), sms_list_create(text, text, int),
	sms_list_add(text, text, int, interval, text), sms_enqueue(text, text, text),
	sms_ack(text, text), sms_receive(text, text), sms_cancel(text) FROM PUBLIC;

GRANT USAGE ON SCHEMA smsdispatch, verification
	TO smsdispatch_sender, smsdispatch_admin, smsdispatch_reader;

-- senders queue SMS and alarms and report replies; they read no lists
GRANT EXECUTE ON FUNCTION sms_normalize_phone(text), sms_segments(text),
	sms_send(text, text, text, text, int), sms_enqueue(text, text, text),
	sms_ack(text, text), sms_receive(text, text), sms_cancel(text)
	TO smsdispatch_sender;

-- admins do all of that and manage lists and the log
GRANT smsdispatch_sender TO smsdispatch_admin;
GRANT EXECUTE ON FUNCTION sms_list_create(text, text, int),
	sms_list_add(text, text, int, interval, text),
	smsdispatch.watch_verifications(regclass, name, name),
	smsdispatch.verification_trigger(),
	smsdispatch.run_once()
	TO smsdispatch_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA smsdispatch TO smsdispatch_admin;
GRANT SELECT, UPDATE ON verification.sms_log TO smsdispatch_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA smsdispatch TO smsdispatch_admin;

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
			('smsdispatch.inbox', '{sender,body,sender_e164,handler_error}')) AS v(tbl, secret)
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
GRANT SELECT ON smsdispatch.recipient_list TO smsdispatch_reader;

-- the modem sidecar logs in as an admin (or a role granted smsdispatch_admin)
GRANT EXECUTE ON FUNCTION smsdispatch.modem_claim(text, interval),
	smsdispatch.modem_finish(bigint, text, text, text, text),
	smsdispatch.modem_recover(text),
	smsdispatch.modem_status_report(text, text, int, text, timestamptz),
	smsdispatch.modem_receive(text, text, text, timestamptz),
	smsdispatch.modem_heartbeat(text, interval, text, text, text, int, int, int, int, int, int, boolean, text, boolean)
	TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.modem, smsdispatch.modem_stale TO smsdispatch_reader;

-- What smsdispatch_reader may read of the log, the alarms, their events and
-- the received SMS, as views it can SELECT * from: the reader has SELECT on
-- some columns of these tables only (10_tables.sql), so SELECT * on a table
-- is refused. Each view has exactly the columns the reader may read (test
-- sql/11_readable_views.sql holds them equal). security_invoker: the
-- reader's own column privileges are checked through the view, so a column
-- added here that the reader may not read fails instead of showing it.

-- verification.sms_log without phone_number, body, gateway_id, last_error,
-- verification_id and claimed_by
CREATE VIEW smsdispatch.sms_log_readable WITH (security_invoker = true) AS
	SELECT l.id, l.type, l.gateway_status, l.status_changed_at, l.updated_at,
		   l.inserted_at, l.channel, l.send_state, l.attempts, l.next_attempt_at,
		   l.next_poll_at, l.submitted_at, l.lease_until, l.message_id,
		   l.body_length, l.body_parts, l.redacted_at, l.priority, l.confirms,
		   l.held_until, l.released_at
	  FROM verification.sms_log l;

-- smsdispatch.message without body and acked_by
CREATE VIEW smsdispatch.message_readable WITH (security_invoker = true) AS
	SELECT m.id, m.number, m.list, m.state, m.level, m.round, m.level_started_at,
		   m.acked_at, m.closed_at, m.source, m.channel, m.created_at, m.check_at
	  FROM smsdispatch.message m;

-- smsdispatch.event without phone and detail
CREATE VIEW smsdispatch.event_readable WITH (security_invoker = true) AS
	SELECT e.id, e.message_id, e.at, e.kind, e.level
	  FROM smsdispatch.event e;

-- smsdispatch.inbox without sender, body, sender_e164 and handler_error
CREATE VIEW smsdispatch.inbox_readable WITH (security_invoker = true) AS
	SELECT i.id, i.outcome, i.number, i.message_id, i.received_at, i.handler_state,
		   i.handled_at
	  FROM smsdispatch.inbox i;

GRANT SELECT ON smsdispatch.sms_log_readable, smsdispatch.message_readable, smsdispatch.event_readable, smsdispatch.inbox_readable
	TO smsdispatch_reader;

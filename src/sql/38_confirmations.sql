-- Confirmations: when an alarm closes, the people it paged are told. The
-- acking person gets "[0042] acknowledged", everyone else paged "[0042]
-- taken by Ben"; a cancel or exhaustion tells everyone paged. They are
-- queued in the transaction that closes the alarm, so a crash loses none
-- and repeats none.

-- Closes the waiting of the given alarms' recipients and queues their
-- confirmations; called by smsdispatch.record_ack ('acked', with the acking
-- recipient), sms_cancel ('cancelled') and smsdispatch.escalate
-- ('exhausted'), with the alarms already locked and closed. Recipients
-- still waiting for an ack, or whose SMS a channel has in hand, become
-- CLOSED. "Paged" means a channel took the recipient's SMS (sending,
-- submitted or unknown); one confirmation per phone, on the channel of
-- that SMS, at alarm priority. Confirmation rows carry confirms, not
-- message_id: they are nobody's page, so the escalation and
-- sms_log_progress never take them for one. Lists with confirmations off
-- (sms_list_confirmations) get none. Returns the confirmations queued.
CREATE FUNCTION smsdispatch.confirm_closed(message_ids bigint[], closed_as text,
	acker bigint DEFAULT NULL)
RETURNS int
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
	queued int;
BEGIN
	IF closed_as IS NULL OR closed_as NOT IN ('acked', 'cancelled', 'exhausted') THEN
		RAISE EXCEPTION 'unknown way "%" for an alarm to close', closed_as
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Alarms close as acked, cancelled or exhausted.';
	END IF;

	UPDATE smsdispatch.message_recipient r
	   SET status = 'CLOSED'
	 WHERE r.message_id = ANY (message_ids) AND r.id IS DISTINCT FROM acker
	   AND (r.status = 'NOT_YET_ACK'
			OR (r.status = 'NOT_SENT'
				AND EXISTS (SELECT 1 FROM verification.sms_log l
							 WHERE l.id = r.sms_log_id AND l.send_state = 'sending')));

	WITH paged AS (
		SELECT DISTINCT ON (r.message_id, r.phone)
			   r.message_id, r.phone, r.level, r.id = acker AS is_acker, l.channel
		  FROM smsdispatch.message_recipient r
		  JOIN verification.sms_log l ON l.id = r.sms_log_id
		 WHERE r.message_id = ANY (message_ids)
		   AND l.send_state IN ('sending', 'submitted', 'unknown')
		 ORDER BY r.message_id, r.phone, r.id = acker DESC, r.level
	), worded AS (
		SELECT p.*, m.number,
			   '[' || m.number || '] ' ||
			   CASE WHEN p.is_acker THEN 'acknowledged'
					WHEN closed_as = 'acked' THEN
						'taken by ' || left(coalesce(a.name, a.phone), 60)
					WHEN closed_as = 'cancelled' THEN 'cancelled'
					ELSE 'exhausted: nobody acknowledged it' END AS body
		  FROM paged p
		  JOIN smsdispatch.message m ON m.id = p.message_id
		  LEFT JOIN smsdispatch.message_recipient a ON a.id = acker
		 WHERE NOT EXISTS (SELECT 1 FROM smsdispatch.recipient_list rl
							WHERE rl.name = m.list AND NOT rl.confirmations)
	), sent AS (
		INSERT INTO verification.sms_log (phone_number, type, body, channel, priority,
										  confirms)
		SELECT t.phone, 'text', t.body, t.channel, 1, t.message_id
		  FROM worded t
		 ORDER BY t.message_id, t.is_acker DESC, t.level, t.phone
		RETURNING confirms, phone_number, body
	)
	INSERT INTO smsdispatch.event (message_id, kind, phone, detail)
	SELECT s.confirms, 'confirmation', s.phone_number, s.body
	  FROM sent s;
	GET DIAGNOSTICS queued = ROW_COUNT;
	RETURN queued;
END;
$$;

-- Turns the confirmations of a list on or off (on for a new list).
CREATE FUNCTION sms_list_confirmations(list text, enabled boolean)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF enabled IS NULL THEN
		RAISE EXCEPTION 'enabled must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass true to confirm acks, cancels and exhaustion by SMS, false not to.';
	END IF;
	UPDATE smsdispatch.recipient_list l SET confirmations = enabled
	 WHERE l.name = sms_list_confirmations.list;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'recipient list "%" does not exist', list
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it first with sms_list_create().';
	END IF;
END;
$$;

-- admins only: senders queue alarms but cannot change who is told
REVOKE ALL ON FUNCTION sms_list_confirmations(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_list_confirmations(text, boolean) TO smsdispatch_admin;

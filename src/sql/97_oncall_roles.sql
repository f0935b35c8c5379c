-- Privileges on list upkeep, on-call duty (31_oncall.sql) and confirmations
-- (37_confirmations.sql): admins only; senders queue alarms but cannot change
-- who they page or who is told.
DO $$
DECLARE
	f regprocedure;
BEGIN
	FOREACH f IN ARRAY ARRAY[
		'sms_list_remove(text, text, int)',
		'sms_list_change(text, text, int, int, text, interval, text)',
		'sms_list_rename(text, text)', 'sms_list_drop(text)',
		'sms_list_pause(text, text, timestamptz, timestamptz)', 'sms_list_resume(text, text)',
		'sms_rotation_create(text, int, interval, time, text, date)', 'sms_rotation_drop(text, int)',
		'sms_override_add(text, int, text, timestamptz, timestamptz, text, interval)',
		'sms_override_remove(bigint)', 'sms_oncall(text, timestamptz)',
		'sms_list_confirmations(text, boolean)']::regprocedure[]
	LOOP
		EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
		EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO smsdispatch_admin', f);
	END LOOP;
END;
$$;
-- readers count acks per level of the acking recipient (escalation_stats):
-- the recipients' levels and statuses, not who they are
GRANT SELECT (message_id, level, status) ON smsdispatch.message_recipient TO smsdispatch_reader;
GRANT EXECUTE ON FUNCTION smsdispatch.acked_level(bigint) TO smsdispatch_reader;

-- admins may try a send window before setting it
GRANT EXECUTE ON FUNCTION smsdispatch.send_window_next(text, timestamptz) TO smsdispatch_admin;

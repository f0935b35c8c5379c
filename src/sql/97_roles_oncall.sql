-- Privileges of issue 13's confirmations (37_confirmations.sql): admins
-- turn a list's confirmations on and off.
REVOKE ALL ON FUNCTION sms_list_confirmations(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sms_list_confirmations(text, boolean) TO smsdispatch_admin;
-- and may try a send window before setting it
GRANT EXECUTE ON FUNCTION smsdispatch.send_window_next(text, timestamptz) TO smsdispatch_admin;

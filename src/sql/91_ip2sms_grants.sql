-- Privileges on the IP2SMS channel's functions (after 90_roles.sql made the
-- roles): readers and admins see the counters, only admins reset them.
REVOKE ALL ON FUNCTION smsdispatch.ip2sms_poll_delay(interval, interval),
	smsdispatch.stats(), smsdispatch.stats_reset() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smsdispatch.stats() TO smsdispatch_reader, smsdispatch_admin;
GRANT EXECUTE ON FUNCTION smsdispatch.stats_reset() TO smsdispatch_admin;

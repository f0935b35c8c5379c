-- Privileges on objects added in 1.1: readers see the hourly delivery
-- statistics and the live counters (80_reports.sql).
GRANT EXECUTE ON FUNCTION smsdispatch.delivery_stats_per(text, timestamptz, timestamptz),
	smsdispatch.delivery_stats_hourly(timestamptz, timestamptz),
	smsdispatch.counters_now(),
	smsdispatch.stats_since()
	TO smsdispatch_reader;
-- readers see which spool files were refused, and why, but not the values
-- the reason quotes (redacted_reason, 1.2)
GRANT SELECT (id, name, size, mtime, failed_at, redacted_reason)
	ON smsdispatch.spool_failure TO smsdispatch_reader;
-- everyone who may normalise a number may see the plan it is checked against
GRANT EXECUTE ON FUNCTION smsdispatch.phone_plan()
	TO smsdispatch_sender, smsdispatch_admin, smsdispatch_reader;

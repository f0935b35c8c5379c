-- Privileges on the reports (80_reports.sql), granted once the roles exist.
-- Readers see the statistics, the queue and the HTML report; admins also run
-- the retention.

REVOKE ALL ON FUNCTION sms_report_html(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint),
	smsdispatch.delete_in_batches(regclass, text, timestamptz, int, bigint) FROM PUBLIC;

GRANT SELECT ON smsdispatch.delivery_stats, smsdispatch.gateway_stats,
	smsdispatch.escalation_stats, smsdispatch.queue, smsdispatch.counter_snapshot
	TO smsdispatch_reader;
-- the range forms of the statistics run with the caller's rights: readers
-- already read sms_log, message, recipient_list and counter_snapshot
GRANT EXECUTE ON FUNCTION smsdispatch.delivery_stats(timestamptz, timestamptz),
	smsdispatch.escalation_stats(timestamptz, timestamptz),
	smsdispatch.gateway_stats(timestamptz, timestamptz),
	smsdispatch.histogram_quantile(float8, float8[], bigint[]),
	smsdispatch.sms_outcome(text, text),
	smsdispatch.delivery_seconds(timestamptz, timestamptz, timestamptz),
	smsdispatch.number_quarantine(),
	sms_report_html(timestamptz, timestamptz)
	TO smsdispatch_reader;

-- admins read everything readers read
GRANT smsdispatch_reader TO smsdispatch_admin;
GRANT EXECUTE ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint),
	smsdispatch.delete_in_batches(regclass, text, timestamptz, int, bigint)
	TO smsdispatch_admin;
GRANT DELETE ON verification.sms_log TO smsdispatch_admin;

-- the gateway counters (Prometheus exporter, snapshots) are statistics too
DO $$
BEGIN
	IF to_regprocedure('smsdispatch.stats()') IS NOT NULL THEN
		GRANT EXECUTE ON FUNCTION smsdispatch.stats() TO smsdispatch_reader;
	END IF;
END;
$$;

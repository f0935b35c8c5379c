-- Privileges on the reports (80_reports.sql), granted once the roles exist.
-- Readers see the statistics and the HTML report; admins also see the queue
-- (who is paged, with the alarms' texts) and run the retention.

REVOKE ALL ON FUNCTION sms_report_html(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint, bigint)
	FROM PUBLIC;
REVOKE ALL ON FUNCTION smsdispatch.purge_batch(text, interval, timestamptz, int, bigint)
	FROM PUBLIC;

GRANT SELECT ON smsdispatch.delivery_stats, smsdispatch.gateway_stats,
	smsdispatch.escalation_stats, smsdispatch.counter_snapshot
	TO smsdispatch_reader;
-- the range forms of the statistics and the HTML report run with the
-- caller's rights: readers read the columns they count (90_roles.sql)
GRANT EXECUTE ON FUNCTION smsdispatch.delivery_stats(timestamptz, timestamptz),
	smsdispatch.escalation_stats(timestamptz, timestamptz),
	smsdispatch.gateway_stats(timestamptz, timestamptz),
	smsdispatch.histogram_quantile(float8, float8[], bigint[]),
	smsdispatch.sms_outcome(text, text),
	smsdispatch.delivery_seconds(timestamptz, timestamptz, timestamptz),
	smsdispatch.number_quarantine(),
	smsdispatch.html_escape(text), smsdispatch.html_table(text, text),
	smsdispatch.svg_bar_chart(text, text, text[], text[], text[], float8[], boolean),
	sms_report_html(timestamptz, timestamptz)
	TO smsdispatch_reader;

-- admins read everything readers read
GRANT smsdispatch_reader TO smsdispatch_admin;
GRANT EXECUTE ON PROCEDURE smsdispatch.purge(interval, int, bigint, bigint, bigint, bigint, bigint)
	TO smsdispatch_admin;
GRANT EXECUTE ON FUNCTION smsdispatch.purge_batch(text, interval, timestamptz, int, bigint),
	smsdispatch.prevent_in_transaction_block(text), smsdispatch.redact_after()
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

-- Privileges on channel health and failover (71_channel_health.sql): readers
-- see each channel's state, for dashboards and the metrics exporter.
GRANT SELECT ON smsdispatch.channel_health TO smsdispatch_reader;
GRANT EXECUTE ON FUNCTION smsdispatch.ip2sms_health() TO smsdispatch_reader;

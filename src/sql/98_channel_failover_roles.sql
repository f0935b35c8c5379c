-- Privileges on the channels that failed over (71_channel_health.sql): the
-- failover duty, run by smsdispatch.run_once() as an admin, keeps the table;
-- readers see it, for dashboards.
REVOKE ALL ON smsdispatch.channel_failover FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON smsdispatch.channel_failover TO smsdispatch_admin;
GRANT SELECT ON smsdispatch.channel_failover TO smsdispatch_reader;

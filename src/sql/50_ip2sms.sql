-- The IP2SMS channel: its status-poll schedule and its counters.

-- How long to wait before the next status poll of an SMS submitted elapsed
-- ago, with base = smsdispatch.ip2sms_poll_interval: 1, 3, 6, 12, then 30
-- times base (10 s, 30 s, 1 min, 2 min, 5 min, 5 min... for 10 s). A
-- standard SQL body: its names are bound when it is created, so calling it
-- (the worker does, as superuser) looks nothing up through a search_path.
CREATE FUNCTION smsdispatch.ip2sms_poll_delay(elapsed interval, base interval)
RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
	SELECT base * CASE
		WHEN elapsed < base THEN 1
		WHEN elapsed < base * 4 THEN 3
		WHEN elapsed < base * 10 THEN 6
		WHEN elapsed < base * 22 THEN 12
		ELSE 30 END;
END;

-- Counters of the IP2SMS channel since stats_since() (they outlive a clean
-- restart; a crash or stats_reset() starts them at zero): requests by kind, answers by state, transport errors by
-- class, retries, request latency. Those of the calling database's worker
-- only, and database names it; zeros where no worker counted.
CREATE FUNCTION smsdispatch.stats()
RETURNS TABLE (name text, value bigint, database text)
AS 'MODULE_PATHNAME', 'sms_stats'
LANGUAGE C VOLATILE STRICT;

CREATE FUNCTION smsdispatch.stats_reset()
RETURNS void
AS 'MODULE_PATHNAME', 'sms_stats_reset'
LANGUAGE C VOLATILE STRICT;

-- When the counters last started from zero (the server's start where no
-- worker counted yet); NULL when not preloaded.
CREATE FUNCTION smsdispatch.stats_since()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'sms_stats_since'
LANGUAGE C VOLATILE;

-- Privileges: readers and admins see the counters, only admins reset them.
GRANT EXECUTE ON FUNCTION smsdispatch.stats() TO smsdispatch_reader, smsdispatch_admin;
GRANT EXECUTE ON FUNCTION smsdispatch.stats_reset() TO smsdispatch_admin;
GRANT EXECUTE ON FUNCTION smsdispatch.stats_since() TO smsdispatch_reader;

-- smsdispatch 1.1 -> 1.2. src/sql/ is the source of a fresh install; this
-- script makes each change of 1.2 to an existing 1.1 database, once per
-- object, in the order of the src/sql/ fragments that define them, so that
-- an upgraded database equals a fresh install (test/t/012_upgrade.pl).

\echo Use "ALTER EXTENSION smsdispatch UPDATE TO '1.2'" to load this file. \quit

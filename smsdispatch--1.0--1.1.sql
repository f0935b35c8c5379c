-- smsdispatch 1.0 -> 1.1. Every change to the extension's objects made in
-- src/sql/ since 1.0 is made here too, so that an upgraded database equals
-- a fresh install of 1.1 (test/t/012_upgrade.pl checks it).

\echo Use "ALTER EXTENSION smsdispatch UPDATE TO '1.1'" to load this file. \quit

/*-------------------------------------------------------------------------
 *
 * worker_database.c
 *	  The worker's wait for a database that does not exist yet.
 *
 * A database named in smsdispatch.database that does not exist gets a
 * worker all the same (launcher.c): it connects to no database
 * (pg_database is a shared catalog), says once that it waits, and checks
 * every naptime; once the database exists it exits so that the launcher
 * starts a worker that connects to it. Connecting to a database that does
 * not exist would end it with a FATAL error, again at every start.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"

#include "smsdispatch.h"

/*
 * Whether a database of that name exists; callable without a database of
 * our own (pg_database is shared; without a database no index is opened).
 */
static bool
database_exists(const char *name)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	bool		found;

	rel = table_open(DatabaseRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_database_datname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum(name));
	scan = systable_beginscan(rel, DatabaseNameIndexId, false, NULL, 1, &key);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/*
 * Waits, connected to no database, until the database dbname exists; then
 * ends the process so that the launcher starts a worker that connects to
 * it. Says so once, and checks every naptime.
 */
void
sms_worker_wait_for_database(const char *dbname)
{
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("smsdispatch worker");
	ereport(LOG,
			(errmsg("smsdispatch worker is waiting for database \"%s\" to exist",
					dbname),
			 errhint("Create the database or change smsdispatch.database; it is checked every smsdispatch.naptime.")));
	for (;;)
	{
		bool		exists;

		if (ShutdownRequestPending)
			sms_worker_stop();
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		exists = database_exists(dbname);
		CommitTransactionCommand();
		if (exists)
		{
			ereport(LOG,
					(errmsg("database \"%s\" exists now; the smsdispatch worker restarts to serve it",
							dbname)));
			proc_exit(1);
		}
		pgstat_report_activity(STATE_IDLE, "smsdispatch: waiting for its database");
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sms_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

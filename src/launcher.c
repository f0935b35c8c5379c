/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one background worker, connected to no database, that
 *	  starts one worker per served database and keeps the set current.
 *
 * smsdispatch.database names the databases served: one name (the
 * default, 'postgres'), a comma-separated list, or '*' for every database
 * that has the extension. Every naptime (and whenever one of its workers
 * starts or ends, or a CREATE EXTENSION commits) the launcher reads
 * pg_database, a shared catalog, and gives each served database a slot in
 * shared memory and a dynamic worker (worker.c) that connects to it by
 * oid. A listed database that does not exist gets a worker that waits for
 * it (worker_database.c); a listed one without the extension gets a worker
 * that waits for CREATE EXTENSION, as the one worker always did. With '*',
 * a worker that finds no extension ends and its database is not tried
 * again until a CREATE EXTENSION commits somewhere (the install script
 * calls smsdispatch.announce_extension()). A dropped database has no
 * worker any more (DROP DATABASE ends it), and one renamed out of the
 * list loses its worker; neither is started again. At most
 * smsdispatch.max_databases workers run; the databases beyond it are
 * named in a WARNING, once per change.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/procsignal.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_announce_extension);

/* Whether smsdispatch.database is '*': every database with the extension. */
bool
sms_serves_every_database(void)
{
	return sms_database != NULL && strcmp(sms_database, "*") == 0;
}

/*
 * Whether smsdispatch.database names this database in its list (names are
 * compared exactly, spaces around the commas ignored). False for '*'.
 */
bool
sms_database_listed(const char *dbname)
{
	const char *p = sms_database;

	if (p == NULL || sms_serves_every_database())
		return false;
	while (*p != '\0')
	{
		const char *end = strchr(p, ',');
		size_t		len = end ? (size_t) (end - p) : strlen(p);

		while (len > 0 && isspace((unsigned char) *p))
			p++, len--;
		while (len > 0 && isspace((unsigned char) p[len - 1]))
			len--;
		if (len == strlen(dbname) && strncmp(p, dbname, len) == 0)
			return true;
		if (end == NULL)
			break;
		p = end + 1;
	}
	return false;
}

/* Registers the launcher with the postmaster; from _PG_init when preloaded. */
void
sms_register_launcher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	strlcpy(worker.bgw_library_name, "smsdispatch", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "sms_launcher_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "smsdispatch launcher", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "smsdispatch launcher", BGW_MAXLEN);
	RegisterBackgroundWorker(&worker);
}

/* One database the launcher wants served: its oid (invalid: not there yet). */
typedef struct WantedDatabase
{
	Oid			oid;
	char		name[NAMEDATALEN];
} WantedDatabase;

/* the launcher's own state */
static BackgroundWorkerHandle **handles;	/* per slot, NULL when free */
static bool *stopping;			/* per slot: asked to end */
static Oid *ended_oid;			/* per slot: the database of its last worker */
static TimestampTz *ended_at;	/* and when that worker ended */
static List *no_extension_oids = NIL;	/* '*': workers found no extension
										 * (in TopMemoryContext) */
static uint32 known_generation = 0;
static char *last_unserved = NULL;	/* the databases the last WARNING named */

/* Whether one of the wanted databases is this slot's. */
static bool
slot_is_wanted(SmsDatabaseSlot *slot, WantedDatabase *wanted, int nwanted)
{
	for (int i = 0; i < nwanted; i++)
		if (wanted[i].oid == slot->dboid &&
			(OidIsValid(slot->dboid) || strcmp(wanted[i].name, slot->dbname) == 0))
			return true;
	return false;
}

/*
 * The databases to serve now, from pg_database (read in a transaction of
 * its own, connected to none): with '*', every database that allows
 * connections and is no template, but those whose worker found no
 * extension; else each listed one, by oid when it exists.
 */
static WantedDatabase *
read_wanted(int *nwanted)
{
	MemoryContext caller = CurrentMemoryContext;
	WantedDatabase *wanted = palloc0(sizeof(WantedDatabase) * 64);
	int			cap = 64;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	bool		every = sms_serves_every_database();

	*nwanted = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		const char *name = NameStr(db->datname);

		if (every ? (!db->datallowconn || db->datistemplate ||
					 list_member_oid(no_extension_oids, db->oid)) :
			!sms_database_listed(name))
			continue;
		if (*nwanted == cap)
		{
			cap *= 2;
			wanted = repalloc(wanted, sizeof(WantedDatabase) * cap);
		}
		wanted[*nwanted].oid = db->oid;
		strlcpy(wanted[*nwanted].name, name, NAMEDATALEN);
		(*nwanted)++;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* whichever context the commit leaves current (versions differ) */
	MemoryContextSwitchTo(caller);

	/* listed databases that do not exist (yet) get a worker that waits */
	if (!every)
	{
		char	   *copy = pstrdup(sms_database);
		char	   *tok;
		char	   *save;

		for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		{
			bool		found = false;
			char	   *end;

			while (isspace((unsigned char) *tok))
				tok++;
			end = tok + strlen(tok);
			while (end > tok && isspace((unsigned char) end[-1]))
				*--end = '\0';
			for (int i = 0; i < *nwanted && !found; i++)
				found = strcmp(wanted[i].name, tok) == 0;
			if (found || *tok == '\0')
				continue;
			if (*nwanted == cap)
			{
				cap *= 2;
				wanted = repalloc(wanted, sizeof(WantedDatabase) * cap);
			}
			wanted[*nwanted].oid = InvalidOid;
			strlcpy(wanted[*nwanted].name, tok, NAMEDATALEN);
			(*nwanted)++;
		}
	}
	return wanted;
}

/*
 * Frees the slots whose worker ended. A '*' worker that found no extension
 * leaves its database out until the next CREATE EXTENSION, unless one
 * committed while it looked.
 */
static void
reap_workers(void)
{
	uint32		generation = pg_atomic_read_u32(&sms_shared->extension_generation);

	if (generation != known_generation)
	{
		list_free(no_extension_oids);
		no_extension_oids = NIL;
		known_generation = generation;
	}
	for (int i = 0; i < sms_shared->nslots; i++)
	{
		SmsDatabaseSlot *slot = &sms_shared->slots[i];
		pid_t		pid;

		if (handles[i] == NULL ||
			GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED)
			continue;
		if (slot->no_extension && slot->seen_generation == generation)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			no_extension_oids = lappend_oid(no_extension_oids, slot->dboid);
			MemoryContextSwitchTo(old);
		}
		pfree(handles[i]);
		handles[i] = NULL;
		stopping[i] = false;
		ended_oid[i] = slot->dboid;
		ended_at[i] = GetCurrentTimestamp();
		slot->in_use = false;
	}
}

/*
 * Whether the worker of this database ended less than a naptime ago: it
 * starts again after that, not at once, so that a worker that cannot work
 * (its database being dropped, say) is not restarted in a loop.
 */
static bool
ended_just_now(Oid dboid)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < sms_shared->nslots; i++)
		if (OidIsValid(dboid) && ended_oid[i] == dboid &&
			!TimestampDifferenceExceeds(ended_at[i], now, sms_naptime_ms))
			return true;
	return false;
}

/*
 * Starts a worker for a wanted database in a free slot; false when the
 * worker could not be registered (max_worker_processes), which is said.
 */
static bool
start_worker(int i, const WantedDatabase *db)
{
	SmsDatabaseSlot *slot = &sms_shared->slots[i];
	BackgroundWorker worker;
	SmsChannelHealth *h = &slot->ip2sms;
	MemoryContext old;
	bool		registered;

	slot->dboid = db->oid;
	strlcpy(slot->dbname, db->name, NAMEDATALEN);
	slot->worker_latch = NULL;
	slot->worker_pid = 0;
	slot->no_extension = false;
	slot->inbound_abandoned_id = 0;
	SpinLockAcquire(&h->mutex);
	h->state = SMS_CHANNEL_OK;
	h->since = 0;
	h->last_error[0] = '\0';
	SpinLockRelease(&h->mutex);
	pg_write_barrier();
	slot->in_use = true;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "smsdispatch", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "sms_worker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "smsdispatch worker", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "smsdispatch worker", BGW_MAXLEN);
	worker.bgw_main_arg = Int32GetDatum(i);
	worker.bgw_notify_pid = MyProcPid;
	/* the handle lives until the worker is reaped, past this scan */
	old = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &handles[i]);
	MemoryContextSwitchTo(old);
	if (registered)
		return true;
	slot->in_use = false;
	handles[i] = NULL;
	return false;
}

/*
 * Says, once per change, which wanted databases have no worker: the slots
 * (smsdispatch.max_databases) or the background worker processes
 * (max_worker_processes) ran out.
 */
static void
warn_unserved(StringInfo unserved, bool out_of_processes)
{
	if (unserved->len == 0)
	{
		if (last_unserved)
			pfree(last_unserved);
		last_unserved = NULL;
		return;
	}
	if (last_unserved != NULL && strcmp(last_unserved, unserved->data) == 0)
		return;
	if (last_unserved)
		pfree(last_unserved);
	last_unserved = MemoryContextStrdup(TopMemoryContext, unserved->data);
	if (out_of_processes)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("smsdispatch: no background worker process is free for database(s) %s",
						unserved->data),
				 errhint("Raise max_worker_processes (one per served database, one for the launcher, one per inbound handler) and restart the server.")));
	else
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("smsdispatch: smsdispatch.max_databases (%d) databases are served already; database(s) %s are not",
						sms_max_databases, unserved->data),
				 errhint("Raise smsdispatch.max_databases and max_worker_processes and restart the server, or name fewer databases in smsdispatch.database.")));
}

/*
 * One look at what should run: frees the slots of ended workers, asks the
 * workers of databases no longer wanted to end, and starts workers for
 * the wanted databases that have none, as far as slots and processes go.
 */
static void
launcher_scan(void)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "smsdispatch launcher scan",
											  ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	WantedDatabase *wanted;
	int			nwanted;
	StringInfoData unserved;
	bool		out_of_processes = false;
	int			nleft_out = 0;

	reap_workers();
	wanted = read_wanted(&nwanted);
	for (int i = 0; i < sms_shared->nslots; i++)
	{
		SmsDatabaseSlot *slot = &sms_shared->slots[i];

		/* a waiting worker ends by itself once its database exists */
		if (handles[i] != NULL && !stopping[i] && OidIsValid(slot->dboid) &&
			!slot_is_wanted(slot, wanted, nwanted))
		{
			ereport(LOG,
					(errmsg("smsdispatch launcher: database \"%s\" is not served any more; its worker ends",
							slot->dbname)));
			TerminateBackgroundWorker(handles[i]);
			stopping[i] = true;
		}
	}
	initStringInfo(&unserved);
	for (int w = 0; w < nwanted; w++)
	{
		bool		served = false;
		int			free_slot = -1;

		for (int i = 0; i < sms_shared->nslots && !served; i++)
		{
			SmsDatabaseSlot *slot = &sms_shared->slots[i];

			if (handles[i] == NULL)
			{
				if (free_slot < 0)
					free_slot = i;
				continue;
			}
			/* a waiting worker serves its name until it ends by itself */
			served = OidIsValid(slot->dboid) ? slot->dboid == wanted[w].oid :
				strcmp(slot->dbname, wanted[w].name) == 0;
		}
		if (served || ended_just_now(wanted[w].oid))
			continue;
		if (free_slot >= 0 && !out_of_processes &&
			start_worker(free_slot, &wanted[w]))
			continue;
		if (free_slot >= 0)
			out_of_processes = true;
		if (nleft_out < SMS_LEFT_OUT_SHOWN && OidIsValid(wanted[w].oid))
			sms_shared->left_out[nleft_out++] = wanted[w].oid;
		appendStringInfo(&unserved, "%s\"%s\"", unserved.len > 0 ? ", " : "",
						 wanted[w].name);
	}
	pg_write_barrier();
	sms_shared->nleft_out = nleft_out;
	warn_unserved(&unserved, out_of_processes);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/*
 * At the launcher's exit: its workers end with it (a new launcher could not
 * follow workers it did not start), and backends stop announcing to it.
 */
static void
launcher_detach(int code, Datum arg)
{
	for (int i = 0; i < sms_shared->nslots; i++)
		if (handles[i] != NULL)
			TerminateBackgroundWorker(handles[i]);
	sms_shared->launcher_latch = NULL;
}

/*
 * Waits until the workers of a launcher before us are gone, and frees
 * their slots: they were ended with it.
 */
static void
wait_for_earlier_workers(void)
{
	for (;;)
	{
		bool		left = false;

		for (int i = 0; i < sms_shared->nslots; i++)
		{
			SmsDatabaseSlot *slot = &sms_shared->slots[i];

			if (slot->in_use && slot->worker_pid == 0)
				slot->in_use = false;
			left |= slot->in_use;
		}
		if (!left || ShutdownRequestPending)
			return;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Entry point of the launcher (see the file header). */
void
sms_launcher_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	pqsignal(SIGUSR1, procsignal_sigusr1_handler);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("smsdispatch launcher");

	handles = MemoryContextAllocZero(TopMemoryContext,
									 sizeof(BackgroundWorkerHandle *) * sms_shared->nslots);
	stopping = MemoryContextAllocZero(TopMemoryContext, sizeof(bool) * sms_shared->nslots);
	ended_oid = MemoryContextAllocZero(TopMemoryContext, sizeof(Oid) * sms_shared->nslots);
	ended_at = MemoryContextAllocZero(TopMemoryContext,
									  sizeof(TimestampTz) * sms_shared->nslots);
	wait_for_earlier_workers();
	known_generation = pg_atomic_read_u32(&sms_shared->extension_generation);
	before_shmem_exit(launcher_detach, (Datum) 0);
	sms_shared->launcher_latch = MyLatch;
	ereport(LOG,
			(errmsg("smsdispatch launcher started; it serves %s",
					sms_serves_every_database() ? "every database with the extension" :
					psprintf("smsdispatch.database = '%s'", sms_database))));

	for (;;)
	{
		/* ends as a worker does, and is started again 5 s later */
		if (ShutdownRequestPending)
			sms_worker_stop();
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		pgstat_report_activity(STATE_RUNNING, "smsdispatch: launching workers");
		launcher_scan();
		pgstat_report_activity(STATE_IDLE, "smsdispatch: launcher");
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sms_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* the current transaction runs CREATE EXTENSION in a served database */
static bool announce_pending = false;

/* Tells the launcher, once the CREATE EXTENSION commits, to look again. */
static void
announce_xact_callback(XactEvent event, void *arg)
{
	Latch	   *latch;

	if (!announce_pending ||
		(event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT))
		return;
	announce_pending = false;
	if (event != XACT_EVENT_COMMIT)
		return;
	pg_atomic_fetch_add_u32(&sms_shared->extension_generation, 1);
	latch = sms_shared->launcher_latch;
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * SQL: smsdispatch.announce_extension(), run by the install script. When
 * this database is served, the launcher is told at COMMIT, so that its
 * worker starts at once; when it is not, a WARNING says so (a database
 * whose SMS nobody sends must not look like one that works). Nothing when
 * smsdispatch is not preloaded: run_once() serves such servers.
 */
Datum
sms_announce_extension(PG_FUNCTION_ARGS)
{
	const char *dbname;

	if (sms_shared == NULL)
		PG_RETURN_VOID();
	dbname = get_database_name(MyDatabaseId);
	if (sms_serves_every_database() || sms_database_listed(dbname))
	{
		static bool registered = false;

		if (!registered)
			RegisterXactCallback(announce_xact_callback, NULL);
		registered = true;
		announce_pending = true;
	}
	else
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("no smsdispatch worker serves database \"%s\": its SMS stay queued",
						dbname),
				 errdetail("smsdispatch.database is '%s'.", sms_database),
				 errhint("Add the database to smsdispatch.database (a comma-separated list, or '*' for every database with the extension) and restart the server.")));
	PG_RETURN_VOID();
}

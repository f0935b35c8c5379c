/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  The IP2SMS channel's counters in shared memory: requests by kind,
 *	  answers by state, transport errors by class, retries, and request
 *	  latency (sum, count and histogram buckets), one set per served
 *	  database. Shown by smsdispatch.stats() and zeroed by
 *	  smsdispatch.stats_reset(), each for the calling database only: an
 *	  admin of one database learns nothing of another's traffic.
 *
 * Counters are 64-bit atomics: the worker adds, any backend reads, and no
 * lock is held on the worker's hot path. They outlive a clean restart: the
 * postmaster writes them to a file in pg_stat/ at shutdown and reads it back
 * at start, as pg_stat_statements does. After a crash (or stats_reset())
 * they start at zero, and "since" says from when they count, so that
 * counter snapshots tell a reset from a restart. A worker takes the set of
 * its database at start (sms_stats_attach): the one it had, else a free
 * one, else one of a database no worker serves any more.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "smsdispatch.h"
#include "ip2sms.h"
#include "ip2sms_xml.h"

PG_FUNCTION_INFO_V1(sms_stats);
PG_FUNCTION_INFO_V1(sms_stats_reset);
PG_FUNCTION_INFO_V1(sms_stats_since);

/* the counters across a clean restart (pg_stat/ survives one, not a crash) */
#define STATS_FILE		PGSTAT_STAT_PERMANENT_DIRECTORY "/smsdispatch_counters.stat"
#define STATS_FILE_MAGIC	0x534d5302	/* "SMS" 2: one set per database */

/* names of the fixed counters, in SmsStat order */
static const char *const fixed_names[SMS_STAT_FIXED_COUNT] = {
	"requests_send", "requests_status",
	"errors_connect", "errors_timeout", "errors_http_5xx", "errors_http_401",
	"errors_http_other", "errors_parse", "retries"
};

/* latency histogram: upper bounds in microseconds, then one open bucket */
static const int64 latency_bounds[] = {10000, 50000, 100000, 500000, 1000000, 5000000};
static const char *const latency_names[] = {
	"latency_le_10ms", "latency_le_50ms", "latency_le_100ms",
	"latency_le_500ms", "latency_le_1s", "latency_le_5s", "latency_gt_5s"
};

#define NBOUNDS		lengthof(latency_bounds)
#define MAX_STATES	16

typedef struct SmsStatsShared
{
	pg_atomic_uint64 since;		/* TimestampTz from which they count */
	pg_atomic_uint64 fixed[SMS_STAT_FIXED_COUNT];
	pg_atomic_uint64 answers[MAX_STATES];
	pg_atomic_uint64 latency_us_sum;
	pg_atomic_uint64 latency_count;
	pg_atomic_uint64 latency_buckets[NBOUNDS + 1];
} SmsStatsShared;

/* every field of SmsStatsShared is one atomic: the file holds them in order */
#define NCOUNTERS	(sizeof(SmsStatsShared) / sizeof(pg_atomic_uint64))

/* the counters of one database */
typedef struct SmsStatsEntry
{
	Oid			dboid;			/* InvalidOid: free */
	SmsStatsShared counters;
} SmsStatsEntry;

typedef struct SmsStatsArea
{
	slock_t		mutex;			/* protects the entries' dboid */
	TimestampTz created;		/* since: of a database nobody counted for */
	int			nentries;		/* smsdispatch.max_databases */
	SmsStatsEntry entries[FLEXIBLE_ARRAY_MEMBER];
} SmsStatsArea;

static SmsStatsArea *area = NULL;
/* in a database's worker: the counters it adds to */
static SmsStatsShared *stats = NULL;

/* The size of the counters of smsdispatch.max_databases databases. */
static Size
stats_area_size(void)
{
	return add_size(offsetof(SmsStatsArea, entries),
					mul_size(sms_max_databases, sizeof(SmsStatsEntry)));
}

/* Asks for the counters' shared memory; from the shmem request hook. */
void
sms_stats_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(stats_area_size()));
}

/*
 * Sets counters c to values[] (NCOUNTERS of them, "since" first), or zeroes
 * them counting from now when values is NULL. init: the first time, when
 * the atomics are not initialised yet.
 */
static void
set_all(SmsStatsShared *set, const uint64 *values, bool init)
{
	pg_atomic_uint64 *c = (pg_atomic_uint64 *) set;
	int			i;

	for (i = 0; i < NCOUNTERS; i++)
	{
		uint64		v;

		if (values)
			v = values[i];
		else if (&c[i] == &set->since)
			v = (uint64) GetCurrentTimestamp();
		else
			v = 0;
		if (init)
			pg_atomic_init_u64(&c[i], v);
		else
			pg_atomic_write_u64(&c[i], v);
	}
}

/* The counters of a database, or NULL when none counted for it. */
static SmsStatsShared *
database_counters(Oid dboid)
{
	for (int e = 0; e < area->nentries; e++)
		if (area->entries[e].dboid == dboid)
			return &area->entries[e].counters;
	return NULL;
}

/*
 * Makes this worker count into its database's counters: those it had
 * before (a restart keeps them), else a free set, else the set of a
 * database no worker serves, zeroed. Nothing when not preloaded.
 */
void
sms_stats_attach(Oid dboid)
{
	SmsStatsEntry *taken = NULL;

	if (area == NULL)
		return;
	SpinLockAcquire(&area->mutex);
	for (int e = 0; e < area->nentries && taken == NULL; e++)
		if (area->entries[e].dboid == dboid)
			taken = &area->entries[e];
	for (int e = 0; e < area->nentries && taken == NULL; e++)
		if (!OidIsValid(area->entries[e].dboid) ||
			sms_database_slot(area->entries[e].dboid) == NULL)
			taken = &area->entries[e];
	if (taken != NULL && taken->dboid != dboid)
	{
		taken->dboid = dboid;
		set_all(&taken->counters, NULL, false);
	}
	SpinLockRelease(&area->mutex);
	stats = taken ? &taken->counters : NULL;
}

/*
 * Writes the counters to STATS_FILE at a clean shutdown of the postmaster
 * (on_shmem_exit; code is non-zero after a crash, when nothing is written).
 * Written to a temporary file and renamed, so a half-written file is never
 * read.
 */
static void
stats_save(int code, Datum arg)
{
	uint32		header[3] = {STATS_FILE_MAGIC, NCOUNTERS, 0};
	FILE	   *f;
	bool		ok;

	if (code != 0 || area == NULL)
		return;
	header[2] = area->nentries;
	f = AllocateFile(STATS_FILE ".tmp", PG_BINARY_W);
	ok = f != NULL && fwrite(header, sizeof(header), 1, f) == 1;
	for (int e = 0; ok && e < area->nentries; e++)
	{
		pg_atomic_uint64 *c = (pg_atomic_uint64 *) &area->entries[e].counters;
		uint64		values[NCOUNTERS];
		uint32		dboid = area->entries[e].dboid;

		for (int i = 0; i < NCOUNTERS; i++)
			values[i] = pg_atomic_read_u64(&c[i]);
		ok = fwrite(&dboid, sizeof(dboid), 1, f) == 1 &&
			fwrite(values, sizeof(values), 1, f) == 1;
	}
	if (f == NULL || !ok || FreeFile(f) != 0)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not write smsdispatch counters to file \"%s\": %m",
						STATS_FILE ".tmp")));
		if (f && !ok)
			FreeFile(f);
		unlink(STATS_FILE ".tmp");
		return;
	}
	(void) durable_rename(STATS_FILE ".tmp", STATS_FILE, LOG);
}

/*
 * Sets every database's counters from what a clean shutdown left, or
 * zeroes them (no file, or not ours). The file is removed, so that a crash
 * later does not bring back stale values. The postmaster only.
 */
static void
stats_load(void)
{
	uint32		header[3];
	FILE	   *f;
	bool		ok;
	int			e = 0;

	f = AllocateFile(STATS_FILE, PG_BINARY_R);
	if (f == NULL && errno != ENOENT)
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not read smsdispatch counters from file \"%s\": %m",
						STATS_FILE)));
	ok = f != NULL && fread(header, sizeof(header), 1, f) == 1 &&
		header[0] == STATS_FILE_MAGIC && header[1] == NCOUNTERS;
	if (f != NULL && !ok)
		ereport(LOG,
				(errmsg("ignoring smsdispatch counters file \"%s\": not written by this version",
						STATS_FILE)));
	for (; ok && e < Min(header[2], (uint32) area->nentries); e++)
	{
		uint64		values[NCOUNTERS];
		uint32		dboid;

		if (fread(&dboid, sizeof(dboid), 1, f) != 1 ||
			fread(values, sizeof(uint64), NCOUNTERS, f) != NCOUNTERS)
			break;
		area->entries[e].dboid = dboid;
		set_all(&area->entries[e].counters, values, true);
	}
	for (; e < area->nentries; e++)
	{
		area->entries[e].dboid = InvalidOid;
		set_all(&area->entries[e].counters, NULL, true);
	}
	if (f != NULL)
	{
		FreeFile(f);
		unlink(STATS_FILE);
	}
}

/*
 * Attaches to (or creates) the counters; from the shmem startup hook. The
 * postmaster, which creates them, loads what the last clean shutdown saved
 * and arranges for the next save.
 */
void
sms_stats_shmem_startup(void)
{
	bool		found;

	StaticAssertStmt(lengthof(latency_names) == NBOUNDS + 1,
					 "one name per latency bucket");
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	area = ShmemInitStruct("smsdispatch ip2sms stats", stats_area_size(), &found);
	if (!found)
	{
		SpinLockInit(&area->mutex);
		area->created = GetCurrentTimestamp();
		area->nentries = sms_max_databases;
		if (!IsUnderPostmaster)
			stats_load();
		else
			for (int e = 0; e < area->nentries; e++)
			{
				area->entries[e].dboid = InvalidOid;
				set_all(&area->entries[e].counters, NULL, true);
			}
	}
	LWLockRelease(AddinShmemInitLock);
	if (!IsUnderPostmaster)
		on_shmem_exit(stats_save, (Datum) 0);
}

/* Adds one to a fixed counter (nothing when not preloaded). */
void
sms_stats_count(SmsStat stat)
{
	if (stats)
		pg_atomic_fetch_add_u64(&stats->fixed[stat], 1);
}

/* Counts one answer carrying this state word. */
void
sms_stats_answer(const char *state)
{
	int			i = ip2sms_state_index(state);

	if (stats && i >= 0)
		pg_atomic_fetch_add_u64(&stats->answers[i], 1);
}

/* Records one request's latency in the sum and its histogram bucket. */
void
sms_stats_latency(int64 usec)
{
	int			b;

	if (stats == NULL)
		return;
	for (b = 0; b < NBOUNDS; b++)
		if (usec <= latency_bounds[b])
			break;
	pg_atomic_fetch_add_u64(&stats->latency_us_sum, usec);
	pg_atomic_fetch_add_u64(&stats->latency_count, 1);
	pg_atomic_fetch_add_u64(&stats->latency_buckets[b], 1);
}

/* Refuses to run when the counters were never set up. */
static void
require_stats(void)
{
	if (area == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("smsdispatch statistics are not available"),
				 errhint("Add smsdispatch to shared_preload_libraries and restart the server.")));
}

/* Adds one (name, value, database) row to the result; NULL counts zero. */
static void
put_row(ReturnSetInfo *rsinfo, const char *name, pg_atomic_uint64 *counter,
		Datum database)
{
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	values[0] = CStringGetTextDatum(name);
	values[1] = Int64GetDatum(counter ? (int64) pg_atomic_read_u64(counter) : 0);
	values[2] = database;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * smsdispatch.stats(): every counter of the calling database as (name
 * text, value bigint, database text), in a fixed order; zeros where no
 * worker counted (a database nobody serves).
 */
Datum
sms_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	SmsStatsShared *mine;
	Datum		db;
	int			i;

	require_stats();
	mine = database_counters(MyDatabaseId);
	InitMaterializedSRF(fcinfo, 0);
	db = CStringGetTextDatum(get_database_name(MyDatabaseId));
#define COUNTER(field) (mine ? &mine->field : NULL)
	for (i = 0; i < SMS_STAT_FIXED_COUNT; i++)
		put_row(rsinfo, fixed_names[i], COUNTER(fixed[i]), db);
	for (i = 0; i < ip2sms_nstates; i++)
	{
		char		name[64];

		snprintf(name, sizeof(name), "answers_%s", ip2sms_states[i].word);
		put_row(rsinfo, name, COUNTER(answers[i]), db);
	}
	put_row(rsinfo, "latency_us_sum", COUNTER(latency_us_sum), db);
	put_row(rsinfo, "latency_count", COUNTER(latency_count), db);
	for (i = 0; i <= NBOUNDS; i++)
		put_row(rsinfo, latency_names[i], COUNTER(latency_buckets[i]), db);
#undef COUNTER
	return (Datum) 0;
}

/* smsdispatch.stats_reset(): zeroes every counter of the calling database. */
Datum
sms_stats_reset(PG_FUNCTION_ARGS)
{
	SmsStatsShared *mine;

	require_stats();
	mine = database_counters(MyDatabaseId);
	if (mine)
		set_all(mine, NULL, false);
	PG_RETURN_VOID();
}

/*
 * smsdispatch.stats_since(): when the calling database's counters started
 * from zero (a server start after a crash or without saved counters, or
 * stats_reset()); the server's start where no worker counted yet; NULL
 * when the library is not preloaded.
 */
Datum
sms_stats_since(PG_FUNCTION_ARGS)
{
	SmsStatsShared *mine;

	if (area == NULL)
		PG_RETURN_NULL();
	mine = database_counters(MyDatabaseId);
	PG_RETURN_TIMESTAMPTZ(mine ? (TimestampTz) pg_atomic_read_u64(&mine->since) :
						  area->created);
}

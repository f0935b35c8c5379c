/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  The IP2SMS channel's counters in shared memory: requests by kind,
 *	  answers by state, transport errors by class, retries, and request
 *	  latency (sum, count and histogram buckets). Shown by
 *	  smsdispatch.stats() and zeroed by smsdispatch.stats_reset().
 *
 * Counters are 64-bit atomics: the worker adds, any backend reads, and no
 * lock is held on the worker's hot path. They outlive a clean restart: the
 * postmaster writes them to a file in pg_stat/ at shutdown and reads it back
 * at start, as pg_stat_statements does. After a crash (or stats_reset())
 * they start at zero, and "since" says from when they count, so that
 * counter snapshots tell a reset from a restart.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

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

#include "ip2sms.h"
#include "ip2sms_xml.h"

PG_FUNCTION_INFO_V1(sms_stats);
PG_FUNCTION_INFO_V1(sms_stats_reset);
PG_FUNCTION_INFO_V1(sms_stats_since);

/* the counters across a clean restart (pg_stat/ survives one, not a crash) */
#define STATS_FILE		PGSTAT_STAT_PERMANENT_DIRECTORY "/smsdispatch_counters.stat"
#define STATS_FILE_MAGIC	0x534d5301	/* "SMS" 1 */

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

static SmsStatsShared *stats = NULL;

/* Asks for the counters' shared memory; from the shmem request hook. */
void
sms_stats_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SmsStatsShared)));
}

/*
 * Sets the counters to values[] (NCOUNTERS of them, "since" first), or
 * zeroes them counting from now when values is NULL. init: the first time,
 * when the atomics are not initialised yet.
 */
static void
set_all(const uint64 *values, bool init)
{
	pg_atomic_uint64 *c = (pg_atomic_uint64 *) stats;
	int			i;

	for (i = 0; i < NCOUNTERS; i++)
	{
		uint64		v;

		if (values)
			v = values[i];
		else if (&c[i] == &stats->since)
			v = (uint64) GetCurrentTimestamp();
		else
			v = 0;
		if (init)
			pg_atomic_init_u64(&c[i], v);
		else
			pg_atomic_write_u64(&c[i], v);
	}
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
	pg_atomic_uint64 *c = (pg_atomic_uint64 *) stats;
	uint64		values[NCOUNTERS];
	uint32		header[2] = {STATS_FILE_MAGIC, NCOUNTERS};
	FILE	   *f;
	int			i;

	if (code != 0 || stats == NULL)
		return;
	for (i = 0; i < NCOUNTERS; i++)
		values[i] = pg_atomic_read_u64(&c[i]);
	f = AllocateFile(STATS_FILE ".tmp", PG_BINARY_W);
	if (f == NULL ||
		fwrite(header, sizeof(header), 1, f) != 1 ||
		fwrite(values, sizeof(values), 1, f) != 1 ||
		FreeFile(f) != 0)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not write smsdispatch counters to file \"%s\": %m",
						STATS_FILE ".tmp")));
		if (f)
			FreeFile(f);
		unlink(STATS_FILE ".tmp");
		return;
	}
	(void) durable_rename(STATS_FILE ".tmp", STATS_FILE, LOG);
}

/*
 * Reads the counters a clean shutdown left into values[]; false (counters
 * start at zero) when there is no file or it is not ours. The file is
 * removed, so that a crash later does not bring back stale values.
 */
static bool
stats_load(uint64 *values)
{
	uint32		header[2];
	FILE	   *f;
	bool		ok;

	f = AllocateFile(STATS_FILE, PG_BINARY_R);
	if (f == NULL)
	{
		if (errno != ENOENT)
			ereport(LOG,
					(errcode_for_file_access(),
					 errmsg("could not read smsdispatch counters from file \"%s\": %m",
							STATS_FILE)));
		return false;
	}
	ok = fread(header, sizeof(header), 1, f) == 1 &&
		header[0] == STATS_FILE_MAGIC && header[1] == NCOUNTERS &&
		fread(values, sizeof(uint64), NCOUNTERS, f) == NCOUNTERS;
	FreeFile(f);
	unlink(STATS_FILE);
	if (!ok)
		ereport(LOG,
				(errmsg("ignoring smsdispatch counters file \"%s\": not written by this version",
						STATS_FILE)));
	return ok;
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
	stats = ShmemInitStruct("smsdispatch ip2sms stats", sizeof(SmsStatsShared), &found);
	if (!found)
	{
		uint64		values[NCOUNTERS];

		set_all(!IsUnderPostmaster && stats_load(values) ? values : NULL, true);
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
	if (stats == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("smsdispatch statistics are not available"),
				 errhint("Add smsdispatch to shared_preload_libraries and restart the server.")));
}

/* Adds one (name, value) row to the result. */
static void
put_row(ReturnSetInfo *rsinfo, const char *name, pg_atomic_uint64 *counter)
{
	Datum		values[2];
	bool		nulls[2] = {false, false};

	values[0] = CStringGetTextDatum(name);
	values[1] = Int64GetDatum((int64) pg_atomic_read_u64(counter));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * smsdispatch.stats(): every counter as (name text, value bigint), in a
 * fixed order.
 */
Datum
sms_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	require_stats();
	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < SMS_STAT_FIXED_COUNT; i++)
		put_row(rsinfo, fixed_names[i], &stats->fixed[i]);
	for (i = 0; i < ip2sms_nstates; i++)
	{
		char		name[64];

		snprintf(name, sizeof(name), "answers_%s", ip2sms_states[i].word);
		put_row(rsinfo, name, &stats->answers[i]);
	}
	put_row(rsinfo, "latency_us_sum", &stats->latency_us_sum);
	put_row(rsinfo, "latency_count", &stats->latency_count);
	for (i = 0; i <= NBOUNDS; i++)
		put_row(rsinfo, latency_names[i], &stats->latency_buckets[i]);
	return (Datum) 0;
}

/* smsdispatch.stats_reset(): zeroes every counter. */
Datum
sms_stats_reset(PG_FUNCTION_ARGS)
{
	require_stats();
	set_all(NULL, false);
	PG_RETURN_VOID();
}

/*
 * smsdispatch.stats_since(): when the counters started from zero (a server
 * start after a crash or without saved counters, or stats_reset()); NULL
 * when the library is not preloaded.
 */
Datum
sms_stats_since(PG_FUNCTION_ARGS)
{
	if (stats == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ((TimestampTz) pg_atomic_read_u64(&stats->since));
}

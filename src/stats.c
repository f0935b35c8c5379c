/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  The IP2SMS channel's counters in shared memory: requests by kind,
 *	  answers by state, transport errors by class, retries, and request
 *	  latency (sum, count and histogram buckets). Shown by
 *	  smsdispatch.stats() and zeroed by smsdispatch.stats_reset().
 *
 * Counters are 64-bit atomics: the worker adds, any backend reads, and no
 * lock is held on the worker's hot path. They live as long as the server
 * (a restart starts them at zero).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "ip2sms.h"
#include "ip2sms_xml.h"

PG_FUNCTION_INFO_V1(sms_stats);
PG_FUNCTION_INFO_V1(sms_stats_reset);

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
	pg_atomic_uint64 fixed[SMS_STAT_FIXED_COUNT];
	pg_atomic_uint64 answers[MAX_STATES];
	pg_atomic_uint64 latency_us_sum;
	pg_atomic_uint64 latency_count;
	pg_atomic_uint64 latency_buckets[NBOUNDS + 1];
} SmsStatsShared;

static SmsStatsShared *stats = NULL;

/* Asks for the counters' shared memory; from the shmem request hook. */
void
sms_stats_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SmsStatsShared)));
}

/* Zeroes every counter. */
static void
reset_all(void)
{
	int			i;

	for (i = 0; i < SMS_STAT_FIXED_COUNT; i++)
		pg_atomic_write_u64(&stats->fixed[i], 0);
	for (i = 0; i < MAX_STATES; i++)
		pg_atomic_write_u64(&stats->answers[i], 0);
	pg_atomic_write_u64(&stats->latency_us_sum, 0);
	pg_atomic_write_u64(&stats->latency_count, 0);
	for (i = 0; i <= NBOUNDS; i++)
		pg_atomic_write_u64(&stats->latency_buckets[i], 0);
}

/* Attaches to (or creates) the counters; from the shmem startup hook. */
void
sms_stats_shmem_startup(void)
{
	bool		found;
	int			i;

	StaticAssertStmt(lengthof(latency_names) == NBOUNDS + 1,
					 "one name per latency bucket");
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats = ShmemInitStruct("smsdispatch ip2sms stats", sizeof(SmsStatsShared), &found);
	if (!found)
	{
		for (i = 0; i < SMS_STAT_FIXED_COUNT; i++)
			pg_atomic_init_u64(&stats->fixed[i], 0);
		for (i = 0; i < MAX_STATES; i++)
			pg_atomic_init_u64(&stats->answers[i], 0);
		pg_atomic_init_u64(&stats->latency_us_sum, 0);
		pg_atomic_init_u64(&stats->latency_count, 0);
		for (i = 0; i <= NBOUNDS; i++)
			pg_atomic_init_u64(&stats->latency_buckets[i], 0);
	}
	LWLockRelease(AddinShmemInitLock);
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

		snprintf(name, sizeof(name), "answers_%s", ip2sms_states[i]);
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
	reset_all();
	PG_RETURN_VOID();
}

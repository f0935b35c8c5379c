/*-------------------------------------------------------------------------
 *
 * pg_compat.h
 *	  The one place that knows which PostgreSQL major smsdispatch is built
 *	  against (15 to 18).
 *
 * Every PG_VERSION_NUM test of the module lives here. Where a server
 * function changed its arguments between majors, a small wrapper named
 * after what smsdispatch uses it for hides the difference, so that the rest
 * of the code reads the same on every major. Each wrapper says which majors
 * changed what.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SMSDISPATCH_PG_COMPAT_H
#define SMSDISPATCH_PG_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 150000 || PG_VERSION_NUM >= 190000
#error "smsdispatch supports PostgreSQL 15, 16, 17 and 18"
#endif

/* 16 moved the varlena macros (VARSIZE_ANY_EXHDR, ...) out of postgres.h */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

#include "access/genam.h"
#include "executor/executor.h"
#include "nodes/bitmapset.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#if PG_VERSION_NUM >= 160000
#include "parser/parse_relation.h"
#endif

/*
 * The module's magic block: from 18 on it also carries the module's name
 * and version, which pg_get_loaded_modules() shows.
 */
#ifdef PG_MODULE_MAGIC_EXT
#define SMS_MODULE_MAGIC \
	PG_MODULE_MAGIC_EXT(.name = "smsdispatch", .version = SMS_MODULE_VERSION)
#else
#define SMS_MODULE_MAGIC PG_MODULE_MAGIC
#endif

/*
 * A wait event set that lives until FreeWaitEventSet(), whatever
 * transaction or resource owner is current: the worker keeps one across
 * many transactions. 17 replaced the memory context argument by a resource
 * owner; NULL there means none, the set in TopMemoryContext.
 */
static inline WaitEventSet *
sms_create_lasting_wait_event_set(int nevents)
{
#if PG_VERSION_NUM >= 170000
	return CreateWaitEventSet(NULL, nevents);
#else
	return CreateWaitEventSet(TopMemoryContext, nevents);
#endif
}

/*
 * The range table of an executor state that writes tables through
 * ResultRelInfo, without a plan. 16 moved the permissions of an entry to an
 * RTEPermissionInfo, which the executor reads when it words an error about
 * a row (ExecBuildSlotValueDescription): each entry gets one, requiring
 * nothing, as the entries did before 16. 18 wants the set of entries not
 * pruned: all of them.
 */
static inline void
sms_init_range_table(EState *estate, List *range_table)
{
#if PG_VERSION_NUM >= 160000
	List	   *perminfos = NIL;
	ListCell   *lc;

	foreach(lc, range_table)
		addRTEPermissionInfo(&perminfos, lfirst_node(RangeTblEntry, lc));
#endif
#if PG_VERSION_NUM >= 180000
	ExecInitRangeTable(estate, range_table, perminfos,
					   bms_add_range(NULL, 1, list_length(range_table)));
#elif PG_VERSION_NUM >= 160000
	ExecInitRangeTable(estate, range_table, perminfos);
#else
	ExecInitRangeTable(estate, range_table);
#endif
}

/*
 * Errors out unless a result relation accepts a plain INSERT (no ON
 * CONFLICT, no MERGE). 17 added the MERGE actions, 18 the ON CONFLICT
 * action.
 */
static inline void
sms_check_insertable(ResultRelInfo *rri)
{
#if PG_VERSION_NUM >= 180000
	CheckValidResultRel(rri, CMD_INSERT, ONCONFLICT_NONE, NIL);
#elif PG_VERSION_NUM >= 170000
	CheckValidResultRel(rri, CMD_INSERT, NIL);
#else
	CheckValidResultRel(rri, CMD_INSERT);
#endif
}

/*
 * The index entries of a tuple just inserted (no UPDATE, no ON CONFLICT);
 * returns the indexes whose deferred constraints need a recheck. 16 added
 * onlySummarizing, which only HOT updates set.
 */
static inline List *
sms_insert_index_tuples(ResultRelInfo *rri, TupleTableSlot *slot, EState *estate)
{
#if PG_VERSION_NUM >= 160000
	return ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL, false);
#else
	return ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
#endif
}

/*
 * An index scan without instrumentation: 18 added the
 * IndexScanInstrumentation that EXPLAIN ANALYZE fills; NULL asks for none.
 */
static inline IndexScanDesc
sms_index_beginscan(Relation heap, Relation index, Snapshot snapshot,
					int nkeys, int norderbys)
{
#if PG_VERSION_NUM >= 180000
	return index_beginscan(heap, index, snapshot, NULL, nkeys, norderbys);
#else
	return index_beginscan(heap, index, snapshot, nkeys, norderbys);
#endif
}

#endif							/* SMSDISPATCH_PG_COMPAT_H */

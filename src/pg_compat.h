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

/*
 * The wrappers below are macros, so that this header needs none of the
 * headers declaring what they call: each file including it includes those
 * it uses anyway.
 */

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
#if PG_VERSION_NUM >= 170000
#define sms_create_lasting_wait_event_set(nevents) \
	CreateWaitEventSet(NULL, (nevents))
#else
#define sms_create_lasting_wait_event_set(nevents) \
	CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/*
 * The range table of an executor state that writes tables through
 * ResultRelInfo, without a plan. Its entries check no permission (16 moved
 * permissions to RTEPermissionInfo: none are given) and none is pruned (18
 * wants the set of unpruned entries: all of them).
 */
#if PG_VERSION_NUM >= 180000
#define sms_init_range_table(estate, range_table) \
	ExecInitRangeTable((estate), (range_table), NIL, \
					   bms_add_range(NULL, 1, list_length(range_table)))
#elif PG_VERSION_NUM >= 160000
#define sms_init_range_table(estate, range_table) \
	ExecInitRangeTable((estate), (range_table), NIL)
#else
#define sms_init_range_table(estate, range_table) \
	ExecInitRangeTable((estate), (range_table))
#endif

/*
 * Errors out unless a result relation accepts a plain INSERT (no ON
 * CONFLICT, no MERGE). 17 added the MERGE actions, 18 the ON CONFLICT
 * action.
 */
#if PG_VERSION_NUM >= 180000
#define sms_check_insertable(rri) \
	CheckValidResultRel((rri), CMD_INSERT, ONCONFLICT_NONE, NIL)
#elif PG_VERSION_NUM >= 170000
#define sms_check_insertable(rri) \
	CheckValidResultRel((rri), CMD_INSERT, NIL)
#else
#define sms_check_insertable(rri) \
	CheckValidResultRel((rri), CMD_INSERT)
#endif

/*
 * The index entries of a tuple just inserted (no UPDATE, no ON CONFLICT);
 * returns the indexes whose deferred constraints need a recheck. 16 added
 * onlySummarizing, which only HOT updates set.
 */
#if PG_VERSION_NUM >= 160000
#define sms_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL, false)
#else
#define sms_insert_index_tuples(rri, slot, estate) \
	ExecInsertIndexTuples((rri), (slot), (estate), false, false, NULL, NIL)
#endif

/*
 * An index scan without instrumentation: 18 added the
 * IndexScanInstrumentation that EXPLAIN ANALYZE fills; NULL asks for none.
 */
#if PG_VERSION_NUM >= 180000
#define sms_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), NULL, (nkeys), (norderbys))
#else
#define sms_index_beginscan(heap, index, snapshot, nkeys, norderbys) \
	index_beginscan((heap), (index), (snapshot), (nkeys), (norderbys))
#endif

#endif							/* SMSDISPATCH_PG_COMPAT_H */

/*-------------------------------------------------------------------------
 *
 * log_writer.c
 *	  Writes one row into verification.sms_log as INSERT would: column
 *	  defaults, domain and table constraints, row and statement triggers,
 *	  transition tables and indexes, all honoured. sms_send() and the
 *	  verification trigger write one row per call on the application's hot
 *	  path, where planning a statement and starting an executor for it cost
 *	  more than the row itself, so this does the executor's per-row work
 *	  directly.
 *
 * What does not change from row to row (the planned default of every
 * column the caller leaves out, the compiled predicates of the partial
 * indexes, the domain checks of the supplied columns) is kept for the
 * session, and dropped when the catalogs announce a change to a relation,
 * a type or a function.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "smsdispatch.h"

/* the columns of SmsLogRow's fields, in their order */
static const char *const row_columns[] = {
	"phone_number", "type", "body", "channel", "verification_id",
	"send_state", "last_error"
};

#define ROW_COLUMNS lengthof(row_columns)

/* a partial index's predicate, compiled once */
typedef struct CachedPredicate
{
	Oid			indexoid;
	ExprState  *state;
} CachedPredicate;

/*
 * What stays the same from one row to the next, for one sms_log. A catalog
 * change marks it stale; it is freed once no write uses it any more (a
 * trigger on the log may invalidate it mid-write, or even write a row of
 * its own).
 */
typedef struct WriterCache
{
	MemoryContext cxt;			/* holds all of it */
	int			users;			/* writes in progress with it */
	bool		stale;
	Oid			relid;
	AttrNumber	id_attnum;
	AttrNumber	row_attnum[ROW_COLUMNS];
	AttrNumber	priority_attnum;	/* the one int column of SmsLogRow */
	Oid			row_domain[ROW_COLUMNS];	/* InvalidOid: not a domain */
	void	   *row_domain_extra[ROW_COLUMNS];	/* domain_check()'s cache */
	ExprState **defaults;		/* per attribute; NULL: supplied or none */
	List	   *predicates;		/* of CachedPredicate, filled as indexes are met */
} WriterCache;

static WriterCache *current_cache = NULL;
static bool callbacks_registered = false;

/* Relcache callback: the log table (or every relation) changed. */
static void
relation_changed(Datum arg, Oid relid)
{
	if (current_cache != NULL &&
		(relid == InvalidOid || relid == current_cache->relid))
		current_cache->stale = true;
}

/* Syscache callback: a type (a domain's check) or a function changed. */
static void
catalog_changed(Datum arg, int cacheid, uint32 hashvalue)
{
	if (current_cache != NULL)
		current_cache->stale = true;
}

/* The attribute number of a column the writer needs, or an error. */
static AttrNumber
column_attnum(Relation log, const char *column)
{
	AttrNumber	attnum = get_attnum(RelationGetRelid(log), column);

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of table verification.sms_log does not exist", column),
				 errhint("Reinstall the extension smsdispatch.")));
	return attnum;
}

/*
 * Builds a cache for this sms_log. Its context hangs below the caller's
 * until it is complete, so that an error half-way leaks nothing.
 */
static WriterCache *
build_cache(Relation log)
{
	TupleDesc	desc = RelationGetDescr(log);
	MemoryContext cxt;
	MemoryContext oldcxt;
	WriterCache *cache;
	int			i;

	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(relation_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(TYPEOID, catalog_changed, (Datum) 0);
		CacheRegisterSyscacheCallback(PROCOID, catalog_changed, (Datum) 0);
		callbacks_registered = true;
	}
	cxt = AllocSetContextCreate(CurrentMemoryContext, "smsdispatch log writer",
								ALLOCSET_SMALL_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	cache = palloc0(sizeof(WriterCache));
	cache->cxt = cxt;
	cache->relid = RelationGetRelid(log);
	cache->id_attnum = column_attnum(log, "id");
	for (i = 0; i < ROW_COLUMNS; i++)
	{
		Form_pg_attribute att;

		cache->row_attnum[i] = column_attnum(log, row_columns[i]);
		att = TupleDescAttr(desc, cache->row_attnum[i] - 1);
		/* the row's values are text, valid in a text column or a domain over text */
		if (getBaseType(att->atttypid) != TEXTOID || att->atttypmod >= 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("column \"%s\" of table verification.sms_log is of type %s, not text",
							row_columns[i], format_type_with_typemod(att->atttypid, att->atttypmod)),
					 errhint("Reinstall the extension smsdispatch.")));
		cache->row_domain[i] = att->atttypid == TEXTOID ? InvalidOid : att->atttypid;
	}
	/* a log of 1.0 (before ALTER EXTENSION UPDATE) has no priority yet */
	cache->priority_attnum = get_attnum(RelationGetRelid(log), "priority");
	if (cache->priority_attnum != InvalidAttrNumber &&
		TupleDescAttr(desc, cache->priority_attnum - 1)->atttypid != INT4OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"priority\" of table verification.sms_log is not of type integer"),
				 errhint("Reinstall the extension smsdispatch.")));

	/* the defaults of the columns left out, planned as INSERT plans them */
	cache->defaults = palloc0(sizeof(ExprState *) * desc->natts);
	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		Node	   *def;
		int			j;

		if (att->attisdropped || att->attgenerated)
			continue;
		for (j = 0; j < ROW_COLUMNS; j++)
			if (cache->row_attnum[j] == att->attnum)
				break;
		if (j < ROW_COLUMNS || att->attnum == cache->priority_attnum)
			continue;
		def = build_column_default(log, att->attnum);
		if (def != NULL)
			cache->defaults[i] = ExecInitExpr(expression_planner((Expr *) def), NULL);
	}
	MemoryContextSwitchTo(oldcxt);
	MemoryContextSetParent(cxt, TopMemoryContext);
	return cache;
}

/* The cache to write a row of this sms_log with, fresh, counted as in use. */
static WriterCache *
acquire_cache(Relation log)
{
	WriterCache *cache = current_cache;

	if (cache != NULL && (cache->stale || cache->relid != RelationGetRelid(log)))
	{
		current_cache = NULL;
		/* a write still using it frees it when done */
		if (cache->users == 0)
			MemoryContextDelete(cache->cxt);
	}
	if (current_cache == NULL)
		current_cache = build_cache(log);
	current_cache->users++;
	return current_cache;
}

/* Ends a write's use of a cache; frees it if it was replaced meanwhile. */
static void
release_cache(WriterCache *cache)
{
	cache->users--;
	if (cache->users == 0 && cache != current_cache)
		MemoryContextDelete(cache->cxt);
}

/*
 * Gives every partial index its compiled predicate from the cache, so that
 * ExecInsertIndexTuples() need not plan and compile it again for each row.
 */
static void
attach_predicates(WriterCache *cache, ResultRelInfo *rri)
{
	int			i;

	for (i = 0; i < rri->ri_NumIndices; i++)
	{
		IndexInfo  *info = rri->ri_IndexRelationInfo[i];
		Oid			indexoid = RelationGetRelid(rri->ri_IndexRelationDescs[i]);
		CachedPredicate *found = NULL;
		ListCell   *lc;

		if (info->ii_Predicate == NIL)
			continue;
		foreach(lc, cache->predicates)
		{
			CachedPredicate *p = lfirst(lc);

			if (p->indexoid == indexoid)
				found = p;
		}
		if (found == NULL)
		{
			MemoryContext oldcxt = MemoryContextSwitchTo(cache->cxt);
			List	   *pred = copyObject(info->ii_Predicate);

			found = palloc(sizeof(CachedPredicate));
			found->indexoid = indexoid;
			found->state = ExecInitQual((List *) expression_planner((Expr *) pred), NULL);
			cache->predicates = lappend(cache->predicates, found);
			MemoryContextSwitchTo(oldcxt);
		}
		info->ii_PredicateState = found->state;
	}
}

/*
 * Fills the slot: the row's values, checked against their domains, and the
 * defaults of every other column.
 */
static void
fill_slot(WriterCache *cache, TupleTableSlot *slot, const SmsLogRow *row,
		  ExprContext *econtext)
{
	/* in the order of row_columns */
	const char *texts[ROW_COLUMNS] = {
		row->phone_number, row->type, row->body, row->channel,
		row->verification_id, row->send_state, row->last_error
	};
	int			natts = slot->tts_tupleDescriptor->natts;
	int			i;

	ExecClearTuple(slot);
	for (i = 0; i < natts; i++)
	{
		if (cache->defaults[i] != NULL)
			slot->tts_values[i] = ExecEvalExprSwitchContext(cache->defaults[i], econtext,
															&slot->tts_isnull[i]);
		else
			slot->tts_isnull[i] = true;
	}
	for (i = 0; i < ROW_COLUMNS; i++)
	{
		int			att = cache->row_attnum[i] - 1;
		bool		isnull = texts[i] == NULL;
		Datum		value = isnull ? (Datum) 0 : CStringGetTextDatum(texts[i]);

		if (OidIsValid(cache->row_domain[i]))
			domain_check(value, isnull, cache->row_domain[i],
						 &cache->row_domain_extra[i], cache->cxt);
		slot->tts_values[att] = value;
		slot->tts_isnull[att] = isnull;
	}
	if (cache->priority_attnum != InvalidAttrNumber)
	{
		slot->tts_values[cache->priority_attnum - 1] = Int32GetDatum(row->priority);
		slot->tts_isnull[cache->priority_attnum - 1] = false;
	}
	ExecStoreVirtualTuple(slot);
}

/* The work of sms_log_insert() with a cache in hand. */
static int64
insert_row(Relation log, WriterCache *cache, const SmsLogRow *row)
{
	EState	   *estate;
	ResultRelInfo *rri;
	RangeTblEntry *rte;
	TupleTableSlot *slot;
	TransitionCaptureState *transitions;
	MemoryContext oldcxt;
	List	   *recheck = NIL;
	bool		isnull;
	int64		id;

	estate = CreateExecutorState();
	oldcxt = MemoryContextSwitchTo(estate->es_query_cxt);
	rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(log);
	rte->relkind = log->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	sms_init_range_table(estate, list_make1(rte));
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, log, 1, NULL, 0);
	sms_check_insertable(rri);
	estate->es_opened_result_relations = list_make1(rri);
	estate->es_output_cid = GetCurrentCommandId(true);
	ExecOpenIndices(rri, false);
	attach_predicates(cache, rri);
	slot = ExecInitExtraTupleSlot(estate, RelationGetDescr(log), table_slot_callbacks(log));

	/* the AFTER triggers of this row fire at the end of this "query" */
	AfterTriggerBeginQuery();
	transitions = MakeTransitionCaptureState(rri->ri_TrigDesc, RelationGetRelid(log), CMD_INSERT);
	ExecBSInsertTriggers(estate, rri);
	fill_slot(cache, slot, row, GetPerTupleExprContext(estate));
	if (rri->ri_TrigDesc && rri->ri_TrigDesc->trig_insert_before_row &&
		!ExecBRInsertTriggers(estate, rri, slot))
		ereport(ERROR,
				(errcode(ERRCODE_TRIGGERED_ACTION_EXCEPTION),
				 errmsg("a BEFORE INSERT trigger on verification.sms_log skipped the SMS to %s",
						row->phone_number),
				 errhint("Every SMS must have its row in the log; such a trigger must return the row.")));
	if (log->rd_att->constr && log->rd_att->constr->has_generated_stored)
		ExecComputeStoredGenerated(rri, estate, slot, CMD_INSERT);
	if (log->rd_att->constr)
		ExecConstraints(rri, slot, estate);
	table_tuple_insert(log, slot, estate->es_output_cid, 0, NULL);
	if (rri->ri_NumIndices > 0)
		recheck = sms_insert_index_tuples(rri, slot, estate);
	ExecARInsertTriggers(estate, rri, slot, recheck, transitions);
	ExecASInsertTriggers(estate, rri, transitions);
	AfterTriggerEndQuery(estate);

	id = DatumGetInt64(slot_getattr(slot, cache->id_attnum, &isnull));
	ExecCloseIndices(rri);
	ExecResetTupleTable(estate->es_tupleTable, false);
	MemoryContextSwitchTo(oldcxt);
	FreeExecutorState(estate);
	/* later commands of the caller's statement see the row */
	CommandCounterIncrement();
	return id;
}

/*
 * Inserts one row into log (opened by the caller with RowExclusiveLock) and
 * returns its id. Runs as the current user; the caller has switched to the
 * log's owner, who needs no privilege check. The log must not force
 * row-level security, which this path would not apply.
 */
int64
sms_log_insert(Relation log, const SmsLogRow *row)
{
	WriterCache *volatile cache;
	int64		id;

	PreventCommandIfReadOnly("INSERT");
	PreventCommandIfParallelMode("INSERT");
	if (log->rd_rel->relforcerowsecurity)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("table verification.sms_log forces row-level security"),
				 errhint("smsdispatch writes the log as its owner: ALTER TABLE verification.sms_log NO FORCE ROW LEVEL SECURITY.")));
	cache = acquire_cache(log);
	PG_TRY();
	{
		id = insert_row(log, cache, row);
	}
	PG_FINALLY();
	{
		release_cache(cache);
	}
	PG_END_TRY();
	return id;
}

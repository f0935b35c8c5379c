/*-------------------------------------------------------------------------
 *
 * drop_guard.c
 *	  The event trigger that keeps DROP EXTENSION smsdispatch CASCADE from
 *	  dropping the application's tables.
 *
 * Schema verification is a member of the extension (so that pg_dump leaves
 * its creation to CREATE EXTENSION, which a restore runs before the
 * application's tables). A member schema goes with the extension, and with
 * CASCADE everything in it: the application's verifications table and its
 * rows. PostgreSQL's own hint after a plain DROP EXTENSION leads straight
 * there. So at ddl_command_start of a DROP EXTENSION smsdispatch CASCADE
 * this refuses while the schema holds relations that are not the
 * extension's, and says how to keep them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/event_trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_drop_guard);

/* The relations of others in a member schema verification, or NULL. */
static char *
application_relations(void)
{
	char	   *names = NULL;
	bool		isnull;
	Datum		d;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "smsdispatch: SPI_connect failed");
	if (SPI_execute("SELECT pg_catalog.string_agg(c.oid::pg_catalog.regclass::pg_catalog.text, ', '"
					"                             ORDER BY c.relname)"
					"  FROM pg_catalog.pg_class c"
					" WHERE c.relnamespace OPERATOR(pg_catalog.=) 'verification'::pg_catalog.regnamespace"
					"   AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p,v,m,f}'::pg_catalog.\"char\"[])"
					"   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d"
					"                    WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass"
					"                      AND d.objid OPERATOR(pg_catalog.=) c.oid"
					"                      AND d.deptype OPERATOR(pg_catalog.=) 'e')"
					"   AND EXISTS (SELECT FROM pg_catalog.pg_depend d"
					"                WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass"
					"                  AND d.objid OPERATOR(pg_catalog.=) c.relnamespace"
					"                  AND d.deptype OPERATOR(pg_catalog.=) 'e')",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "smsdispatch: could not list the relations of schema verification");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		names = MemoryContextStrdup(TopTransactionContext, TextDatumGetCString(d));
	SPI_finish();
	return names;
}

/* smsdispatch.drop_guard(): the ddl_command_start event trigger. */
Datum
sms_drop_guard(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	DropStmt   *stmt;
	ListCell   *lc;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("smsdispatch.drop_guard() must be called as an event trigger")));
	trigdata = (EventTriggerData *) fcinfo->context;
	if (!IsA(trigdata->parsetree, DropStmt))
		PG_RETURN_NULL();
	stmt = (DropStmt *) trigdata->parsetree;
	if (stmt->removeType != OBJECT_EXTENSION || stmt->behavior != DROP_CASCADE)
		PG_RETURN_NULL();
	foreach(lc, stmt->objects)
	{
		char	   *names;

		if (strcmp(strVal(lfirst(lc)), "smsdispatch") != 0)
			continue;
		names = application_relations();
		if (names != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("DROP EXTENSION smsdispatch CASCADE would drop the application's tables in schema verification: %s",
							names),
					 errhint("To keep them, run ALTER EXTENSION smsdispatch DROP SCHEMA verification first; the cascade then drops only the extension's own objects.")));
	}
	PG_RETURN_NULL();
}

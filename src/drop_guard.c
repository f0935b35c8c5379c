/*-------------------------------------------------------------------------
 *
 * drop_guard.c
 *	  The event trigger that keeps DROP EXTENSION smsdispatch CASCADE from
 *	  dropping the application's objects in schema verification.
 *
 * Schema verification is a member of the extension (so that pg_dump leaves
 * its creation to CREATE EXTENSION, which a restore runs before the
 * application's tables). A member schema goes with the extension, and with
 * CASCADE everything in it: the application's verifications table and its
 * rows, and any function, procedure, sequence, type, domain or view the
 * application keeps there. PostgreSQL's own hint after a plain DROP
 * EXTENSION leads straight there. So at ddl_command_start of a DROP
 * EXTENSION smsdispatch CASCADE this refuses while the schema holds objects
 * that are not the extension's, names them, and says how to keep them.
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

/* The error names at most this many objects, and counts the rest. */
#define DROP_GUARD_MAX_NAMED 100

/*
 * The objects of others that DROP EXTENSION smsdispatch CASCADE would drop
 * with schema verification while the schema is a member of the extension:
 * everything with its own dependency on the schema (every object created in
 * a schema has one) that is not a member of the extension. Objects that go
 * with another object (a table's row type, an array type, a serial column's
 * sequence) depend on it automatically or internally and are named through
 * it. Returns how many there are; *names gets the first
 * DROP_GUARD_MAX_NAMED of them described, in name order.
 */
static int64
application_objects(char **names)
{
	bool		isnull;
	Datum		d;
	int64		count;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "smsdispatch: SPI_connect failed");
	if (SPI_execute("WITH ext AS ("
					"    SELECT e.oid FROM pg_catalog.pg_extension e"
					"     WHERE e.extname OPERATOR(pg_catalog.=) 'smsdispatch'"
					"), member_schema AS ("
					"    SELECT n.oid FROM pg_catalog.pg_namespace n"
					"     WHERE n.nspname OPERATOR(pg_catalog.=) 'verification'"
					"       AND EXISTS (SELECT FROM pg_catalog.pg_depend d, ext"
					"                    WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass"
					"                      AND d.objid OPERATOR(pg_catalog.=) n.oid"
					"                      AND d.refobjid OPERATOR(pg_catalog.=) ext.oid"
					"                      AND d.deptype OPERATOR(pg_catalog.=) 'e')"
					"), foreign_object AS ("
					"    SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) AS name"
					"      FROM pg_catalog.pg_depend d, member_schema s"
					"     WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass"
					"       AND d.refobjid OPERATOR(pg_catalog.=) s.oid"
					"       AND d.deptype OPERATOR(pg_catalog.=) 'n'"
					"       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend o, ext"
					"                        WHERE o.classid OPERATOR(pg_catalog.=) d.classid"
					"                          AND o.objid OPERATOR(pg_catalog.=) d.objid"
					"                          AND (o.deptype OPERATOR(pg_catalog.=) ANY ('{a,i}'::pg_catalog.\"char\"[])"
					"                               OR (o.deptype OPERATOR(pg_catalog.=) 'e'"
					"                                   AND o.refobjid OPERATOR(pg_catalog.=) ext.oid)))"
					"), numbered AS ("
					"    SELECT f.name, pg_catalog.row_number() OVER (ORDER BY f.name) AS n"
					"      FROM foreign_object f"
					")"
					"SELECT pg_catalog.count(*),"
					"       pg_catalog.string_agg(u.name, ', ' ORDER BY u.n)"
					"           FILTER (WHERE u.n OPERATOR(pg_catalog.<=) " CppAsString2(DROP_GUARD_MAX_NAMED) ")"
					"  FROM numbered u",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "smsdispatch: could not list the objects of schema verification");
	count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	*names = isnull ? NULL : MemoryContextStrdup(TopTransactionContext, TextDatumGetCString(d));
	SPI_finish();
	return count;
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
		int64		count;

		if (strcmp(strVal(lfirst(lc)), "smsdispatch") != 0)
			continue;
		count = application_objects(&names);
		if (count == 0)
			continue;
		if (count > DROP_GUARD_MAX_NAMED)
			names = psprintf("%s and %lld more", names,
							 (long long) (count - DROP_GUARD_MAX_NAMED));
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg_plural("DROP EXTENSION smsdispatch CASCADE would drop %lld object of the application in schema verification",
							   "DROP EXTENSION smsdispatch CASCADE would drop %lld objects of the application in schema verification",
							   count, (long long) count),
				 errdetail("Not the extension's: %s.", names),
				 errhint("To keep them, run ALTER EXTENSION smsdispatch DROP SCHEMA verification first; the cascade then drops only the extension's own objects.")));
	}
	PG_RETURN_NULL();
}

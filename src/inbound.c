/*-------------------------------------------------------------------------
 *
 * inbound.c
 *	  The inbound hook: the worker's duty that hands received SMS that are
 *	  not acks to the application's handler function.
 *
 * sms_receive() stores every received SMS in smsdispatch.inbox and announces
 * it with NOTIFY smsdispatch_inbox. When smsdispatch.inbound_handler names a
 * function, an SMS that is not an ack is stored with handler_state
 * 'pending', and this duty calls the function for it:
 *
 *		handler(inbox_id bigint, sender text, body text, outcome text)
 *
 * as the role smsdispatch.inbound_handler_role (never a superuser, never the
 * extension's owner: SET ROLE cannot run inside a SECURITY DEFINER
 * function, so the worker switches user itself), each call in a
 * subtransaction of its own with search_path pg_catalog, pg_temp, as a
 * security-restricted operation whose changes to settings end with the
 * call (so a handler cannot leave the worker another search_path). An error
 * the handler raises is logged and stored on the inbox row ('failed',
 * handler_error); the next SMS is handled all the same. What the handler
 * does in the database commits with the row's new state, so it happens
 * once per SMS.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_wake_at_commit_sql);

/* SMS handed to the handler in one transaction */
#define INBOUND_BATCH 100
/* a bad configuration is said at most this often (ms) */
#define INBOUND_WARN_EVERY_MS 60000

char	   *sms_inbound_handler = NULL;
char	   *sms_inbound_handler_role = NULL;

/*
 * The call of the configured handler, as SQL, and the role to run it as;
 * false (with a WARNING at most once a minute) when the settings do not
 * name a function of the right signature and a role allowed to run it.
 * Pending SMS then wait for a configuration that works.
 */
static bool
resolve_handler(char **call, Oid *role)
{
	static TimestampTz warned = 0;
	const char *problem = NULL;
	char	   *signature;
	Oid			fn;
	Datum		d;
	bool		isnull;

	signature = psprintf("%s(bigint, text, text, text)", sms_inbound_handler);
	d = DirectFunctionCall1(to_regprocedure, CStringGetTextDatum(signature));
	fn = DatumGetObjectId(d);
	*role = get_role_oid(sms_inbound_handler_role, true);
	if (!OidIsValid(fn))
		problem = psprintf("function %s does not exist (or not in the schema named: give it schema-qualified)",
						   signature);
	else if (!OidIsValid(*role))
		problem = psprintf("role \"%s\" (smsdispatch.inbound_handler_role) does not exist",
						   sms_inbound_handler_role);
	else if (superuser_arg(*role))
		problem = psprintf("role \"%s\" (smsdispatch.inbound_handler_role) is a superuser; the handler never runs as one",
						   sms_inbound_handler_role);
	else
	{
		if (SPI_execute("SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'smsdispatch'",
						true, 1) != SPI_OK_SELECT)
			elog(ERROR, "smsdispatch: reading the extension's owner failed");
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull && DatumGetObjectId(d) == *role)
			problem = psprintf("role \"%s\" (smsdispatch.inbound_handler_role) owns the extension; the handler never runs as its owner",
							   sms_inbound_handler_role);
	}
	if (problem != NULL)
	{
		TimestampTz now = GetCurrentTimestamp();

		if (warned == 0 || TimestampDifferenceExceeds(warned, now, INBOUND_WARN_EVERY_MS))
		{
			ereport(WARNING,
					(errmsg("smsdispatch: received SMS wait for their handler: %s", problem),
					 errhint("Fix smsdispatch.inbound_handler or smsdispatch.inbound_handler_role and reload; the SMS are handled then.")));
			warned = now;
		}
		return false;
	}
	warned = 0;
	*call = psprintf("SELECT %s($1, $2, $3, $4)",
					 quote_qualified_identifier(get_namespace_name(get_func_namespace(fn)),
												get_func_name(fn)));
	return true;
}

/*
 * Calls the handler for one SMS as role, in a subtransaction. Returns NULL,
 * or the error message it raised (the error is logged too).
 */
static char *
call_handler(const char *call, Oid role, Datum *args)
{
	static Oid	types[4] = {INT8OID, TEXTOID, TEXTOID, TEXTOID};
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Oid			save_uid;
	int			save_sec;
	char	   *volatile error = NULL;

	GetUserIdAndSecContext(&save_uid, &save_sec);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		/* settings the handler changes, even for the session, end with it */
		int			save_nestlevel = NewGUCNestLevel();

		SetUserIdAndSecContext(role, save_sec | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		if (SPI_execute_with_args(call, 4, types, args, NULL, false, 0) < 0)
			elog(ERROR, "smsdispatch: the inbound handler's call failed");
		SetUserIdAndSecContext(save_uid, save_sec);
		AtEOXact_GUC(false, save_nestlevel);
		sms_subxact_release(cxt, owner);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		SetUserIdAndSecContext(save_uid, save_sec);
		edata = sms_subxact_abort(cxt, owner);
		error = edata->message ? pstrdup(edata->message) : pstrdup("(no message)");
		if (edata->sqlerrcode != 0)
			error = psprintf("%s: %s", unpack_sql_state(edata->sqlerrcode), error);
		ereport(WARNING,
				(errmsg("smsdispatch: the inbound handler failed on inbox row %lld: %s",
						(long long) DatumGetInt64(args[0]), error)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return error;
}

/*
 * The worker's duty: hands up to INBOUND_BATCH pending inbox rows to the
 * handler, oldest first, and records what became of each. Rows another
 * session holds are skipped.
 */
void
sms_inbound_hook(SmsPassSummary *summary, TimestampTz *next_due)
{
	static Oid	done_types[3] = {INT8OID, TEXTOID, TEXTOID};
	char	   *call;
	Oid			role;
	SPITupleTable *rows;
	uint64		n;

	if (SPI_execute("SELECT id, coalesce(sender_e164, sender), body, outcome"
					"  FROM smsdispatch.inbox WHERE handler_state = 'pending'"
					" ORDER BY id LIMIT " CppAsString2(INBOUND_BATCH)
					" FOR UPDATE SKIP LOCKED", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "smsdispatch: reading the pending inbox failed");
	if (SPI_processed == 0)
		return;
	rows = SPI_tuptable;
	n = SPI_processed;
	if (!resolve_handler(&call, &role))
		return;

	for (uint64 i = 0; i < n; i++)
	{
		Datum		args[4];
		Datum		done[3];
		char		nulls[3] = {' ', ' ', ' '};
		bool		isnull;
		char	   *error;

		for (int c = 0; c < 4; c++)
			args[c] = SPI_getbinval(rows->vals[i], rows->tupdesc, c + 1, &isnull);
		error = call_handler(call, role, args);
		done[0] = args[0];
		done[1] = CStringGetTextDatum(error ? "failed" : "done");
		if (error)
			done[2] = CStringGetTextDatum(error);
		else
			nulls[2] = 'n';
		if (SPI_execute_with_args("UPDATE smsdispatch.inbox"
								  "   SET handler_state = $2, handled_at = pg_catalog.now(),"
								  "       handler_error = $3"
								  " WHERE id = $1",
								  3, done_types, done, nulls, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "smsdispatch: recording the inbound handler's outcome failed");
	}
	if (n == INBOUND_BATCH)
		summary->more = true;
}

/*
 * SQL: smsdispatch.wake_at_commit(): sms_receive wakes the worker at COMMIT
 * for an SMS its handler must see.
 */
Datum
sms_wake_at_commit_sql(PG_FUNCTION_ARGS)
{
	sms_wake_at_commit();
	PG_RETURN_VOID();
}

/*-------------------------------------------------------------------------
 *
 * inbound.c
 *	  The inbound hook: received SMS that are not acks handed to the
 *	  application's handler function, in a background worker of their own.
 *
 * sms_receive() stores every received SMS in smsdispatch.inbox and announces
 * it with NOTIFY smsdispatch_inbox. When smsdispatch.inbound_handler names a
 * function, an SMS that is not an ack is stored with handler_state
 * 'pending', and the function is called for it:
 *
 *		handler(inbox_id bigint, sender text, body text, outcome text)
 *
 * The main worker never calls it: a handler that loops would hold the
 * alarms, the spool and DROP EXTENSION with it. Its duty here only starts,
 * when rows are pending and none runs, the dynamic background worker
 * "smsdispatch inbound handler" in the same database, and is told by the
 * postmaster when that worker ends. The handler worker takes the pending
 * rows one at a time, oldest first, each in a transaction of its own, and
 * exits when none is left.
 *
 * Each call runs as the role smsdispatch.inbound_handler_role (never a
 * superuser, never the extension's owner: SET ROLE cannot run inside a
 * SECURITY DEFINER function, so the worker switches user itself), in a
 * subtransaction of its own with search_path pg_catalog, pg_temp, as a
 * security-restricted operation whose changes to settings end with the
 * call (so a handler cannot leave the worker another search_path). A call
 * longer than smsdispatch.inbound_handler_timeout is canceled; a handler
 * that catches the cancel and goes on ends its worker at twice the bound,
 * and the next handler worker fails its row, so it never runs again. An
 * error the handler raises, or its cancel, is logged and stored on the
 * inbox row ('failed', handler_error); the next SMS is handled all the
 * same. What the handler does in the database commits with the row's new
 * state, so it happens once per SMS; the advisory locks it took, of the
 * transaction or of the session, are released after its call.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_wake_at_commit_sql);

/* a bad configuration is said at most this often (ms) */
#define INBOUND_WARN_EVERY_MS 60000

char	   *sms_inbound_handler = NULL;
char	   *sms_inbound_handler_role = NULL;
int			sms_inbound_handler_timeout_ms = 5000;

/* the handler worker's call in progress, for its timers */
static volatile int64 calling_inbox_id = 0;
static volatile sig_atomic_t call_overran = false;
static TimeoutId cancel_timeout;
static TimeoutId end_timeout;

/*
 * Whether a warning said at *last is due again (at most once a minute);
 * sets *last to now when it is.
 */
static bool
warning_due(TimestampTz *last)
{
	TimestampTz now = GetCurrentTimestamp();

	if (*last != 0 && !TimestampDifferenceExceeds(*last, now, INBOUND_WARN_EVERY_MS))
		return false;
	*last = now;
	return true;
}

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
		if (warning_due(&warned))
			ereport(WARNING,
					(errmsg("smsdispatch: received SMS wait for their handler: %s", problem),
					 errhint("Fix smsdispatch.inbound_handler or smsdispatch.inbound_handler_role and reload; the SMS are handled then.")));
		return false;
	}
	warned = 0;
	*call = psprintf("SELECT %s($1, $2, $3, $4)",
					 quote_qualified_identifier(get_namespace_name(get_func_namespace(fn)),
												get_func_name(fn)));
	return true;
}

/*
 * The error stored on the row of a call that overran the handler's bound,
 * whatever the handler raised after its cancel:
 * "57014: canceled after 5 s (smsdispatch.inbound_handler_timeout)".
 */
static char *
overrun_error(void)
{
	int			ms = sms_inbound_handler_timeout_ms;

	return psprintf("%s: canceled after %d %s (smsdispatch.inbound_handler_timeout)",
					unpack_sql_state(ERRCODE_QUERY_CANCELED),
					ms % 1000 == 0 ? ms / 1000 : ms, ms % 1000 == 0 ? "s" : "ms");
}

/*
 * Timer of the handler's bound: cancels the call, as statement_timeout
 * would (which a background worker's SPI calls do not arm).
 */
static void
cancel_overrunning_call(void)
{
	call_overran = true;
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/*
 * Timer at twice the bound: the handler caught its cancel and went on.
 * The worker ends (a FATAL no handler can catch); the next handler worker
 * fails the row, which must not run again.
 */
static void
end_persisting_call(void)
{
	sms_my_slot->inbound_abandoned_id = calling_inbox_id;
	ProcDiePending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/* Disarms the call's two timers; a cancel they raised and nobody saw goes. */
static void
disarm_call_timers(void)
{
	disable_timeout(cancel_timeout, false);
	disable_timeout(end_timeout, false);
	if (call_overran)
		QueryCancelPending = false;
}

/*
 * Calls the handler for one SMS as role, in a subtransaction, within
 * smsdispatch.inbound_handler_timeout. Returns NULL, or the error message
 * it raised or the reason of its cancel (the error is logged too).
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
	calling_inbox_id = DatumGetInt64(args[0]);
	call_overran = false;
	PG_TRY();
	{
		/* settings the handler changes, even for the session, end with it */
		int			save_nestlevel = NewGUCNestLevel();

		SetUserIdAndSecContext(role, save_sec | SECURITY_LOCAL_USERID_CHANGE |
							   SECURITY_RESTRICTED_OPERATION);
		enable_timeout_after(cancel_timeout, sms_inbound_handler_timeout_ms);
		enable_timeout_after(end_timeout, 2 * sms_inbound_handler_timeout_ms);
		if (SPI_execute_with_args(call, 4, types, args, NULL, false, 0) < 0)
			elog(ERROR, "smsdispatch: the inbound handler's call failed");
		disarm_call_timers();
		/* a handler that caught its cancel and returned did not finish */
		if (call_overran)
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("the inbound handler returned after its cancel")));
		SetUserIdAndSecContext(save_uid, save_sec);
		AtEOXact_GUC(false, save_nestlevel);
		sms_subxact_release(cxt, owner);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		disarm_call_timers();
		SetUserIdAndSecContext(save_uid, save_sec);
		edata = sms_subxact_abort(cxt, owner);
		if (call_overran)
			error = overrun_error();
		else
		{
			error = edata->message ? pstrdup(edata->message) : pstrdup("(no message)");
			if (edata->sqlerrcode != 0)
				error = psprintf("%s: %s", unpack_sql_state(edata->sqlerrcode), error);
		}
		ereport(WARNING,
				(errmsg("smsdispatch: the inbound handler failed on inbox row %lld: %s",
						(long long) DatumGetInt64(args[0]), error)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	calling_inbox_id = 0;
	return error;
}

/* Stores what became of an inbox row: done, or failed with error. */
static void
record_outcome(Datum inbox_id, const char *error)
{
	static Oid	done_types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		done[3];
	char		nulls[3] = {' ', ' ', ' '};

	done[0] = inbox_id;
	done[1] = CStringGetTextDatum(error ? "failed" : "done");
	if (error)
		done[2] = CStringGetTextDatum(error);
	else
		nulls[2] = 'n';
	if (SPI_execute_with_args("UPDATE smsdispatch.inbox"
							  "   SET handler_state = $2, handled_at = pg_catalog.now(),"
							  "       handler_error = $3"
							  " WHERE id = $1 AND handler_state = 'pending'",
							  3, done_types, done, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "smsdispatch: recording the inbound handler's outcome failed");
}

/*
 * Starts a transaction of the handler worker with SPI connected, its lock
 * waits bounded; false (the transaction ended again) when the extension is
 * not installed.
 */
static bool
begin_handler_transaction(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!OidIsValid(get_extension_oid("smsdispatch", true)))
	{
		CommitTransactionCommand();
		return false;
	}
	sms_bound_lock_waits();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "smsdispatch: SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	return true;
}

/*
 * Commits it, and releases the advisory locks a handler took for the
 * session (pg_advisory_unlock_all): none outlives its call.
 */
static void
end_handler_transaction(void)
{
	PopActiveSnapshot();
	SPI_finish();
	CommitTransactionCommand();
	LockReleaseSession(USER_LOCKMETHOD);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Fails the row whose handler ended the last handler worker (it went on
 * past its cancel): that call must not run again.
 */
static void
fail_abandoned_call(void)
{
	int64		inbox_id = sms_my_slot->inbound_abandoned_id;
	char	   *error;

	if (inbox_id == 0)
		return;
	if (begin_handler_transaction())
	{
		error = psprintf("%s; the handler went on, and its worker was ended after twice that",
						 overrun_error());
		record_outcome(Int64GetDatum(inbox_id), error);
		ereport(WARNING,
				(errmsg("smsdispatch: the inbound handler failed on inbox row %lld: %s",
						(long long) inbox_id, error)));
		end_handler_transaction();
	}
	sms_my_slot->inbound_abandoned_id = 0;
}

/*
 * Hands the oldest pending inbox row that no other session holds to the
 * handler and records what became of it, in one transaction; false when
 * there was none to hand (or no handler may run).
 */
static bool
handle_next_sms(void)
{
	bool		handled = false;
	char	   *call;
	Oid			role;

	if (sms_inbound_handler[0] == '\0' || !begin_handler_transaction())
		return false;
	if (SPI_execute("SELECT id, coalesce(sender_e164, sender), body, outcome"
					"  FROM smsdispatch.inbox WHERE handler_state = 'pending'"
					" ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "smsdispatch: reading the pending inbox failed");
	if (SPI_processed == 1)
	{
		SPITupleTable *rows = SPI_tuptable;
		Datum		args[4];
		bool		isnull;

		for (int c = 0; c < 4; c++)
			args[c] = SPI_getbinval(rows->vals[0], rows->tupdesc, c + 1, &isnull);
		/* resolving runs SPI too: the row is read first */
		if (resolve_handler(&call, &role))
		{
			pgstat_report_activity(STATE_RUNNING,
								   psprintf("smsdispatch: inbound handler on inbox row %lld",
											(long long) DatumGetInt64(args[0])));
			record_outcome(args[0], call_handler(call, role, args));
			handled = true;
		}
	}
	end_handler_transaction();
	return handled;
}

/*
 * Entry point of the handler worker: connects to the database of the
 * worker that started it (main_arg) as the worker does, and handles
 * pending SMS until none is left.
 */
void
sms_inbound_worker_main(Datum main_arg)
{
	sms_worker_signals(die);
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(main_arg), InvalidOid, 0);
	sms_pin_worker_settings();
	pgstat_report_appname("smsdispatch inbound handler");
	/* the database's worker started us; without it, nobody waits for us */
	sms_my_slot = sms_database_slot(MyDatabaseId);
	if (sms_my_slot == NULL)
		proc_exit(0);
	cancel_timeout = RegisterTimeout(USER_TIMEOUT, cancel_overrunning_call);
	end_timeout = RegisterTimeout(USER_TIMEOUT, end_persisting_call);

	fail_abandoned_call();
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!handle_next_sms())
			break;
	}
	proc_exit(0);
}

/*
 * The main worker's duty: when received SMS wait for the handler and no
 * handler worker runs, starts one in this database. The postmaster tells
 * us (bgw_notify_pid sets our latch) when it has ended, and a pass then
 * looks again; a new one starts at most once a naptime, so that rows it
 * cannot take (held by another session) do not start worker after worker.
 */
void
sms_inbound_launch(SmsPassSummary *summary, TimestampTz *next_due)
{
	static BackgroundWorkerHandle *handle = NULL;
	static TimestampTz launched = 0;
	static TimestampTz warned = 0;
	BackgroundWorker worker;
	MemoryContext old;
	pid_t		pid;
	char	   *call;
	Oid			role;
	TimestampTz now;

	if (handle != NULL && GetBackgroundWorkerPid(handle, &pid) != BGWH_STOPPED)
		return;
	if (SPI_execute("SELECT FROM smsdispatch.inbox WHERE handler_state = 'pending' LIMIT 1",
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "smsdispatch: reading the pending inbox failed");
	if (SPI_processed == 0 || !resolve_handler(&call, &role))
		return;
	now = GetCurrentTimestamp();
	if (launched != 0 && !TimestampDifferenceExceeds(launched, now, sms_naptime_ms))
	{
		*next_due = Min(*next_due, TimestampTzPlusMilliseconds(launched, sms_naptime_ms));
		return;
	}

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker.bgw_library_name, "smsdispatch", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "sms_inbound_worker_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, "smsdispatch inbound handler", BGW_MAXLEN);
	strlcpy(worker.bgw_type, "smsdispatch inbound handler", BGW_MAXLEN);
	worker.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);
	worker.bgw_notify_pid = MyProcPid;

	if (handle != NULL)
		pfree(handle);
	handle = NULL;
	launched = now;
	old = MemoryContextSwitchTo(TopMemoryContext);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		handle = NULL;
		if (warning_due(&warned))
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("smsdispatch: received SMS wait for their handler: no background worker slot is free for \"smsdispatch inbound handler\""),
					 errhint("Raise max_worker_processes (a restart); it is tried again every smsdispatch.naptime.")));
		*next_due = Min(*next_due, TimestampTzPlusMilliseconds(launched, sms_naptime_ms));
	}
	MemoryContextSwitchTo(old);
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

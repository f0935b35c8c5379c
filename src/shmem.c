/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The state smsdispatch shares between backends and its worker, and the
 *	  wake-up at COMMIT that lets a queued SMS leave in milliseconds instead
 *	  of at the worker's next tick.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/rel.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_wake_on_change);

SmsSharedState *sms_shared = NULL;
/* in a database's worker (and its inbound handler worker): its slot */
SmsDatabaseSlot *sms_my_slot = NULL;

static bool wake_pending = false;
static bool xact_callback_registered = false;

/* The size of the shared state with smsdispatch.max_databases slots. */
static Size
shared_state_size(void)
{
	return add_size(offsetof(SmsSharedState, slots),
					mul_size(sms_max_databases, sizeof(SmsDatabaseSlot)));
}

/* Asks the postmaster for our shared memory; from shmem_request_hook. */
void
sms_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(shared_state_size()));
}

/* Attaches to (or creates) the shared state; from shmem_startup_hook. */
void
sms_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	sms_shared = ShmemInitStruct("smsdispatch", shared_state_size(), &found);
	if (!found)
	{
		memset(sms_shared, 0, shared_state_size());
		pg_atomic_init_u32(&sms_shared->extension_generation, 0);
		SpinLockInit(&sms_shared->rate_mutex);
		sms_shared->nslots = sms_max_databases;
		for (int i = 0; i < sms_shared->nslots; i++)
			SpinLockInit(&sms_shared->slots[i].ip2sms.mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The slot of the worker that serves a database, or NULL when none does
 * (or smsdispatch is not preloaded). Read without a lock: only the launcher
 * gives out slots, and a slot read while it changes hands is at worst one
 * wake-up for nothing.
 */
SmsDatabaseSlot *
sms_database_slot(Oid dboid)
{
	if (sms_shared == NULL || !OidIsValid(dboid))
		return NULL;
	for (int i = 0; i < sms_shared->nslots; i++)
	{
		SmsDatabaseSlot *slot = &sms_shared->slots[i];

		if (slot->in_use && slot->dboid == dboid)
			return slot;
	}
	return NULL;
}

/*
 * Sets the latch of the worker that serves our database, if one runs: work
 * queued in another database is not its to do, and a wake-up would cost it
 * a pass for nothing.
 */
void
sms_wake_worker(void)
{
	SmsDatabaseSlot *slot = sms_database_slot(MyDatabaseId);
	Latch	   *latch;

	if (slot == NULL)
		return;
	latch = slot->worker_latch;
	pg_read_barrier();
	if (latch != NULL && slot->worker_pid != MyProcPid)
		SetLatch(latch);
}

/* Wakes the worker once the transaction that queued work has committed. */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_pending)
				sms_wake_worker();
			wake_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_pending = false;
			break;
		default:
			break;
	}
}

/* Wakes the worker when the current transaction commits. */
void
sms_wake_at_commit(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_pending = true;
}

/* The text of a column of a row, NULL when the column is null. */
static text *
column_text_or_null(HeapTuple row, TupleDesc tupdesc, int att)
{
	bool		isnull;
	Datum		value = heap_getattr(row, att, tupdesc, &isnull);

	return isnull ? NULL : DatumGetTextPP(value);
}

/* Whether two texts (either NULL) are equal. */
static bool
texts_equal(text *a, text *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

/*
 * Whether an UPDATE of a row leaves it as the worker last knew it: a
 * text SMS (no alarm) whose send_state and channel stay, and that is not
 * queued. That is a delivery report's status on a submitted SMS, two of
 * which come for every SMS through Kannel; waking the worker for them
 * would run its duties hundreds of times a second for nothing. An alarm's
 * status always wakes it (the escalation reads it).
 */
static bool
status_only_change(HeapTuple old, HeapTuple new, TupleDesc tupdesc,
				   int channel_att, int state_att)
{
	int			message_att = SPI_fnumber(tupdesc, "message_id");
	bool		isnull;
	text	   *state = column_text_or_null(new, tupdesc, state_att);

	if (message_att <= 0)
		return false;
	(void) heap_getattr(new, message_att, tupdesc, &isnull);
	return isnull && state != NULL && !sms_text_equals(PointerGetDatum(state), "queued") &&
		texts_equal(state, column_text_or_null(old, tupdesc, state_att)) &&
		texts_equal(column_text_or_null(new, tupdesc, channel_att),
					column_text_or_null(old, tupdesc, channel_att));
}

/*
 * BEFORE INSERT OR UPDATE OF send_state row trigger on verification.sms_log:
 * at COMMIT the worker wakes for any such change (new work, or a status the
 * escalation must see) but a text SMS's new status (status_only_change),
 * and modem sidecars, by NOTIFY, for a row queued on the modem. One C trigger instead of a WHEN qualification and statement
 * triggers, because a WHEN clause is read back from its text on every
 * statement, and the log is written on the application's hot path.
 */
Datum
sms_wake_on_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HeapTuple	row;
	TupleDesc	tupdesc;
	int			channel_att;
	int			state_att;
	bool		isnull;
	Datum		channel;
	Datum		state;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("smsdispatch.wake_on_change() must be a BEFORE INSERT OR UPDATE FOR EACH ROW trigger")));
	tupdesc = RelationGetDescr(trigdata->tg_relation);
	channel_att = SPI_fnumber(tupdesc, "channel");
	state_att = SPI_fnumber(tupdesc, "send_state");
	if (channel_att <= 0 || state_att <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("smsdispatch.wake_on_change() needs the columns channel and send_state, which table \"%s\" lacks",
						RelationGetRelationName(trigdata->tg_relation))));
	row = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;

	if (!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		!status_only_change(trigdata->tg_trigtuple, row, tupdesc, channel_att, state_att))
		sms_wake_at_commit();

	channel = heap_getattr(row, channel_att, tupdesc, &isnull);
	if (isnull || !sms_text_equals(channel, "modem"))
		return PointerGetDatum(row);
	state = heap_getattr(row, state_att, tupdesc, &isnull);
	if (!isnull && sms_text_equals(state, "queued"))
		Async_Notify(SMS_MODEM_NOTIFY_CHANNEL, "");
	return PointerGetDatum(row);
}

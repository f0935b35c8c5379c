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

#include "access/xact.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_wake_at_commit);

SmsSharedState *sms_shared = NULL;

static bool wake_pending = false;
static bool xact_callback_registered = false;

/* Asks the postmaster for our shared memory; from shmem_request_hook. */
void
sms_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SmsSharedState)));
}

/* Attaches to (or creates) the shared state; from shmem_startup_hook. */
void
sms_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	sms_shared = ShmemInitStruct("smsdispatch", sizeof(SmsSharedState), &found);
	if (!found)
		memset(sms_shared, 0, sizeof(SmsSharedState));
	LWLockRelease(AddinShmemInitLock);
}

/* Sets the worker's latch, if a worker runs. */
void
sms_wake_worker(void)
{
	Latch	   *latch;

	if (sms_shared == NULL)
		return;
	latch = sms_shared->worker_latch;
	if (latch != NULL && sms_shared->worker_pid != MyProcPid)
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

/*
 * Statement trigger on verification.sms_log: remembers that this transaction
 * queued or re-queued SMS, for the wake-up at COMMIT.
 */
Datum
sms_wake_at_commit(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("smsdispatch.wake_at_commit() must be called as a trigger")));
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wake_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_pending = true;
	return PointerGetDatum(NULL);
}

/*-------------------------------------------------------------------------
 *
 * channel_health.c
 *	  The IP2SMS channel's health, published by the worker in shared memory
 *	  and read by smsdispatch.ip2sms_health() (behind the view
 *	  smsdispatch.channel_health).
 *
 * The worker is the only writer and publishes only changes (the channel
 * paused on a 401, found the gateway unreachable, or works again), so the
 * cost is a spinlock now and then, never a transaction. The modem's health
 * is the sidecars' heartbeat rows and lives in SQL (71_channel_health.sql).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_ip2sms_health);

static const char *const state_names[] = {
	[SMS_CHANNEL_OK] = "ok",
	[SMS_CHANNEL_AUTH_FAILED] = "auth_failed",
	[SMS_CHANNEL_DOWN] = "down",
};

/*
 * Publishes the IP2SMS channel's state; error says why it is not ok (NULL
 * keeps the last one). A state it is in already keeps its "since". Back to
 * ok, the last error goes: a cause that is gone is not shown as the
 * channel's error. Worker only.
 */
void
sms_channel_publish(SmsChannelState state, const char *error)
{
	static bool published = false;
	static SmsChannelState current;
	SmsChannelHealth *h;

	if (sms_shared == NULL || (published && state == current && error == NULL))
		return;
	h = &sms_shared->ip2sms;
	SpinLockAcquire(&h->mutex);
	if (!published || state != current)
		h->since = GetCurrentTimestamp();
	h->state = state;
	if (state == SMS_CHANNEL_OK)
		h->last_error[0] = '\0';
	else if (error != NULL)
		strlcpy(h->last_error, error, sizeof(h->last_error));
	SpinLockRelease(&h->mutex);
	published = true;
	current = state;
}

/*
 * smsdispatch.ip2sms_health() -> (state, since, last_error): the worker's
 * view of the channel. Without a worker, or without a send URL, nothing
 * sends IP2SMS: 'down' and 'unconfigured' say so.
 */
Datum
sms_ip2sms_health(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	SmsChannelHealth copy;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "smsdispatch.ip2sms_health() must return a record");
	tupdesc = BlessTupleDesc(tupdesc);

	if (sms_shared == NULL || sms_shared->worker_pid == 0)
	{
		values[0] = CStringGetTextDatum("down");
		nulls[1] = true;
		values[2] = CStringGetTextDatum(sms_shared == NULL ?
										"no background worker: smsdispatch is not in shared_preload_libraries" :
										"the smsdispatch background worker is not running");
	}
	else if (sms_ip2sms_url[0] == '\0')
	{
		values[0] = CStringGetTextDatum("unconfigured");
		nulls[1] = true;
		values[2] = CStringGetTextDatum("smsdispatch.ip2sms_url is empty");
	}
	else
	{
		SpinLockAcquire(&sms_shared->ip2sms.mutex);
		memcpy(&copy, &sms_shared->ip2sms, sizeof(copy));
		SpinLockRelease(&sms_shared->ip2sms.mutex);
		values[0] = CStringGetTextDatum(state_names[copy.state]);
		values[1] = TimestampTzGetDatum(copy.since);
		nulls[1] = (copy.since == 0);
		values[2] = CStringGetTextDatum(copy.last_error);
		nulls[2] = (copy.last_error[0] == '\0');
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

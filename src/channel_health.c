/*-------------------------------------------------------------------------
 *
 * channel_health.c
 *	  The IP2SMS channel's health and its circuit: every failure class of a
 *	  request, what it means for the channel and for the SMS, the states the
 *	  channel goes through, the probes and the WARNINGs, in one place. The
 *	  state is published by the worker in shared memory and read by
 *	  smsdispatch.ip2sms_health() (behind the view smsdispatch.channel_health).
 *
 * A failure of the channel (no connection, no answer in time, an HTTP 5xx,
 * an answer that is not an IP2SMS answer, refused credentials) never
 * spends the attempts of the SMS it hit: the row goes back to the queue.
 * The first ones make the channel 'degraded'; a run of CIRCUIT_OPEN_AFTER
 * in a row (one, for refused credentials) opens the circuit: the channel
 * is 'down' (or 'auth_failed'), only one probe request at a time leaves,
 * PROBE_FIRST_MS after the last failure and doubling to PROBE_MOST_MS,
 * and a WARNING names the channel, the class and the last error. Any
 * answer of the gateway closes the circuit. Only a refusal of the request
 * itself (another non-2xx status, and the gateway's Rejected answers)
 * belongs to the SMS and spends its attempts.
 *
 * The worker is the only writer and publishes only changes, so the cost is
 * a spinlock now and then, never a transaction. The modem's health is the
 * sidecars' heartbeat rows and lives in SQL (71_channel_health.sql).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_ip2sms_health);

/* the channel's states, as smsdispatch.channel_health shows them */
static const char *const state_names[] = {
	[SMS_CHANNEL_OK] = "ok",
	[SMS_CHANNEL_DEGRADED] = "degraded",
	[SMS_CHANNEL_DOWN] = "down",
	[SMS_CHANNEL_AUTH_FAILED] = "auth_failed",
};

/* channel failures in a row that open the circuit */
#define CIRCUIT_OPEN_AFTER	3
/* while it is open: a probe this long after a failure, doubling up to the most */
#define PROBE_FIRST_MS		1000
#define PROBE_MOST_MS		5000
/* while it stays open in the same state for the same class: one WARNING this often */
#define WARNING_EVERY_MS	60000

/* What one failure class means for the channel and for the SMS. */
typedef struct FailureClass
{
	const char *name;			/* in the WARNING and the docs */
	bool		of_channel;		/* false: the SMS's own, it spends an attempt */
	int			open_after;		/* failures in a row that open the circuit */
	SmsChannelState open_state; /* the channel's state once it is open */
	const char *what;			/* what the gateway does, for the WARNING */
	const char *hint;
} FailureClass;

static const FailureClass failure_classes[] = {
	[SMS_FAILURE_CONNECT] = {"connect_error", true, CIRCUIT_OPEN_AFTER, SMS_CHANNEL_DOWN,
		"the gateway cannot be reached",
	"Check smsdispatch.ip2sms_url and the network, then reload the configuration."},
	[SMS_FAILURE_TIMEOUT] = {"timeout", true, CIRCUIT_OPEN_AFTER, SMS_CHANNEL_DOWN,
		"the gateway does not answer within smsdispatch.ip2sms_timeout",
	"Check the gateway and the network to it; a reload probes at once."},
	[SMS_FAILURE_HTTP_5XX] = {"http_5xx", true, CIRCUIT_OPEN_AFTER, SMS_CHANNEL_DOWN,
		"the gateway answers with server errors",
	"The gateway fails on its side: check its status with its operator; a reload probes at once."},
	[SMS_FAILURE_GARBAGE] = {"garbage", true, CIRCUIT_OPEN_AFTER, SMS_CHANNEL_DOWN,
		"the gateway's answers are not IP2SMS answers",
	"Check that smsdispatch.ip2sms_url and ip2sms_status_url are the gateway's IP2SMS URLs, then reload the configuration."},
	[SMS_FAILURE_AUTH] = {"auth_failed", true, 1, SMS_CHANNEL_AUTH_FAILED,
		"the gateway refused the credentials",
	"Check smsdispatch.ip2sms_login and the password in smsdispatch.ip2sms_password_file, then reload the configuration."},
	[SMS_FAILURE_REFUSED] = {"refused", false, 0, SMS_CHANNEL_OK, NULL, NULL},
};

/* the circuit, kept by the worker */
static int	failures_in_row = 0;
static bool circuit_is_open = false;
static int	probe_delay_ms = 0;
static TimestampTz next_probe = 0;
static TimestampTz warned_at = 0;
static SmsChannelState warned_state = SMS_CHANNEL_OK;
static SmsFailure warned_failure = SMS_FAILURE_REFUSED;

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

	if (sms_my_slot == NULL || (published && state == current && error == NULL))
		return;
	h = &sms_my_slot->ip2sms;
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

/* Whether a failure of this class is the channel's, not the SMS's. */
bool
sms_failure_is_channels(SmsFailure failure)
{
	return failure_classes[failure].of_channel;
}

/*
 * A request failed for a reason of the channel (see the file header):
 * counts it in the run, opens the circuit at the run's length, sets the
 * next probe, publishes the state and warns when the circuit opened or
 * changed its state or class, and then once a minute. error is the
 * request's last_error. Worker only.
 */
void
sms_circuit_failure(SmsFailure failure, const char *error)
{
	const FailureClass *fc = &failure_classes[failure];
	TimestampTz now = GetCurrentTimestamp();
	SmsChannelState state;

	Assert(fc->of_channel);
	failures_in_row++;
	if (!circuit_is_open && failures_in_row < fc->open_after)
	{
		sms_channel_publish(SMS_CHANNEL_DEGRADED, error);
		return;
	}
	circuit_is_open = true;
	probe_delay_ms = probe_delay_ms == 0 ? PROBE_FIRST_MS :
		Min(probe_delay_ms * 2, PROBE_MOST_MS);
	next_probe = TimestampTzPlusMilliseconds(now, probe_delay_ms);
	state = fc->open_state;
	sms_channel_publish(state, error);
	if (warned_at != 0 && state == warned_state && failure == warned_failure &&
		!TimestampDifferenceExceeds(warned_at, now, WARNING_EVERY_MS))
		return;
	ereport(WARNING,
			(errmsg_plural("smsdispatch: channel ip2sms is %s: %s (%s, %d failure in a row); its SMS stay queued, one probe at a time",
						   "smsdispatch: channel ip2sms is %s: %s (%s, %d failures in a row); its SMS stay queued, one probe at a time",
						   failures_in_row,
						   state_names[state], fc->what, fc->name, failures_in_row),
			 errdetail("The last error: %s", error),
			 errhint("%s", fc->hint)));
	warned_at = now;
	warned_state = state;
	warned_failure = failure;
}

/*
 * The gateway answered a request (a refusal of the request itself
 * included): the circuit closes and the channel is ok. Worker only.
 */
void
sms_circuit_answered(void)
{
	if (circuit_is_open)
		ereport(LOG,
				(errmsg_plural("smsdispatch: channel ip2sms works again after %d failure in a row",
							   "smsdispatch: channel ip2sms works again after %d failures in a row",
							   failures_in_row, failures_in_row)));
	failures_in_row = 0;
	circuit_is_open = false;
	probe_delay_ms = 0;
	next_probe = 0;
	sms_channel_publish(SMS_CHANNEL_OK, NULL);
}

/* Whether the circuit is open: only probes leave. */
bool
sms_circuit_open(void)
{
	return circuit_is_open;
}

/* While the circuit is open: when the next probe may leave. */
TimestampTz
sms_circuit_next_probe(void)
{
	return next_probe;
}

/* The configuration was reloaded: new settings are probed at once. */
void
sms_circuit_probe_now(void)
{
	next_probe = 0;
}

/* Whether the launcher found no slot for this database (launcher.c). */
static bool
database_left_out(Oid dboid)
{
	int			n = sms_shared->nleft_out;

	pg_read_barrier();
	for (int i = 0; i < n; i++)
		if (sms_shared->left_out[i] == dboid)
			return true;
	return false;
}

/*
 * smsdispatch.ip2sms_health() -> (state, since, last_error): the view of
 * the channel of the worker that serves the calling database, and only of
 * it. Without a worker, or without a send URL, nothing sends IP2SMS:
 * 'down', 'unserved' (smsdispatch.database does not name this database,
 * or smsdispatch.max_databases others are served) and 'unconfigured' say
 * so.
 */
Datum
sms_ip2sms_health(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	SmsChannelHealth copy;
	SmsDatabaseSlot *slot = sms_database_slot(MyDatabaseId);

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "smsdispatch.ip2sms_health() must return a record");
	tupdesc = BlessTupleDesc(tupdesc);

	if (sms_shared == NULL)
	{
		values[0] = CStringGetTextDatum("down");
		nulls[1] = true;
		values[2] = CStringGetTextDatum("no background worker: smsdispatch is not in shared_preload_libraries");
	}
	else if (slot == NULL && !sms_serves_every_database() &&
			 !sms_database_listed(get_database_name(MyDatabaseId)))
	{
		values[0] = CStringGetTextDatum("unserved");
		nulls[1] = true;
		values[2] = CStringGetTextDatum(psprintf("no smsdispatch worker serves this database: smsdispatch.database is '%s'",
												 sms_database));
	}
	else if (slot == NULL && database_left_out(MyDatabaseId))
	{
		values[0] = CStringGetTextDatum("unserved");
		nulls[1] = true;
		values[2] = CStringGetTextDatum(psprintf("no smsdispatch worker serves this database: smsdispatch.max_databases (%d) others are served, or no background worker process was free (see the server log)",
												 sms_max_databases));
	}
	else if (slot == NULL || slot->worker_pid == 0)
	{
		values[0] = CStringGetTextDatum("down");
		nulls[1] = true;
		values[2] = CStringGetTextDatum("the smsdispatch background worker is not running");
	}
	else if (sms_ip2sms_url[0] == '\0')
	{
		values[0] = CStringGetTextDatum("unconfigured");
		nulls[1] = true;
		values[2] = CStringGetTextDatum("smsdispatch.ip2sms_url is empty");
	}
	else
	{
		SpinLockAcquire(&slot->ip2sms.mutex);
		memcpy(&copy, &slot->ip2sms, sizeof(copy));
		SpinLockRelease(&slot->ip2sms.mutex);
		values[0] = CStringGetTextDatum(state_names[copy.state]);
		values[1] = TimestampTzGetDatum(copy.since);
		nulls[1] = (copy.since == 0);
		values[2] = CStringGetTextDatum(copy.last_error);
		nulls[2] = (copy.last_error[0] == '\0');
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

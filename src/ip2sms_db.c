/*-------------------------------------------------------------------------
 *
 * ip2sms_db.c
 *	  The IP2SMS channel's two short transactions around a round of HTTP
 *	  requests: claiming the work, and recording what came of it.
 *
 * Claiming marks due queued rows 'sending' (attempts + 1) and commits
 * before any request leaves, so that a crash can never lead to a silent
 * second send: a row left 'sending' becomes 'unknown' when the worker
 * starts again. Recording writes every result of the round with one UPDATE
 * over arrays, in one transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"
#include "ip2sms.h"
#include "ip2sms_xml.h"

/* most rows one round sends or polls; more waits for the next round */
#define IP2SMS_BATCH		2000

/* first retry after a transport failure, doubling up to the cap */
#define RETRY_BASE_S		1.0
#define RETRY_CAP_S			300.0

/* shortest sleep after a round that found due rows but could take none */
#define IDLE_PAUSE_MS		100

/* poll column of the record statement */
#define POLL_CLEAR		0
#define POLL_SCHEDULE	1
#define POLL_KEEP		2

static bool recovered = false;
static bool url_warned = false;

/*
 * Starts a transaction with SPI and a snapshot. synchronous_commit is the
 * transaction's: "on" where losing the commit could re-send an SMS.
 */
static void
begin_work(const char *synchronous_commit)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) set_config_option("synchronous_commit", synchronous_commit,
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
							 true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
}

/* Commits what begin_work started and reports the statistics. */
static void
end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
}

/* Executes one statement; elog when it does not do what it must. */
static void
exec(const char *sql, int nargs, Oid *types, Datum *values, int expected)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0);

	if (rc != expected)
		elog(ERROR, "ip2sms: \"%s\" failed: %s", sql, SPI_result_code_string(rc));
}

/*
 * Rows a crash (or an abrupt stop) left 'sending' may have reached the
 * gateway: they become 'unknown', never re-sent. An operator who knows
 * better re-queues one with UPDATE verification.sms_log SET
 * send_state = 'queued' WHERE id = ...
 */
static void
recover_sending(void)
{
	exec("UPDATE verification.sms_log"
		 "   SET send_state = 'unknown', updated_at = now(),"
		 "       last_error = 'the worker stopped while the request was in flight; not re-sent'"
		 " WHERE channel = 'ip2sms' AND send_state = 'sending'",
		 0, NULL, NULL, SPI_OK_UPDATE);
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("smsdispatch: %llu IP2SMS messages were in flight when the worker stopped; marked unknown",
						(unsigned long long) SPI_processed),
				 errhint("Re-queue one that surely did not leave with UPDATE verification.sms_log SET send_state = 'queued' WHERE id = ...")));
	recovered = true;
}

/* Column col of SPI result row i, as text in the current context. */
#define result_text(i, col) \
	SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, (col))

/* Fills requests from the claim's result rows, in the caller's context. */
static Ip2smsRequest *
take_requests(Ip2smsKind kind, int *n, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Ip2smsRequest *reqs = palloc0(sizeof(Ip2smsRequest) * Max(SPI_processed, 1));
	int			i;

	for (i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		reqs[i].kind = kind;
		reqs[i].id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												 SPI_tuptable->tupdesc, 1, &isnull));
		if (kind == IP2SMS_SEND)
		{
			reqs[i].phone = result_text(i, 2);
			reqs[i].body = result_text(i, 3);
			reqs[i].attempts = atoi(result_text(i, 4));
		}
		else
			reqs[i].gateway_id = result_text(i, 2);
	}
	*n = SPI_processed;
	MemoryContextSwitchTo(old);
	return reqs;
}

/*
 * The claim transaction: recovery (first call), polled rows past the
 * status window become Terminated, due queued rows become 'sending', due
 * polls are read. Requests are allocated in the current memory context.
 */
void
ip2sms_claim(Ip2smsRound *round, bool want_sends, bool want_polls)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			send_batch = IP2SMS_BATCH;
	Oid			types[1] = {INT4OID};
	Datum		values[1];

	/*
	 * A crash turns a claimed batch 'unknown', sent or not: keep it to what
	 * the connections carry in well under a second, and a rate-limited
	 * round to about one second's worth.
	 */
	send_batch = Min(send_batch, sms_ip2sms_max_connections * 64);
	if (sms_ip2sms_max_rate > 0)
		send_batch = Min(send_batch, sms_ip2sms_max_rate);

	memset(round, 0, sizeof(*round));
	/* the claim must be durable before any request leaves */
	begin_work("on");
	if (!recovered)
		recover_sending();

	values[0] = Int32GetDatum(sms_ip2sms_status_window_s);
	exec("UPDATE verification.sms_log"
		 "   SET gateway_status = 'Terminated', status_changed_at = now(),"
		 "       next_poll_at = NULL, updated_at = now()"
		 " WHERE next_poll_at <= now() AND channel = 'ip2sms'"
		 "   AND submitted_at <= now() - make_interval(secs => $1)",
		 1, types, values, SPI_OK_UPDATE);

	if (want_sends)
	{
		values[0] = Int32GetDatum(send_batch);
		exec("UPDATE verification.sms_log l"
			 "   SET send_state = 'sending', attempts = l.attempts + 1, updated_at = now()"
			 "  FROM (SELECT id FROM verification.sms_log"
			 "         WHERE channel = 'ip2sms' AND send_state = 'queued'"
			 "           AND (next_attempt_at IS NULL OR next_attempt_at <= now())"
			 "         ORDER BY next_attempt_at, id LIMIT $1"
			 "         FOR UPDATE SKIP LOCKED) c"
			 " WHERE l.id = c.id"
			 " RETURNING l.id, l.phone_number, l.body, l.attempts",
			 1, types, values, SPI_OK_UPDATE_RETURNING);
		round->sends = take_requests(IP2SMS_SEND, &round->nsends, cxt);
		round->more_due |= (round->nsends == send_batch);
		url_warned = false;
	}
	else if (!url_warned)
	{
		exec("SELECT 1 FROM verification.sms_log"
			 " WHERE channel = 'ip2sms' AND send_state = 'queued' LIMIT 1",
			 0, NULL, NULL, SPI_OK_SELECT);
		if (SPI_processed > 0)
		{
			ereport(WARNING,
					(errmsg("smsdispatch: IP2SMS messages stay queued: smsdispatch.ip2sms_url is empty"),
					 errhint("Set smsdispatch.ip2sms_url, ip2sms_status_url, ip2sms_login and ip2sms_password_file, then reload.")));
			url_warned = true;
		}
	}
	if (want_polls)
	{
		values[0] = Int32GetDatum(IP2SMS_BATCH);
		exec("SELECT id, gateway_id FROM verification.sms_log"
			 " WHERE next_poll_at <= now() AND channel = 'ip2sms'"
			 "   AND send_state = 'submitted' AND gateway_id IS NOT NULL"
			 " ORDER BY next_poll_at LIMIT $1",
			 1, types, values, SPI_OK_SELECT);
		round->polls = take_requests(IP2SMS_STATUS, &round->npolls, cxt);
		round->more_due |= (round->npolls == IP2SMS_BATCH);
	}
	end_work();
}

/* Arrays of the record statement, one element per row to update. */
typedef struct RecordArrays
{
	int			n;
	Datum	   *v[10];
	bool	   *isnull[10];
} RecordArrays;

static const Oid record_types[10] = {
	INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, BOOLOID, TEXTOID,
	FLOAT8OID, INT4OID
};

enum
{
	R_ID, R_SEND_STATE, R_ATTEMPT_DELTA, R_GATEWAY_ID, R_GATEWAY_STATUS,
	R_CHANGED, R_SET_ERROR, R_ERROR, R_RETRY_S, R_POLL
};

/* Sets one text column of the current row, NULL for a NULL pointer. */
static void
put_text(RecordArrays *ra, int col, const char *s)
{
	ra->isnull[col][ra->n] = (s == NULL);
	ra->v[col][ra->n] = s ? CStringGetTextDatum(s) : (Datum) 0;
}

/* Exponential backoff before attempt number attempts + 1. */
static double
retry_delay(int attempts)
{
	double		d = RETRY_BASE_S;

	while (--attempts > 0 && d < RETRY_CAP_S)
		d *= 2;
	return Min(d, RETRY_CAP_S);
}

/* Adds the row for one send request: its new state and why. */
static void
add_send(RecordArrays *ra, Ip2smsRequest *r)
{
	Ip2smsAnswer *a = r->answer;
	const char *send_state = NULL;
	const char *error = NULL;
	bool		set_error = true;
	int			poll = POLL_CLEAR;
	double		retry_s = -1;
	int			delta = 0;

	switch (r->outcome)
	{
		case IP2SMS_NOT_STARTED:
			send_state = "queued";
			delta = -1;
			set_error = false;
			retry_s = 0;
			break;
		case IP2SMS_IN_FLIGHT:
			send_state = "unknown";
			error = "the worker stopped while the request was in flight; not re-sent";
			break;
		case IP2SMS_AUTH_FAILED:
			send_state = "failed";
			error = r->detail;
			break;
		case IP2SMS_TRANSPORT_ERROR:
			if (r->attempts >= sms_max_attempts)
			{
				send_state = "failed";
				error = psprintf("gave up after %d attempts: %s", r->attempts, r->detail);
			}
			else
			{
				send_state = "queued";
				error = r->detail;
				retry_s = retry_delay(r->attempts);
				sms_stats_count(SMS_STAT_RETRIES);
			}
			break;
		case IP2SMS_ANSWERED:
			if (strcmp(a->state, "Rejected") == 0 ||
				strcmp(a->state, "Unaccepted") == 0)
			{
				send_state = "failed";
				error = a->error[0] ? a->error : a->state;
			}
			else
			{
				send_state = "submitted";
				if (a->id[0] == '\0')
					error = "the gateway accepted the SMS without an id: its status cannot be polled";
				else if (ip2sms_state_pollable(a->state))
					poll = POLL_SCHEDULE;
			}
			break;
	}
	put_text(ra, R_SEND_STATE, send_state);
	ra->v[R_ATTEMPT_DELTA][ra->n] = Int32GetDatum(delta);
	put_text(ra, R_GATEWAY_ID, r->outcome == IP2SMS_ANSWERED && a->id[0] ? a->id : NULL);
	put_text(ra, R_GATEWAY_STATUS, r->outcome == IP2SMS_ANSWERED ? a->state : NULL);
	put_text(ra, R_CHANGED, r->outcome == IP2SMS_ANSWERED && a->date[0] ? a->date : NULL);
	ra->v[R_SET_ERROR][ra->n] = BoolGetDatum(set_error);
	put_text(ra, R_ERROR, error);
	ra->isnull[R_RETRY_S][ra->n] = (retry_s < 0);
	ra->v[R_RETRY_S][ra->n] = Float8GetDatum(retry_s);
	ra->v[R_POLL][ra->n] = Int32GetDatum(poll);
}

/* Adds the row for one status request; false when the row stays as it is. */
static bool
add_poll(RecordArrays *ra, Ip2smsRequest *r)
{
	Ip2smsAnswer *a = r->answer;
	bool		answered = (r->outcome == IP2SMS_ANSWERED);

	if (r->outcome == IP2SMS_NOT_STARTED || r->outcome == IP2SMS_IN_FLIGHT)
		return false;
	put_text(ra, R_SEND_STATE, NULL);
	ra->v[R_ATTEMPT_DELTA][ra->n] = Int32GetDatum(0);
	put_text(ra, R_GATEWAY_ID, NULL);
	put_text(ra, R_GATEWAY_STATUS, answered ? a->state : NULL);
	put_text(ra, R_CHANGED, answered && a->date[0] ? a->date : NULL);
	ra->v[R_SET_ERROR][ra->n] = BoolGetDatum(answered && a->error[0]);
	put_text(ra, R_ERROR, answered && a->error[0] ? a->error : NULL);
	ra->isnull[R_RETRY_S][ra->n] = true;
	ra->v[R_POLL][ra->n] = Int32GetDatum(answered && !ip2sms_state_pollable(a->state) ?
										 POLL_CLEAR : POLL_SCHEDULE);
	return true;
}

/* Makes a one-dimensional array of element type typid. */
static Datum
make_array(Datum *v, bool *isnull, int n, Oid typid)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(typid, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(v, isnull, 1, dims, lbs, typid,
											  typlen, typbyval, typalign));
}

/*
 * Writes one UPDATE's worth of results. Poll times follow the backoff of
 * smsdispatch.ip2sms_poll_delay() and never pass the end of the status
 * window.
 */
static void
write_results(Ip2smsRound *round)
{
	RecordArrays ra;
	Oid			types[12];
	Datum		values[12];
	int			total = round->nsends + round->npolls;
	int			i,
				c;

	memset(&ra, 0, sizeof(ra));
	for (c = 0; c < 10; c++)
	{
		ra.v[c] = palloc0(sizeof(Datum) * Max(total, 1));
		ra.isnull[c] = palloc0(sizeof(bool) * Max(total, 1));
	}
	for (i = 0; i < total; i++)
	{
		Ip2smsRequest *r = i < round->nsends ? &round->sends[i] :
			&round->polls[i - round->nsends];

		if (r->kind == IP2SMS_SEND)
			add_send(&ra, r);
		else if (!add_poll(&ra, r))
			continue;
		ra.v[R_ID][ra.n] = Int64GetDatum(r->id);
		ra.n++;
	}
	if (ra.n == 0)
		return;

	for (c = 0; c < 10; c++)
	{
		types[c] = get_array_type(record_types[c]);
		values[c] = make_array(ra.v[c], ra.isnull[c], ra.n, record_types[c]);
	}
	types[10] = INT4OID;
	values[10] = Int32GetDatum(sms_ip2sms_poll_interval_s);
	types[11] = INT4OID;
	values[11] = Int32GetDatum(sms_ip2sms_status_window_s);

	exec("UPDATE verification.sms_log l SET"
		 "  send_state = coalesce(r.send_state, l.send_state),"
		 "  attempts = l.attempts + r.attempt_delta,"
		 "  gateway_id = coalesce(r.gateway_id, l.gateway_id),"
		 "  gateway_status = coalesce(r.gateway_status, l.gateway_status),"
		 "  status_changed_at = CASE"
		 "    WHEN r.changed IS NOT NULL THEN r.changed::timestamptz"
		 "    WHEN r.gateway_status IS DISTINCT FROM l.gateway_status"
		 "         AND r.gateway_status IS NOT NULL THEN now()"
		 "    ELSE l.status_changed_at END,"
		 "  last_error = CASE WHEN r.set_error THEN r.error ELSE l.last_error END,"
		 "  next_attempt_at = now() + make_interval(secs => r.retry_s),"
		 "  submitted_at = CASE WHEN r.send_state = 'submitted'"
		 "    THEN coalesce(l.submitted_at, now()) ELSE l.submitted_at END,"
		 "  next_poll_at = CASE r.poll WHEN 0 THEN NULL WHEN 2 THEN l.next_poll_at"
		 "    ELSE least(now() + smsdispatch.ip2sms_poll_delay("
		 "                 now() - coalesce(l.submitted_at, now()), make_interval(secs => $11)),"
		 "               coalesce(l.submitted_at, now()) + make_interval(secs => $12)) END,"
		 "  updated_at = now()"
		 " FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
		 "   AS r(id, send_state, attempt_delta, gateway_id, gateway_status,"
		 "        changed, set_error, error, retry_s, poll)"
		 " WHERE l.id = r.id",
		 12, types, values, SPI_OK_UPDATE);
}

/*
 * When the channel next has work, lowering *next_due to it; idle says the
 * round took nothing.
 */
static void
lower_next_due(bool want_sends, bool want_polls, bool idle, TimestampTz *next_due)
{
	TimestampTz due;
	Oid			types[2] = {BOOLOID, BOOLOID};
	Datum		values[2] = {BoolGetDatum(want_sends), BoolGetDatum(want_polls)};
	bool		isnull;
	Datum		d;

	exec("SELECT least("
		 "  (SELECT now() WHERE $1 AND EXISTS (SELECT 1 FROM verification.sms_log"
		 "     WHERE channel = 'ip2sms' AND send_state = 'queued' AND next_attempt_at IS NULL)),"
		 "  (SELECT min(next_attempt_at) FROM verification.sms_log"
		 "     WHERE $1 AND channel = 'ip2sms' AND send_state = 'queued'),"
		 "  (SELECT min(next_poll_at) FROM verification.sms_log"
		 "     WHERE $2 AND next_poll_at IS NOT NULL AND channel = 'ip2sms'))",
		 2, types, values, SPI_OK_SELECT);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return;
	due = DatumGetTimestampTz(d);
	/* due rows this round could not take are locked by someone: no spinning */
	if (idle)
		due = Max(due, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), IDLE_PAUSE_MS));
	if (due < *next_due)
		*next_due = due;
}

/*
 * The record transaction: every result of the round in one UPDATE, then
 * when the channel next has work.
 */
void
ip2sms_record(Ip2smsRound *round, bool want_sends, bool want_polls,
			  TimestampTz *next_due)
{
	/* losing this commit in an OS crash only leaves rows 'sending' (unknown) */
	begin_work("off");
	write_results(round);
	if (round->more_due)
		*next_due = GetCurrentTimestamp();
	else
		lower_next_due(want_sends, want_polls, round->nsends + round->npolls == 0,
					   next_due);
	end_work();
}

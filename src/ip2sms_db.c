/*-------------------------------------------------------------------------
 *
 * ip2sms_db.c
 *	  The IP2SMS channel's one kind of transaction: record what finished,
 *	  claim what the free connections will carry next.
 *
 * Claiming marks due queued rows 'sending' (attempts + 1), most urgent
 * first (smsdispatch.claim_sends, shared with the modem), and commits
 * before any of those requests leaves, so that a crash can never lead to a
 * silent second send: a row left 'sending' becomes 'unknown' when the
 * worker starts again. Rows are claimed only for connections that are free
 * at that moment, so a crash leaves at most the requests on the wire and
 * one batch of unrecorded results in doubt.
 *
 * Recording never waits for a lock another session holds: the rows and
 * their alarms are locked with SKIP LOCKED first, and a result whose row
 * or alarm is locked stays in memory and is recorded by a later exchange.
 * An error anywhere (a bad trigger on the log, a lock_timeout) rolls the
 * exchange back and keeps every result for the next try; nothing is lost
 * and nothing is sent again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"
#include "ip2sms.h"
#include "ip2sms_xml.h"

/* a result whose row another session holds is tried again this much later */
#define HELD_RETRY_MS	100

/* poll column of the record statement */
#define POLL_CLEAR		0
#define POLL_SCHEDULE	1

static bool recovered = false;

/*
 * Sets what the channel's transaction needs beyond what every worker
 * transaction has (sms_worker_transaction). synchronous_commit is the
 * transaction's: "on" where losing the commit could re-send an SMS.
 */
static void
set_exchange_settings(const char *synchronous_commit)
{
	sms_set_for_transaction("synchronous_commit", synchronous_commit);
	/* nothing this sends resolves a name through a search_path others write */
	sms_set_for_transaction("search_path", "pg_catalog, pg_temp");
	/*
	 * Every statement of the channel finds its rows through an index
	 * whatever its parameters (a generic plan of a LIMIT $1 claim still
	 * walks sms_log_queued_idx in order), so the saved plans, and those of
	 * smsdispatch.claim_sends, are planned once, not on every exchange:
	 * planning (with claim_sends parsed on each call while it was SQL) was
	 * half of the worker's time.
	 */
	sms_set_for_transaction("plan_cache_mode", "force_generic_plan");
	/*
	 * A generic plan is made once, maybe while the log is empty (after a
	 * TRUNCATE), where a bitmap or sequential scan and a sort look cheapest;
	 * kept for a full log, that plan reads every due row on each exchange.
	 * These two keep it the index scan in order that each statement is
	 * written for (they forbid nothing that has no index path).
	 */
	sms_set_for_transaction("enable_seqscan", "off");
	sms_set_for_transaction("enable_bitmapscan", "off");
	/*
	 * Under those two, a statement with no index path (one in a trigger
	 * someone put on the log, say) costs more than any jit_above_cost, and
	 * JIT would compile it again on every exchange: the channel's
	 * statements are short, JIT never pays for them.
	 */
	sms_set_for_transaction("jit", "off");
}

/*
 * Executes one of the channel's recurring statements through a plan saved
 * for the worker's life; elog when it does not do what it must.
 */
static void
exec_saved(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types,
		   Datum *values, int expected)
{
	int			rc;

	sms_keep_plan(plan, sql, nargs, types);
	rc = SPI_execute_plan(*plan, values, NULL, false, 0);
	if (rc != expected)
		elog(ERROR, "ip2sms: \"%s\" failed: %s", sql, SPI_result_code_string(rc));
}

/*
 * Rows of the worker's channels (IP2SMS, the registered ones; a modem's
 * are its sidecar's, under a lease) that a crash (or an abrupt stop) left
 * 'sending' may have reached the gateway: they become 'unknown', never re-sent. An operator who knows
 * better re-queues one with UPDATE verification.sms_log SET
 * send_state = 'queued' WHERE id = ...
 */
static void
recover_sending(void)
{
	static SPIPlanPtr plan = NULL;

	exec_saved(&plan,
			   "UPDATE verification.sms_log"
			   "   SET send_state = 'unknown', updated_at = pg_catalog.now(),"
			   "       last_error = 'the worker stopped while the request was in flight; not re-sent'"
			   /* the worker's channels: IP2SMS and the registered ones */
			   " WHERE channel <> 'modem'"
			   "   AND send_state = 'sending'",
			   0, NULL, NULL, SPI_OK_UPDATE);
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("smsdispatch: %llu messages of the worker's channels were in flight when the worker stopped; marked unknown",
						(unsigned long long) SPI_processed),
				 errhint("Re-queue one that surely did not leave with UPDATE verification.sms_log SET send_state = 'queued' WHERE id = ...")));
}

/* Column col of SPI result row i, as text in the current context. */
#define result_text(i, col) \
	SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, (col))

/* Column col of SPI result row i, as an int8 (0 for NULL). */
static int64
result_int64(int i, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

/* A fresh request in a memory context of its own. */
static Ip2smsRequest *
new_request(Ip2smsKind kind)
{
	MemoryContext cxt = AllocSetContextCreate(TopMemoryContext, "smsdispatch ip2sms request",
											  ALLOCSET_SMALL_SIZES);
	Ip2smsRequest *req = MemoryContextAllocZero(cxt, sizeof(Ip2smsRequest));

	req->cxt = cxt;
	req->kind = kind;
	req->outcome = IP2SMS_IN_FLIGHT;
	return req;
}

/* Frees a request and everything it holds. */
void
ip2sms_free_request(Ip2smsRequest *req)
{
	MemoryContextDelete(req->cxt);
}

/* Adds the claim's result rows to x->claimed as requests of this kind. */
static void
take_requests(Ip2smsExchange *x, Ip2smsKind kind)
{
	int			i;

	for (i = 0; i < SPI_processed; i++)
	{
		Ip2smsRequest *req = new_request(kind);
		MemoryContext old = MemoryContextSwitchTo(req->cxt);

		x->claimed[x->nclaimed++] = req;
		req->id = result_int64(i, 1);
		req->message_id = result_int64(i, 3);
		if (kind == IP2SMS_SEND)
		{
			req->phone = result_text(i, 2);
			req->body = result_text(i, 4);
			req->attempts = (int) result_int64(i, 5);
			req->urgent = result_int64(i, 6) <= SMS_PRIORITY_URGENT_MAX;
		}
		else
			req->gateway_id = result_text(i, 2);
		MemoryContextSwitchTo(old);
	}
}

/*
 * When the next queued row of priority max_priority or more urgent is due
 * (DT_NOEND for none), for a claim that took every such row due now.
 */
static TimestampTz
queued_due(const char *channel, int max_priority)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2] = {Int32GetDatum(max_priority), CStringGetTextDatum(channel)};
	bool		isnull;
	Datum		d;

	/*
	 * The first row of each priority in sms_log_queued_idx's order, not a
	 * scan of every queued row: a backlog of bulk rows made this query the
	 * exchange's most costly one, 1.4 ms at 20,000 queued.
	 */
	exec_saved(&plan,
			   "SELECT pg_catalog.min(coalesce(d.next_attempt_at, '-infinity'))"
			   "  FROM pg_catalog.generate_series(1, $1) AS p(priority)"
			   " CROSS JOIN LATERAL"
			   "       (SELECT l.next_attempt_at FROM verification.sms_log l"
			   "         WHERE l.channel OPERATOR(pg_catalog.=) $2::text"
			   "           AND l.priority OPERATOR(pg_catalog.=) p.priority"
			   /* rows held for their send window are the duties' (send_window.c) */
			   "           AND l.send_state = 'queued' AND l.held_until IS NULL"
			   "         ORDER BY l.next_attempt_at NULLS FIRST LIMIT 1) AS d",
			   2, types, values, SPI_OK_SELECT);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? DT_NOEND : DatumGetTimestampTz(d);
}

/* The channel whose rows an exchange claims. */
static inline const char *
exchange_channel(Ip2smsExchange *x)
{
	return x->channel ? x->channel : "ip2sms";
}

/*
 * Gives the sends claimed from x->claimed[first] on their callback token
 * (smsdispatch.callback_token), for the delivery report URL they carry;
 * in the claim's transaction, so that a row is never claimed without one.
 */
static void
add_tokens(Ip2smsExchange *x, int first)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	int			i;

	for (i = first; i < x->nclaimed; i++)
	{
		Ip2smsRequest *req = x->claimed[i];

		values[0] = Int64GetDatum(req->id);
		exec_saved(&plan, "SELECT smsdispatch.callback_token($1)",
				   1, types, values, SPI_OK_SELECT);
		req->token = MemoryContextStrdup(req->cxt, result_text(0, 1));
		req->status_by_report = true;
	}
}

/*
 * Claims up to n rows to send of priority max_priority or more urgent.
 * Returns whether it found fewer: then no other such row is due now.
 */
static bool
claim_sends_up_to(Ip2smsExchange *x, int n, int max_priority)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[3] = {INT4OID, INT4OID, TEXTOID};
	Datum		values[3] = {Int32GetDatum(n), Int32GetDatum(max_priority),
	CStringGetTextDatum(exchange_channel(x))};
	int			first = x->nclaimed;

	exec_saved(&plan,
			   "SELECT id, phone_number, message_id, body, attempts::int8, priority::int8"
			   "  FROM smsdispatch.claim_sends($3, $1, max_priority => $2)",
			   3, types, values, SPI_OK_SELECT);
	take_requests(x, IP2SMS_SEND);
	if (x->want_tokens)
		add_tokens(x, first);
	return x->nclaimed - first < n;
}

/*
 * Claims up to x->want_sends rows to send, most urgent first, of which at
 * most x->want_bulk_sends are not urgent: when that bounds the claim, the
 * urgent rows first (unless a look at the queue's index finds none due),
 * then the others for the connections they may take. Says when urgent rows
 * may be due next (x->urgent_due). Returns whether the last claim found
 * fewer rows than it asked for, so that when the next row is due must be
 * looked up (a claim bounded by the connections leaves due rows queued).
 */
static bool
claim_sends(Ip2smsExchange *x)
{
	bool		bounded = x->want_bulk_sends < x->want_sends;
	bool		short_of_rows = true;
	TimestampTz urgent_due = DT_NOBEGIN;

	if (bounded)
		urgent_due = queued_due(exchange_channel(x), SMS_PRIORITY_URGENT_MAX);
	if (urgent_due <= GetCurrentTransactionStartTimestamp())
	{
		short_of_rows = claim_sends_up_to(x, x->want_sends,
										  bounded ? SMS_PRIORITY_URGENT_MAX : SMS_PRIORITY_MAX);
		/* in priority order: unless it ended on an urgent row, it took them all */
		urgent_due = x->nclaimed == x->want_sends && x->claimed[x->nclaimed - 1]->urgent ?
			0 : queued_due(exchange_channel(x), SMS_PRIORITY_URGENT_MAX);
	}
	x->urgent_due = urgent_due;
	if (bounded && x->want_bulk_sends > 0 && x->nclaimed < x->want_sends)
		short_of_rows = claim_sends_up_to(x, Min(x->want_bulk_sends, x->want_sends - x->nclaimed),
										  SMS_PRIORITY_MAX);
	x->nsends = x->nclaimed;
	return short_of_rows;
}

/*
 * Reads up to x->want_polls due status polls, leaving out those on the
 * wire or not recorded yet, and those past the status window. Polling twice is harmless, so nothing is
 * written before the request leaves.
 */
static void
claim_polls(Ip2smsExchange *x)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[3] = {INT4OID, INT8ARRAYOID, INT4OID};
	Datum		values[3];

	values[0] = Int32GetDatum(x->want_polls);
	values[2] = Int32GetDatum(sms_ip2sms_status_window_s);
	values[1] = PointerGetDatum(construct_array(x->busy ? (Datum *) x->busy : NULL,
												x->nbusy, INT8OID, sizeof(int64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	exec_saved(&plan,
			   "SELECT id, gateway_id, message_id FROM verification.sms_log"
			   " WHERE next_poll_at <= pg_catalog.now()"
			   "   AND channel = 'ip2sms'"
			   "   AND send_state = 'submitted'"
			   "   AND gateway_id IS NOT NULL"
			   "   AND id <> ALL ($2)"
			   /* past the status window they are for terminate_polls() */
			   "   AND submitted_at > pg_catalog.now()"
			   "       - pg_catalog.make_interval(secs => $3::pg_catalog.float8)"
			   " ORDER BY next_poll_at LIMIT $1",
			   3, types, values, SPI_OK_SELECT);
	take_requests(x, IP2SMS_STATUS);
}

/* Polled rows past the status window become Terminated. */
static void
terminate_polls(void)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(sms_ip2sms_status_window_s)};

	exec_saved(&plan, "SELECT smsdispatch.ip2sms_terminate_polls($1)",
			   1, types, values, SPI_OK_SELECT);
}

/* Whether IP2SMS rows are queued (while there is no URL to send them to). */
static bool
queued_unconfigured(void)
{
	static SPIPlanPtr plan = NULL;

	exec_saved(&plan,
			   "SELECT 1 FROM verification.sms_log"
			   " WHERE channel = 'ip2sms'"
			   "   AND send_state = 'queued' AND held_until IS NULL LIMIT 1",
			   0, NULL, NULL, SPI_OK_SELECT);
	return SPI_processed > 0;
}

/* Arrays of the record statement, one element per row to update. */
#define RECORD_COLS 10

typedef struct RecordArrays
{
	int			n;
	Datum	   *v[RECORD_COLS];
	bool	   *isnull[RECORD_COLS];
} RecordArrays;

static const Oid record_types[RECORD_COLS] = {
	INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, BOOLOID, TEXTOID,
	BOOLOID, INT4OID
};

enum
{
	R_ID, R_SEND_STATE, R_ATTEMPT_DELTA, R_GATEWAY_ID, R_GATEWAY_STATUS,
	R_CHANGED, R_SET_ERROR, R_ERROR, R_RETRY, R_POLL
};

/* Sets one text column of the current row, NULL for a NULL pointer. */
static void
put_text(RecordArrays *ra, int col, const char *s)
{
	ra->isnull[col][ra->n] = (s == NULL);
	ra->v[col][ra->n] = s ? CStringGetTextDatum(s) : (Datum) 0;
}

/* Counts a retry among the IP2SMS channel's (smsdispatch.stats()). */
static void
count_retry(Ip2smsRequest *r)
{
	if (!r->status_by_report)
		sms_stats_count(SMS_STAT_RETRIES);
}

/*
 * Adds the row for one send request: its new state and why. A send whose
 * status comes by delivery report leaves gateway_status to the reports,
 * which may have come in before this.
 */
static void
add_send(RecordArrays *ra, Ip2smsRequest *r)
{
	Ip2smsAnswer *a = &r->answer;
	bool		answered = (r->outcome == IP2SMS_ANSWERED);
	const char *send_state = NULL;
	const char *error = NULL;
	int			poll = POLL_CLEAR;
	bool		retry = false;
	int			delta = 0;

	switch (r->outcome)
	{
		case IP2SMS_IN_FLIGHT:
			send_state = "unknown";
			error = r->detail[0] ? r->detail :
				"the worker stopped while the request was in flight; not re-sent";
			break;
		case IP2SMS_CHANNEL_FAILED:

			/*
			 * Not the SMS's fault: it waits for the channel (channel_health.c)
			 * with its attempt not counted, as long as its validity allows
			 * (smsdispatch.claim_sends), never for a number of attempts.
			 */
			send_state = "queued";
			delta = -1;
			error = r->detail;
			retry = true;
			count_retry(r);
			break;
		case IP2SMS_REQUEST_FAILED:
			if (r->attempts >= sms_max_attempts)
			{
				send_state = "failed";
				error = psprintf("gave up after %d attempts: %s", r->attempts, r->detail);
			}
			else
			{
				send_state = "queued";
				error = r->detail;
				retry = true;
				count_retry(r);
			}
			break;
		case IP2SMS_ANSWERED:
			if (!ip2sms_state_accepted(a->state))
			{
				send_state = "failed";
				error = a->error[0] ? a->error : a->state;
			}
			else
			{
				send_state = "submitted";
				if (r->status_by_report)
					answered = false;	/* the reports bring the status */
				else if (a->id[0] == '\0')
					error = "the gateway accepted the SMS without an id: its status cannot be polled";
				else if (ip2sms_state_pollable(a->state))
					poll = POLL_SCHEDULE;
			}
			break;
	}
	put_text(ra, R_SEND_STATE, send_state);
	ra->v[R_ATTEMPT_DELTA][ra->n] = Int32GetDatum(delta);
	put_text(ra, R_GATEWAY_ID, answered && a->id[0] ? a->id : NULL);
	put_text(ra, R_GATEWAY_STATUS, answered ? a->state : NULL);
	put_text(ra, R_CHANGED, answered && a->date[0] ? a->date : NULL);
	ra->v[R_SET_ERROR][ra->n] = BoolGetDatum(true);
	put_text(ra, R_ERROR, error);
	ra->v[R_RETRY][ra->n] = BoolGetDatum(retry);
	ra->v[R_POLL][ra->n] = Int32GetDatum(poll);
}

/*
 * Adds the row for one status request. An answer about another id than the
 * one asked for is not applied: the row is polled again later.
 */
static void
add_poll(RecordArrays *ra, Ip2smsRequest *r)
{
	Ip2smsAnswer *a = &r->answer;
	bool		answered = (r->outcome == IP2SMS_ANSWERED);

	if (answered && strcmp(a->id, r->gateway_id) != 0)
	{
		ereport(WARNING,
				(errmsg("smsdispatch: the IP2SMS gateway answered the status of id \"%s\" when asked for \"%s\"; answer ignored",
						a->id, r->gateway_id),
				 errdetail("sms_log id %lld is polled again later.", (long long) r->id)));
		answered = false;
	}
	put_text(ra, R_SEND_STATE, NULL);
	ra->v[R_ATTEMPT_DELTA][ra->n] = Int32GetDatum(0);
	put_text(ra, R_GATEWAY_ID, NULL);
	put_text(ra, R_GATEWAY_STATUS, answered ? a->state : NULL);
	put_text(ra, R_CHANGED, answered && a->date[0] ? a->date : NULL);
	ra->v[R_SET_ERROR][ra->n] = BoolGetDatum(answered && a->error[0]);
	put_text(ra, R_ERROR, answered && a->error[0] ? a->error : NULL);
	ra->v[R_RETRY][ra->n] = BoolGetDatum(false);
	ra->v[R_POLL][ra->n] = Int32GetDatum(answered && !ip2sms_state_pollable(a->state) ?
										 POLL_CLEAR : POLL_SCHEDULE);
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

/* Whether id is among the n ids of the last SPI result's first column. */
static bool
in_result(int64 id)
{
	int			i;

	for (i = 0; i < SPI_processed; i++)
		if (result_int64(i, 1) == id)
			return true;
	return false;
}

/*
 * A result whose row or alarm another session holds: logged once, and not
 * tried again for HELD_RETRY_MS, so that the channel waits for the lock
 * instead of spinning on it.
 */
static void
note_held(Ip2smsRequest *r, TimestampTz now)
{
	r->retry_record_at = TimestampTzPlusMilliseconds(now, HELD_RETRY_MS);
	if (r->held_logged)
		return;
	r->held_logged = true;
	ereport(LOG,
			(errmsg("smsdispatch: sms_log row %lld%s is locked by another session; its IP2SMS result is kept and recorded once the lock is released",
					(long long) r->id,
					r->message_id ? psprintf(" (alarm id %lld)", (long long) r->message_id) : "")));
}

/*
 * A result whose sms_log row was deleted (DELETE, TRUNCATE) while its
 * request was on the wire has nowhere to go: said loudly, then dropped.
 */
static void
note_vanished(Ip2smsRequest *r)
{
	ereport(WARNING,
			(errmsg("smsdispatch: sms_log row %lld was deleted while its IP2SMS %s was in flight; its result is dropped",
					(long long) r->id, r->kind == IP2SMS_SEND ? "send" : "status request"),
			 r->outcome == IP2SMS_ANSWERED ?
			 errdetail("The gateway answered \"%s\", id \"%s\".", r->answer.state, r->answer.id) :
			 errdetail("The request ended without an answer: %s.",
					   r->detail[0] ? r->detail : "the worker stopped")));
}

/* The sms_log id of a request, or its alarm's id. */
static inline int64
request_key(Ip2smsRequest *r, bool of_alarm)
{
	return of_alarm ? r->message_id : r->id;
}

/* The keys of the requests in reqs, as an int8[]. */
static Datum
key_array(List *reqs, bool of_alarm)
{
	Datum	   *ids = palloc(sizeof(Datum) * list_length(reqs));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, reqs)
		ids[n++] = Int64GetDatum(request_key(lfirst(lc), of_alarm));
	return PointerGetDatum(construct_array(ids, n, INT8OID, sizeof(int64),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Locks without waiting the rows (alarms when of_alarm) of the requests in
 * reqs with lock_sql, and returns those it locked. Of the others, those
 * whose row exist_sql still finds are held by another session (noted);
 * those whose row is gone are added to *vanished.
 */
static List *
lock_keys(List *reqs, bool of_alarm, TimestampTz now,
		  SPIPlanPtr *lock_plan, const char *lock_sql,
		  SPIPlanPtr *exist_plan, const char *exist_sql, List **vanished)
{
	Oid			types[1] = {INT8ARRAYOID};
	Datum		values[1];
	List	   *locked = NIL;
	List	   *unlocked = NIL;
	ListCell   *lc;

	values[0] = key_array(reqs, of_alarm);
	exec_saved(lock_plan, lock_sql, 1, types, values, SPI_OK_SELECT);
	foreach(lc, reqs)
	{
		Ip2smsRequest *r = lfirst(lc);

		if (in_result(request_key(r, of_alarm)))
			locked = lappend(locked, r);
		else
			unlocked = lappend(unlocked, r);
	}
	if (unlocked == NIL)
		return locked;
	values[0] = key_array(unlocked, of_alarm);
	exec_saved(exist_plan, exist_sql, 1, types, values, SPI_OK_SELECT);
	foreach(lc, unlocked)
	{
		Ip2smsRequest *r = lfirst(lc);

		if (in_result(request_key(r, of_alarm)))
			note_held(r, now);
		else
			*vanished = lappend(*vanished, r);
	}
	return locked;
}

/*
 * Locks, without waiting, the alarms of the finished requests due to be
 * recorded and then their rows (the order acks and the escalation use).
 * Returns the requests whose row and alarm are both locked now, in the
 * current context; those another session holds stay in the list for a
 * later exchange. A deleted alarm leaves its SMS a plain one; a request
 * whose row was deleted is added to *dropped, logged.
 */
static List *
lock_finished(dlist_head *finished, List **dropped)
{
	static SPIPlanPtr alarm_lock_plan = NULL;
	static SPIPlanPtr alarm_exist_plan = NULL;
	static SPIPlanPtr row_lock_plan = NULL;
	static SPIPlanPtr row_exist_plan = NULL;
	TimestampTz now = GetCurrentTimestamp();
	List	   *plain = NIL;
	List	   *alarmed = NIL;
	List	   *alarm_gone = NIL;
	List	   *ready;
	dlist_iter	it;
	ListCell   *lc;

	dlist_foreach(it, finished)
	{
		Ip2smsRequest *r = dlist_container(Ip2smsRequest, node, it.cur);

		if (r->retry_record_at > now)
			continue;
		if (r->message_id != 0)
			alarmed = lappend(alarmed, r);
		else
			plain = lappend(plain, r);
	}
	if (alarmed != NIL)
	{
		alarmed = lock_keys(alarmed, true, now,
							&alarm_lock_plan,
							"SELECT m.id FROM smsdispatch.message m"
							" WHERE m.id = ANY ($1)"
							" ORDER BY m.id FOR NO KEY UPDATE SKIP LOCKED",
							&alarm_exist_plan,
							"SELECT m.id FROM smsdispatch.message m WHERE m.id = ANY ($1)",
							&alarm_gone);
		foreach(lc, alarm_gone)
			((Ip2smsRequest *) lfirst(lc))->message_id = 0;
		plain = list_concat(list_concat(plain, alarmed), alarm_gone);
	}
	if (plain == NIL)
		return NIL;
	ready = lock_keys(plain, false, now,
					  &row_lock_plan,
					  "SELECT l.id FROM verification.sms_log l"
					  " WHERE l.id = ANY ($1)"
					  " FOR UPDATE SKIP LOCKED",
					  &row_exist_plan,
					  "SELECT l.id FROM verification.sms_log l WHERE l.id = ANY ($1)",
					  dropped);
	foreach(lc, *dropped)
		note_vanished(lfirst(lc));
	return ready;
}

/*
 * Writes the results of the requests in ready with one UPDATE. Poll times
 * follow the backoff of smsdispatch.ip2sms_poll_delay() and never pass the
 * end of the status window; retries that of smsdispatch.retry_delay().
 * Returns whether an alarm's SMS was among them; sets *requeued when a send
 * went back to the queue.
 */
static bool
write_results(List *ready, bool *requeued)
{
	static SPIPlanPtr plan = NULL;
	RecordArrays ra;
	Oid			types[RECORD_COLS + 2];
	Datum		values[RECORD_COLS + 2];
	int			total = list_length(ready);
	bool		alarms = false;
	ListCell   *lc;
	int			c;

	memset(&ra, 0, sizeof(ra));
	for (c = 0; c < RECORD_COLS; c++)
	{
		ra.v[c] = palloc0(sizeof(Datum) * total);
		ra.isnull[c] = palloc0(sizeof(bool) * total);
	}
	foreach(lc, ready)
	{
		Ip2smsRequest *r = lfirst(lc);

		if (r->kind == IP2SMS_SEND)
		{
			add_send(&ra, r);
			/* a retry or a pause puts the row back in the queue */
			*requeued |= !ra.isnull[R_SEND_STATE][ra.n] &&
				sms_text_equals(ra.v[R_SEND_STATE][ra.n], "queued");
		}
		else
			add_poll(&ra, r);
		ra.v[R_ID][ra.n] = Int64GetDatum(r->id);
		ra.n++;
		alarms |= (r->message_id != 0);
	}

	for (c = 0; c < RECORD_COLS; c++)
	{
		types[c] = get_array_type(record_types[c]);
		values[c] = make_array(ra.v[c], ra.isnull[c], ra.n, record_types[c]);
	}
	types[RECORD_COLS] = INT4OID;
	values[RECORD_COLS] = Int32GetDatum(sms_ip2sms_poll_interval_s);
	types[RECORD_COLS + 1] = INT4OID;
	values[RECORD_COLS + 1] = Int32GetDatum(sms_ip2sms_status_window_s);

	exec_saved(&plan,
			   "UPDATE verification.sms_log l SET"
			   "  send_state = coalesce(r.send_state, l.send_state),"
			   "  attempts = l.attempts + r.attempt_delta,"
			   "  gateway_id = coalesce(r.gateway_id, l.gateway_id),"
			   "  gateway_status = coalesce(r.gateway_status, l.gateway_status),"
			   "  status_changed_at = CASE"
			   "    WHEN r.changed IS NOT NULL THEN r.changed::pg_catalog.timestamptz"
			   "    WHEN r.gateway_status IS DISTINCT FROM l.gateway_status"
			   "         AND r.gateway_status IS NOT NULL THEN pg_catalog.now()"
			   "    ELSE l.status_changed_at END,"
			   "  last_error = CASE WHEN r.set_error THEN r.error ELSE l.last_error END,"
			   "  next_attempt_at = CASE WHEN r.retry THEN pg_catalog.now()"
			   "    + smsdispatch.retry_delay(l.attempts) END,"
			   "  submitted_at = CASE WHEN r.send_state = 'submitted'"
			   "    THEN coalesce(l.submitted_at, pg_catalog.now()) ELSE l.submitted_at END,"
			   "  next_poll_at = CASE WHEN r.poll = 0 THEN NULL"
			   "    ELSE least(pg_catalog.now() + smsdispatch.ip2sms_poll_delay("
			   "        pg_catalog.now() - coalesce(l.submitted_at, pg_catalog.now()),"
			   "        pg_catalog.make_interval(secs => $11::pg_catalog.float8)),"
			   "      coalesce(l.submitted_at, pg_catalog.now()) +"
			   "        pg_catalog.make_interval(secs => $12::pg_catalog.float8)) END,"
			   "  updated_at = pg_catalog.now()"
			   " FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
			   "                 pg_catalog.unnest($3), pg_catalog.unnest($4),"
			   "                 pg_catalog.unnest($5), pg_catalog.unnest($6),"
			   "                 pg_catalog.unnest($7), pg_catalog.unnest($8),"
			   "                 pg_catalog.unnest($9), pg_catalog.unnest($10))"
			   "   AS r(id, send_state, attempt_delta, gateway_id, gateway_status,"
			   "        changed, set_error, error, retry, poll)"
			   " WHERE l.id = r.id",
			   RECORD_COLS + 2, types, values, SPI_OK_UPDATE);
	return alarms;
}

/*
 * When the channel next has sends and polls due, for the part of the
 * exchange that got fewer rows than it asked for.
 */
static void
next_due(Ip2smsExchange *x, bool sends_short, bool polls_short)
{
	static SPIPlanPtr plan = NULL;
	bool		isnull;

	if (sends_short)
		x->send_due = queued_due(exchange_channel(x), SMS_PRIORITY_MAX);
	if (!polls_short)
		return;
	/* the first in the index's order, not a scan of every polled row */
	exec_saved(&plan,
			   "SELECT next_poll_at FROM verification.sms_log"
			   " WHERE next_poll_at IS NOT NULL"
			   "   AND channel = 'ip2sms'"
			   " ORDER BY next_poll_at LIMIT 1",
			   0, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		x->poll_due = DT_NOEND;
	else
		x->poll_due = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
														SPI_tuptable->tupdesc, 1,
														&isnull));
}

/* An exchange, and where what it recorded is kept past its transaction. */
typedef struct ExchangeRun
{
	Ip2smsExchange *x;
	MemoryContext keep_cxt;
	List	   *recorded;		/* in keep_cxt: the requests to free */
} ExchangeRun;

/* The work of ip2sms_exchange() inside its transaction. */
static void
exchange_work(void *arg)
{
	ExchangeRun *run = arg;
	Ip2smsExchange *x = run->x;
	bool		short_of_rows = false;
	List	   *ready;
	List	   *dropped = NIL;
	MemoryContext old;

	/* the claims must be durable before any request leaves */
	set_exchange_settings(x->want_sends > 0 ? "on" : "off");
	if (!recovered)
		recover_sending();
	ready = lock_finished(x->finished, &dropped);
	if (ready != NIL)
		x->alarms_changed = write_results(ready, &x->requeued);
	if (x->terminate_polls)
		terminate_polls();
	if (x->check_unconfigured)
		x->queued_unconfigured = queued_unconfigured();
	if (x->want_sends > 0)
		short_of_rows = claim_sends(x);
	if (x->want_polls > 0)
		claim_polls(x);
	if (x->want_sends > 0 || x->want_polls > 0 || x->requeued)
		next_due(x, short_of_rows || x->requeued,
				 x->nclaimed - x->nsends < x->want_polls);
	/* a dropped result leaves the list like a recorded one */
	old = MemoryContextSwitchTo(run->keep_cxt);
	run->recorded = list_concat(list_copy(ready), dropped);
	MemoryContextSwitchTo(old);
}

/*
 * One exchange with the database (see the file header), in a transaction
 * of its own (sms_worker_transaction). Returns false when it failed: the
 * error is logged, the transaction rolled back, every finished request
 * kept and nothing claimed. Never throws, so an error in the channel
 * cannot end the worker.
 */
bool
ip2sms_exchange(Ip2smsExchange *x)
{
	ExchangeRun run = {x, CurrentMemoryContext, NIL};
	bool		ok;
	ListCell   *lc;
	int			i;

	x->nclaimed = 0;
	x->nsends = 0;
	x->send_due = DT_NOBEGIN;
	x->poll_due = DT_NOBEGIN;
	x->alarms_changed = false;
	x->requeued = false;
	pgstat_report_activity(STATE_RUNNING, "smsdispatch: IP2SMS claims and results");
	ok = sms_worker_transaction(exchange_work, &run);
	pgstat_report_activity(STATE_IDLE, NULL);
	if (ok && x->nclaimed > 0)
		sms_claim_fence();

	if (!ok)
	{
		/* rolled back: the claimed rows are still queued or due */
		for (i = 0; i < x->nclaimed; i++)
			ip2sms_free_request(x->claimed[i]);
		x->nclaimed = 0;
		x->nsends = 0;
		return false;
	}
	recovered = true;
	foreach(lc, run.recorded)
	{
		Ip2smsRequest *r = lfirst(lc);

		dlist_delete(&r->node);
		ip2sms_free_request(r);
	}
	list_free(run.recorded);
	return true;
}

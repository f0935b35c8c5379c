/*-------------------------------------------------------------------------
 *
 * kannel.c
 *	  The worker's driver of the registered Kannel channels
 *	  (smsdispatch.channel_registry, dialect 'kannel').
 *
 * The worker's loop calls kannel_pump() at each turn, and it never waits
 * for the network: it drives the requests on the wire of its curl multi
 * handle without blocking, classifies those that finished, records them
 * through the IP2SMS channel's exchange (ip2sms_db.c) in a short
 * transaction, and publishes a channel's health from the outcomes of its
 * last KANNEL_WINDOW requests. When woken (a COMMIT queued SMS) or a retry
 * is due, it reads the channels in a short transaction, and each that has
 * room on the wire claims its due rows (smsdispatch.claim_sends, with each
 * row's callback token) in a short transaction of its own, committed (and
 * past sms_claim_fence) before any request leaves; then those requests go
 * on the wire, outside any transaction, each bounded by curl's timeout,
 * smsdispatch.kannel_timeout. Requests stay on the wire across turns of
 * the loop, which comes back every KANNEL_POLL_MS while any is: a hanging
 * Kannel holds only its own requests, never the loop, the IP2SMS channel
 * or the duties. The outcome words are IP2SMS's. Kannel's sendsms answers
 * carry no id: the row's own id, in the dlr-url, is the correlation, and
 * statuses come as delivery reports (smsdispatch-http). A request's URL
 * and the meaning of its answer are in kannel_request.c:
 *
 *   202 "0: Accepted for delivery", "3: Queued for later delivery"
 *                           -> submitted
 *   400 and other refusals  -> the SMS's: the attempt spent, failed after
 *                              smsdispatch.max_attempts, the answer in
 *                              last_error
 *   403                     -> the channel is auth_failed: rows queued,
 *                              attempts untouched
 *   5xx, no connection      -> the channel is down: rows queued, attempts
 *                              untouched
 *   no answer after the request was written (timeout, broken connection)
 *                           -> unknown: it may have reached Kannel, never
 *                              sent twice; the channel is down
 *
 * While a channel is not ok, it sends one probe at a time, else it keeps up
 * to KANNEL_WINDOW requests on the wire, claiming more as soon as half of
 * them have been answered (not once all of them have: Kannel then always
 * has work, and a claim's transaction serves several rows). The health is written into the registry when it
 * changes (smsdispatch.channel_health), with a WARNING when it turns bad.
 * The channels live in kannel_cxt from the first read that finds them
 * until they are gone from the registry and have nothing on the wire; each
 * read refreshes their options. At a stop (kannel_stop) the answers on the
 * wire are awaited until smsdispatch.shutdown_grace is over; what is still
 * unanswered then becomes unknown, never sent again.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"
#include "ip2sms.h"
#include "kannel.h"
#include "kannel_request.h"

/* the requests a channel keeps on the wire while it is ok */
#define KANNEL_WINDOW		16
/* how soon the loop comes back while requests are on the wire */
#define KANNEL_POLL_MS		10
/* how often the stop's wait for answers looks at the postmaster */
#define KANNEL_STOP_POLL_MS 100
/*
 * A wake-up (any COMMIT that queued SMS, IP2SMS's too) brings a claim
 * forward, but not more often than this: each reads the registry in a
 * transaction of its own.
 */
#define KANNEL_MIN_GAP_MS	10

static MemoryContext kannel_cxt = NULL;
static MemoryContext turn_cxt = NULL;	/* emptied at the end of each turn */
static CURLM *multi = NULL;
static dlist_head channels = DLIST_STATIC_INIT(channels);
static dlist_head on_wire = DLIST_STATIC_INIT(on_wire);
/* finished requests not recorded yet (a failed exchange keeps them) */
static dlist_head unrecorded = DLIST_STATIC_INIT(unrecorded);
static TimestampTz record_retry_at = 0;
static bool woken = true;
static TimestampTz retry_due = 0;
static TimestampTz last_claims = 0;

/* Says that new rows may be due (a COMMIT set the latch). */
void
kannel_wake(void)
{
	woken = true;
}

/* Sets up, once per worker, libcurl and the driver's memory. */
static void
prepare_driver(void)
{
	if (multi != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		kannel_curl_failed("curl_global_init");
	kannel_cxt = AllocSetContextCreate(TopMemoryContext, "smsdispatch kannel",
									   ALLOCSET_SMALL_SIZES);
	turn_cxt = AllocSetContextCreate(kannel_cxt, "smsdispatch kannel turn",
									 ALLOCSET_DEFAULT_SIZES);
	multi = curl_multi_init();
	if (multi == NULL)
		kannel_curl_failed("curl_multi_init");
}

/* One row of the registry, for list_channels' transaction. */
typedef struct ListedChannel
{
	char	   *name;
	KannelOptions opts;
} ListedChannel;

/* Column col of SPI row i, in the current context (NULL stays NULL). */
static char *
column_text(int i, int col)
{
	return SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col);
}

/* Reads the registered Kannel channels into *(List **) arg, in turn_cxt. */
static void
list_channels(void *arg)
{
	List	  **rows = arg;
	MemoryContext old;
	int			i;

	if (SPI_execute("SELECT r.name, r.options ->> 'url', r.options ->> 'username',"
					" r.options ->> 'password_file', r.options ->> 'from',"
					" r.options ->> 'callback_url', r.state, r.last_error"
					"  FROM smsdispatch.channel_registry r"
					" WHERE r.dialect = 'kannel' ORDER BY r.name",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "smsdispatch: could not read smsdispatch.channel_registry");
	old = MemoryContextSwitchTo(turn_cxt);
	for (i = 0; i < SPI_processed; i++)
	{
		ListedChannel *row = palloc0(sizeof(ListedChannel));

		row->name = column_text(i, 1);
		row->opts.url = column_text(i, 2);
		row->opts.username = column_text(i, 3);
		row->opts.password_file = column_text(i, 4);
		row->opts.from = column_text(i, 5);
		row->opts.callback_url = column_text(i, 6);
		row->opts.state = column_text(i, 7);
		row->opts.last_error = column_text(i, 8);
		*rows = lappend(*rows, row);
	}
	MemoryContextSwitchTo(old);
}

/* A copy of s in the channel's options context (NULL stays NULL). */
static char *
option_copy(KannelChannel *ch, const char *s)
{
	return s ? MemoryContextStrdup(ch->options_cxt, s) : NULL;
}

/* The channel named name, made (not listed yet) when there is none. */
static KannelChannel *
channel_named(const char *name)
{
	dlist_iter	it;
	KannelChannel *ch;

	dlist_foreach(it, &channels)
	{
		ch = dlist_container(KannelChannel, node, it.cur);
		if (strcmp(ch->name, name) == 0)
			return ch;
	}
	ch = MemoryContextAllocZero(kannel_cxt, sizeof(KannelChannel));
	ch->name = MemoryContextStrdup(kannel_cxt, name);
	ch->options_cxt = AllocSetContextCreate(kannel_cxt, "smsdispatch kannel channel",
											ALLOCSET_SMALL_SIZES);
	dlist_push_tail(&channels, &ch->node);
	return ch;
}

/*
 * Brings the channels in line with a read of the registry: new ones are
 * made, the options of each refreshed, those gone marked unlisted (they
 * are freed once nothing of theirs is on the wire, settle_channels).
 */
static void
refresh_channels(List *rows)
{
	dlist_iter	it;
	ListCell   *lc;

	dlist_foreach(it, &channels)
		dlist_container(KannelChannel, node, it.cur)->listed = false;
	foreach(lc, rows)
	{
		ListedChannel *row = lfirst(lc);
		KannelChannel *ch = channel_named(row->name);

		MemoryContextReset(ch->options_cxt);
		ch->problem = NULL;
		ch->opts.url = option_copy(ch, row->opts.url);
		ch->opts.username = option_copy(ch, row->opts.username);
		ch->opts.password_file = option_copy(ch, row->opts.password_file);
		ch->opts.from = option_copy(ch, row->opts.from);
		ch->opts.callback_url = option_copy(ch, row->opts.callback_url);
		ch->opts.state = option_copy(ch, row->opts.state);
		ch->opts.last_error = option_copy(ch, row->opts.last_error);
		ch->listed = true;
	}
}

/*
 * Puts one claimed send on the wire. Curl keeps its own copy of the URL,
 * so ours, which holds the password, is overwritten at once. When curl
 * refuses the request, it is finished (the channel's failure) instead.
 */
static void
start_send(KannelChannel *ch, const char *password, Ip2smsRequest *req)
{
	KannelSend *s = MemoryContextAllocZero(req->cxt, sizeof(KannelSend));
	long		timeout = sms_kannel_timeout_ms;
	char	   *url;

	s->channel = ch;
	s->req = req;
	s->easy = curl_easy_init();
	if (s->easy != NULL)
	{
		url = kannel_sendsms_url(ch, password, req, s->easy);
		curl_easy_setopt(s->easy, CURLOPT_URL, url);
		explicit_bzero(url, strlen(url));
		pfree(url);
		curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
		curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, kannel_on_answer);
		curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
		curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->errbuf);
		curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(s->easy, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, timeout);
		curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, Max(timeout / 3, 1L));
		curl_easy_setopt(s->easy, CURLOPT_USERAGENT, "smsdispatch/" SMS_MODULE_VERSION);
		if (curl_multi_add_handle(multi, s->easy) == CURLM_OK)
		{
			dlist_push_tail(&on_wire, &s->node);
			ch->on_wire++;
			return;
		}
		curl_easy_cleanup(s->easy);
	}
	kannel_channel_failed(s, "the request could not be started");
	dlist_push_tail(&unrecorded, &req->node);
}

/*
 * Takes a request off the wire, once classified: its easy handle is
 * ended, and the request waits to be recorded.
 */
static void
finish_send(KannelSend *s)
{
	curl_multi_remove_handle(multi, s->easy);
	curl_easy_cleanup(s->easy);
	dlist_delete(&s->node);
	s->channel->on_wire--;
	dlist_push_tail(&unrecorded, &s->req->node);
}

/*
 * Drives the requests on the wire as far as they go without waiting, and
 * finishes those that ended (curl's timeout included).
 */
static void
drive_sends(void)
{
	CURLMsg    *msg;
	int			running;
	int			left;

	if (dlist_is_empty(&on_wire))
		return;
	(void) curl_multi_perform(multi, &running);
	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		KannelSend *s;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &s);
		kannel_classify(s, msg->data.result);
		finish_send(s);
	}
}

/*
 * Records the finished requests; what cannot be recorded now (a failed
 * exchange, a row another session holds) is tried again a naptime later.
 */
static void
record_unrecorded(void)
{
	Ip2smsExchange x;

	if (dlist_is_empty(&unrecorded))
		return;
	memset(&x, 0, sizeof(x));
	x.finished = &unrecorded;
	(void) ip2sms_exchange(&x);
	if (!dlist_is_empty(&unrecorded))
		record_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sms_naptime_ms);
}

/* How many requests a channel may have on the wire: one probe unless ok. */
static int
channel_window(KannelChannel *ch)
{
	return strcmp(ch->opts.state, "ok") == 0 ? KANNEL_WINDOW : 1;
}

/*
 * Whether a channel claims now if rows are due: when at most half of its
 * window is on the wire (a probe only once the last one finished).
 */
static bool
channel_has_room(KannelChannel *ch)
{
	return ch->on_wire <= channel_window(ch) / 2;
}

/*
 * Claims the due rows of one channel, as many as its window has room for,
 * and puts them on the wire. The claim's exchange records what finished
 * too. Lowers *due to when its next rows are due when it found none; else
 * the channel claims again when it has room.
 */
static void
claim_more(KannelChannel *ch, const char *password, TimestampTz *due)
{
	Ip2smsExchange x;
	int			want = channel_window(ch) - ch->on_wire;
	int			i;

	memset(&x, 0, sizeof(x));
	x.channel = ch->name;
	x.want_tokens = true;
	x.finished = &unrecorded;
	x.want_sends = want;
	x.want_bulk_sends = want;
	x.claimed = palloc0(sizeof(Ip2smsRequest *) * want);
	if (!ip2sms_exchange(&x))
	{
		*due = Min(*due, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sms_naptime_ms));
		return;
	}
	if (x.nclaimed == want)
		ch->claim_again = 0;
	else if (x.send_due != DT_NOEND)
		ch->claim_again = Max(x.send_due, GetCurrentTimestamp());
	else
		ch->claim_again = DT_NOEND;
	if (x.nclaimed == 0)
	{
		*due = Min(*due, ch->claim_again);
		return;
	}
	ch->unpublished = true;
	for (i = 0; i < x.nclaimed; i++)
		start_send(ch, password, x.claimed[i]);
}

/* The channel's state after its last outcomes, and why it is not ok. */
static const char *
new_state(KannelChannel *ch, const char **error)
{
	*error = NULL;
	if (ch->problem != NULL)
	{
		*error = psprintf("cannot use password file \"%s\": %s", ch->opts.password_file,
						  ch->problem);
		return "auth_failed";
	}
	if (ch->auth_failed)
	{
		*error = ch->error;
		return "auth_failed";
	}
	if (ch->failed > 0)
	{
		*error = ch->error;
		return ch->answered > 0 ? "degraded" : "down";
	}
	if (ch->answered > 0)
		return "ok";
	/* nothing was sent: as it was */
	*error = ch->opts.last_error;
	return ch->opts.state;
}

/* The arguments of save_health's transaction. */
typedef struct HealthChange
{
	const char *name;
	const char *state;
	const char *error;
} HealthChange;

/* Writes a channel's new health into the registry. */
static void
save_health(void *arg)
{
	HealthChange *h = arg;
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', h->error ? ' ' : 'n'};

	values[0] = CStringGetTextDatum(h->name);
	values[1] = CStringGetTextDatum(h->state);
	values[2] = h->error ? CStringGetTextDatum(h->error) : (Datum) 0;
	if (SPI_execute_with_args("UPDATE smsdispatch.channel_registry r"
							  "   SET state = $2, last_error = $3,"
							  "       state_since = CASE WHEN r.state = $2 THEN r.state_since"
							  "                     ELSE pg_catalog.now() END"
							  " WHERE r.name OPERATOR(pg_catalog.=) $1",
							  3, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "smsdispatch: could not record the health of channel \"%s\"", h->name);
}

/*
 * Writes a channel's health when its last outcomes (or its password file)
 * changed it: loudly when it turns bad, in the log when it is ok again. The
 * channel then holds what it wrote, until the registry is read again.
 */
static void
publish_health(KannelChannel *ch)
{
	const char *error;
	const char *state = new_state(ch, &error);
	HealthChange h = {ch->name, state, error};

	if (strcmp(state, ch->opts.state) == 0 &&
		(error == NULL ? ch->opts.last_error == NULL :
		 ch->opts.last_error != NULL && strcmp(error, ch->opts.last_error) == 0))
		return;
	if (!sms_worker_transaction(save_health, &h))
		return;
	if (strcmp(state, "ok") == 0)
		ereport(LOG,
				(errmsg("smsdispatch: channel %s is ok again", ch->name)));
	else if (strcmp(state, ch->opts.state) != 0)
		ereport(WARNING,
				(errmsg("smsdispatch: channel %s is %s: %s; its SMS stay queued",
						ch->name, state, error),
				 strcmp(state, "auth_failed") == 0 ?
				 errhint("Correct the channel's username or password_file with smsdispatch.channel_alter, or the file itself (mode 0600, the password on its first line).") :
				 errhint("Check that Kannel's smsbox answers at %s; one probe SMS is sent at a time until it does.",
						 ch->opts.url)));
	ch->opts.state = option_copy(ch, state);
	ch->opts.last_error = option_copy(ch, error);
}

/*
 * Settles the channels: publishes the health of those with nothing on the
 * wire any more or a window's worth of outcomes, and says when those with
 * room claim again. Frees those gone from the registry that have nothing
 * on the wire any more.
 */
static void
settle_channels(void)
{
	dlist_mutable_iter it;

	dlist_foreach_modify(it, &channels)
	{
		KannelChannel *ch = dlist_container(KannelChannel, node, it.cur);

		if (ch->unpublished &&
			(ch->on_wire == 0 || ch->answered + ch->failed >= KANNEL_WINDOW))
		{
			if (ch->listed)
				publish_health(ch);
			ch->unpublished = ch->on_wire > 0;
			ch->answered = 0;
			ch->failed = 0;
			ch->auth_failed = false;
			ch->error[0] = '\0';
		}
		if (channel_has_room(ch))
			retry_due = Min(retry_due, ch->claim_again);
		if (!ch->listed && !ch->unpublished)
		{
			dlist_delete(&ch->node);
			MemoryContextDelete(ch->options_cxt);
			pfree(ch->name);
			pfree(ch);
		}
	}
}

/*
 * Reads the registry and lets each channel with room on the wire claim
 * its due rows and send them. A channel whose password file cannot be
 * used claims nothing and is auth_failed.
 */
static void
claim_for_channels(void)
{
	List	   *rows = NIL;
	TimestampTz due = DT_NOEND;
	dlist_iter	it;

	woken = false;
	last_claims = GetCurrentTimestamp();
	retry_due = TimestampTzPlusMilliseconds(last_claims, sms_naptime_ms);
	if (!sms_worker_transaction(list_channels, &rows))
		return;
	refresh_channels(rows);
	dlist_foreach(it, &channels)
	{
		KannelChannel *ch = dlist_container(KannelChannel, node, it.cur);
		char	   *password;
		MemoryContext old;

		if (!ch->listed || !channel_has_room(ch))
			continue;
		old = MemoryContextSwitchTo(ch->options_cxt);
		password = sms_read_secret_file(ch->opts.password_file, &ch->problem);
		MemoryContextSwitchTo(old);
		if (password == NULL)
		{
			publish_health(ch);
			continue;
		}
		claim_more(ch, password, &due);
		sms_forget_secret(password);
	}
	retry_due = Min(retry_due, due);
}

/*
 * One turn of the driver (see the file header); never waits for the
 * network. Lowers *next_due to when it wants the next turn.
 */
void
kannel_pump(TimestampTz *next_due)
{
	TimestampTz now;
	TimestampTz claims_due;
	MemoryContext old;

	prepare_driver();
	old = MemoryContextSwitchTo(turn_cxt);
	drive_sends();
	if (!dlist_is_empty(&unrecorded) && GetCurrentTimestamp() >= record_retry_at)
		record_unrecorded();
	settle_channels();

	now = GetCurrentTimestamp();
	claims_due = woken ? TimestampTzPlusMilliseconds(last_claims, KANNEL_MIN_GAP_MS) :
		retry_due;
	if (now >= claims_due && !ShutdownRequestPending)
	{
		claim_for_channels();
		/* the requests leave now; those refused at once are recorded now */
		drive_sends();
		record_unrecorded();
		settle_channels();
		claims_due = retry_due;
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(turn_cxt);

	*next_due = Min(*next_due, claims_due);
	if (!dlist_is_empty(&unrecorded))
		*next_due = Min(*next_due, record_retry_at);
	if (!dlist_is_empty(&on_wire))
		*next_due = Min(*next_due,
						TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KANNEL_POLL_MS));
}

/*
 * Between the worker's duties: drives the requests on the wire without
 * waiting, so that an answer that came during a long duty is read before
 * curl's timeout would end its request.
 */
void
kannel_read_ready(void)
{
	if (multi == NULL)
		return;
	drive_sends();
}

/*
 * At a stop, once nothing more is claimed: waits until deadline for the
 * answers of the requests on the wire, then records every result. What is
 * still unanswered may have reached Kannel and becomes 'unknown', never
 * sent again (one that never got written goes back to the queue). The
 * wait ends at once when the postmaster dies.
 */
void
kannel_stop(TimestampTz deadline)
{
	dlist_mutable_iter mit;
	dlist_iter	it;
	int			unanswered = 0;

	if (multi == NULL)
		return;
	if (!dlist_is_empty(&on_wire))
		pgstat_report_activity(STATE_RUNNING, "smsdispatch: stopping, awaiting Kannel answers");
	for (;;)
	{
		TimestampTz now;
		long		secs;
		int			usecs;

		drive_sends();
		now = GetCurrentTimestamp();
		if (dlist_is_empty(&on_wire) || now >= deadline)
			break;
		if (!PostmasterIsAlive())
			proc_exit(1);
		TimestampDifference(now, deadline, &secs, &usecs);
		(void) curl_multi_poll(multi, NULL, 0,
							   Min(secs * 1000 + usecs / 1000 + 1, KANNEL_STOP_POLL_MS), NULL);
	}
	dlist_foreach_modify(mit, &on_wire)
	{
		KannelSend *s = dlist_container(KannelSend, node, mit.cur);
		long		written = 0;

		curl_easy_getinfo(s->easy, CURLINFO_REQUEST_SIZE, &written);
		/* in flight with no detail: the worker stopped while it was */
		if (written == 0)
			kannel_channel_failed(s, "the worker stopped before the request reached Kannel");
		else
			unanswered++;
		finish_send(s);
	}
	if (unanswered > 0)
		ereport(LOG,
				(errmsg("smsdispatch: %d Kannel requests were still unanswered after smsdispatch.shutdown_grace (%d ms); their rows become unknown",
						unanswered, sms_shutdown_grace_ms)));
	/* the last chance: results held by another session are tried too */
	dlist_foreach(it, &unrecorded)
		dlist_container(Ip2smsRequest, node, it.cur)->retry_record_at = 0;
	record_unrecorded();
	if (!dlist_is_empty(&unrecorded))
		ereport(WARNING,
				(errmsg("smsdispatch: Kannel results could not be recorded at shutdown; their rows become unknown at the next start")));
}

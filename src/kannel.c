/*-------------------------------------------------------------------------
 *
 * kannel.c
 *	  The worker's driver of the registered Kannel channels
 *	  (smsdispatch.channel_registry, dialect 'kannel').
 *
 * A pass, run by the worker's loop when it was woken or a retry is due:
 * the channels are read in a short transaction; each claims its due rows
 * (smsdispatch.claim_sends, with each row's callback token) in a short
 * transaction of its own through the IP2SMS channel's exchange
 * (ip2sms_db.c), committed before any request leaves; then every request
 * goes out at once through one curl multi handle, outside any transaction,
 * bounded by smsdispatch.kannel_timeout; then the results are recorded by
 * the same exchange, with the same outcome words as IP2SMS. Kannel's
 * sendsms answers carry no id: the row's own id, in the dlr-url, is the
 * correlation, and statuses come as delivery reports (smsdispatch-http).
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
 * While a channel is not ok, a pass sends one probe of it. The health is
 * written into the registry when it changes (smsdispatch.channel_health),
 * with a WARNING when it turns bad. A pass blocks the worker's loop for at
 * most smsdispatch.kannel_timeout, so a hanging Kannel holds the other
 * channels' alarms no longer than that.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/pmsignal.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"
#include "ip2sms.h"
#include "kannel.h"

/* rows a channel claims in a pass while it is ok */
#define KANNEL_BATCH		16
/* Kannel's sendsms answers are one short line */
#define KANNEL_ANSWER_MAX	1024
/* how often the wait for answers looks at SIGTERM and the postmaster */
#define KANNEL_POLL_MS		100
/*
 * A wake-up (any COMMIT that queued SMS, IP2SMS's too) brings a pass
 * forward, but not more often than this: each pass reads the registry in a
 * transaction of its own.
 */
#define KANNEL_MIN_GAP_MS	10

/* One registered Kannel channel in a pass. */
typedef struct KannelChannel
{
	char	   *name;
	char	   *url;
	char	   *username;
	char	   *password_file;
	char	   *from;
	char	   *callback_url;
	char	   *state;			/* as the registry has it */
	char	   *last_error;
	char	   *password;		/* TopMemoryContext, forgotten after the pass */
	char	   *problem;		/* why the password file is refused */
	int			answered;		/* requests Kannel answered (the channel works) */
	int			failed;			/* requests that failed on the channel */
	bool		auth_failed;	/* a 403 */
	char		error[SMS_CHANNEL_ERROR_LEN];	/* the last channel failure */
} KannelChannel;

/* One sendsms request on the wire. */
typedef struct KannelSend
{
	KannelChannel *channel;
	Ip2smsRequest *req;
	CURL	   *easy;
	char	   *url;			/* holds the password: overwritten after */
	char		answer[KANNEL_ANSWER_MAX + 1];
	size_t		answer_len;
	char		errbuf[CURL_ERROR_SIZE];
} KannelSend;

/* finished requests not recorded yet (a failed exchange keeps them) */
static dlist_head unrecorded = DLIST_STATIC_INIT(unrecorded);
static bool woken = true;
static TimestampTz retry_due = 0;
static TimestampTz last_pass = 0;
static bool curl_ready = false;

/* libcurl could not give what a pass needs (it is out of memory). */
static void
curl_failed(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("smsdispatch: could not set up libcurl for the Kannel channels: %s", what)));
}

/* Says that new rows may be due (a COMMIT set the latch). */
void
kannel_wake(void)
{
	woken = true;
}

/* The registered Kannel channels, for list_channels' transaction. */
typedef struct ChannelList
{
	MemoryContext cxt;
	List	   *channels;
} ChannelList;

/* Copies column col of SPI row i into the list's context (NULL stays NULL). */
static char *
column_copy(ChannelList *cl, int i, int col)
{
	char	   *v = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col);

	return v ? MemoryContextStrdup(cl->cxt, v) : NULL;
}

static void
list_channels(void *arg)
{
	ChannelList *cl = arg;
	MemoryContext old;
	int			i;

	if (SPI_execute("SELECT r.name, r.options ->> 'url', r.options ->> 'username',"
					" r.options ->> 'password_file', r.options ->> 'from',"
					" r.options ->> 'callback_url', r.state, r.last_error"
					"  FROM smsdispatch.channel_registry r"
					" WHERE r.dialect = 'kannel' ORDER BY r.name",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "smsdispatch: could not read smsdispatch.channel_registry");
	for (i = 0; i < SPI_processed; i++)
	{
		KannelChannel *ch = MemoryContextAllocZero(cl->cxt, sizeof(KannelChannel));

		ch->name = column_copy(cl, i, 1);
		ch->url = column_copy(cl, i, 2);
		ch->username = column_copy(cl, i, 3);
		ch->password_file = column_copy(cl, i, 4);
		ch->from = column_copy(cl, i, 5);
		ch->callback_url = column_copy(cl, i, 6);
		ch->state = column_copy(cl, i, 7);
		ch->last_error = column_copy(cl, i, 8);
		old = MemoryContextSwitchTo(cl->cxt);
		cl->channels = lappend(cl->channels, ch);
		MemoryContextSwitchTo(old);
	}
}

/* Appends &key=value to buf, value URL-encoded. */
static void
append_param(StringInfo buf, CURL *easy, const char *key, const char *value)
{
	char	   *escaped = curl_easy_escape(easy, value, 0);

	if (escaped == NULL)
		curl_failed("curl_easy_escape");
	appendStringInfo(buf, "&%s=%s", key, escaped);
	curl_free(escaped);
}

/*
 * The sendsms URL of one SMS: who, what, in UTF-8 (UCS-2 where GSM-7
 * cannot carry the text), every delivery report to its row's callback URL
 * with its token.
 */
static char *
sendsms_url(KannelChannel *ch, Ip2smsRequest *req, CURL *easy)
{
	StringInfoData buf;
	StringInfoData dlr;
	SmsSegments seg = sms_count_segments(req->body, strlen(req->body));
	int			base_len = strlen(ch->callback_url);

	while (base_len > 0 && ch->callback_url[base_len - 1] == '/')
		base_len--;
	initStringInfo(&dlr);
	appendStringInfo(&dlr, "%.*s/kannel/dlr?id=%lld&token=%s&status=%%d&answer=%%A&at=%%T",
					 base_len, ch->callback_url, (long long) req->id, req->token);

	initStringInfo(&buf);
	appendStringInfo(&buf, "%s%c", ch->url, strchr(ch->url, '?') ? '&' : '?');
	appendStringInfoString(&buf, "charset=UTF-8&dlr-mask=31");
	if (!seg.gsm7)
		appendStringInfoString(&buf, "&coding=2");
	append_param(&buf, easy, "username", ch->username);
	append_param(&buf, easy, "password", ch->password);
	append_param(&buf, easy, "to", req->phone);
	if (ch->from != NULL)
		append_param(&buf, easy, "from", ch->from);
	append_param(&buf, easy, "text", req->body);
	append_param(&buf, easy, "dlr-url", dlr.data);
	pfree(dlr.data);
	return buf.data;
}

/* curl's write callback: keeps the first KANNEL_ANSWER_MAX bytes. */
static size_t
on_answer(char *data, size_t size, size_t nmemb, void *arg)
{
	KannelSend *s = arg;
	size_t		n = size * nmemb;
	size_t		room = KANNEL_ANSWER_MAX - s->answer_len;

	memcpy(s->answer + s->answer_len, data, Min(n, room));
	s->answer_len += Min(n, room);
	s->answer[s->answer_len] = '\0';
	return n;
}

/* Puts one claimed send on the wire; false when curl refused it. */
static bool
start_send(CURLM *multi, KannelSend *s)
{
	long		timeout = sms_kannel_timeout_ms;

	s->easy = curl_easy_init();
	if (s->easy == NULL)
		return false;
	s->url = sendsms_url(s->channel, s->req, s->easy);
	curl_easy_setopt(s->easy, CURLOPT_URL, s->url);
	curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
	curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_answer);
	curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
	curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->errbuf);
	curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, timeout);
	curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, Max(timeout / 3, 1L));
	curl_easy_setopt(s->easy, CURLOPT_USERAGENT, "smsdispatch/" SMS_MODULE_VERSION);
	return curl_multi_add_handle(multi, s->easy) == CURLM_OK;
}

/* Records a failure of the channel on this request and on its channel. */
static void
channel_failed(KannelSend *s, const char *detail)
{
	s->req->outcome = IP2SMS_CHANNEL_FAILED;
	strlcpy(s->req->detail, detail, sizeof(s->req->detail));
	strlcpy(s->channel->error, detail, sizeof(s->channel->error));
	s->channel->failed++;
}

/*
 * Turns what came of one request into its outcome (see the file header).
 * result is curl's; a request the pass gave up on has CURLE_OPERATION_TIMEDOUT.
 */
static void
classify(KannelSend *s, CURLcode result)
{
	Ip2smsRequest *req = s->req;
	long		http = 0;
	long		written = 0;
	char		detail[sizeof(req->detail)];

	curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &http);
	curl_easy_getinfo(s->easy, CURLINFO_REQUEST_SIZE, &written);
	s->answer[strcspn(s->answer, "\r\n")] = '\0';

	if (result != CURLE_OK)
	{
		const char *why = s->errbuf[0] ? s->errbuf : curl_easy_strerror(result);

		if (written > 0)
		{
			/* the SMS may be at Kannel: never sent again */
			req->outcome = IP2SMS_IN_FLIGHT;
			snprintf(req->detail, sizeof(req->detail),
					 "no answer from Kannel after the request was written (%s); it may have been sent: not re-sent",
					 why);
			/* and the channel hangs: probes only, until it answers */
			strlcpy(s->channel->error, req->detail, sizeof(s->channel->error));
			s->channel->failed++;
		}
		else
		{
			snprintf(detail, sizeof(detail), "Kannel cannot be reached: %s", why);
			channel_failed(s, detail);
		}
		return;
	}
	if (http == 403)
	{
		snprintf(detail, sizeof(detail),
				 "HTTP 403 from Kannel (%s): check the username and password_file of channel %s",
				 s->answer, s->channel->name);
		channel_failed(s, detail);
		s->channel->auth_failed = true;
		return;
	}
	if (http >= 500)
	{
		snprintf(detail, sizeof(detail), "HTTP %ld from Kannel: %s", http, s->answer);
		channel_failed(s, detail);
		return;
	}
	s->channel->answered++;
	if (http >= 200 && http < 300 &&
		(strncmp(s->answer, "0:", 2) == 0 || strncmp(s->answer, "3:", 2) == 0))
	{
		req->outcome = IP2SMS_ANSWERED;
		req->answer.state = "Accepted";
		return;
	}
	req->outcome = IP2SMS_REQUEST_FAILED;
	snprintf(req->detail, sizeof(req->detail), "Kannel refused the SMS: HTTP %ld %s",
			 http, s->answer);
}

/*
 * Runs the requests until each has finished, smsdispatch.kannel_timeout
 * has passed, or (after a SIGTERM) smsdispatch.shutdown_grace has; then
 * classifies each. Ends the worker if the postmaster died: nothing more
 * is recorded, the rows left 'sending' become 'unknown' at the next start.
 */
static void
run_requests(CURLM *multi, KannelSend *sends, int n)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   sms_kannel_timeout_ms + KANNEL_POLL_MS);
	bool		stopping = false;
	int			running = n;
	CURLMsg    *msg;
	int			left;
	int			i;

	while (running > 0 && GetCurrentTimestamp() < deadline)
	{
		if (!PostmasterIsAlive())
			proc_exit(1);
		if (ShutdownRequestPending && !stopping)
		{
			stopping = true;
			deadline = Min(deadline, TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																 sms_shutdown_grace_ms));
		}
		if (curl_multi_perform(multi, &running) != CURLM_OK)
			break;
		if (running > 0)
			(void) curl_multi_poll(multi, NULL, 0, KANNEL_POLL_MS, NULL);
	}
	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		KannelSend *s;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &s);
		classify(s, msg->data.result);
	}
	/* those still unfinished were given up on */
	for (i = 0; i < n; i++)
		if (sends[i].req->outcome == IP2SMS_IN_FLIGHT && sends[i].req->detail[0] == '\0')
			classify(&sends[i], CURLE_OPERATION_TIMEDOUT);
}

/*
 * Claims the due rows of one channel: one probe while it is not ok, else a
 * batch. Lowers *next_due to when its next rows are due.
 */
static Ip2smsRequest **
claim(KannelChannel *ch, int *nclaimed, TimestampTz *next_due)
{
	Ip2smsExchange x;
	int			want = strcmp(ch->state, "ok") == 0 ? KANNEL_BATCH : 1;

	memset(&x, 0, sizeof(x));
	x.channel = ch->name;
	x.want_tokens = true;
	x.finished = &unrecorded;
	x.want_sends = want;
	x.want_bulk_sends = want;
	x.claimed = palloc0(sizeof(Ip2smsRequest *) * want);
	if (!ip2sms_exchange(&x))
	{
		*nclaimed = 0;
		retry_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sms_naptime_ms);
		return NULL;
	}
	*nclaimed = x.nclaimed;
	if (x.nclaimed == want)
		*next_due = 0;
	else if (x.send_due != DT_NOEND)
		*next_due = Min(*next_due, Max(x.send_due, GetCurrentTimestamp()));
	return x.claimed;
}

/* Records the finished requests; a failure keeps them for the next pass. */
static void
record_unrecorded(void)
{
	Ip2smsExchange x;

	if (dlist_is_empty(&unrecorded))
		return;
	memset(&x, 0, sizeof(x));
	x.finished = &unrecorded;
	if (!ip2sms_exchange(&x))
		retry_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sms_naptime_ms);
}

/* The channel's state after a pass, and why it is not ok. */
static const char *
new_state(KannelChannel *ch, const char **error)
{
	*error = NULL;
	if (ch->problem != NULL)
	{
		*error = psprintf("cannot use password file \"%s\": %s", ch->password_file,
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
	*error = ch->last_error;
	return ch->state;
}

/* The arguments of save_health's transaction. */
typedef struct HealthChange
{
	const char *name;
	const char *state;
	const char *error;
} HealthChange;

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
 * Writes a channel's health when the pass changed it: loudly when it turns
 * bad, in the log when it is ok again.
 */
static void
publish_health(KannelChannel *ch)
{
	const char *error;
	const char *state = new_state(ch, &error);
	HealthChange h = {ch->name, state, error};

	if (strcmp(state, ch->state) == 0 &&
		(error == NULL ? ch->last_error == NULL :
		 ch->last_error != NULL && strcmp(error, ch->last_error) == 0))
		return;
	if (!sms_worker_transaction(save_health, &h))
		return;
	if (strcmp(state, "ok") == 0)
		ereport(LOG,
				(errmsg("smsdispatch: channel %s is ok again", ch->name)));
	else if (strcmp(state, ch->state) != 0)
		ereport(WARNING,
				(errmsg("smsdispatch: channel %s is %s: %s; its SMS stay queued",
						ch->name, state, error),
				 strcmp(state, "auth_failed") == 0 ?
				 errhint("Correct the channel's username or password_file with smsdispatch.channel_alter, or the file itself (mode 0600, the password on its first line).") :
				 errhint("Check that Kannel's smsbox answers at %s; one probe SMS is sent a pass until it does.",
						 ch->url)));
}

/*
 * One pass (see the file header). Runs when woken or when a retry is due;
 * lowers *next_due.
 */
void
kannel_pump(TimestampTz *next_due)
{
	MemoryContext pass_cxt;
	MemoryContext old;
	ChannelList cl;
	CURLM	   *multi;
	KannelSend *sends;
	int			nsends = 0;
	TimestampTz due = DT_NOEND;
	ListCell   *lc;
	int			i;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz gap_end = TimestampTzPlusMilliseconds(last_pass, KANNEL_MIN_GAP_MS);

	if (woken ? now < gap_end : now < retry_due)
	{
		*next_due = Min(*next_due, woken ? gap_end : retry_due);
		return;
	}
	woken = false;
	last_pass = now;
	retry_due = TimestampTzPlusMilliseconds(now, sms_naptime_ms);
	if (!curl_ready)
	{
		if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
			curl_failed("curl_global_init");
		curl_ready = true;
	}

	pass_cxt = AllocSetContextCreate(CurrentMemoryContext, "smsdispatch kannel pass",
									 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(pass_cxt);
	cl.cxt = pass_cxt;
	cl.channels = NIL;
	if (!sms_worker_transaction(list_channels, &cl))
		cl.channels = NIL;
	MemoryContextSwitchTo(pass_cxt);
	record_unrecorded();

	sends = palloc0(sizeof(KannelSend) * KANNEL_BATCH * Max(list_length(cl.channels), 1));
	multi = curl_multi_init();
	if (multi == NULL)
		curl_failed("curl_multi_init");
	foreach(lc, cl.channels)
	{
		KannelChannel *ch = lfirst(lc);
		Ip2smsRequest **claimed;
		int			nclaimed;

		ch->password = sms_read_secret_file(ch->password_file, &ch->problem);
		if (ch->password == NULL)
			continue;
		claimed = claim(ch, &nclaimed, &due);
		MemoryContextSwitchTo(pass_cxt);
		for (i = 0; i < nclaimed; i++)
		{
			KannelSend *s = &sends[nsends++];

			s->channel = ch;
			s->req = claimed[i];
			if (!start_send(multi, s))
				channel_failed(s, "the request could not be started");
		}
	}
	run_requests(multi, sends, nsends);
	for (i = 0; i < nsends; i++)
	{
		dlist_push_tail(&unrecorded, &sends[i].req->node);
		if (sends[i].easy != NULL)
		{
			curl_multi_remove_handle(multi, sends[i].easy);
			curl_easy_cleanup(sends[i].easy);
		}
		if (sends[i].url != NULL)
			explicit_bzero(sends[i].url, strlen(sends[i].url));
	}
	curl_multi_cleanup(multi);
	record_unrecorded();
	foreach(lc, cl.channels)
	{
		KannelChannel *ch = lfirst(lc);

		sms_forget_secret(ch->password);
		publish_health(ch);
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(pass_cxt);
	if (due < retry_due)
		retry_due = due;
	*next_due = Min(*next_due, retry_due);
}

/* At exit: one last try to record what a pass could not. */
void
kannel_stop(void)
{
	record_unrecorded();
}

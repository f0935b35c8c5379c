/*-------------------------------------------------------------------------
 *
 * ip2sms.c
 *	  The IP2SMS channel's HTTP side: one libcurl multi handle for the
 *	  worker's life, and the dispatch of one round.
 *
 * A round claims its work and commits (ip2sms_db.c), runs every request
 * concurrently, then records all results in one transaction: no
 * transaction is ever open across network I/O. Curl's sockets and timer
 * are folded into a WaitEventSet together with the worker's latch and
 * postmaster death, so the round sleeps until a socket is ready, a timeout
 * or the rate limit is due, or the worker is signalled; SIGTERM cuts the
 * round short (what never left goes back to the queue, what was in flight
 * becomes 'unknown') and then ends the worker.
 *
 * Curl allocates with malloc, never palloc; every easy handle, body and
 * buffer is either kept for the worker's life (handles, buffers) or freed
 * when its request ends (bodies), so memory does not grow per message.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "smsdispatch.h"
#include "ip2sms.h"
#include "ip2sms_xml.h"

/* one concurrent request: an easy handle kept for the worker's life */
typedef struct Slot
{
	CURL	   *easy;
	Ip2smsRequest *req;			/* NULL while idle */
	char	   *body;			/* malloc'd request body */
	char	   *resp;			/* malloc'd answer buffer, reused */
	size_t		resp_len;
	size_t		resp_cap;
	bool		overflow;
	char		errbuf[CURL_ERROR_SIZE];
} Slot;

/* a socket curl asked us to watch */
typedef struct WatchedSocket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
	int			pos;			/* its event in wait_set, -1 when none */
	bool		modified;		/* what changed since wait_set saw it */
} WatchedSocket;

static CURLM *multi = NULL;
static struct curl_slist *headers = NULL;
static Slot *slots = NULL;
static int	nslots = 0;

static WatchedSocket *sockets = NULL;
static int	nsockets = 0;
static int	socket_cap = 0;
static bool sockets_changed = true;	/* a socket came or went */
static WaitEventSet *wait_set = NULL;

static long curl_timeout_ms = -1;	/* from curl's timer callback */
static TimestampTz curl_timer_set_at = 0;
static TimestampTz next_send_slot = 0;	/* rate limit: earliest next send */

/*
 * Curl's socket callback: remembers which sockets to wait on, for what. A
 * socket that comes or goes makes the wait set be rebuilt; a change of
 * direction on a kept connection (every request) only modifies its event.
 */
static int
on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nsockets; i++)
		if (sockets[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsockets)
		{
			sockets[i] = sockets[--nsockets];
			sockets_changed = true;
		}
		return 0;
	}
	if (i == nsockets)
	{
		if (nsockets == socket_cap)
		{
			int			cap = Max(16, socket_cap * 2);
			WatchedSocket *grown = realloc(sockets, sizeof(WatchedSocket) * cap);

			if (grown == NULL)
				return -1;
			sockets = grown;
			socket_cap = cap;
		}
		nsockets++;
		sockets[i].fd = fd;
		sockets[i].pos = -1;
		sockets_changed = true;
	}
	else if (sockets[i].what == what)
		return 0;
	sockets[i].what = what;
	sockets[i].modified = true;
	return 0;
}

/* Curl's timer callback: when curl next wants to be called. */
static int
on_timer(CURLM *m, long timeout_ms, void *userp)
{
	curl_timeout_ms = timeout_ms;
	curl_timer_set_at = GetCurrentTimestamp();
	return 0;
}

/* Collects an answer, refusing more than an answer can be. */
static size_t
on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Slot	   *slot = userdata;
	size_t		n = size * nmemb;

	if (slot->resp_len + n > IP2SMS_ANSWER_MAX)
	{
		slot->overflow = true;
		return 0;
	}
	if (slot->resp_len + n > slot->resp_cap)
	{
		size_t		cap = Max(slot->resp_cap * 2, Max(slot->resp_len + n, 1024));
		char	   *grown = realloc(slot->resp, cap);

		if (grown == NULL)
			return 0;
		slot->resp = grown;
		slot->resp_cap = cap;
	}
	memcpy(slot->resp + slot->resp_len, ptr, n);
	slot->resp_len += n;
	return n;
}

/* Fails the worker with a clear message when curl cannot be set up. */
static void
curl_setup_failed(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("smsdispatch: could not set up libcurl: %s", what)));
}

/*
 * Creates the multi handle on first use and sizes the slots to
 * smsdispatch.ip2sms_max_connections (which SIGHUP may change).
 */
static void
prepare_transport(void)
{
	int			i;

	if (multi == NULL)
	{
		if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
			curl_setup_failed("curl_global_init");
		multi = curl_multi_init();
		if (multi == NULL)
			curl_setup_failed("curl_multi_init");
		curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
		curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
		headers = curl_slist_append(NULL, "Content-Type: text/xml; charset=utf-8");
		/* no "Expect: 100-continue" round trip before larger bodies */
		headers = curl_slist_append(headers, "Expect:");
		if (headers == NULL)
			curl_setup_failed("curl_slist_append");
	}
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) sms_ip2sms_max_connections);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) sms_ip2sms_max_connections);

	if (nslots == sms_ip2sms_max_connections)
		return;
	for (i = sms_ip2sms_max_connections; i < nslots; i++)
	{
		curl_easy_cleanup(slots[i].easy);
		free(slots[i].resp);
	}
	slots = realloc(slots, sizeof(Slot) * sms_ip2sms_max_connections);
	if (slots == NULL)
		curl_setup_failed("out of memory");
	for (i = nslots; i < sms_ip2sms_max_connections; i++)
	{
		Slot	   *slot = &slots[i];

		memset(slot, 0, sizeof(Slot));
		slot->easy = curl_easy_init();
		if (slot->easy == NULL)
			curl_setup_failed("curl_easy_init");
		curl_easy_setopt(slot->easy, CURLOPT_PRIVATE, slot);
		curl_easy_setopt(slot->easy, CURLOPT_WRITEFUNCTION, on_data);
		curl_easy_setopt(slot->easy, CURLOPT_WRITEDATA, slot);
		curl_easy_setopt(slot->easy, CURLOPT_ERRORBUFFER, slot->errbuf);
		curl_easy_setopt(slot->easy, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(slot->easy, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(slot->easy, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(slot->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(slot->easy, CURLOPT_SSL_VERIFYPEER, 1L);
		curl_easy_setopt(slot->easy, CURLOPT_SSL_VERIFYHOST, 2L);
		curl_easy_setopt(slot->easy, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
		curl_easy_setopt(slot->easy, CURLOPT_USERAGENT, "smsdispatch/1.0");
	}
	nslots = sms_ip2sms_max_connections;
}

/* Puts one request on the wire through an idle slot. */
static void
start_request(Slot *slot, Ip2smsRequest *req)
{
	CURL	   *easy = slot->easy;
	CURLMcode	rc;

	slot->req = req;
	slot->resp_len = 0;
	slot->overflow = false;
	slot->errbuf[0] = '\0';
	if (req->kind == IP2SMS_SEND)
		slot->body = ip2sms_build_send(req->phone, req->body,
									   sms_ip2sms_source, sms_ip2sms_validity);
	else
		slot->body = ip2sms_build_status(req->gateway_id);
	if (slot->body == NULL)
		curl_setup_failed("out of memory");

	curl_easy_setopt(easy, CURLOPT_URL, req->kind == IP2SMS_SEND ?
					 sms_ip2sms_url : sms_ip2sms_status_url);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, slot->body);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) strlen(slot->body));
	curl_easy_setopt(easy, CURLOPT_USERNAME, sms_ip2sms_login);
	curl_easy_setopt(easy, CURLOPT_PASSWORD, sms_ip2sms_password());
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) sms_ip2sms_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) Max(sms_ip2sms_timeout_ms / 3, 1));
	curl_easy_setopt(easy, CURLOPT_CAINFO,
					 sms_ip2sms_ca_file[0] ? sms_ip2sms_ca_file : NULL);

	rc = curl_multi_add_handle(multi, easy);
	if (rc != CURLM_OK)
		ereport(ERROR,
				(errmsg("smsdispatch: curl_multi_add_handle failed: %s",
						curl_multi_strerror(rc))));
	req->outcome = IP2SMS_IN_FLIGHT;
	sms_stats_count(req->kind == IP2SMS_SEND ? SMS_STAT_REQUESTS_SEND :
					SMS_STAT_REQUESTS_STATUS);
}

/* Files a transport error of class stat, with its text for last_error. */
static void
transport_error(Ip2smsRequest *req, SmsStat stat, const char *fmt, const char *arg)
{
	req->outcome = IP2SMS_TRANSPORT_ERROR;
	snprintf(req->detail, sizeof(req->detail), fmt, arg);
	sms_stats_count(stat);
}

/* Classifies a finished request and frees what it no longer needs. */
static void
finish_request(Slot *slot, CURLcode result, bool *auth_warned)
{
	Ip2smsRequest *req = slot->req;
	long		http = 0;
	curl_off_t	usec = 0;
	char		code[16];

	curl_easy_getinfo(slot->easy, CURLINFO_RESPONSE_CODE, &http);
	curl_easy_getinfo(slot->easy, CURLINFO_TOTAL_TIME_T, &usec);
	sms_stats_latency((int64) usec);
	snprintf(code, sizeof(code), "%ld", http);

	if (result == CURLE_OPERATION_TIMEDOUT)
		transport_error(req, SMS_STAT_ERRORS_TIMEOUT, "timeout: %s", slot->errbuf);
	else if (result == CURLE_WRITE_ERROR && slot->overflow)
		transport_error(req, SMS_STAT_ERRORS_PARSE, "%s",
						"unreadable answer: larger than 64 kB");
	else if (result != CURLE_OK)
		transport_error(req, SMS_STAT_ERRORS_CONNECT, "connection failed: %s",
						slot->errbuf[0] ? slot->errbuf : curl_easy_strerror(result));
	else if (http == 401)
	{
		req->outcome = IP2SMS_AUTH_FAILED;
		snprintf(req->detail, sizeof(req->detail),
				 "HTTP 401 from the IP2SMS gateway: check smsdispatch.ip2sms_login and the password in smsdispatch.ip2sms_password_file");
		sms_stats_count(SMS_STAT_ERRORS_HTTP_401);
		if (!*auth_warned)
			ereport(WARNING,
					(errmsg("smsdispatch: the IP2SMS gateway refused the credentials (HTTP 401)"),
					 errhint("Check smsdispatch.ip2sms_login and the password in smsdispatch.ip2sms_password_file.")));
		*auth_warned = true;
	}
	else if (http >= 500)
		transport_error(req, SMS_STAT_ERRORS_HTTP_5XX, "HTTP %s from the IP2SMS gateway", code);
	else if (http < 200 || http >= 300)
		transport_error(req, SMS_STAT_ERRORS_HTTP_OTHER, "HTTP %s from the IP2SMS gateway", code);
	else
	{
		Ip2smsAnswer *answer = palloc(sizeof(Ip2smsAnswer));

		if (ip2sms_parse_answer(slot->resp, slot->resp_len, answer) == 0)
		{
			req->outcome = IP2SMS_ANSWERED;
			req->answer = answer;
			sms_stats_answer(answer->state);
		}
		else
			transport_error(req, SMS_STAT_ERRORS_PARSE, "unreadable answer: %s", answer->error);
	}

	curl_multi_remove_handle(multi, slot->easy);
	free(slot->body);
	slot->body = NULL;
	slot->req = NULL;
}

/* Hands finished transfers to finish_request; returns how many ended. */
static int
reap_finished(bool *auth_warned)
{
	CURLMsg    *msg;
	int			left;
	int			n = 0;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		Slot	   *slot;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &slot);
		finish_request(slot, msg->data.result, auth_warned);
		n++;
	}
	return n;
}

/* The wait events that stand for what curl wants of a socket. */
static uint32
socket_events(int what)
{
	uint32		events = 0;

	if (what & CURL_POLL_IN)
		events |= WL_SOCKET_READABLE;
	if (what & CURL_POLL_OUT)
		events |= WL_SOCKET_WRITEABLE;
	return events;
}

/*
 * Brings the wait set in line with curl's sockets: rebuilt when a socket
 * came or went (a WaitEventSet cannot drop one), else only the events of
 * the sockets whose direction changed are modified.
 */
static void
sync_wait_set(void)
{
	int			i;

	if (!sockets_changed && wait_set != NULL)
	{
		for (i = 0; i < nsockets; i++)
			if (sockets[i].modified)
			{
				if (sockets[i].pos < 0)
				{
					sockets_changed = true;
					break;
				}
				ModifyWaitEvent(wait_set, sockets[i].pos,
								socket_events(sockets[i].what), NULL);
				sockets[i].modified = false;
			}
		if (!sockets_changed)
			return;
	}
	if (wait_set)
		FreeWaitEventSet(wait_set);
	wait_set = sms_create_lasting_wait_event_set(nsockets + 2);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < nsockets; i++)
	{
		uint32		events = socket_events(sockets[i].what);

		sockets[i].pos = events == 0 ? -1 :
			AddWaitEventToSet(wait_set, events, sockets[i].fd, NULL,
							  (void *) (intptr_t) sockets[i].fd);
		sockets[i].modified = false;
	}
	sockets_changed = false;
}

/*
 * Milliseconds until curl's timer or the rate limit is due, whichever is
 * first; -1 when neither is set.
 */
static long
wait_timeout(TimestampTz now, bool rate_blocked)
{
	long		ms = -1;

	if (curl_timeout_ms >= 0)
	{
		TimestampTz due = TimestampTzPlusMilliseconds(curl_timer_set_at, curl_timeout_ms);

		ms = due <= now ? 0 : (long) ((due - now + 999) / 1000);
	}
	if (rate_blocked)
	{
		long		rate_ms = next_send_slot <= now ? 0 :
			(long) ((next_send_slot - now + 999) / 1000);

		ms = ms < 0 ? rate_ms : Min(ms, rate_ms);
	}
	return ms;
}

/* Waits for curl's sockets, its timer, the rate limit or the latch. */
static void
wait_and_drive(TimestampTz now, bool rate_blocked, bool *latch_was_set)
{
	WaitEvent	events[64];
	long		timeout = wait_timeout(now, rate_blocked);
	int			n;
	int			i;
	int			running;
	bool		timer_due;

	sync_wait_set();
	n = timeout == 0 ? 0 :
		WaitEventSetWait(wait_set, timeout, events, lengthof(events), PG_WAIT_EXTENSION);
	for (i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			*latch_was_set = true;
			/* a stop request ends the round; ip2sms_dispatch records it */
			if (!ProcDiePending)
				CHECK_FOR_INTERRUPTS();
		}
		else if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			int			mask = 0;

			if (events[i].events & WL_SOCKET_READABLE)
				mask |= CURL_CSELECT_IN;
			if (events[i].events & WL_SOCKET_WRITEABLE)
				mask |= CURL_CSELECT_OUT;
			curl_multi_socket_action(multi, (curl_socket_t) (intptr_t) events[i].user_data,
									 mask, &running);
		}
	}
	timer_due = curl_timeout_ms >= 0 &&
		GetCurrentTimestamp() >= TimestampTzPlusMilliseconds(curl_timer_set_at, curl_timeout_ms);
	if (timer_due)
	{
		curl_timeout_ms = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
}

/*
 * Runs every request of the round with at most max_connections at once and
 * sends no faster than max_rate. Returns early on SIGTERM, leaving the
 * rest NOT_STARTED or IN_FLIGHT.
 */
static void
run_round(Ip2smsRound *round)
{
	int			next_send = 0;
	int			next_poll = 0;
	int			active = 0;
	int			total = round->nsends + round->npolls;
	int			done = 0;
	bool		latch_was_set = false;
	bool		auth_warned = false;
	int64		send_gap_us = sms_ip2sms_max_rate > 0 ? 1000000 / sms_ip2sms_max_rate : 0;
	int			i;

	while (done < total && !ShutdownRequestPending && !ProcDiePending)
	{
		TimestampTz now = GetCurrentTimestamp();
		bool		rate_blocked = false;

		for (i = 0; i < nslots && active < nslots; i++)
		{
			Ip2smsRequest *req = NULL;

			if (slots[i].req != NULL)
				continue;
			if (next_send < round->nsends)
			{
				if (send_gap_us == 0 || next_send_slot <= now)
				{
					req = &round->sends[next_send++];
					if (send_gap_us)
						next_send_slot = Max(next_send_slot, now - send_gap_us) + send_gap_us;
				}
				else
					rate_blocked = true;
			}
			if (req == NULL && next_poll < round->npolls)
				req = &round->polls[next_poll++];
			if (req == NULL)
				break;
			start_request(&slots[i], req);
			active++;
		}
		wait_and_drive(now, rate_blocked, &latch_was_set);
		i = reap_finished(&auth_warned);
		active -= i;
		done += i;
	}

	/* cut short: what is still on the wire may have reached the gateway */
	for (i = 0; i < nslots; i++)
		if (slots[i].req != NULL)
		{
			curl_multi_remove_handle(multi, slots[i].easy);
			free(slots[i].body);
			slots[i].body = NULL;
			slots[i].req = NULL;
		}
	/* the worker's loop must see a wake-up that arrived during the round */
	if (latch_was_set)
		SetLatch(MyLatch);
}

/*
 * One round of the IP2SMS channel; see ip2sms.h. Runs in a memory context
 * of its own, emptied when the round ends.
 */
void
ip2sms_dispatch(TimestampTz *next_due)
{
	static MemoryContext round_cxt = NULL;
	MemoryContext old;
	Ip2smsRound round;
	bool		want_sends = sms_ip2sms_url[0] != '\0';
	bool		want_polls = sms_ip2sms_status_url[0] != '\0';

	/* without a usable password nothing is claimed: the rows stay queued */
	if (!sms_ip2sms_password_refresh())
		return;
	if (round_cxt == NULL)
		round_cxt = AllocSetContextCreate(TopMemoryContext, "smsdispatch ip2sms round",
										  ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(round_cxt);
	prepare_transport();
	ip2sms_claim(&round, want_sends, want_polls);
	MemoryContextSwitchTo(round_cxt);
	if (round.nsends + round.npolls > 0)
	{
		pgstat_report_activity(STATE_RUNNING, "smsdispatch: IP2SMS requests");
		run_round(&round);
	}
	/*
	 * A SIGTERM that cut the round short waits for this short transaction,
	 * so what never left goes back to the queue and only what was on the
	 * wire becomes 'unknown'.
	 */
	HOLD_INTERRUPTS();
	ip2sms_record(&round, want_sends, want_polls, next_due);
	RESUME_INTERRUPTS();
	CHECK_FOR_INTERRUPTS();
	MemoryContextSwitchTo(round_cxt);
	/* more is due at once: the worker's wait must not sleep */
	if (round.more_due)
		SetLatch(MyLatch);
	if (round.nsends + round.npolls > 0)
		pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(old);
	MemoryContextReset(round_cxt);
}

/*-------------------------------------------------------------------------
 *
 * ip2sms.c
 *	  The IP2SMS channel's HTTP side: one libcurl multi handle for the
 *	  worker's life, driven as a continuous pipeline.
 *
 * Every connection that comes free takes the next due row at once: the
 * worker's loop calls ip2sms_pump(), which records the requests that
 * finished and claims rows for the free connections in one short
 * transaction (ip2sms_db.c), then starts them; ip2sms_wait() sleeps on
 * curl's sockets and timer, the worker's latch and postmaster death, and
 * drives the transfers. A slow or hanging request holds only its own
 * connection; no transaction is ever open across network I/O, and the
 * worker's other duties run between I/O events. Results are recorded in
 * small batches, a few milliseconds apart.
 *
 * The rate limit (smsdispatch.ip2sms_max_rate) is spent as rows are
 * claimed, so it always goes to the most urgent row due. Some connections
 * (smsdispatch.ip2sms_urgent_connections) carry only urgent SMS (priority
 * 1 to 3: alarms, confirmations, codes), so that the rest, however slow the
 * gateway is with it, never holds every connection. Each failed request is
 * filed under its failure class, and channel_health.c says what that means:
 * a failure of the channel puts the row back in the queue with its attempt
 * not counted, and a run of them opens the circuit, so that only one probe
 * at a time leaves until the gateway answers again (a reload probes at
 * once).
 *
 * Curl allocates with malloc, never palloc; every easy handle, body and
 * buffer is either kept for the worker's life (handles, buffers) or freed
 * when its request ends (bodies), and each request's own memory context is
 * deleted once its result is recorded, so memory does not grow per message.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
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
/* the latch's event in wait_set: the first one added */
#define LATCH_POS	0

static long curl_timeout_ms = -1;	/* from curl's timer callback */
static TimestampTz curl_timer_set_at = 0;

/* the most connections smsdispatch.ip2sms_max_connections allows */
#define IP2SMS_MAX_SLOTS	256
/* results are recorded when this many finished, or this long after the first */
#define RECORD_BATCH		64
#define RECORD_DELAY_MS		5
/* pause after due rows could not be taken (locked by someone) */
#define IDLE_PAUSE_MS		100
/* pauses after failed exchanges with the database: doubling, up to the most */
#define ERROR_PAUSE_FIRST_MS	100
#define ERROR_PAUSE_MOST_MS		1000
/* polls past the status window are ended this often */
#define TERMINATE_EVERY_MS	1000

static int	nactive = 0;		/* requests on the wire */
static int	nactive_urgent = 0; /* of which urgent sends */
static dlist_head finished;		/* requests whose result is not recorded */
static int	nfinished = 0;
static MemoryContext pump_cxt = NULL;	/* emptied after every exchange */

static TimestampTz send_due = 0;	/* when queued rows may be due */
static TimestampTz urgent_due = 0;	/* when urgent queued rows may be due */
static TimestampTz poll_due = 0;	/* when status polls may be due */
static TimestampTz next_terminate = 0;
static TimestampTz retry_after = 0; /* after a failed exchange */
static int	error_pause_ms = 0;	/* the last pause, 0 after a success */
static bool unconfigured_checked = false;

/*
 * Reserves up to want concurrent requests of the server's
 * smsdispatch.ip2sms_max_connections, which the workers of every database
 * share; returns how many. This worker holds connections_held of them:
 * its requests on the wire, and for a moment those it is about to start.
 * When the other workers hold the rest, it looks again CONNECTIONS_RETRY_MS
 * later (connections_retry_at): their requests end without waking it.
 */
#define CONNECTIONS_RETRY_MS	2

static int	connections_held = 0;
static int	bulk_published = 0; /* this worker's share of bulk_on_wire */
static TimestampTz connections_retry_at = 0;

static int
connections_reserve(int want, TimestampTz now)
{
	int			n;

	SpinLockAcquire(&sms_shared->rate_mutex);
	n = Max(0, Min(want, sms_ip2sms_max_connections - sms_shared->requests_on_wire));
	sms_shared->requests_on_wire += n;
	SpinLockRelease(&sms_shared->rate_mutex);
	connections_held += n;
	connections_retry_at = n < want ? TimestampTzPlusMilliseconds(now, CONNECTIONS_RETRY_MS) : 0;
	return n;
}

/*
 * Gives back what this worker holds beyond its requests on the wire, and
 * publishes how many of those are not urgent sends (the server's urgent
 * lane, bulk_free_slots).
 */
static void
connections_settle(void)
{
	int			unused = connections_held - nactive;
	int			bulk = nactive - nactive_urgent;

	if (unused <= 0 && bulk == bulk_published)
		return;
	SpinLockAcquire(&sms_shared->rate_mutex);
	sms_shared->requests_on_wire -= Max(unused, 0);
	sms_shared->bulk_on_wire += bulk - bulk_published;
	SpinLockRelease(&sms_shared->rate_mutex);
	connections_held = Min(connections_held, nactive);
	bulk_published = bulk;
}

/* At exit: the requests of this worker no longer hold connections. */
static void
connections_release_all(int code, Datum arg)
{
	nactive = 0;
	nactive_urgent = 0;
	connections_settle();
}

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

/* Gives a slot's easy handle the addresses of the slot and its buffers. */
static void
point_easy_at_slot(Slot *slot)
{
	curl_easy_setopt(slot->easy, CURLOPT_PRIVATE, slot);
	curl_easy_setopt(slot->easy, CURLOPT_WRITEDATA, slot);
	curl_easy_setopt(slot->easy, CURLOPT_ERRORBUFFER, slot->errbuf);
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
		before_shmem_exit(connections_release_all, (Datum) 0);
		curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, on_socket);
		curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, on_timer);
		headers = curl_slist_append(NULL, "Content-Type: text/xml; charset=utf-8");
		/* no "Expect: 100-continue" round trip before larger bodies */
		headers = curl_slist_append(headers, "Expect:");
		if (headers == NULL)
			curl_setup_failed("curl_slist_append");
	}
	/* a new size takes effect once no request is on the wire */
	if (nslots == sms_ip2sms_max_connections || nactive > 0)
		return;
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) sms_ip2sms_max_connections);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) sms_ip2sms_max_connections);

	for (i = sms_ip2sms_max_connections; i < nslots; i++)
	{
		curl_easy_cleanup(slots[i].easy);
		free(slots[i].resp);
	}
	slots = realloc(slots, sizeof(Slot) * sms_ip2sms_max_connections);
	if (slots == NULL)
		curl_setup_failed("out of memory");
	/* the array may have moved: the kept handles must point at it again */
	for (i = 0; i < Min(nslots, sms_ip2sms_max_connections); i++)
		point_easy_at_slot(&slots[i]);
	for (i = nslots; i < sms_ip2sms_max_connections; i++)
	{
		Slot	   *slot = &slots[i];

		memset(slot, 0, sizeof(Slot));
		slot->easy = curl_easy_init();
		if (slot->easy == NULL)
			curl_setup_failed("curl_easy_init");
		point_easy_at_slot(slot);
		curl_easy_setopt(slot->easy, CURLOPT_WRITEFUNCTION, on_data);
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

/*
 * When the first unrecorded result is due to be recorded (DT_NOEND for
 * none): a fresh one RECORD_DELAY_MS after it came in, one whose row
 * another session held at its retry time. Sets *nfresh to the number of
 * fresh ones.
 */
static TimestampTz
finished_due(int *nfresh)
{
	TimestampTz due = DT_NOEND;
	dlist_iter	it;

	*nfresh = 0;
	dlist_foreach(it, &finished)
	{
		Ip2smsRequest *r = dlist_container(Ip2smsRequest, node, it.cur);

		if (r->retry_record_at == 0)
		{
			(*nfresh)++;
			due = Min(due, TimestampTzPlusMilliseconds(r->finished_at, RECORD_DELAY_MS));
		}
		else
			due = Min(due, r->retry_record_at);
	}
	return due;
}

/* Puts a request whose transfer ended among those to record. */
static void
add_finished(Ip2smsRequest *req)
{
	req->finished_at = GetCurrentTimestamp();
	dlist_push_tail(&finished, &req->node);
	nfinished++;
}

/*
 * Files a failed request under its failure class (stat counts it), with
 * its text for last_error: a failure of the channel leaves the row's
 * attempts alone, a refusal of the request spends one. Sends tell the
 * circuit (a refusal says that the gateway answers); a failed status poll
 * is only polled again later, so the channel's state is what its sends
 * find, and a status URL that answers while sends fail does not close the
 * circuit.
 */
static void
request_failed(Ip2smsRequest *req, SmsFailure failure, SmsStat stat,
			   const char *fmt, const char *arg)
{
	bool		of_channel = sms_failure_is_channels(failure);

	snprintf(req->detail, sizeof(req->detail), fmt, arg);
	sms_stats_count(stat);
	req->outcome = of_channel ? IP2SMS_CHANNEL_FAILED : IP2SMS_REQUEST_FAILED;
	if (req->kind != IP2SMS_SEND)
		return;
	if (of_channel)
		sms_circuit_failure(failure, req->detail);
	else
		sms_circuit_answered();
}

/*
 * A request that could not be put on the wire (no memory for its body,
 * curl refused the handle) never left: it ends at once as a connection
 * failure, so that its row goes back to the queue, not left 'sending' with
 * nothing on the wire.
 */
static void
request_not_started(Ip2smsRequest *req, const char *why)
{
	request_failed(req, SMS_FAILURE_CONNECT, SMS_STAT_ERRORS_CONNECT,
				   "the request could not be started: %s", why);
	add_finished(req);
}

/* Puts one request on the wire through an idle slot. */
static void
start_request(Slot *slot, Ip2smsRequest *req)
{
	CURL	   *easy = slot->easy;
	CURLMcode	rc;

	slot->resp_len = 0;
	slot->overflow = false;
	slot->errbuf[0] = '\0';
	if (req->kind == IP2SMS_SEND)
		slot->body = ip2sms_build_send(req->phone, req->body,
									   sms_ip2sms_source, sms_ip2sms_validity);
	else
		slot->body = ip2sms_build_status(req->gateway_id);
	if (slot->body == NULL)
	{
		request_not_started(req, "out of memory");
		return;
	}

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
	{
		free(slot->body);
		slot->body = NULL;
		request_not_started(req, curl_multi_strerror(rc));
		return;
	}
	slot->req = req;
	req->outcome = IP2SMS_IN_FLIGHT;
	nactive++;
	if (req->urgent)
		nactive_urgent++;
	sms_stats_count(req->kind == IP2SMS_SEND ? SMS_STAT_REQUESTS_SEND :
					SMS_STAT_REQUESTS_STATUS);
}

/* Takes a request off its slot and puts it among the finished ones. */
static void
release_slot(Slot *slot)
{
	Ip2smsRequest *req = slot->req;

	curl_multi_remove_handle(multi, slot->easy);
	free(slot->body);
	slot->body = NULL;
	slot->req = NULL;
	nactive--;
	if (req->urgent)
		nactive_urgent--;
	connections_settle();
	add_finished(req);
}

/* Classifies a finished request and frees what it no longer needs. */
static void
finish_request(Slot *slot, CURLcode result)
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
		request_failed(req, SMS_FAILURE_TIMEOUT, SMS_STAT_ERRORS_TIMEOUT,
					   "timeout: %s", slot->errbuf);
	else if (result == CURLE_WRITE_ERROR && slot->overflow)
		request_failed(req, SMS_FAILURE_GARBAGE, SMS_STAT_ERRORS_PARSE, "%s",
					   "unreadable answer: larger than 64 kB");
	else if (result != CURLE_OK)
		request_failed(req, SMS_FAILURE_CONNECT, SMS_STAT_ERRORS_CONNECT,
					   "connection failed: %s",
					   slot->errbuf[0] ? slot->errbuf : curl_easy_strerror(result));
	else if (http == 401 || http == 403)
		request_failed(req, SMS_FAILURE_AUTH, SMS_STAT_ERRORS_HTTP_401,
					   "HTTP %s from the IP2SMS gateway: check smsdispatch.ip2sms_login and the password in smsdispatch.ip2sms_password_file",
					   code);
	else if (http >= 500)
		request_failed(req, SMS_FAILURE_HTTP_5XX, SMS_STAT_ERRORS_HTTP_5XX,
					   "HTTP %s from the IP2SMS gateway", code);
	else if (http < 200 || http >= 300)
		request_failed(req, SMS_FAILURE_REFUSED, SMS_STAT_ERRORS_HTTP_OTHER,
					   "HTTP %s from the IP2SMS gateway", code);
	else if (ip2sms_parse_answer(slot->resp, slot->resp_len, &req->answer) == 0)
	{
		req->outcome = IP2SMS_ANSWERED;
		sms_stats_answer(req->answer.state);
		if (req->kind == IP2SMS_SEND)
			sms_circuit_answered();
	}
	else
		request_failed(req, SMS_FAILURE_GARBAGE, SMS_STAT_ERRORS_PARSE,
					   "unreadable answer: %s", req->answer.error);
	release_slot(slot);
}

/* Hands finished transfers to finish_request. */
static void
reap_finished(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		Slot	   *slot;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &slot);
		finish_request(slot, msg->data.result);
	}
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

/* Milliseconds from now until t, rounded up; 0 when t has passed. */
static long
ms_until(TimestampTz now, TimestampTz t)
{
	if (t <= now)
		return 0;
	if (t == DT_NOEND)
		return LONG_MAX;
	return (long) Min((t - now + 999) / 1000, (int64) INT_MAX);
}

/*
 * Hands the socket events of a wait to curl, runs curl's timer when it is
 * due, and collects what finished. Returns whether the latch was set.
 */
static bool
drive_transfers(WaitEvent *events, int n)
{
	bool		latch_set = false;
	int			running;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
			latch_set = true;
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
	if (curl_timeout_ms >= 0 &&
		GetCurrentTimestamp() >= TimestampTzPlusMilliseconds(curl_timer_set_at, curl_timeout_ms))
	{
		curl_timeout_ms = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	reap_finished();
	return latch_set;
}

/*
 * Sleeps until a socket is ready, curl's timer, until or the latch, then
 * drives curl and collects what finished. Returns whether the latch was
 * set (a COMMIT queued work, a signal arrived).
 */
bool
ip2sms_wait(TimestampTz until)
{
	WaitEvent	events[64];
	TimestampTz now = GetCurrentTimestamp();
	long		timeout = ms_until(now, until);
	int			n;

	if (multi == NULL)
		return (WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						  Min(timeout, INT_MAX), PG_WAIT_EXTENSION) & WL_LATCH_SET) != 0;
	if (curl_timeout_ms >= 0)
		timeout = Min(timeout, ms_until(now, TimestampTzPlusMilliseconds(curl_timer_set_at,
																		  curl_timeout_ms)));
	sync_wait_set();
	n = timeout == 0 ? 0 :
		WaitEventSetWait(wait_set, Min(timeout, INT_MAX), events, lengthof(events),
						 PG_WAIT_EXTENSION);
	return drive_transfers(events, n);
}

/*
 * Reads, without waiting, what the gateway sent meanwhile, and collects
 * what finished; between two of the worker's duties. While another
 * session's lock makes each duty wait up to lock_timeout, a whole pass can
 * take seconds: answers left unread that long would end as curl timeouts
 * (and be sent again) instead of being kept until they can be recorded.
 * The latch is left out of this look (a set latch would hide the sockets)
 * and stays set for the loop's own wait.
 */
void
ip2sms_read_ready(void)
{
	WaitEvent	events[64];
	int			n;

	if (multi == NULL || nactive == 0)
		return;
	sync_wait_set();
	ModifyWaitEvent(wait_set, LATCH_POS, WL_LATCH_SET, NULL);
	n = WaitEventSetWait(wait_set, 0, events, lengthof(events), PG_WAIT_EXTENSION);
	ModifyWaitEvent(wait_set, LATCH_POS, WL_LATCH_SET, MyLatch);
	(void) drive_transfers(events, n);
}

/* New rows or polls may be due: a COMMIT set the latch. */
void
ip2sms_wake(void)
{
	send_due = 0;
	urgent_due = 0;
	poll_due = 0;
}

/* The configuration was reloaded: an open circuit is probed at once. */
void
ip2sms_reload(void)
{
	sms_circuit_probe_now();
	send_due = 0;
	urgent_due = 0;
	poll_due = 0;
	unconfigured_checked = false;
}

/*
 * How many sends the rate limit allows now, at most want, and reserves
 * them. The limit is the server's: the workers of every database spend one
 * schedule in shared memory, so that two databases at the limit together
 * send at the limit, not twice it. Up to a hundredth of a second's worth
 * may go at once, so that a high rate does not cost a transaction per SMS;
 * sends reserved and not made are given back (rate_refund).
 */
static int
rate_allows(TimestampTz now, int want)
{
	int64		gap;
	int			burst;
	int			n = 0;
	TimestampTz next;

	if (sms_ip2sms_max_rate <= 0)
		return want;
	gap = USECS_PER_SEC / sms_ip2sms_max_rate;
	burst = Max(1, sms_ip2sms_max_rate / 100);
	SpinLockAcquire(&sms_shared->rate_mutex);
	/* a quiet spell does not save up more than a burst */
	next = Max(sms_shared->next_send_slot, now - (burst - 1) * gap);
	if (next <= now)
		n = (int) Min(Min((now - next) / gap + 1, (int64) burst), (int64) want);
	sms_shared->next_send_slot = next + n * gap;
	SpinLockRelease(&sms_shared->rate_mutex);
	return n;
}

/* Gives back n sends rate_allows() reserved and that did not leave. */
static void
rate_refund(int n)
{
	if (sms_ip2sms_max_rate <= 0 || n <= 0)
		return;
	SpinLockAcquire(&sms_shared->rate_mutex);
	sms_shared->next_send_slot -= n * (USECS_PER_SEC / sms_ip2sms_max_rate);
	SpinLockRelease(&sms_shared->rate_mutex);
}

/* When the rate limit lets the next send leave. */
static TimestampTz
rate_next_slot(void)
{
	TimestampTz next;

	SpinLockAcquire(&sms_shared->rate_mutex);
	next = sms_shared->next_send_slot;
	SpinLockRelease(&sms_shared->rate_mutex);
	return next;
}

/* Sends on the wire. */
static int
sends_on_wire(void)
{
	int			n = 0;
	int			i;

	for (i = 0; i < nslots; i++)
		if (slots[i].req != NULL && slots[i].req->kind == IP2SMS_SEND)
			n++;
	return n;
}

/*
 * How many sends the circuit lets leave now, at most want: all while it is
 * closed; while it is open, one probe at its time, and none while a send
 * is on the wire.
 */
static int
circuit_allows(TimestampTz now, int want)
{
	if (!sms_circuit_open())
		return want;
	return sends_on_wire() == 0 && now >= sms_circuit_next_probe() ? Min(want, 1) : 0;
}

/*
 * When a send may next leave, send_due aside: the rate limit's next slot,
 * or the circuit's next probe; never while the circuit is open and a send
 * is on the wire (its end wakes the worker).
 */
static TimestampTz
next_send_allowed(void)
{
	if (!sms_circuit_open())
		return sms_ip2sms_max_rate > 0 ? rate_next_slot() : 0;
	return sends_on_wire() == 0 ? sms_circuit_next_probe() : DT_NOEND;
}

/* Ids of the status polls on the wire or not yet recorded, in the current context. */
static int64 *
busy_polls(int *n)
{
	int64	   *ids = palloc(sizeof(int64) * (nslots + nfinished + 1));
	dlist_iter	it;
	int			i;

	*n = 0;
	for (i = 0; i < nslots; i++)
		if (slots[i].req != NULL && slots[i].req->kind == IP2SMS_STATUS)
			ids[(*n)++] = slots[i].req->id;
	dlist_foreach(it, &finished)
	{
		Ip2smsRequest *r = dlist_container(Ip2smsRequest, node, it.cur);

		if (r->kind == IP2SMS_STATUS)
			ids[(*n)++] = r->id;
	}
	return ids;
}

/*
 * The connections kept for urgent sends (smsdispatch.ip2sms_urgent_connections):
 * all but one at most, so that the other SMS always have one.
 */
static int
urgent_connections(void)
{
	return Min(sms_ip2sms_urgent_connections, nslots - 1);
}

/*
 * The free connections a request other than an urgent send may take: those
 * beyond the ones kept for urgent sends, less the other requests on the
 * wire of every database's worker (the lane is the server's, as the
 * connections are).
 */
static int
bulk_free_slots(void)
{
	int			server_bulk;

	SpinLockAcquire(&sms_shared->rate_mutex);
	server_bulk = sms_shared->bulk_on_wire - bulk_published + (nactive - nactive_urgent);
	SpinLockRelease(&sms_shared->rate_mutex);
	return Max(0, Min(nslots - nactive,
					  nslots - urgent_connections() - server_bulk));
}

/*
 * Whether to claim for the free connections now: when a quarter of them
 * are free (or all), or once results are due to be recorded (record_due,
 * from finished_due()), so that an exchange carries a batch and an urgent
 * row still waits at most a few milliseconds for a connection; and at once
 * when urgent rows may be due and connections only they may take are free.
 */
static bool
worth_filling(TimestampTz now, TimestampTz record_due)
{
	int			free_slots = nslots - nactive;

	if (free_slots <= 0)
		return false;
	return free_slots >= Max(1, nslots / 4) || nactive == 0 || record_due <= now ||
		(urgent_due <= now && free_slots > bulk_free_slots());
}

/* Lowers *due to t. */
static inline void
lower_due(TimestampTz *due, TimestampTz t)
{
	if (t < *due)
		*due = t;
}

/*
 * Records finished requests and fills the free connections; see ip2sms.h.
 * Runs outside any transaction. Lowers *next_due to when it next has
 * something to do; sets *alarms_changed when an alarm's SMS changed state
 * (the escalation should look at it soon).
 */
void
ip2sms_pump(TimestampTz *next_due, bool *alarms_changed)
{
	TimestampTz now = GetCurrentTimestamp();
	/* without a usable password nothing is claimed: the rows stay queued */
	bool		have_password = sms_ip2sms_password_refresh();
	bool		can_send = have_password && sms_ip2sms_url[0] != '\0';
	bool		can_poll = have_password && sms_ip2sms_status_url[0] != '\0';
	Ip2smsExchange x = {0};
	Ip2smsRequest *claimed[IP2SMS_MAX_SLOTS];
	int			free_slots;
	int			bulk_slots;
	int			sends = 0;
	int			rate_reserved;
	int			polls = 0;
	bool		record;
	TimestampTz record_due;
	int			nfresh;
	bool		terminate;
	bool		check;
	bool		ok;
	int			i;
	int			next_slot = 0;
	MemoryContext old;

	*alarms_changed = false;
	if (!have_password && sms_ip2sms_url[0] != '\0')
		sms_channel_publish(SMS_CHANNEL_AUTH_FAILED, sms_ip2sms_password_problem());
	if (pump_cxt == NULL)
	{
		pump_cxt = AllocSetContextCreate(TopMemoryContext, "smsdispatch ip2sms pump",
										 ALLOCSET_DEFAULT_SIZES);
		dlist_init(&finished);
	}
	prepare_transport();
	if (now < retry_after)
	{
		lower_due(next_due, retry_after);
		return;
	}

	record_due = finished_due(&nfresh);
	free_slots = worth_filling(now, record_due) && (can_send || can_poll) ?
		connections_reserve(nslots - nactive, now) : 0;
	/* polls and sends that are not urgent take these only */
	bulk_slots = Min(free_slots, bulk_free_slots());
	if (can_send && Min(send_due, urgent_due) <= now && free_slots > 0)
		sends = rate_allows(now, circuit_allows(now, free_slots));
	rate_reserved = sends;
	if (can_poll && poll_due <= now && bulk_slots > 0)
	{
		/* a send backlog leaves a quarter of the connections to polls */
		if (sends == free_slots && bulk_slots >= 4)
			sends -= bulk_slots / 4;
		polls = Min(free_slots - sends, bulk_slots);
	}
	/* results another session holds wait for their retry time alone */
	record = record_due <= now ||
		(nfresh > 0 && (nfresh >= RECORD_BATCH || sends + polls > 0));
	terminate = can_poll && now >= next_terminate;
	check = have_password && sms_ip2sms_url[0] == '\0' && !unconfigured_checked;

	if (record || sends + polls > 0 || terminate || check)
	{
		old = MemoryContextSwitchTo(pump_cxt);
		memset(&x, 0, sizeof(x));
		x.finished = &finished;
		x.want_sends = sends;
		/* only urgent rows may be due: the others wait for send_due */
		x.want_bulk_sends = send_due <= now ? bulk_slots - polls : 0;
		x.want_polls = polls;
		x.busy = busy_polls(&x.nbusy);
		x.terminate_polls = terminate;
		x.check_unconfigured = check;
		x.claimed = claimed;
		ok = ip2sms_exchange(&x);
		MemoryContextSwitchTo(old);
		MemoryContextReset(pump_cxt);
		nfinished = 0;
		{
			dlist_iter	it;

			dlist_foreach(it, &finished)
				nfinished++;
		}
		rate_refund(rate_reserved - (ok ? x.nsends : 0));
		if (!ok)
		{
			connections_settle();
			/* the error is logged; everything kept: try again in a moment */
			error_pause_ms = error_pause_ms == 0 ? ERROR_PAUSE_FIRST_MS :
				Min(error_pause_ms * 2, ERROR_PAUSE_MOST_MS);
			ereport(WARNING,
					(errmsg("smsdispatch: the IP2SMS channel could not record its results or claim work; %d results are kept and tried again in %d ms",
							nfinished, error_pause_ms)));
			retry_after = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  error_pause_ms);
			lower_due(next_due, retry_after);
			return;
		}
		error_pause_ms = 0;
		*alarms_changed = x.alarms_changed;
		if (x.check_unconfigured)
		{
			unconfigured_checked = true;
			if (x.queued_unconfigured)
				ereport(WARNING,
						(errmsg("smsdispatch: IP2SMS messages stay queued: smsdispatch.ip2sms_url is empty"),
						 errhint("Set smsdispatch.ip2sms_url, ip2sms_status_url, ip2sms_login and ip2sms_password_file, then reload.")));
		}
		if (x.terminate_polls)
			next_terminate = TimestampTzPlusMilliseconds(now, TERMINATE_EVERY_MS);
		if (sends > 0 && x.nsends < sends)
			send_due = x.nsends == 0 && x.send_due <= now ?
				TimestampTzPlusMilliseconds(now, IDLE_PAUSE_MS) : x.send_due;
		else if (x.requeued)
			send_due = Min(send_due, x.send_due);
		/* urgent rows due but not taken are locked by someone: a pause */
		if (sends > 0)
			urgent_due = x.urgent_due != 0 && x.urgent_due <= now ?
				TimestampTzPlusMilliseconds(now, IDLE_PAUSE_MS) : x.urgent_due;
		if (polls > 0 && x.nclaimed - x.nsends < polls)
			poll_due = x.nclaimed == x.nsends && x.poll_due <= now ?
				TimestampTzPlusMilliseconds(now, IDLE_PAUSE_MS) : x.poll_due;
		/* what was just recorded is polled from poll_interval on */
		if (record)
			poll_due = Min(poll_due, TimestampTzPlusMilliseconds(now,
																 (int64) sms_ip2sms_poll_interval_s * 1000));
		for (i = 0; i < x.nclaimed; i++)
		{
			while (slots[next_slot].req != NULL)
				next_slot++;
			start_request(&slots[next_slot], claimed[i]);
		}
		if (x.nclaimed > 0)
		{
			int			running;

			/* the requests leave now, not at the next wait */
			curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
			reap_finished();
		}
	}
	connections_settle();

	/* when there is something to do again */
	record_due = finished_due(&nfresh);
	lower_due(next_due, record_due);
	if (worth_filling(now, record_due))
	{
		if (can_send)
			lower_due(next_due, Max(Max(send_due, next_send_allowed()),
									connections_retry_at));
		if (can_poll && bulk_free_slots() > 0)
			lower_due(next_due, Max(poll_due, connections_retry_at));
	}
	/* an urgent row due later takes a connection kept for it */
	if (can_send && nslots - nactive > bulk_free_slots())
		lower_due(next_due, Max(Max(urgent_due, next_send_allowed()),
								connections_retry_at));
	if (can_poll)
		lower_due(next_due, next_terminate);
}

/*
 * At SIGTERM, once the worker claims nothing more: waits up to
 * smsdispatch.shutdown_grace for the answers of the requests on the wire,
 * driving them as the loop does, then records every result in one exchange
 * (its own short transaction). What is still unanswered then may have
 * reached the gateway and becomes 'unknown', never sent again. The wait
 * ends at once when the postmaster dies; -m immediate does not come here.
 */
void
ip2sms_stop(void)
{
	Ip2smsExchange x = {0};
	TimestampTz deadline;
	int			unanswered;
	dlist_iter	it;
	int			i;

	if (multi == NULL || (nactive == 0 && dlist_is_empty(&finished)))
		return;
	pgstat_report_activity(STATE_RUNNING, "smsdispatch: stopping, awaiting IP2SMS answers");
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sms_shutdown_grace_ms);
	while (nactive > 0 && GetCurrentTimestamp() < deadline)
	{
		if (ip2sms_wait(deadline))
			ResetLatch(MyLatch);
	}
	unanswered = nactive;
	for (i = 0; i < nslots; i++)
		if (slots[i].req != NULL)
			release_slot(&slots[i]);
	if (unanswered > 0)
		ereport(LOG,
				(errmsg("smsdispatch: %d IP2SMS requests were still unanswered after smsdispatch.shutdown_grace (%d ms); their rows become unknown",
						unanswered, sms_shutdown_grace_ms)));
	/* the last chance: results held by another session are tried too */
	dlist_foreach(it, &finished)
		dlist_container(Ip2smsRequest, node, it.cur)->retry_record_at = 0;
	memset(&x, 0, sizeof(x));
	x.finished = &finished;
	if (!ip2sms_exchange(&x))
		ereport(WARNING,
				(errmsg("smsdispatch: %d IP2SMS results could not be recorded at shutdown; their rows become unknown at the next start",
						nfinished)));
}

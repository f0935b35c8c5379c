/*-------------------------------------------------------------------------
 *
 * ip2sms.h
 *	  The IP2SMS channel as the background worker sees it, and the channel's
 *	  counters in shared memory.
 *
 *-------------------------------------------------------------------------
 */
#ifndef IP2SMS_H
#define IP2SMS_H

#include "postgres.h"
#include "datatype/timestamp.h"

#include "lib/ilist.h"
#include "ip2sms_xml.h"

/*
 * ip2sms.c: the channel as a continuous pipeline that the worker's loop
 * drives, always outside any transaction. ip2sms_pump() records finished
 * requests and claims work for the connections that are free, in one short
 * transaction, and starts those requests; ip2sms_wait() sleeps until a
 * socket is ready, curl's timer, the timeout or the latch, and drives the
 * transfers; ip2sms_read_ready() drives them without waiting, between
 * the worker's duties. ip2sms_stop() (at SIGTERM) waits up to
 * smsdispatch.shutdown_grace for the answers on the wire, records what
 * finished and turns what is still unanswered 'unknown'. ip2sms_wake()
 * says new rows may be due (a COMMIT set the latch).
 */
extern void ip2sms_pump(TimestampTz *next_due, bool *alarms_changed);
extern bool ip2sms_wait(TimestampTz until);
extern void ip2sms_read_ready(void);
extern void ip2sms_wake(void);
extern void ip2sms_reload(void);
extern void ip2sms_stop(void);

/*
 * Between ip2sms.c (transport) and ip2sms_db.c (claiming and recording):
 * one request and what came of it. Each lives in a memory context of its
 * own from its claim until its result is recorded.
 */
typedef enum Ip2smsKind
{
	IP2SMS_SEND,
	IP2SMS_STATUS
} Ip2smsKind;

typedef enum Ip2smsOutcome
{
	IP2SMS_IN_FLIGHT,			/* may have reached the gateway, no answer
								 * (detail says why, when it is not a stop) */
	IP2SMS_ANSWERED,			/* answer parsed into answer */
	IP2SMS_CHANNEL_FAILED,		/* the channel's failure (connect, timeout,
								 * 5xx, garbage, 401/403): the row waits,
								 * its attempt not counted */
	IP2SMS_REQUEST_FAILED		/* the gateway refused the request (another
								 * non-2xx): retried, the attempt counted */
} Ip2smsOutcome;

typedef struct Ip2smsRequest
{
	dlist_node	node;			/* in the list of finished requests */
	MemoryContext cxt;			/* holds this request and its strings */
	int64		id;				/* verification.sms_log id */
	int64		message_id;		/* the alarm's, 0 for none */
	Ip2smsKind	kind;
	int			attempts;		/* sends: attempts including this one */
	bool		urgent;			/* sends: priority <= SMS_PRIORITY_URGENT_MAX */
	char	   *phone;			/* sends */
	char	   *body;			/* sends */
	char	   *gateway_id;		/* status requests */
	Ip2smsOutcome outcome;
	TimestampTz finished_at;
	bool		status_by_report;	/* sends of a registered channel (Kannel):
									 * no gateway id, statuses come as
									 * delivery reports, nothing to poll */
	char	   *token;			/* with want_tokens: callback_token(id) */
	bool		held_logged;	/* said once that its row is locked */
	TimestampTz retry_record_at;	/* held: not tried again before this */
	char		detail[256];	/* transport error, for last_error */
	Ip2smsAnswer answer;		/* when ANSWERED */
} Ip2smsRequest;

/* what one exchange with the database asks for and brings back */
typedef struct Ip2smsExchange
{
	const char *channel;		/* whose rows to claim: NULL for ip2sms */
	bool		want_tokens;	/* claimed sends get their callback token */
	dlist_head *finished;		/* recorded ones are freed and removed */
	int			want_sends;		/* rows to claim for sending */
	int			want_bulk_sends;	/* of which at most this many not urgent */
	int			want_polls;		/* due status polls to read */
	int64	   *busy;			/* polls on the wire or not recorded yet */
	int			nbusy;
	bool		terminate_polls;	/* end polls past the status window */
	bool		check_unconfigured; /* whether rows wait for a send URL */
	bool		queued_unconfigured;	/* out: they do */
	Ip2smsRequest **claimed;	/* out: want_sends + want_polls slots */
	int			nclaimed;
	int			nsends;			/* out: of which sends (first) */
	TimestampTz urgent_due;		/* out when sends were asked: when urgent
								 * rows may be due next (0: now) */
	TimestampTz send_due;		/* out when the claim found fewer rows than it
								 * asked for, or requeued */
	TimestampTz poll_due;		/* out when fewer polls than asked */
	bool		alarms_changed; /* out: an alarm's SMS changed state */
	bool		requeued;		/* out: a send went back to the queue */
} Ip2smsExchange;

extern bool ip2sms_exchange(Ip2smsExchange *x);
extern void ip2sms_free_request(Ip2smsRequest *req);

/* stats.c: the counters of smsdispatch.stats() */
typedef enum SmsStat
{
	SMS_STAT_REQUESTS_SEND,
	SMS_STAT_REQUESTS_STATUS,
	SMS_STAT_ERRORS_CONNECT,
	SMS_STAT_ERRORS_TIMEOUT,
	SMS_STAT_ERRORS_HTTP_5XX,
	SMS_STAT_ERRORS_HTTP_401,
	SMS_STAT_ERRORS_HTTP_OTHER,
	SMS_STAT_ERRORS_PARSE,
	SMS_STAT_RETRIES,
	SMS_STAT_FIXED_COUNT		/* the answers_<State> counters follow */
} SmsStat;

extern void sms_stats_shmem_request(void);
extern void sms_stats_shmem_startup(void);
extern void sms_stats_attach(Oid dboid);
extern void sms_stats_count(SmsStat stat);
extern void sms_stats_answer(const char *state);
extern void sms_stats_latency(int64 usec);

#endif							/* IP2SMS_H */

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

/*
 * ip2sms.c: one round of the channel. Called by the worker outside any
 * transaction: sends due queued rows and polls due statuses, concurrently,
 * then records every result in one transaction. Lowers *next_due to when
 * the channel next has work. The first call also turns rows a crash left
 * 'sending' into 'unknown'.
 */
extern void ip2sms_dispatch(TimestampTz *next_due);

/*
 * Between ip2sms.c (transport) and ip2sms_db.c (claiming and recording):
 * one request of a round and what came of it.
 */
typedef enum Ip2smsKind
{
	IP2SMS_SEND,
	IP2SMS_STATUS
} Ip2smsKind;

typedef enum Ip2smsOutcome
{
	IP2SMS_NOT_STARTED,			/* never left: the round was cut short */
	IP2SMS_IN_FLIGHT,			/* may have reached the gateway, no answer */
	IP2SMS_ANSWERED,			/* answer parsed into answer */
	IP2SMS_AUTH_FAILED,			/* HTTP 401 */
	IP2SMS_TRANSPORT_ERROR		/* retryable: connect, timeout, 5xx, garbage */
} Ip2smsOutcome;

typedef struct Ip2smsRequest
{
	int64		id;				/* verification.sms_log id */
	Ip2smsKind	kind;
	int			attempts;		/* sends: attempts including this one */
	char	   *phone;			/* sends */
	char	   *body;			/* sends */
	char	   *gateway_id;		/* status requests */
	Ip2smsOutcome outcome;
	char		detail[256];	/* transport error, for last_error */
	struct Ip2smsAnswer *answer;	/* when ANSWERED */
} Ip2smsRequest;

typedef struct Ip2smsRound
{
	Ip2smsRequest *sends;
	int			nsends;
	Ip2smsRequest *polls;
	int			npolls;
	bool		more_due;		/* a batch was full: call again at once */
} Ip2smsRound;

extern void ip2sms_claim(Ip2smsRound *round, bool want_sends, bool want_polls);
extern void ip2sms_record(Ip2smsRound *round, bool want_sends, bool want_polls,
						  TimestampTz *next_due);

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
extern void sms_stats_count(SmsStat stat);
extern void sms_stats_answer(const char *state);
extern void sms_stats_latency(int64 usec);

#endif							/* IP2SMS_H */

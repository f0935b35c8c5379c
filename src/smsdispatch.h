/*-------------------------------------------------------------------------
 *
 * smsdispatch.h
 *	  Declarations shared by the parts of the smsdispatch module.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SMSDISPATCH_H
#define SMSDISPATCH_H

#include "postgres.h"
#include "pg_compat.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/guc.h"
#include "utils/relcache.h"
#include "utils/resowner.h"

/* settings (settings.c); names as in the README */
extern char *sms_database;
extern int	sms_max_databases;
extern int	sms_naptime_ms;
extern int	sms_shutdown_grace_ms;
extern char *sms_default_channel;
extern char *sms_ip2sms_url;
extern char *sms_ip2sms_status_url;
extern char *sms_ip2sms_login;
extern char *sms_ip2sms_password_file;
extern char *sms_ip2sms_source;
extern char *sms_ip2sms_validity;
extern char *sms_ip2sms_ca_file;
extern int	sms_ip2sms_timeout_ms;
extern int	sms_kannel_timeout_ms;
extern int	sms_ip2sms_max_connections;
extern int	sms_ip2sms_urgent_connections;
extern int	sms_ip2sms_max_rate;
extern int	sms_ip2sms_poll_interval_s;
extern int	sms_ip2sms_status_window_s;
extern int	sms_max_attempts;
extern char *sms_spool_dir;
extern int	sms_spool_max_age_s;
extern char *sms_verification_template;
extern char *sms_default_country_code;
extern int	sms_number_quarantine_s;
extern int	sms_max_per_phone_per_hour;
extern int	sms_max_parts;
extern int	sms_max_inbound_length;
extern int	sms_redact_after_s;
extern bool sms_loopback_channel;
extern int	sms_failover_after_s;
extern int	sms_failback_after_s;
extern bool sms_failover_verification;

extern void sms_define_settings(void);
extern const char *sms_send_window_setting(const char *type);
extern struct pg_tz *sms_timezone_tz(void);

/* send_window.c: quiet hours of an SMS type */
typedef struct SmsSendWindow
{
	bool		always;
	int			days;			/* bit d: day d of the week, 0 = Sunday */
	int			start;			/* seconds of the day it opens */
	int			end;			/* and closes; before start: the next day */
} SmsSendWindow;

extern bool sms_parse_send_window(const char *text, SmsSendWindow *w,
								  const char **detail);
extern bool sms_send_window_open(const SmsSendWindow *w, struct pg_tz *tz,
								 TimestampTz now, TimestampTz *opens);

/* secrets.c: the IP2SMS password, from smsdispatch.ip2sms_password_file */
extern bool sms_check_password_file(char **newval, void **extra, GucSource source);
extern bool sms_ip2sms_password_refresh(void);
extern void sms_ip2sms_password_reloaded(void);
extern const char *sms_ip2sms_password(void);
extern const char *sms_ip2sms_password_problem(void);
extern char *sms_read_secret_file(const char *path, char **problem);
extern void sms_forget_secret(char *secret);

/* gsm_text.c: how a text is encoded and how many SMS parts it takes */
typedef struct SmsSegments
{
	bool		gsm7;			/* false: UCS-2 */
	int			units;			/* septets (GSM-7) or UTF-16 code units */
	int			parts;
} SmsSegments;

extern SmsSegments sms_count_segments(const char *utf8, int len);
extern void sms_check_body_text(const char *body, const char *field);

/* Whether a text datum (of a column, say) equals a C string. */
static inline bool
sms_text_equals(Datum value, const char *str)
{
	text	   *t = DatumGetTextPP(value);
	size_t		len = strlen(str);

	return VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), str, len) == 0;
}

/* phone.c */
extern char *sms_try_normalize_phone(const char *phone, const char **detail);
extern char *sms_normalize_phone_text(const char *phone, const char *field);

/* log_writer.c: one row of verification.sms_log, as C code writes it */
typedef struct SmsLogRow
{
	const char *phone_number;
	const char *type;
	const char *body;
	const char *channel;
	const char *verification_id;	/* or NULL */
	const char *send_state;
	const char *last_error;		/* or NULL */
	int			priority;		/* SMS_PRIORITY_MIN .. SMS_PRIORITY_MAX */
} SmsLogRow;

extern int64 sms_log_insert(Relation log, const SmsLogRow *row);

/* queue.c: the one way an SMS enters verification.sms_log from C */
extern int64 sms_queue_insert(const char *phone, const char *body,
							  const char *type, const char *channel,
							  const char *verification_id,
							  const char *refusal, int priority);
extern const char *sms_resolve_channel(const char *channel);

/* priorities of sms_log rows: 1 goes first */
#define SMS_PRIORITY_MIN	1
#define SMS_PRIORITY_MAX	9
#define SMS_PRIORITY_ALARM	1
/* urgent: alarms, confirmations, codes (smsdispatch.ip2sms_urgent_connections) */
#define SMS_PRIORITY_URGENT_MAX	3
extern int	sms_default_priority(const char *type);
/* worker_database.c: the worker's wait for its database */
extern void sms_worker_wait_for_database(const char *dbname);

/* launcher.c: which databases are served, and the launcher of their workers */
extern bool sms_serves_every_database(void);
extern bool sms_database_listed(const char *dbname);
extern void sms_register_launcher(void);
extern PGDLLEXPORT void sms_launcher_main(Datum main_arg);

/* phone_plan.c: national number lengths per country code */
extern bool sms_phone_plan_check(const char *e164, const char **detail);

/*
 * channel_health.c: the IP2SMS channel's state, as the worker sees it, and
 * its circuit. Every failure of a request is of one class; the classes of
 * the channel (all but SMS_FAILURE_REFUSED) never spend the SMS's attempts,
 * and a run of them opens the circuit: only one probe at a time leaves.
 */
typedef enum SmsChannelState
{
	SMS_CHANNEL_OK,
	SMS_CHANNEL_DEGRADED,		/* the last requests failed, the circuit is
								 * still closed */
	SMS_CHANNEL_DOWN,			/* a run of failures opened the circuit */
	SMS_CHANNEL_AUTH_FAILED		/* the gateway refuses the credentials */
} SmsChannelState;

typedef enum SmsFailure
{
	SMS_FAILURE_CONNECT,		/* no connection, or the request never left */
	SMS_FAILURE_TIMEOUT,		/* no answer within the timeout: a hang */
	SMS_FAILURE_HTTP_5XX,		/* the gateway's server error */
	SMS_FAILURE_GARBAGE,		/* an answer that is not an IP2SMS answer */
	SMS_FAILURE_AUTH,			/* HTTP 401 or 403 */
	SMS_FAILURE_REFUSED			/* another non-2xx: this request refused */
} SmsFailure;

#define SMS_CHANNEL_ERROR_LEN 256

typedef struct SmsChannelHealth
{
	slock_t		mutex;
	SmsChannelState state;
	TimestampTz since;			/* when it came into this state */
	char		last_error[SMS_CHANNEL_ERROR_LEN];
} SmsChannelHealth;

extern void sms_channel_publish(SmsChannelState state, const char *error);
extern bool sms_failure_is_channels(SmsFailure failure);
extern void sms_circuit_failure(SmsFailure failure, const char *error);
extern void sms_circuit_answered(void);
extern bool sms_circuit_open(void);
extern int	sms_circuit_sends_allowed(TimestampTz now, int want, int sends_on_wire);
extern TimestampTz sms_circuit_next_probe(void);
extern void sms_circuit_probe_now(void);

/*
 * shmem.c: state shared with the background workers. One slot per served
 * database (smsdispatch.max_databases of them), given out by the launcher:
 * what is per database lives in it; what is per server (the IP2SMS rate
 * limit and connection count, the launcher) beside the slots.
 */
typedef struct SmsDatabaseSlot
{
	bool		in_use;			/* the launcher gave it to a worker */
	Oid			dboid;			/* the database it serves; InvalidOid while
								 * its worker waits for dbname to exist */
	char		dbname[NAMEDATALEN];	/* as smsdispatch.database names it */
	Latch	   *worker_latch;	/* NULL while its worker does not run */
	pid_t		worker_pid;
	bool		no_extension;	/* its worker ended: the extension is not
								 * installed there ('*' only) */
	uint32		seen_generation;	/* extension_generation when it looked */
	SmsChannelHealth ip2sms;	/* written by its worker only */
	int64		inbound_abandoned_id;	/* inbox row whose handler went on
										 * past its cancel and ended its
										 * worker; 0: none */
} SmsDatabaseSlot;

#define SMS_LEFT_OUT_SHOWN	64

typedef struct SmsSharedState
{
	Latch	   *launcher_latch; /* NULL while no launcher runs */
	pg_atomic_uint32 extension_generation;	/* a CREATE EXTENSION committed */
	slock_t		rate_mutex;		/* protects the three below */
	TimestampTz next_send_slot; /* ip2sms_max_rate: earliest next send */
	int			requests_on_wire;	/* of all workers, for
									 * ip2sms_max_connections */
	int			bulk_on_wire;	/* of them, not urgent sends
								 * (ip2sms_urgent_connections) */
	/* databases to serve that got no slot (the first SMS_LEFT_OUT_SHOWN) */
	int			nleft_out;
	Oid			left_out[SMS_LEFT_OUT_SHOWN];
	int			nslots;			/* smsdispatch.max_databases */
	SmsDatabaseSlot slots[FLEXIBLE_ARRAY_MEMBER];
} SmsSharedState;

/* the LISTEN channel of the modem sidecars */
#define SMS_MODEM_NOTIFY_CHANNEL "smsdispatch_modem"

extern SmsSharedState *sms_shared;
extern SmsDatabaseSlot *sms_my_slot;
extern void sms_shmem_request(void);
extern void sms_shmem_startup(void);
extern SmsDatabaseSlot *sms_database_slot(Oid dboid);
extern void sms_wake_worker(void);
extern void sms_wake_at_commit(void);

/*
 * The database duties of one pass of the worker (and of run_once()), and
 * what each did. Every duty runs inside a transaction with SPI connected,
 * handles one batch, sets more when the batch was full and otherwise
 * lowers *next_due to when it next has work.
 */
typedef struct SmsPassSummary
{
	int			spool_imported; /* files that became alarms or SMS */
	int			spool_failed;	/* files moved to failed/ */
	int			alarms_checked; /* due alarms the escalation looked at */
	int			timed_out;		/* recipients past their deadline */
	int			escalated;		/* alarms moved to their next level */
	int			repeated;		/* alarms that started another round */
	int			exhausted;		/* alarms with no level and no round left */
	int			loopback_submitted; /* SMS the loopback channel marked sent */
	int			released;		/* SMS whose send window opened */
	int			failed_over;	/* SMS sent again on the other channel */
	int			retried;		/* alarm SMS queued again after a channel failure */
	int			undeliverable;	/* alarms found unable to reach anyone */
	bool		more;			/* a duty's batch was full: more is due now */
} SmsPassSummary;

typedef void (*SmsDuty) (SmsPassSummary *summary, TimestampTz *next_due);

/* escalation.c */
extern void sms_escalate(SmsPassSummary *summary, TimestampTz *next_due);
extern void sms_loopback_dispatch(SmsPassSummary *summary, TimestampTz *next_due);
extern void sms_housekeeping(SmsPassSummary *summary, TimestampTz *next_due);
extern void sms_release_held(SmsPassSummary *summary, TimestampTz *next_due);

/* inbound.c: the inbound hook */
extern char *sms_inbound_handler;
extern char *sms_inbound_handler_role;
extern int	sms_inbound_handler_timeout_ms;
extern void sms_inbound_launch(SmsPassSummary *summary, TimestampTz *next_due);
extern PGDLLEXPORT void sms_inbound_worker_main(Datum main_arg);
extern void sms_failover(SmsPassSummary *summary, TimestampTz *next_due);

/* spool.c */
extern void sms_spool_import(SmsPassSummary *summary, TimestampTz *next_due);

/* worker.c */
#define SMS_WORKER_LOCK_TIMEOUT "1s"
extern void sms_set_for_transaction(const char *name, const char *value);
extern void sms_bound_lock_waits(void);
/* what one of the worker's transactions does (sms_worker_transaction) */
typedef void (*SmsWork) (void *arg);
extern bool sms_worker_transaction(SmsWork work, void *arg);
extern void sms_keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types);
extern void sms_claim_fence(void);
extern void sms_subxact_release(MemoryContext cxt, ResourceOwner owner);
extern ErrorData *sms_subxact_abort(MemoryContext cxt, ResourceOwner owner);
extern void sms_worker_signals(pqsigfunc on_sigterm);
extern void sms_worker_stop(void);
extern void sms_pin_worker_settings(void);
extern PGDLLEXPORT void sms_worker_main(Datum main_arg);

#endif							/* SMSDISPATCH_H */

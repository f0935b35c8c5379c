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
#include "storage/latch.h"

/* settings (settings.c); names as in the README */
extern char *sms_database;
extern int	sms_naptime_ms;
extern char *sms_default_channel;
extern char *sms_ip2sms_url;
extern char *sms_ip2sms_status_url;
extern char *sms_ip2sms_login;
extern char *sms_ip2sms_password;
extern char *sms_ip2sms_source;
extern char *sms_ip2sms_validity;
extern char *sms_ip2sms_ca_file;
extern int	sms_ip2sms_timeout_ms;
extern int	sms_ip2sms_max_connections;
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

extern void sms_define_settings(void);

/* gsm_text.c: how a text is encoded and how many SMS parts it takes */
typedef struct SmsSegments
{
	bool		gsm7;			/* false: UCS-2 */
	int			units;			/* septets (GSM-7) or UTF-16 code units */
	int			parts;
} SmsSegments;

extern SmsSegments sms_count_segments(const char *utf8, int len);
extern void sms_check_body_text(const char *body, const char *field);

/* phone.c */
extern char *sms_try_normalize_phone(const char *phone, const char **detail);
extern char *sms_normalize_phone_text(const char *phone, const char *field);

/* queue.c: the one way an SMS enters verification.sms_log from C */
extern int64 sms_queue_insert(const char *phone, const char *body,
							  const char *type, const char *channel,
							  const char *verification_id,
							  const char *refusal);
extern const char *sms_resolve_channel(const char *channel);

/* shmem.c: state shared with the background worker */
typedef struct SmsSharedState
{
	Latch	   *worker_latch;	/* NULL while no worker runs */
	pid_t		worker_pid;
} SmsSharedState;

extern SmsSharedState *sms_shared;
extern void sms_shmem_request(void);
extern void sms_shmem_startup(void);
extern void sms_wake_worker(void);

#endif							/* SMSDISPATCH_H */

/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  The smsdispatch.* configuration parameters.
 *
 * All of them live here so that README's table and the code have one place
 * to agree on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "fmgr.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_number_quarantine);
PG_FUNCTION_INFO_V1(sms_validity);
PG_FUNCTION_INFO_V1(sms_max_inbound_length_sql);
PG_FUNCTION_INFO_V1(sms_redact_after_sql);

char	   *sms_database = NULL;
int			sms_max_databases = 8;
int			sms_naptime_ms = 1000;
int			sms_shutdown_grace_ms = 2000;
char	   *sms_default_channel = NULL;
char	   *sms_ip2sms_url = NULL;
char	   *sms_ip2sms_status_url = NULL;
char	   *sms_ip2sms_login = NULL;
char	   *sms_ip2sms_password_file = NULL;
char	   *sms_ip2sms_source = NULL;
char	   *sms_ip2sms_validity = NULL;
char	   *sms_ip2sms_ca_file = NULL;
int			sms_ip2sms_timeout_ms = 10000;
int			sms_kannel_timeout_ms = 5000;
int			sms_ip2sms_max_connections = 16;
int			sms_ip2sms_urgent_connections = 2;
int			sms_ip2sms_max_rate = 0;
int			sms_ip2sms_poll_interval_s = 10;
int			sms_ip2sms_status_window_s = 1800;
int			sms_max_attempts = 5;
char	   *sms_spool_dir = NULL;
int			sms_spool_max_age_s = 3600;
char	   *sms_verification_template = NULL;
char	   *sms_default_country_code = NULL;
int			sms_number_quarantine_s = 86400;
int			sms_max_per_phone_per_hour = 10;
int			sms_max_parts = 10;
int			sms_max_inbound_length = 65536;
int			sms_redact_after_s = 0;
bool		sms_loopback_channel = false;
int			sms_failover_after_s = 30;
int			sms_failback_after_s = 60;
bool		sms_failover_verification = false;

/*
 * The settings of each SMS type, one row per type serving both families
 * and the SQL functions that read them:
 * smsdispatch.validity_<type>, how long an SMS of the type may wait to be
 * submitted before it fails as expired (0 = never; alarms' SMS have none:
 * they keep escalating), read by smsdispatch.validity(type); and
 * smsdispatch.send_window_<type>, its quiet hours (send_window.c), read by
 * smsdispatch.send_window_opens(type). Alarms and their confirmations have
 * neither.
 */
static struct
{
	const char *type;			/* as in sms_log.type */
	const char *validity_setting;
	int			validity_default_s;
	int			validity_s;
	const char *window_setting;
	char	   *window;
}			sms_types[] =
{
	{"verification", "smsdispatch.validity_verification", 600, 600,
	"smsdispatch.send_window_verification", NULL},
	{"2FA", "smsdispatch.validity_2fa", 600, 600,
	"smsdispatch.send_window_2fa", NULL},
	{"medication_request", "smsdispatch.validity_medication_request", 86400, 86400,
	"smsdispatch.send_window_medication_request", NULL},
	{"text", "smsdispatch.validity_text", 86400, 86400,
	"smsdispatch.send_window_text", NULL},
};

/* smsdispatch.timezone: the zone of the send windows' days and hours */
static char *sms_timezone = NULL;

PG_FUNCTION_INFO_V1(sms_setting);

/*
 * smsdispatch.setting(name): the SQL functions read our settings through
 * this, so that the module (and with it the settings) is loaded even where
 * it is not preloaded; current_setting() alone would not know them yet.
 */
Datum
sms_setting(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (strncmp(name, "smsdispatch.", 12) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"%s\" is not an smsdispatch setting", name),
				 errhint("Use current_setting() for other settings.")));
	PG_RETURN_TEXT_P(cstring_to_text(GetConfigOptionByName(name, NULL, false)));
}

/* Rejects a channel name no channel answers to, at SET time. */
static bool
check_channel(char **newval, void **extra, GucSource source)
{
	if (strcmp(*newval, "ip2sms") == 0 || strcmp(*newval, "modem") == 0)
		return true;
	GUC_check_errdetail("Channels are \"ip2sms\" and \"modem\".");
	return false;
}

/*
 * smsdispatch.database is '*' or a comma-separated list of database names,
 * none empty and none longer than a name can be; a typo here would leave a
 * database silently unserved.
 */
static bool
check_database_list(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;

	if (strcmp(p, "*") == 0)
		return true;
	for (;;)
	{
		const char *end = strchr(p, ',');
		size_t		len = end ? (size_t) (end - p) : strlen(p);

		while (len > 0 && isspace((unsigned char) *p))
			p++, len--;
		while (len > 0 && isspace((unsigned char) p[len - 1]))
			len--;
		if (len == 0 || len >= NAMEDATALEN || memchr(p, '*', len) != NULL)
		{
			GUC_check_errdetail("smsdispatch.database is \"*\" or a comma-separated list of database names, each of 1 to %d bytes.",
								NAMEDATALEN - 1);
			return false;
		}
		if (end == NULL)
			return true;
		p = end + 1;
	}
}

/* A country code is one to three digits, without "+" or "00". */
static bool
check_country_code(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;
	int			n = 0;

	for (; *p; p++, n++)
		if (*p < '0' || *p > '9')
			break;
	if (*p == '\0' && n <= 3 && (n == 0 || (*newval)[0] != '0'))
		return true;
	GUC_check_errdetail("A country code is one to three digits without \"+\", for example \"380\".");
	return false;
}

/* The template must say where the code goes, or the SMS would not carry it. */
static bool
check_template(char **newval, void **extra, GucSource source)
{
	if (strstr(*newval, "{code}") != NULL)
		return true;
	GUC_check_errdetail("The template must contain the placeholder {code}.");
	return false;
}

/* A send window must parse (send_window.c), so that a claim never fails on one. */
static bool
check_send_window(char **newval, void **extra, GucSource source)
{
	SmsSendWindow w;
	const char *detail;

	if (sms_parse_send_window(*newval, &w, &detail))
		return true;
	GUC_check_errdetail("%s", detail);
	return false;
}

/*
 * The time zone must be one PostgreSQL's TimeZone takes (a name of
 * pg_timezone_names or a POSIX spec, and no leap seconds), and its offsets
 * from UTC ones PostgreSQL reads back in a timestamp: less than 16 hours.
 * TimeZone itself takes 'UTC+25', and then refuses its own output ("time
 * zone displacement out of range"); no place is that far from UTC. A POSIX
 * spec has a standard and a daylight saving offset: both are checked.
 */
static bool
check_timezone(char **newval, void **extra, GucSource source)
{
	pg_tz	   *tz = pg_tzset(*newval);
	pg_time_t	now = (pg_time_t) time(NULL);
	pg_time_t	boundary;
	long int	offset;
	long int	other_offset;
	int			isdst;
	int			boundaries;

	if (tz == NULL)
	{
		GUC_check_errdetail("\"%s\" is not a time zone PostgreSQL knows; see pg_timezone_names.",
							*newval);
		return false;
	}
	if (!pg_tz_acceptable(tz))
	{
		GUC_check_errdetail("Time zone \"%s\" uses leap seconds, which PostgreSQL does not support.",
							*newval);
		return false;
	}
	boundaries = pg_next_dst_boundary(&now, &offset, &isdst, &boundary,
									  &other_offset, &isdst, tz);
	if (boundaries < 0 || labs(offset) >= TZDISP_LIMIT ||
		(boundaries > 0 && labs(other_offset) >= TZDISP_LIMIT))
	{
		GUC_check_errdetail("The UTC offset of time zone \"%s\" is out of range.", *newval);
		GUC_check_errhint("Offsets from UTC are less than 16 hours; use a name of pg_timezone_names, such as Europe/Kyiv.");
		return false;
	}
	return true;
}

/* The send window setting of an SMS type, or NULL when it is always open. */
const char *
sms_send_window_setting(const char *type)
{
	for (int i = 0; i < lengthof(sms_types); i++)
		if (strcmp(type, sms_types[i].type) == 0)
			return pg_strcasecmp(sms_types[i].window, "always") == 0 ?
				NULL : sms_types[i].window;
	return NULL;
}

/* smsdispatch.timezone, as a zone. */
pg_tz *
sms_timezone_tz(void)
{
	pg_tz	   *tz = pg_tzset(sms_timezone);

	if (tz == NULL)
		elog(ERROR, "smsdispatch: unknown time zone \"%s\"", sms_timezone);
	return tz;
}

/* Registers every setting; called once from _PG_init. */
void
sms_define_settings(void)
{
	/*
	 * Only the postmaster can define a PGC_POSTMASTER setting; a backend that
	 * loads us later (no preloading, so no worker: run_once() users) gets it
	 * as a reloadable setting that nothing reads.
	 */
	DefineCustomStringVariable("smsdispatch.database",
							   "Databases the background workers serve.",
							   "One name, a comma-separated list, or * for every database that has the extension.",
							   &sms_database, "postgres",
							   process_shared_preload_libraries_in_progress ?
							   PGC_POSTMASTER : PGC_SIGHUP,
							   0, check_database_list, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.max_databases",
							"Most databases served at once, one worker each.",
							"Each takes a background worker process (max_worker_processes).",
							&sms_max_databases, 8, 1, 256,
							process_shared_preload_libraries_in_progress ?
							PGC_POSTMASTER : PGC_SIGHUP,
							0, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.naptime",
							"Longest sleep of the worker when nothing is due.",
							NULL, &sms_naptime_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.shutdown_grace",
							"How long the worker, told to stop, waits for the answers of requests on the wire.",
							"Answers that come within it are recorded; requests still unanswered then become unknown.",
							&sms_shutdown_grace_ms, 2000, 0, 60 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.default_channel",
							   "Channel of an SMS whose call names none: ip2sms or modem.",
							   NULL, &sms_default_channel, "ip2sms",
							   PGC_SIGHUP, 0, check_channel, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.ip2sms_url",
							   "IP2SMS send URL (http or https).",
							   NULL, &sms_ip2sms_url, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.ip2sms_status_url",
							   "IP2SMS status URL (http or https).",
							   NULL, &sms_ip2sms_status_url, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.ip2sms_login",
							   "IP2SMS Basic authentication user.",
							   NULL, &sms_ip2sms_login, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.ip2sms_password_file",
							   "File holding the IP2SMS Basic authentication password on its first line.",
							   "A regular file of the server's user with mode 0600 or less; read by the worker only.",
							   &sms_ip2sms_password_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   sms_check_password_file, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.ip2sms_source",
							   "IP2SMS sender alpha-name.",
							   NULL, &sms_ip2sms_source, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.ip2sms_validity",
							   "IP2SMS validity of a message, for example \"+2 hour\"; empty = the gateway's default.",
							   NULL, &sms_ip2sms_validity, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.ip2sms_ca_file",
							   "CA bundle that verifies the gateway's TLS certificate; empty = the system's.",
							   NULL, &sms_ip2sms_ca_file, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.ip2sms_timeout",
							"Total time of one IP2SMS request; connecting may take a third of it.",
							NULL, &sms_ip2sms_timeout_ms, 10000, 100, 300 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.kannel_timeout",
							"Total time of one request to a registered Kannel channel; connecting may take a third of it.",
							NULL, &sms_kannel_timeout_ms, 5000, 100, 60 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.ip2sms_max_connections",
							"Concurrent IP2SMS requests.",
							NULL, &sms_ip2sms_max_connections, 16, 1, 256,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.ip2sms_urgent_connections",
							"Of the IP2SMS connections, how many carry only urgent SMS (priority 1 to 3: alarms, confirmations, verification and 2FA codes).",
							"At most smsdispatch.ip2sms_max_connections - 1 of them: one connection always carries the rest.",
							&sms_ip2sms_urgent_connections, 2, 1, 255,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.ip2sms_max_rate",
							"SMS sent per second through IP2SMS; 0 = unlimited.",
							NULL, &sms_ip2sms_max_rate, 0, 0, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.ip2sms_poll_interval",
							"First status poll after submitting; later polls back off.",
							NULL, &sms_ip2sms_poll_interval_s, 10, 1, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.ip2sms_status_window",
							"After this, an SMS still in a pollable state becomes Terminated.",
							NULL, &sms_ip2sms_status_window_s, 1800, 1, 7 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.max_attempts",
							"Attempts of one SMS the gateway or modem refuses before it is failed; failures of the channel spend none.",
							NULL, &sms_max_attempts, 5, 1, 100,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.spool_dir",
							   "Directory of XML alarm files to import; empty = off.",
							   NULL, &sms_spool_dir, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.spool_max_age",
							"Spool files older than this are not sent.",
							NULL, &sms_spool_max_age_s, 3600, 1, 30 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.verification_template",
							   "Body of a verification SMS; {code} stands for the code.",
							   NULL, &sms_verification_template,
							   "Your verification code: {code}",
							   PGC_SIGHUP, 0, check_template, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.default_country_code",
							   "Country code given to national phone numbers, for example 380.",
							   NULL, &sms_default_country_code, "",
							   PGC_USERSET, 0, check_country_code, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.number_quarantine",
							"How long a closed alarm's number stays reserved.",
							NULL, &sms_number_quarantine_s, 86400, 0, 365 * 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.max_per_phone_per_hour",
							"SMS to one phone number per hour before the abuse guard stops them; 0 = off.",
							NULL, &sms_max_per_phone_per_hour, 10, 0, 1000000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.max_parts",
							"Longest SMS accepted, in parts.",
							NULL, &sms_max_parts, 10, 1, 255,
							PGC_USERSET, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("smsdispatch.max_inbound_length",
							"Longest body of a received SMS that sms_receive() accepts.",
							NULL, &sms_max_inbound_length, 65536, 160, 1024 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.redact_after",
							"How long after reaching a final state an SMS keeps its body; 0 = for good.",
							"smsdispatch.purge() blanks older bodies, keeping their length and parts.",
							&sms_redact_after_s, 0, 0, 3650 * 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);

	DefineCustomBoolVariable("smsdispatch.loopback_channel",
							 "Test aid: the worker marks every queued SMS submitted without sending it.",
							 "Lets the escalation be tested without a gateway or a modem; never turn it on in production.",
							 &sms_loopback_channel, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);

	DefineCustomIntVariable("smsdispatch.failover_after",
							"How long a channel may be unhealthy before an alarm's SMS queued on it goes out on the other channel.",
							NULL, &sms_failover_after_s, 30, 0, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.failback_after",
							"How long a channel that failed over must be healthy again before the SMS that may fail over go out on it again.",
							NULL, &sms_failback_after_s, 60, 0, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomBoolVariable("smsdispatch.failover_verification",
							 "Whether verification and 2FA SMS fail over to the other channel too, as alarms' SMS do.",
							 NULL, &sms_failover_verification, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);

	for (int i = 0; i < lengthof(sms_types); i++)
	{
		DefineCustomIntVariable(sms_types[i].validity_setting,
								"An SMS of this type not submitted within this fails as expired; 0 = never.",
								NULL, &sms_types[i].validity_s,
								sms_types[i].validity_default_s, 0, 365 * 86400,
								PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
		DefineCustomStringVariable(sms_types[i].window_setting,
								   "When SMS of this type may leave: always, or hours such as Mon-Fri 08:00-21:00.",
								   "Days and hours in smsdispatch.timezone; outside them an SMS waits queued.",
								   &sms_types[i].window, "always",
								   PGC_SIGHUP, 0, check_send_window, NULL, NULL);
	}
	DefineCustomStringVariable("smsdispatch.inbound_handler",
							   "Function the worker calls for each received SMS that is not an ack; empty = none.",
							   "Schema-qualified, taking (inbox_id bigint, sender text, body text, outcome text).",
							   &sms_inbound_handler, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.inbound_handler_role",
							   "Role the inbound handler runs as; never a superuser or the extension's owner.",
							   NULL, &sms_inbound_handler_role, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("smsdispatch.inbound_handler_timeout",
							"Longest call of the inbound handler; a call that runs longer is canceled and its SMS failed.",
							"A handler that goes on after the cancel ends its worker at twice this.",
							&sms_inbound_handler_timeout_ms, 5000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("smsdispatch.timezone",
							   "Time zone of the send windows' days and hours.",
							   NULL, &sms_timezone, "UTC",
							   PGC_SIGHUP, 0, check_timezone, NULL, NULL);

	MarkGUCPrefixReserved("smsdispatch");
}

/* SQL: smsdispatch.number_quarantine() -> the setting as an interval */
Datum
sms_number_quarantine(PG_FUNCTION_ARGS)
{
	Interval   *result = palloc0(sizeof(Interval));

	result->time = (int64) sms_number_quarantine_s * USECS_PER_SEC;
	PG_RETURN_INTERVAL_P(result);
}

/*
 * SQL: smsdispatch.validity(type) -> how long an SMS of that type may wait
 * to be submitted, NULL for ever (a setting of 0, or a type we do not know).
 */
Datum
sms_validity(PG_FUNCTION_ARGS)
{
	char	   *type = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int			secs = 0;
	Interval   *result;

	for (int i = 0; i < lengthof(sms_types); i++)
		if (strcmp(type, sms_types[i].type) == 0)
			secs = sms_types[i].validity_s;
	if (secs == 0)
		PG_RETURN_NULL();
	result = palloc0(sizeof(Interval));
	result->time = (int64) secs * USECS_PER_SEC;
	PG_RETURN_INTERVAL_P(result);
}

/* SQL: smsdispatch.max_inbound_length() -> the setting, in bytes */
Datum
sms_max_inbound_length_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(sms_max_inbound_length);
}

/* SQL: smsdispatch.redact_after() -> the setting as an interval, NULL = off */
Datum
sms_redact_after_sql(PG_FUNCTION_ARGS)
{
	Interval   *result;

	if (sms_redact_after_s == 0)
		PG_RETURN_NULL();
	result = palloc0(sizeof(Interval));
	result->time = (int64) sms_redact_after_s * USECS_PER_SEC;
	PG_RETURN_INTERVAL_P(result);
}

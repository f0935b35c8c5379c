/*-------------------------------------------------------------------------
 *
 * db.c
 *	  The sidecar's database connection: any libpq connection string or URI
 *	  (a multi-host one with target_session_attrs=read-write finds the
 *	  primary), made when a callback needs it and made again after it
 *	  broke. Each callback is one autocommit statement: when it returns,
 *	  the database has committed, and only then does Kannel hear 200.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "http.h"

/* the longest a statement may take before Kannel is told to retry */
#define STATEMENT_TIMEOUT "10s"

static PGconn *conn = NULL;
static const char *db_conninfo = NULL;
/* no new connection attempt before this: one a second while it is down */
static time_t next_connect = 0;

/* Notices (RAISE WARNING in the functions we call) go to our log. */
static void
notice_to_log(void *arg, const char *message)
{
	log_msg(LOG_INFO, "database: %.*s", (int) strcspn(message, "\n"), message);
}

/* Remembers the connection string; connects at the first callback. */
void
db_init(const char *conninfo)
{
	db_conninfo = conninfo;
}

/* Closes the connection, if any. */
void
db_close(void)
{
	if (conn != NULL)
		PQfinish(conn);
	conn = NULL;
}

/*
 * Makes sure there is a usable connection; false while the database cannot
 * be reached. connect_timeout comes before the connection string, which may
 * set its own.
 */
static bool
db_connect(void)
{
	const char *keys[] = {"connect_timeout", "dbname", "fallback_application_name", NULL};
	const char *values[] = {"5", db_conninfo, "smsdispatch-http", NULL};
	PGresult   *res;

	if (conn != NULL && PQstatus(conn) == CONNECTION_OK)
		return true;
	db_close();
	if (time(NULL) < next_connect)
		return false;
	next_connect = time(NULL) + 1;

	conn = PQconnectdbParams(keys, values, 1);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		const char *msg = PQerrorMessage(conn);

		log_msg(LOG_WARNING, "could not connect to the database: %.*s",
				(int) strcspn(msg, "\n"), msg);
		db_close();
		return false;
	}
	PQsetNoticeProcessor(conn, notice_to_log, NULL);
	res = PQexec(conn, "SET statement_timeout = '" STATEMENT_TIMEOUT "'");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		const char *msg = PQresultErrorMessage(res);

		log_msg(LOG_WARNING, "could not set statement_timeout: %.*s",
				(int) strcspn(msg, "\n"), msg);
		PQclear(res);
		db_close();
		return false;
	}
	PQclear(res);
	log_msg(LOG_INFO, "connected to database \"%s\" on %s as \"%s\"",
			PQdb(conn), PQhost(conn), PQuser(conn));
	return true;
}

/*
 * What an error of a callback's statement means for Kannel: a token that is
 * not the row's (42501) is 403, malformed input (class 22) 400; anything
 * else, a lost connection included, 503, so that Kannel tries again later.
 * A connection that broke, or that reached a server that cannot write (a
 * standby after a failover), is dropped: the next callback connects anew.
 * what names the callback in the log; log_message is false where the
 * message could quote a phone number or a text.
 */
static CallResult
call_error(PGresult *res, const char *what, bool log_message)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
	CallResult	result = CALL_UNAVAILABLE;

	if (state == NULL)
		state = "";
	if (strcmp(state, "42501") == 0)
		result = CALL_FORBIDDEN;
	else if (strncmp(state, "22", 2) == 0)
		result = CALL_BAD_REQUEST;

	if (log_message)
		log_msg(result == CALL_UNAVAILABLE ? LOG_ERROR : LOG_WARNING,
				"%s refused by the database: %s%s%.*s", what, state, *state ? ": " : "",
				(int) strcspn(msg, "\n"), msg);
	else
		log_msg(result == CALL_UNAVAILABLE ? LOG_ERROR : LOG_WARNING,
				"%s refused by the database: SQLSTATE %s", what,
				*state ? state : "(none: the connection failed)");

	if (PQstatus(conn) != CONNECTION_OK || strncmp(state, "08", 2) == 0
		|| strncmp(state, "57P", 3) == 0 || strcmp(state, "25006") == 0)
		db_close();
	return result;
}

/*
 * Runs one callback statement and copies its one text value into outcome.
 */
static CallResult
db_call(const char *sql, int nparams, const char *const *params, const char *what,
		bool log_message, char *outcome, size_t outcome_size)
{
	PGresult   *res;
	CallResult	result;

	if (!db_connect())
		return CALL_UNAVAILABLE;
	res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		result = call_error(res, what, log_message);
	else
	{
		snprintf(outcome, outcome_size, "%s", PQgetvalue(res, 0, 0));
		result = CALL_DONE;
	}
	PQclear(res);
	return result;
}

/*
 * A delivery report: smsdispatch.delivery_report checks the token and
 * records the status. at (Kannel's %T, seconds since the epoch) may be NULL.
 */
CallResult
db_delivery_report(const char *id, const char *token, const char *status,
				   const char *answer, const char *at, char *outcome, size_t outcome_size)
{
	const char *params[] = {id, token, status, answer, at};
	char		what[64];

	snprintf(what, sizeof(what), "delivery report for sms_log id %s", id);
	return db_call("SELECT smsdispatch.delivery_report($1::bigint, $2, $3::int, $4, "
				   "to_timestamp($5::double precision))",
				   5, params, what, true, outcome, outcome_size);
}

/* A received SMS, handed to sms_receive through smsdispatch.callback_receive. */
CallResult
db_receive(const char *sender, const char *text, char *outcome, size_t outcome_size)
{
	const char *params[] = {sender, text};

	return db_call("SELECT smsdispatch.callback_receive($1, $2)", 2, params,
				   "received SMS", false, outcome, outcome_size);
}

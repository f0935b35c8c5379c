/*-------------------------------------------------------------------------
 *
 * db.c
 *	  The sidecar's database connection: libpq conventions (a conninfo
 *	  string or URI, PG* variables, service files), LISTEN smsdispatch_modem,
 *	  reconnection with backoff. Every call is one autocommit statement, so
 *	  no transaction is ever open while the modem works.
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the Free
 * Software Foundation; either version 2 of the License, or (at your option)
 * any later version (libgammu, which it links, is GPL-2.0-or-later).
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <string.h>
#include <sys/select.h>

#include "modem.h"

#define BACKOFF_MAX_SECONDS 30

/* Notices (RAISE WARNING in the functions we call) go to our log. */
static void
notice_to_log(void *arg, const char *message)
{
	size_t		len = strlen(message);

	if (len > 0 && message[len - 1] == '\n')
		len--;
	log_msg(LOG_INFO, "database: %.*s", (int) len, message);
}

/* Forgets a broken connection and schedules the next attempt. */
static void
db_lost(Db *db, const char *why)
{
	log_msg(LOG_WARNING, "database connection lost: %s; reconnecting in %d s",
			why, db->backoff);
	db_close(db);
	db->next_try = time(NULL) + db->backoff;
	db->backoff = db->backoff * 2 > BACKOFF_MAX_SECONDS ? BACKOFF_MAX_SECONDS : db->backoff * 2;
}

/*
 * Makes sure there is a usable connection, connecting when the backoff
 * allows. On each new connection: synchronous_commit pinned on, LISTEN, and
 * rows this modem left 'sending' (a crash, a lost connection) become
 * 'unknown'.
 */
bool
db_ensure_connected(Db *db)
{
	const char *keys[] = {"dbname", "fallback_application_name", NULL};
	const char *values[] = {db->dsn, "smsdispatch-modem", NULL};
	const char *name_param[1];
	PGresult   *res;

	if (db->conn != NULL)
		return true;
	if (time(NULL) < db->next_try)
		return false;
	if (db->backoff < 1)
		db->backoff = 1;

	db->conn = PQconnectdbParams(keys, values, 1);
	if (PQstatus(db->conn) != CONNECTION_OK)
	{
		char	   *msg = PQerrorMessage(db->conn);
		size_t		len = strlen(msg);

		while (len > 0 && msg[len - 1] == '\n')
			len--;
		log_msg(LOG_WARNING, "could not connect to the database: %.*s; retrying in %d s",
				(int) len, msg, db->backoff);
		PQfinish(db->conn);
		db->conn = NULL;
		db->next_try = time(NULL) + db->backoff;
		db->backoff = db->backoff * 2 > BACKOFF_MAX_SECONDS ? BACKOFF_MAX_SECONDS : db->backoff * 2;
		return false;
	}
	PQsetNoticeProcessor(db->conn, notice_to_log, NULL);

	/*
	 * The claim's commit is the lease's fence under a synchronous standby:
	 * it must wait for the standby whatever the database or the role set,
	 * or a primary that dies (or is cut off) after the claim would have us
	 * send a row the promoted standby still has queued, and sends again.
	 */
	res = db_call(db, "SET synchronous_commit = on", 0, NULL, PGRES_COMMAND_OK);
	if (res == NULL)
		return false;
	PQclear(res);

	res = db_call(db, "LISTEN smsdispatch_modem", 0, NULL, PGRES_COMMAND_OK);
	if (res == NULL)
		return false;
	PQclear(res);

	name_param[0] = db->name;
	res = db_call(db, "SELECT smsdispatch.modem_recover($1)", 1, name_param, PGRES_TUPLES_OK);
	if (res == NULL)
		return false;
	if (strcmp(PQgetvalue(res, 0, 0), "0") != 0)
		log_msg(LOG_WARNING, "%s SMS this modem left sending (an earlier run, or a send in hand when the connection broke) are unknown until their outcome is recorded; none is re-sent",
				PQgetvalue(res, 0, 0));
	PQclear(res);

	log_msg(LOG_INFO, "connected to database \"%s\" on %s as \"%s\"",
			PQdb(db->conn), PQhost(db->conn), PQuser(db->conn));
	db->backoff = 1;
	db->work_due = true;		/* whatever was queued meanwhile */
	return true;
}

/* Closes the connection, if any. */
void
db_close(Db *db)
{
	if (db->conn != NULL)
		PQfinish(db->conn);
	db->conn = NULL;
}

/*
 * Runs one statement with text parameters. Returns the result when its
 * status is the expected one; otherwise logs, drops the connection if it
 * broke, and returns NULL.
 */
PGresult *
db_call(Db *db, const char *sql, int nparams, const char *const *params,
		ExecStatusType expected)
{
	PGresult   *res;
	char	   *msg;
	size_t		len;

	if (db->conn == NULL)
		return NULL;
	res = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) == expected)
		return res;

	msg = res ? PQresultErrorMessage(res) : PQerrorMessage(db->conn);
	len = strlen(msg);
	while (len > 0 && msg[len - 1] == '\n')
		len--;
	if (PQstatus(db->conn) != CONNECTION_OK)
	{
		char		why[512];

		snprintf(why, sizeof(why), "%.*s", (int) len, msg);
		PQclear(res);
		db_lost(db, why);
		return NULL;
	}
	log_msg(LOG_ERROR, "database call failed: %.*s (statement: %s)", (int) len, msg, sql);
	PQclear(res);
	return NULL;
}

/*
 * Sleeps until a notification arrives on the connection or timeout_ms
 * passes (a signal ends it early). Notifications set work_due.
 */
void
db_wait(Db *db, int timeout_ms)
{
	struct timeval tv;
	fd_set		rfds;
	int			fd = db->conn ? PQsocket(db->conn) : -1;
	PGnotify   *notify;

	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	FD_ZERO(&rfds);
	if (fd >= 0)
		FD_SET(fd, &rfds);
	if (select(fd + 1, &rfds, NULL, NULL, &tv) < 0 && errno != EINTR)
		log_msg(LOG_ERROR, "select() failed: %s", strerror(errno));

	if (db->conn == NULL)
		return;
	if (!PQconsumeInput(db->conn))
	{
		char		why[512];

		snprintf(why, sizeof(why), "%s", PQerrorMessage(db->conn));
		why[strcspn(why, "\n")] = '\0';
		db_lost(db, why);
		return;
	}
	while ((notify = PQnotifies(db->conn)) != NULL)
	{
		db->work_due = true;
		PQfreemem(notify);
	}
}

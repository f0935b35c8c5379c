/*-------------------------------------------------------------------------
 *
 * http.h
 *	  smsdispatch-http: the sidecar that takes Kannel's callbacks (delivery
 *	  reports at /kannel/dlr, received SMS at /kannel/mo) over HTTP and
 *	  hands each to the database in one autocommit statement.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SMSDISPATCH_HTTP_H
#define SMSDISPATCH_HTTP_H

#include <stdbool.h>
#include <stddef.h>

/* log.c: one line per event on stderr (the journal, under systemd) */
typedef enum
{
	LOG_INFO,
	LOG_WARNING,
	LOG_ERROR,
	LOG_FATAL
} LogLevel;

extern void log_msg(LogLevel level, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

/*
 * db.c: what a callback came to. The HTTP status follows from it: 200
 * recorded (committed), 400 refused as malformed, 403 a token that does not
 * match, 503 the database could not take it now (Kannel retries).
 */
typedef enum
{
	CALL_DONE,
	CALL_BAD_REQUEST,
	CALL_FORBIDDEN,
	CALL_UNAVAILABLE
} CallResult;

extern void db_init(const char *conninfo);
extern void db_close(void);
extern CallResult db_delivery_report(const char *id, const char *token,
									 const char *status, const char *answer,
									 const char *at, char *outcome, size_t outcome_size);
extern CallResult db_receive(const char *sender, const char *text,
							 char *outcome, size_t outcome_size);

/* token.c: the optional token of received SMS (--mo-token-file) */
extern bool mo_token_load(const char *path);
extern bool mo_token_required(void);
extern bool mo_token_matches(const char *given);

#endif							/* SMSDISPATCH_HTTP_H */

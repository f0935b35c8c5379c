/*-------------------------------------------------------------------------
 *
 * modem.h
 *	  smsdispatch-modem: the sidecar that sends and receives the 'modem'
 *	  channel's SMS through a GSM modem driven by libgammu.
 *
 * Copyright (C) the smsdispatch authors.
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the Free
 * Software Foundation; either version 2 of the License, or (at your option)
 * any later version (libgammu, which it links, is GPL-2.0-or-later).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SMSDISPATCH_MODEM_H
#define SMSDISPATCH_MODEM_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <gammu.h>
#include <libpq-fe.h>

/* consecutive modem errors after which the modem is reset */
#define MODEM_ERRORS_BEFORE_RESET	3
/* a multipart SMS still missing parts after this is joined as it is */
#define INCOMPLETE_WAIT_SECONDS	600

/* log.c */
typedef enum
{
	LOG_DEBUG1,
	LOG_INFO,
	LOG_WARNING,
	LOG_ERROR,
	LOG_FATAL
} LogLevel;

extern void log_open(const char *path, const char *name);
extern void log_reopen(void);
extern void log_close(void);
extern void log_msg(LogLevel level, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));

/* what became of one outgoing SMS; the words are modem_finish()'s */
typedef enum
{
	SEND_SUBMITTED,
	SEND_RETRY,
	SEND_FAILED,
	SEND_UNKNOWN,
	SEND_RELEASED
} SendOutcome;

extern const char *send_outcome_word(SendOutcome outcome);

/* a message the modem delivered straight to us (+CMT, +CDS), not stored */
typedef struct DirectMessage
{
	GSM_SMSMessage sms;
	struct DirectMessage *next;
} DirectMessage;

/* phone.c: the modem */
typedef struct Phone
{
	GSM_StateMachine *sm;
	const char *gammurc;
	int			section;
	int			send_timeout;	/* longest wait for the answer to one part */
	bool		open;
	time_t		next_open;		/* earliest reopen after a failure */
	int			open_backoff;
	unsigned char smsc[(GSM_MAX_NUMBER_LENGTH + 1) * 2];
	bool		have_smsc;
	char		imei[GSM_MAX_IMEI_LENGTH + 1];
	char		imsi[GSM_MAX_INFO_LENGTH + 1];
	/* the send-status callback's answer for the part in flight */
	bool		part_done;
	int			part_status;
	int			part_reference;
	/* health */
	int			consecutive_errors;
	bool		need_reset;
	bool		silent;			/* the last error was the modem not answering */
	bool		inbox_due;		/* a +CMTI said something arrived */
	DirectMessage *direct;		/* +CMT / +CDS messages not yet recorded */
	int			direct_count;
	bool		sim_full;
	char		last_error[256];
	/* counts since the last heartbeat */
	int			errors_since;
	int			resets_since;
} Phone;

extern bool phone_load_config(Phone *phone, const char *gammurc, int section);
extern bool phone_ensure_open(Phone *phone);
extern void phone_close(Phone *phone);
extern void phone_reset(Phone *phone);
extern void phone_note_error(Phone *phone, const char *what, GSM_Error error);
extern void phone_poll_device(Phone *phone);
extern SendOutcome phone_send(Phone *phone, const char *number, const char *body,
							  char *references, size_t references_len,
							  char *error, size_t error_len);

typedef struct PhoneHealth
{
	char		operator_name[64];
	int			signal_percent;	/* -1 unknown */
} PhoneHealth;

extern void phone_health(Phone *phone, PhoneHealth *health);

/* db.c: the database */
typedef struct Db
{
	const char *dsn;
	const char *name;			/* this sidecar's modem name */
	PGconn	   *conn;
	time_t		next_try;
	int			backoff;
	bool		work_due;		/* a NOTIFY or sweep says rows may be queued */
} Db;

extern bool db_ensure_connected(Db *db);
extern void db_close(Db *db);
extern void db_wait(Db *db, int timeout_ms);
extern PGresult *db_call(Db *db, const char *sql, int nparams,
						 const char *const *params, ExecStatusType expected);

/* inbox.c: received SMS and status reports */
typedef struct InboxCounts
{
	int			received;
	int			status_reports;
} InboxCounts;

extern const char *status_report_word(unsigned char tp_status);
extern void inbox_poll(Phone *phone, Db *db, InboxCounts *counts);
extern void inbox_flush_direct(Phone *phone, Db *db, InboxCounts *counts);

/* main.c: set by signal handlers */
extern volatile sig_atomic_t terminate_requested;

#endif							/* SMSDISPATCH_MODEM_H */

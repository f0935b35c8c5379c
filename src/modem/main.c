/*-------------------------------------------------------------------------
 *
 * main.c
 *	  smsdispatch-modem: one process per GSM modem. It claims the 'modem'
 *	  channel's queued SMS under a lease, sends them through libgammu,
 *	  records each outcome, hands replies to sms_receive, records status
 *	  reports, and keeps a heartbeat row in smsdispatch.modem.
 *
 *	  smsdispatch-modem --dsn DSN --gammurc FILE [--section N]
 *	                    [--heartbeat SECONDS] [--poll SECONDS]
 *	                    [--send-timeout SECONDS] [--name NAME] [--log FILE]
 *
 * SIGTERM/SIGINT: finish the SMS in hand, release leases, say goodbye
 * (smsdispatch.modem_goodbye), exit 0.
 * SIGHUP: reopen the log file.
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the Free
 * Software Foundation; either version 2 of the License, or (at your option)
 * any later version (libgammu, which it links, is GPL-2.0-or-later).
 *
 *-------------------------------------------------------------------------
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "modem.h"

/* longest a claimed row may stay 'sending' before others call it unknown */
#define LEASE "5 min"
/* the safety-net sweep for queued rows when no NOTIFY came */
#define SWEEP_SECONDS 30
/* the most time spent sending before the inbox and heartbeat get a turn */
#define DRAIN_SLICE_SECONDS 1

volatile sig_atomic_t terminate_requested = 0;
static volatile sig_atomic_t reopen_log_requested = 0;

typedef struct Options
{
	const char *dsn;
	const char *gammurc;
	const char *name;
	const char *log;
	int			section;
	int			heartbeat;
	int			poll;
	int			send_timeout;
} Options;

/* An outcome the database has not yet taken (it went away meanwhile). */
typedef struct PendingFinish
{
	bool		pending;
	char		id[32];
	SendOutcome outcome;
	char		references[512];
	char		error[512];
} PendingFinish;

static void
handle_terminate(int signo)
{
	terminate_requested = 1;
}

static void
handle_hup(int signo)
{
	reopen_log_requested = 1;
}

/*
 * The watchdog: a libgammu call that never returns would hold the modem
 * and every SMS behind it. Exit with a failure so that the service manager
 * restarts us; a row left sending becomes unknown at the next start.
 */
static void
handle_alarm(int signo)
{
	static const char msg[] = "smsdispatch-modem: FATAL: a modem operation hung; exiting\n";

	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	_exit(3);
}

/* Installs the handlers without SA_RESTART, so that waits end at once. */
static void
install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = handle_terminate;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = handle_hup;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = handle_alarm;
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: smsdispatch-modem --gammurc FILE [OPTION]...\n"
			"Sends and receives the smsdispatch 'modem' channel's SMS through one GSM modem.\n\n"
			"  --dsn DSN            libpq connection string or URI (default: PG* variables)\n"
			"  --gammurc FILE       gammu configuration of the modem\n"
			"  --section N          section of the gammurc ([gammu] is 0; default 0)\n"
			"  --name NAME          this modem's name in smsdispatch.modem (default HOST:N)\n"
			"  --heartbeat SECONDS  health row refresh interval (default 60)\n"
			"  --poll SECONDS       inbox poll interval (default 5)\n"
			"  --send-timeout SECONDS  longest wait for the modem's answer to one part;\n"
			"                       after it the SMS is unknown (default 60)\n"
			"  --log FILE           log file, reopened on SIGHUP (default stderr)\n"
			"  --help               this text\n");
}

/* Parses a positive count of seconds or a section number; exits on junk. */
static int
parse_int(const char *option, const char *value, int min)
{
	char	   *end;
	long		v = strtol(value, &end, 10);

	if (*value == '\0' || *end != '\0' || v < min || v > INT_MAX)
	{
		fprintf(stderr, "smsdispatch-modem: invalid value \"%s\" for %s (an integer >= %d)\n",
				value, option, min);
		exit(2);
	}
	return (int) v;
}

static void
parse_options(int argc, char **argv, Options *opts)
{
	static const struct option longopts[] = {
		{"dsn", required_argument, NULL, 'd'},
		{"gammurc", required_argument, NULL, 'g'},
		{"section", required_argument, NULL, 's'},
		{"name", required_argument, NULL, 'n'},
		{"heartbeat", required_argument, NULL, 'b'},
		{"poll", required_argument, NULL, 'p'},
		{"send-timeout", required_argument, NULL, 't'},
		{"log", required_argument, NULL, 'l'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	memset(opts, 0, sizeof(*opts));
	opts->heartbeat = 60;
	opts->poll = 5;
	opts->send_timeout = 60;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				opts->dsn = optarg;
				break;
			case 'g':
				opts->gammurc = optarg;
				break;
			case 's':
				opts->section = parse_int("--section", optarg, 0);
				break;
			case 'n':
				opts->name = optarg;
				break;
			case 'b':
				opts->heartbeat = parse_int("--heartbeat", optarg, 1);
				break;
			case 'p':
				opts->poll = parse_int("--poll", optarg, 1);
				break;
			case 't':
				opts->send_timeout = parse_int("--send-timeout", optarg, 1);
				break;
			case 'l':
				opts->log = optarg;
				break;
			case 'h':
				usage(stdout);
				exit(0);
			default:
				usage(stderr);
				exit(2);
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "smsdispatch-modem: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		exit(2);
	}
	if (opts->gammurc == NULL)
	{
		fprintf(stderr, "smsdispatch-modem: --gammurc is required\n");
		usage(stderr);
		exit(2);
	}
	if (opts->name != NULL && opts->name[0] == '\0')
	{
		fprintf(stderr, "smsdispatch-modem: --name must not be empty\n");
		exit(2);
	}
}

/* Hands an outcome to modem_finish(); false when the database is away. */
static bool
record_outcome(Db *db, PendingFinish *pf)
{
	const char *params[5];
	PGresult   *res;

	params[0] = pf->id;
	params[1] = db->name;
	params[2] = send_outcome_word(pf->outcome);
	params[3] = pf->references[0] ? pf->references : NULL;
	params[4] = pf->error[0] ? pf->error : NULL;
	res = db_call(db, "SELECT smsdispatch.modem_finish($1::bigint, $2, $3, $4, $5)",
				  5, params, PGRES_TUPLES_OK);
	if (res == NULL)
		return false;
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
		log_msg(LOG_WARNING, "sms_log %s was no longer ours to finish as %s", pf->id, params[2]);
	PQclear(res);
	pf->pending = false;
	return true;
}

/*
 * Claims and sends queued rows for up to DRAIN_SLICE_SECONDS. A row, once
 * claimed, is always sent and its outcome kept until recorded, even when a
 * SIGTERM arrives meanwhile. Returns how many were submitted.
 */
static int
drain_queue(Db *db, Phone *phone, PendingFinish *pf)
{
	const char *params[2] = {db->name, LEASE};
	time_t		until = time(NULL) + DRAIN_SLICE_SECONDS;
	int			submitted = 0;

	while (!terminate_requested && !pf->pending && !phone->need_reset && phone->open
		   && time(NULL) <= until)
	{
		PGresult   *res = db_call(db, "SELECT id, phone_number, body FROM smsdispatch.modem_claim($1, $2::interval)",
								  2, params, PGRES_TUPLES_OK);

		if (res == NULL)
			return submitted;
		if (PQntuples(res) == 0)
		{
			db->work_due = false;
			PQclear(res);
			return submitted;
		}
		snprintf(pf->id, sizeof(pf->id), "%s", PQgetvalue(res, 0, 0));
		pf->pending = true;
		pf->outcome = phone_send(phone, PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
								 pf->references, sizeof(pf->references),
								 pf->error, sizeof(pf->error));
		if (pf->outcome == SEND_SUBMITTED)
		{
			submitted++;
			log_msg(LOG_INFO, "sms_log %s to %s submitted, reference %s", pf->id,
					PQgetvalue(res, 0, 1), pf->references);
		}
		else
			log_msg(pf->outcome == SEND_UNKNOWN ? LOG_WARNING : LOG_INFO,
					"sms_log %s to %s: %s (%s)", pf->id, PQgetvalue(res, 0, 1),
					send_outcome_word(pf->outcome), pf->error);
		PQclear(res);
		if (!record_outcome(db, pf))
			return submitted;
	}
	return submitted;
}

/* Refreshes the heartbeat row; the counts are added there and then reset. */
static bool
heartbeat(Db *db, Phone *phone, const Options *opts, int *sent, InboxCounts *counts,
		  bool starting)
{
	PhoneHealth health;
	char		interval[32],
				signal[16],
				nsent[16],
				nrecv[16],
				nrep[16],
				nerr[16],
				nreset[16];
	const char *params[14];
	PGresult   *res;

	phone_health(phone, &health);
	snprintf(interval, sizeof(interval), "%d s", opts->heartbeat);
	snprintf(signal, sizeof(signal), "%d", health.signal_percent);
	snprintf(nsent, sizeof(nsent), "%d", *sent);
	snprintf(nrecv, sizeof(nrecv), "%d", counts->received);
	snprintf(nrep, sizeof(nrep), "%d", counts->status_reports);
	snprintf(nerr, sizeof(nerr), "%d", phone->errors_since);
	snprintf(nreset, sizeof(nreset), "%d", phone->resets_since);
	params[0] = db->name;
	params[1] = interval;
	params[2] = phone->imei[0] ? phone->imei : NULL;
	params[3] = phone->imsi[0] ? phone->imsi : NULL;
	params[4] = health.operator_name[0] ? health.operator_name : NULL;
	params[5] = health.signal_percent >= 0 ? signal : NULL;
	params[6] = nsent;
	params[7] = nrecv;
	params[8] = nrep;
	params[9] = nerr;
	params[10] = nreset;
	params[11] = phone->sim_full ? "true" : "false";
	params[12] = phone->last_error[0] ? phone->last_error : NULL;
	params[13] = starting ? "true" : "false";
	res = db_call(db, "SELECT smsdispatch.modem_heartbeat($1, $2::interval, $3, $4, $5, $6::int, "
				  "$7::int, $8::int, $9::int, $10::int, $11::int, $12::boolean, $13, $14::boolean)",
				  14, params, PGRES_TUPLES_OK);
	if (res == NULL)
		return false;
	PQclear(res);
	res = db_call(db, "SELECT smsdispatch.modem_recover()", 0, NULL, PGRES_TUPLES_OK);
	if (res != NULL)
	{
		if (strcmp(PQgetvalue(res, 0, 0), "0") != 0)
			log_msg(LOG_WARNING, "%s SMS whose lease expired are now unknown (not re-sent)",
					PQgetvalue(res, 0, 0));
		PQclear(res);
	}
	*sent = 0;
	memset(counts, 0, sizeof(*counts));
	phone->errors_since = 0;
	phone->resets_since = 0;
	return true;
}

/*
 * Tells the database that this sidecar stops cleanly, so that
 * channel_health counts it gone at once instead of after three missed
 * heartbeats (a crash still takes those). Called once the SMS in hand is
 * recorded: the goodbye touches no lease.
 */
static void
say_goodbye(Db *db)
{
	const char *params[1] = {db->name};
	PGresult   *res;

	res = db_call(db, "SELECT smsdispatch.modem_goodbye($1)", 1, params, PGRES_TUPLES_OK);
	if (res == NULL)
		return;
	if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
		log_msg(LOG_INFO, "said goodbye: modem \"%s\" is marked stopped", db->name);
	else
		log_msg(LOG_WARNING, "no heartbeat row is named \"%s\"; nothing to say goodbye to", db->name);
	PQclear(res);
}

int
main(int argc, char **argv)
{
	Options		opts;
	Db			db;
	Phone		phone;
	PendingFinish pf;
	InboxCounts counts;
	char		default_name[300];
	int			sent = 0;
	bool		started = false;
	time_t		next_inbox = 0,
				next_heartbeat = 0,
				next_sweep = 0;

	parse_options(argc, argv, &opts);
	if (opts.name == NULL)
	{
		char		host[256];

		if (gethostname(host, sizeof(host)) != 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		snprintf(default_name, sizeof(default_name), "%s:%d", host, opts.section);
		opts.name = default_name;
	}
	log_open(opts.log, opts.name);
	install_signals();

	memset(&db, 0, sizeof(db));
	memset(&phone, 0, sizeof(phone));
	memset(&pf, 0, sizeof(pf));
	memset(&counts, 0, sizeof(counts));
	db.dsn = opts.dsn;
	db.name = opts.name;
	phone.send_timeout = opts.send_timeout;
	if (!phone_load_config(&phone, opts.gammurc, opts.section))
	{
		if (phone.sm)
			GSM_FreeStateMachine(phone.sm);
		log_close();
		return 1;
	}
	log_msg(LOG_INFO, "starting: gammurc \"%s\" section %d, heartbeat %d s",
			opts.gammurc, opts.section, opts.heartbeat);

	while (!terminate_requested)
	{
		time_t		now;
		int			wait_ms;

		/* one pass never takes longer than a few sends and a reset */
		alarm(opts.send_timeout * 10 + 300);
		if (reopen_log_requested)
		{
			reopen_log_requested = 0;
			log_reopen();
			log_msg(LOG_INFO, "log reopened");
		}
		if (phone.need_reset)
			phone_reset(&phone);
		phone_ensure_open(&phone);
		db_ensure_connected(&db);
		now = time(NULL);

		if (db.conn != NULL && pf.pending)
			record_outcome(&db, &pf);
		if (db.conn != NULL && now >= next_sweep)
		{
			db.work_due = true;
			next_sweep = now + SWEEP_SECONDS;
		}
		if (db.conn != NULL && phone.open && db.work_due)
			sent += drain_queue(&db, &phone, &pf);
		/* a modem awaiting its reset is left alone until then */
		if (db.conn != NULL && phone.open && !phone.need_reset
			&& (phone.inbox_due || time(NULL) >= next_inbox))
		{
			inbox_poll(&phone, &db, &counts);
			next_inbox = time(NULL) + opts.poll;
		}
		if (db.conn != NULL && phone.direct != NULL)
			inbox_flush_direct(&phone, &db, &counts);
		if (db.conn != NULL && time(NULL) >= next_heartbeat)
		{
			if (heartbeat(&db, &phone, &opts, &sent, &counts, !started))
				started = true;
			next_heartbeat = time(NULL) + opts.heartbeat;
		}

		if (terminate_requested)
			break;
		if (phone.need_reset)
			continue;
		wait_ms = (db.work_due && db.conn && phone.open && !pf.pending) ? 0 : 1000;
		if (wait_ms > 0 || db.conn != NULL)
			db_wait(&db, wait_ms);
		phone_poll_device(&phone);
	}

	alarm(opts.send_timeout * 2 + 60);
	log_msg(LOG_INFO, "shutting down");
	if (db.conn == NULL && pf.pending)
	{
		/* one last try, so that the SMS in hand is recorded */
		db.next_try = 0;
		db_ensure_connected(&db);
	}
	if (pf.pending && !record_outcome(&db, &pf))
		log_msg(LOG_WARNING, "could not record sms_log %s as %s; it will be recovered as unknown",
				pf.id, send_outcome_word(pf.outcome));
	if (db.conn != NULL)
	{
		heartbeat(&db, &phone, &opts, &sent, &counts, false);
		say_goodbye(&db);
	}
	db_close(&db);
	phone_close(&phone);
	GSM_FreeStateMachine(phone.sm);
	log_msg(LOG_INFO, "stopped");
	log_close();
	return 0;
}

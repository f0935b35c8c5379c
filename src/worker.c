/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The smsdispatch background worker, and run_once(), the same database
 *	  duties in the calling session.
 *
 * One worker serves each database of smsdispatch.database; the launcher
 * (launcher.c) starts them once recovery has finished (a standby runs none
 * of it) and again if one dies. Its loop is an event loop: the IP2SMS channel's
 * requests run on curl's sockets (ip2sms.c), and between I/O events the
 * loop records their results and fills free connections, and runs the
 * database duties that are due: import the spool directory, escalate the
 * due alarms, release SMS whose send window opened, start the inbound
 * handler's worker when received SMS wait for it (inbound.c),
 * fail alarms' SMS over to the other channel (or retry them) when their
 * channel cannot send, the loopback test channel, housekeeping. The
 * duties run when their earliest deadline comes (at most
 * smsdispatch.naptime apart), when a transaction that queued SMS commits
 * and sets our latch, and soon after an alarm's SMS changed state; none
 * of them ever waits for the network. After each exchange of the IP2SMS
 * channel, the registered Kannel channels get a turn of their own
 * (kannel.c), which never waits for the network either: their requests
 * stay on the wire across turns, and the loop comes back every few
 * milliseconds while any is.
 * Each runs in a short transaction of its own, with lock waits bounded,
 * and no transaction is ever held open across network I/O. An ERROR in
 * any of them (a lock_timeout while another session locks a table) is
 * logged and rolled back, and the work is tried again later; the worker
 * ends only at SIGTERM or when the postmaster dies. SIGTERM interrupts no
 * transaction: the loop stops claiming, waits up to
 * smsdispatch.shutdown_grace for the answers of the requests on the wire,
 * records them and exits (sms_worker_stop). While the extension is not
 * installed in a listed database the worker only rechecks, every naptime;
 * with smsdispatch.database = '*' it ends instead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <time.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "replication/syncrep.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "storage/proc.h"
#include "storage/procsignal.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"
#include "ip2sms.h"
#include "kannel.h"

PG_FUNCTION_INFO_V1(sms_run_once);

/* Tells backends there is no worker to wake any more; at process exit. */
static void
worker_detach(int code, Datum arg)
{
	if (sms_my_slot->worker_pid == MyProcPid)
	{
		sms_my_slot->worker_latch = NULL;
		sms_my_slot->worker_pid = 0;
	}
}

/* Sets a setting of the worker's until the end of its current transaction. */
void
sms_set_for_transaction(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
}

/*
 * Bounds how long the worker's current transaction waits for a lock another
 * session holds: a sender's open transaction must not stall every alarm.
 * Statements that meet such a lock fail, are logged, and are tried again.
 */
void
sms_bound_lock_waits(void)
{
	sms_set_for_transaction("lock_timeout", SMS_WORKER_LOCK_TIMEOUT);
}

/*
 * Ends, committed, an internal subtransaction begun where cxt and owner
 * were current, and makes them current again: what the caller allocated
 * before it began lives on.
 */
void
sms_subxact_release(MemoryContext cxt, ResourceOwner owner)
{
	ReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

/*
 * In the PG_CATCH of such a subtransaction: rolls it back and returns its
 * error, copied into cxt, so that one bad item is reported and the
 * caller's transaction goes on.
 */
ErrorData *
sms_subxact_abort(MemoryContext cxt, ResourceOwner owner)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

/*
 * NB: a claim's COMMIT waits for the synchronous standbys (see
 * pinned_settings), and two things end that wait early, leaving a commit
 * this server has and the standbys may not: a cancel (pg_cancel_backend),
 * which PostgreSQL turns into a WARNING, and a stop. A stop is no
 * interrupt of ours (SIGTERM only sets the loop's flag), so without help
 * it would not end the wait at all, and a fast stop of a primary cut off
 * from its standbys would hang. So the worker's own COMMITs are watched.
 * A stop lets the wait go on for smsdispatch.shutdown_grace: in a
 * switchover the walsenders stream until the server is down, so the
 * standby confirms within milliseconds and the claim leaves and is
 * answered as usual. From the grace on, a stop watch ticks, and a wait
 * still unconfirmed then (or begun since) is ended as die() would end it.
 * Either interrupt then marks the commit unconfirmed (commit_cut_short),
 * which sms_claim_fence() settles before a claimed request may leave.
 */
static volatile sig_atomic_t in_commit = false;
static volatile sig_atomic_t commit_cut_short = false;
/* SIGUSR2 every tick once a stop's grace is over (stop_watch_start) */
static timer_t stop_watch;
static bool stop_watch_made = false;
#define STOP_WATCH_TICK_MS	100

/* Whether the worker is in one of its commits, waiting for the standbys. */
static inline bool
waiting_for_standbys(void)
{
	return in_commit && MyProc != NULL && MyProc->syncRepState == SYNC_REP_WAITING;
}

/*
 * The stop watch's tick (SIGUSR2, from the grace on): ends a commit's wait
 * for the standbys as die() would.
 */
static void
stop_watch_tick(SIGNAL_ARGS)
{
	if (waiting_for_standbys())
	{
		commit_cut_short = true;
		ProcDiePending = true;
		InterruptPending = true;
		SetLatch(MyLatch);
	}
}

/*
 * Starts the stop watch: ticks from smsdispatch.shutdown_grace after now.
 * timer_settime is async-signal-safe, so the SIGTERM handler calls this.
 */
static void
stop_watch_start(void)
{
	struct itimerspec when = {{0, STOP_WATCH_TICK_MS * 1000000L}, {0, 0}};

	when.it_value.tv_sec = sms_shutdown_grace_ms / 1000;
	when.it_value.tv_nsec = (sms_shutdown_grace_ms % 1000) * 1000000L + 1;
	(void) timer_settime(stop_watch, 0, &when, NULL);
}

/* The worker's SIGTERM: the loop's flag, and the stop watch. */
static void
worker_sigterm(SIGNAL_ARGS)
{
	if (stop_watch_made && !ShutdownRequestPending)
		stop_watch_start();
	SignalHandlerForShutdownRequest(postgres_signal_arg);
}

/*
 * Makes the stop watch, once per worker: a timer of its own rather than
 * one of timeout.c, which a signal handler may not arm, and which would
 * wake the loop after every commit.
 */
static void
stop_watch_create(void)
{
	struct sigevent ev = {0};

	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGUSR2;
	pqsignal(SIGUSR2, stop_watch_tick);
	if (timer_create(CLOCK_MONOTONIC, &ev, &stop_watch) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("smsdispatch: could not create the worker's stop timer: %m")));
	stop_watch_made = true;
}

/* SIGINT (a cancel): as for every backend, and noted during a commit. */
static void
worker_sigint(SIGNAL_ARGS)
{
	if (waiting_for_standbys())
		commit_cut_short = true;
	StatementCancelHandler(postgres_signal_arg);
}

/*
 * Commits the current transaction as a watched commit. The die() that a
 * tick of the stop watch asked for is taken back once the wait is over:
 * the stop goes on as a graceful one (sms_worker_stop).
 */
static void
commit_watched(void)
{
	commit_cut_short = false;
	in_commit = true;
	CommitTransactionCommand();
	in_commit = false;
	if (commit_cut_short && ShutdownRequestPending && PostmasterIsAlive())
		ProcDiePending = false;
}

/*
 * The work of a transaction whose commit waits for the synchronous
 * standbys: it must write WAL (an xid alone commits without a wait), so it
 * writes a message nothing decodes.
 */
static void
write_confirmation(void *arg)
{
	if (SPI_execute("SELECT pg_catalog.pg_logical_emit_message(true, 'smsdispatch', 'claim confirmed')",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "smsdispatch: could not write the WAL of a confirmation");
}

/*
 * Whether the last of the worker's commits is known to the synchronous
 * standbys (or there was no wait to cut short). After a cancel it waits
 * again, through the commit of a transaction of its own: a later commit
 * confirmed means this one is. False at a stop and when the postmaster
 * died: then what was claimed must not be sent (sms_claim_fence).
 */
static bool
commit_confirmed(void)
{
	while (commit_cut_short)
	{
		if (ShutdownRequestPending || ProcDiePending || !PostmasterIsAlive())
			return false;
		ereport(LOG,
				(errmsg("smsdispatch: a cancel ended the wait of a commit for the synchronous standbys; nothing it claimed leaves until they have it")));
		pgstat_report_activity(STATE_RUNNING,
							   "smsdispatch: waiting for the synchronous standbys to have a claim");
		(void) sms_worker_transaction(write_confirmation, NULL);
		pgstat_report_activity(STATE_IDLE, NULL);
	}
	return true;
}

/*
 * Called once a claim committed, before any claimed request leaves (by
 * ip2sms_exchange, for every channel the worker sends): ends the worker
 * when what it claimed must not be sent. That is when the postmaster died,
 * or the grace of a stop ended the commit's wait for the synchronous standbys (after
 * a cancel, commit_confirmed waits again). When the postmaster dies the
 * wait gives up too (SyncRepWaitForLSN sets ProcDiePending and returns), so
 * the commit may be durable on this server only: the walsenders are gone,
 * and the standby Patroni promotes has the rows still queued and sends
 * them. Without a synchronous standby the same holds for WAL the
 * walsenders had not sent yet. The rows claimed here are unknown at the
 * next start on this server, never sent again by themselves
 * (test/t/121_sync_wait_cut_short.pl, test/t/130_patroni_synchronous.pl).
 */
void
sms_claim_fence(void)
{
	if (ProcDiePending || !PostmasterIsAlive() || !commit_confirmed())
		proc_exit(1);
}

/*
 * Runs work(arg) in a transaction of its own, with lock waits bounded, SPI
 * connected and a snapshot, and commits it; the one guard of every
 * transaction the worker opens (the duties, the IP2SMS channel's exchanges,
 * the look for the extension). An ERROR anywhere in it, a lock_timeout
 * above all, is logged and rolled back, and false returned: the caller
 * keeps what it holds and tries again later, and the worker lives on. A
 * cancel that came in while the work ended is taken here, before COMMIT,
 * so that it cannot escape later between transactions. SIGTERM does not
 * interrupt it (it only sets the loop's flag, see sms_worker_signals).
 * Returns in the caller's memory context.
 */
bool
sms_worker_transaction(SmsWork work, void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile bool committed = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		sms_bound_lock_waits();
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "smsdispatch: SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		work(arg);
		CHECK_FOR_INTERRUPTS();
		PopActiveSnapshot();
		SPI_finish();
		commit_watched();
		committed = true;
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		EmitErrorReport();
		AbortOutOfAnyTransaction();
		FlushErrorState();
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	pgstat_report_stat(false);
	return committed;
}

/*
 * Waits for the answers on the wire of the IP2SMS and the Kannel channels,
 * together at most smsdispatch.shutdown_grace, and records them.
 */
static void
channels_stop(void)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   sms_shutdown_grace_ms);

	ip2sms_stop();
	kannel_stop(deadline);
}

/* Whether the extension is installed in our database (it may come and go). */
static void
look_for_extension(void *installed)
{
	*(bool *) installed = OidIsValid(get_extension_oid("smsdispatch", true));
}

/*
 * With smsdispatch.database = '*', a database without the extension has no
 * worker: this one ends, and the launcher starts none there until a CREATE
 * EXTENSION commits after generation (read before the look).
 */
static void
end_without_extension(uint32 generation)
{
	ereport(LOG,
			(errmsg("smsdispatch worker of database \"%s\" ends: the extension is not installed there",
					sms_my_slot->dbname),
			 errdetail("With smsdispatch.database = '*', CREATE EXTENSION smsdispatch starts it again.")));
	channels_stop();
	sms_my_slot->seen_generation = generation;
	sms_my_slot->no_extension = true;
	proc_exit(0);
}

/* One duty and the pass it belongs to, for run_duty's transaction. */
typedef struct DutyRun
{
	SmsDuty		duty;
	SmsPassSummary *summary;
	TimestampTz *next_due;
} DutyRun;

static void
duty_work(void *arg)
{
	DutyRun    *run = arg;

	run->duty(run->summary, run->next_due);
}

/*
 * Runs one duty in a transaction of its own (sms_worker_transaction). A
 * failed duty counts for nothing in the pass's summary (its "more" would
 * run it again at once, a spin on an error), and is tried again at the next
 * pass, at most smsdispatch.naptime later; the other duties go on. After
 * each, the IP2SMS and the Kannel channels read what their gateways
 * answered meanwhile.
 * After a SIGTERM no duty starts: the worker is stopping.
 */
static void
run_duty(const char *activity, SmsDuty duty, SmsPassSummary *summary,
		 TimestampTz *next_due)
{
	SmsPassSummary before = *summary;
	DutyRun		run = {duty, summary, next_due};

	if (ShutdownRequestPending)
		return;
	pgstat_report_activity(STATE_RUNNING, activity);
	if (!sms_worker_transaction(duty_work, &run))
		*summary = before;
	pgstat_report_activity(STATE_IDLE, NULL);
	ip2sms_read_ready();
	kannel_read_ready();
}

/* One pass of the database duties; lowers *next_due. */
static void
duties_pass(SmsPassSummary *summary, TimestampTz *next_due)
{
	if (sms_spool_dir[0] != '\0')
		run_duty("smsdispatch: importing spool files", sms_spool_import,
				 summary, next_due);
	run_duty("smsdispatch: escalating alarms", sms_escalate, summary, next_due);
	run_duty("smsdispatch: releasing held SMS", sms_release_held, summary, next_due);
	/* starts the inbound handler worker; the handler never runs here */
	if (sms_inbound_handler[0] != '\0')
		run_duty("smsdispatch: inbound hook", sms_inbound_launch, summary, next_due);
	/* the loopback channel sends everything: no channel is ever unhealthy */
	if (sms_loopback_channel)
		run_duty("smsdispatch: loopback channel", sms_loopback_dispatch,
				 summary, next_due);
	else
		run_duty("smsdispatch: failing over", sms_failover, summary, next_due);
	run_duty("smsdispatch: housekeeping", sms_housekeeping, summary, next_due);
}

/*
 * Ends the worker at SIGTERM (a fast or smart shutdown, a restart,
 * pg_terminate_backend): the IP2SMS channel waits up to
 * smsdispatch.shutdown_grace for the answers of the requests on the wire and
 * records them (ip2sms_stop), the Kannel channels for what is left of that
 * grace (kannel_stop), then the worker ends as die() would have
 * ended it, with its message and exit code: the postmaster restarts it
 * unless the server is stopping.
 */
void
sms_worker_stop(void)
{
	channels_stop();
	ereport(FATAL,
			(errcode(ERRCODE_ADMIN_SHUTDOWN),
			 errmsg("terminating background worker \"%s\" due to administrator command",
					MyBgworkerEntry->bgw_type)));
}

/*
 * The worker's event loop (see the file header). A latch wake-up or a
 * changed alarm brings the duties forward, but not more often than every
 * DUTIES_MIN_GAP_MS, so that a stream of COMMITs does not run the
 * escalation for each one.
 */
#define DUTIES_MIN_GAP_MS	5

static void
worker_loop(void)
{
	TimestampTz duties_due = 0;
	TimestampTz duties_ran = 0;
	bool		installed = false;

	for (;;)
	{
		TimestampTz now;
		TimestampTz channel_due = DT_NOEND;
		bool		alarms_changed = false;
		uint32		generation;

		/* at SIGTERM nothing more is claimed */
		if (ShutdownRequestPending)
			sms_worker_stop();
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			sms_ip2sms_password_reloaded();
			ip2sms_reload();
		}

		now = GetCurrentTimestamp();
		if (duties_due <= now)
		{
			SmsPassSummary summary;

			memset(&summary, 0, sizeof(summary));
			duties_due = TimestampTzPlusMilliseconds(now, sms_naptime_ms);
			/* a failed look keeps the last answer */
			generation = pg_atomic_read_u32(&sms_shared->extension_generation);
			(void) sms_worker_transaction(look_for_extension, &installed);
			if (!installed && sms_serves_every_database())
				end_without_extension(generation);
			if (installed)
				duties_pass(&summary, &duties_due);
			else
				pgstat_report_activity(STATE_IDLE, "smsdispatch: extension not installed");
			if (summary.more)
				duties_due = now;
			/* the worker's own COMMITs do not wake it: new levels, new files */
			if (summary.escalated > 0 || summary.repeated > 0 ||
				summary.spool_imported > 0 || summary.released > 0 ||
				summary.failed_over > 0 || summary.retried > 0)
			{
				ip2sms_wake();
				kannel_wake();
			}
			duties_ran = now;
		}
		/* a SIGTERM during the duties: stop before claiming more */
		if (ShutdownRequestPending)
			continue;
		if (installed && !sms_loopback_channel)
		{
			ip2sms_pump(&channel_due, &alarms_changed);
			/* the registered channels: never waits for the network */
			kannel_pump(&channel_due);
		}
		if (alarms_changed)
			duties_due = Min(duties_due, TimestampTzPlusMilliseconds(duties_ran,
																	 DUTIES_MIN_GAP_MS));

		if (ip2sms_wait(Min(duties_due, channel_due)))
		{
			ResetLatch(MyLatch);
			ip2sms_wake();
			kannel_wake();
			duties_due = Min(duties_due, TimestampTzPlusMilliseconds(duties_ran,
																	 DUTIES_MIN_GAP_MS));
		}
	}
}

/*
 * The settings the worker's SQL depends on, pinned over whatever the database
 * or its roles set (ALTER DATABASE ... SET is the database owner's to give,
 * and the worker runs as the bootstrap superuser).
 *
 * NB: search_path above all. The worker resolves no name through a schema
 * another role can write to: with "$user", public, a function or operator
 * planted there (an exact-type make_interval(int), an = on one of our
 * domains) would run as superuser on the next pass. So the path is
 * pg_catalog and pg_temp only, and every object of the extension the worker
 * names is schema-qualified. PGC_S_OVERRIDE keeps a reload from undoing it.
 *
 * NB: synchronous_commit too. The commit of a claim is the fence of a
 * primary cut off from its synchronous standbys: it waits for them before
 * the request leaves, so an isolated primary sends nothing that a promoted
 * standby would not know was claimed. A database, a role or the cluster
 * that sets synchronous_commit = off (or local) for its applications must
 * not take that wait away from the worker.
 *
 * That commit is the only check the worker needs that it is on a writable
 * primary, and it is made before every claim. The worker starts only after
 * recovery, and a running primary never goes back into recovery: Patroni,
 * like any manager, demotes a primary by stopping the server and starting
 * it again as a standby, so the worker is ended (SIGTERM, or SIGQUIT for an
 * immediate stop) and no RecoveryInProgress() test in the loop could ever
 * see true. What can happen is a primary that no longer is one: its leader
 * lock expired while it kept running, and its standby was promoted. Its
 * claim's commit then waits for a standby that streams from it no more, so
 * it sends nothing, and whatever it did claim before had reached the new
 * primary, which marks it unknown instead of sending it again
 * (test/t/130_patroni_synchronous.pl). One wait does end early: when the
 * postmaster dies, the commit returns unconfirmed, and the IP2SMS channel
 * then starts none of the claimed requests (sms_claim_fence).
 * Without a synchronous standby the cluster has no such fence: a claim the
 * standby had not received may be sent again after a failover
 * (docs/operations.md, "High availability").
 */
static const struct
{
	const char *name;
	const char *value;
}			pinned_settings[] =
{
	{"search_path", "pg_catalog, pg_temp"},
	{"default_transaction_isolation", "read committed"},
	{"default_transaction_read_only", "off"},
	{"synchronous_commit", "on"},
};

/*
 * Applies pinned_settings to the session of the worker or of its inbound
 * handler worker (inbound.c): both run as the bootstrap superuser.
 */
void
sms_pin_worker_settings(void)
{
	for (int i = 0; i < lengthof(pinned_settings); i++)
		SetConfigOption(pinned_settings[i].name, pinned_settings[i].value,
						PGC_SUSET, PGC_S_OVERRIDE);
}

/*
 * Where an ERROR lands that escaped every guarded transaction (a cancel
 * taken between two of them, an allocation that failed): it is logged,
 * what lives outside a transaction is kept (the IP2SMS channel's requests
 * on the wire and its answers not recorded yet), and after
 * ERROR_RESTART_MS, not in a spin, the loop starts again. Only FATAL
 * (SIGTERM) and the postmaster's death end the worker.
 */
#define ERROR_RESTART_MS	1000

static void
recover_from_error(void)
{
	/* no PG_TRY brought us here: what it would reset, by hand */
	error_context_stack = NULL;
	HOLD_INTERRUPTS();
	EmitErrorReport();
	AbortOutOfAnyTransaction();
	FlushErrorState();
	MemoryContextSwitchTo(TopMemoryContext);
	pgstat_report_activity(STATE_IDLE, NULL);
	RESUME_INTERRUPTS();
	ereport(LOG,
			(errmsg("smsdispatch worker goes on after the error above in %d ms",
					ERROR_RESTART_MS)));
	/* the latch may be set already: a timeout alone is the pause */
	(void) WaitLatch(NULL, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, ERROR_RESTART_MS,
					 PG_WAIT_EXTENSION);
}

/*
 * The signal handling of the worker and of its inbound handler worker:
 * SIGHUP reloads, SIGTERM calls on_sigterm. The worker's is
 * SignalHandlerForShutdownRequest, a flag its loop reads, so that a stop
 * interrupts no transaction and the answers on the wire can be awaited
 * (sms_worker_stop); the handler worker's is die(), which ends a handler's
 * statement at once.
 */
void
sms_worker_signals(pqsigfunc on_sigterm)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, on_sigterm);
	pqsignal(SIGINT, worker_sigint);
	/* answers procsignal barriers, so DROP DATABASE elsewhere never waits */
	pqsignal(SIGUSR1, procsignal_sigusr1_handler);
	BackgroundWorkerUnblockSignals();
}

/*
 * Entry point of the worker of one database; main_arg is its slot, which
 * the launcher filled (launcher.c). A database that does not exist yet is
 * waited for, connected to none (worker_database.c).
 */
void
sms_worker_main(Datum main_arg)
{
	sigjmp_buf	local_sigjmp_buf;

	sms_worker_signals(worker_sigterm);
	sms_my_slot = &sms_shared->slots[DatumGetInt32(main_arg)];
	before_shmem_exit(worker_detach, (Datum) 0);
	sms_my_slot->worker_pid = MyProcPid;

	if (!OidIsValid(sms_my_slot->dboid))
		sms_worker_wait_for_database(sms_my_slot->dbname);
	BackgroundWorkerInitializeConnectionByOid(sms_my_slot->dboid, InvalidOid, 0);
	sms_pin_worker_settings();
	stop_watch_create();
	sms_stats_attach(MyDatabaseId);
	pgstat_report_appname("smsdispatch worker");

	pg_write_barrier();
	sms_my_slot->worker_latch = MyLatch;
	sms_channel_publish(SMS_CHANNEL_OK, NULL);

	ereport(LOG,
			(errmsg("smsdispatch worker started in database \"%s\"",
					sms_my_slot->dbname)));

	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
		recover_from_error();
	PG_exception_stack = &local_sigjmp_buf;
	worker_loop();
}

/* The pass summary as jsonb, for run_once(). */
static Datum
summary_jsonb(const SmsPassSummary *s)
{
	char	   *json;

	json = psprintf("{\"spool_imported\": %d, \"spool_failed\": %d, "
					"\"alarms_checked\": %d, \"timed_out\": %d, \"escalated\": %d, "
					"\"repeated\": %d, \"exhausted\": %d, \"loopback_submitted\": %d, "
					"\"failed_over\": %d, \"retried\": %d, \"undeliverable\": %d}",
					s->spool_imported, s->spool_failed, s->alarms_checked,
					s->timed_out, s->escalated, s->repeated, s->exhausted,
					s->loopback_submitted, s->failed_over, s->retried,
					s->undeliverable);
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
}

/* Runs a duty in the caller's transaction until its batch is not full. */
static void
run_until_done(SmsDuty duty, SmsPassSummary *summary, TimestampTz *next_due)
{
	do
	{
		CHECK_FOR_INTERRUPTS();
		summary->more = false;
		duty(summary, next_due);
	} while (summary->more);
}

/*
 * smsdispatch.run_once(): one pass of the worker's database duties in the
 * calling session and its transaction, for servers where the library is not
 * preloaded (pg_cron can schedule it). No network I/O happens here; the
 * spool files move when the transaction commits.
 */
Datum
sms_run_once(PG_FUNCTION_ARGS)
{
	SmsPassSummary summary;
	TimestampTz next_due = DT_NOEND;

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("smsdispatch.run_once() cannot run during recovery"),
				 errhint("Run it on the primary; a standby sends nothing.")));

	memset(&summary, 0, sizeof(summary));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "smsdispatch: SPI_connect failed");
	/* the spool's files move at COMMIT: one batch of them per call */
	sms_spool_import(&summary, &next_due);
	run_until_done(sms_escalate, &summary, &next_due);
	run_until_done(sms_release_held, &summary, &next_due);
	if (sms_loopback_channel)
		run_until_done(sms_loopback_dispatch, &summary, &next_due);
	else
		run_until_done(sms_failover, &summary, &next_due);
	sms_housekeeping(&summary, &next_due);
	SPI_finish();

	PG_RETURN_DATUM(summary_jsonb(&summary));
}

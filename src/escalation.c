/*-------------------------------------------------------------------------
 *
 * escalation.c
 *	  The worker's duties that live in SQL (src/sql/35_worker.sql and
 *	  71_channel_health.sql): the escalation step, failover, the loopback
 *	  test channel and housekeeping. Each runs
 *	  one batch inside the caller's transaction with SPI connected, adds what
 *	  it did to the pass summary and says when it next has work.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"

/* alarms (or SMS) one transaction handles; a full batch asks for another */
#define SMS_DUTY_BATCH 1000
/* pause before retrying due work that another session holds locked */
#define SMS_RETRY_PAUSE_MS 10

/* Runs a query of the duties, failing loudly when SPI does. */
static void
run_query(const char *sql, int expected)
{
	int			ret = SPI_execute(sql, false, 0);

	if (ret != expected)
		elog(ERROR, "smsdispatch: \"%s\" failed: %s", sql, SPI_result_code_string(ret));
}

/* Column col (1-based) of the single result row, as an int. */
static int
result_int(int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, &isnull);

	return isnull ? 0 : DatumGetInt32(d);
}

/*
 * Lowers *next_due to column col of the single result row, when not NULL.
 * Work that is due but was not done (someone else holds it locked) is
 * retried after a short pause, not in a busy loop.
 */
static void
result_lower_due(int col, bool did_work, TimestampTz *next_due)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, &isnull);
	TimestampTz due;

	if (isnull)
		return;
	due = DatumGetTimestampTz(d);
	if (!did_work)
		due = Max(due, TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   SMS_RETRY_PAUSE_MS));
	if (due < *next_due)
		*next_due = due;
}

/*
 * One escalation step (smsdispatch.escalate): timeouts, next levels, new
 * rounds, exhausted alarms. The next wake-up is the earliest check_at of
 * an open alarm.
 */
void
sms_escalate(SmsPassSummary *summary, TimestampTz *next_due)
{
	run_query("SELECT alarms_checked, timed_out, escalated, repeated, exhausted, next_check"
			  "  FROM smsdispatch.escalate(" CppAsString2(SMS_DUTY_BATCH) ")",
			  SPI_OK_SELECT);
	summary->alarms_checked += result_int(1);
	summary->timed_out += result_int(2);
	summary->escalated += result_int(3);
	summary->repeated += result_int(4);
	summary->exhausted += result_int(5);
	if (result_int(1) == SMS_DUTY_BATCH)
		summary->more = true;
	else
		result_lower_due(6, result_int(1) > 0, next_due);
}

/*
 * Failover (smsdispatch.failover): alarms' SMS that cannot leave on their
 * channel go out on the other one, or are queued again with backoff; alarms
 * that can reach nobody are made loud. The next wake-up is when an SMS
 * waiting for smsdispatch.failover_after is due.
 */
void
sms_failover(SmsPassSummary *summary, TimestampTz *next_due)
{
	run_query("SELECT checked, failed_over, retried, undeliverable, next_check"
			  "  FROM smsdispatch.failover(" CppAsString2(SMS_DUTY_BATCH) ")",
			  SPI_OK_SELECT);
	summary->failed_over += result_int(2);
	summary->retried += result_int(3);
	summary->undeliverable += result_int(4);
	if (result_int(1) == SMS_DUTY_BATCH)
		summary->more = true;
	else
		result_lower_due(5, true, next_due);
}

/*
 * The loopback test channel (smsdispatch.loopback_channel): marks due
 * queued SMS submitted in this transaction, so none is ever left 'sending'.
 */
void
sms_loopback_dispatch(SmsPassSummary *summary, TimestampTz *next_due)
{
	run_query("SELECT submitted, next_due"
			  "  FROM smsdispatch.loopback_submit(" CppAsString2(SMS_DUTY_BATCH) ")",
			  SPI_OK_SELECT);
	summary->loopback_submitted += result_int(1);
	if (result_int(1) == SMS_DUTY_BATCH)
		summary->more = true;
	else
		result_lower_due(2, result_int(1) > 0, next_due);
}

/* Housekeeping: forgets spool files too old to matter. */
void
sms_housekeeping(SmsPassSummary *summary, TimestampTz *next_due)
{
	run_query("SELECT smsdispatch.housekeeping()", SPI_OK_SELECT);
}

/*
 * Releases queued SMS whose send window has opened (smsdispatch.release_held);
 * the next wake-up is when the next held row's window opens.
 */
void
sms_release_held(SmsPassSummary *summary, TimestampTz *next_due)
{
	run_query("SELECT released, next_due"
			  "  FROM smsdispatch.release_held(" CppAsString2(SMS_DUTY_BATCH) ")",
			  SPI_OK_SELECT);
	summary->released += result_int(1);
	if (result_int(1) == SMS_DUTY_BATCH)
		summary->more = true;
	else
		result_lower_due(2, true, next_due);
}

/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  Queueing single SMS: sms_send() and the verification trigger. Both are
 *	  on the application's hot path, so both write their row through the
 *	  log writer (log_writer.c) rather than a planned INSERT.
 *
 * The abuse guard lives here too: past smsdispatch.max_per_phone_per_hour
 * SMS to one number in the last hour, the row is still written (nothing is
 * lost, the caller's transaction goes on) but as failed, with the reason.
 * So does the reservation of alarm numbers (smsdispatch.reserve_number):
 * both use the extension's private locks, and neither waits for another
 * session's open transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/snapshot.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_send);
PG_FUNCTION_INFO_V1(sms_resolve_channel_sql);
PG_FUNCTION_INFO_V1(sms_verification_trigger);
PG_FUNCTION_INFO_V1(sms_default_priority_sql);
PG_FUNCTION_INFO_V1(sms_reserve_number);

/*
 * Prepares sql once per session and keeps its plan in *plan: the SPI
 * statements of the hot paths (sms_send, the IP2SMS exchange) are planned
 * once, not at every call.
 */
void
sms_keep_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	p;

	if (*plan != NULL)
		return;
	p = SPI_prepare(sql, nargs, types);
	if (p == NULL)
		elog(ERROR, "smsdispatch: could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(p) != 0)
		elog(ERROR, "smsdispatch: could not keep the plan of \"%s\"", sql);
	*plan = p;
}

/*
 * The extension's private locks: advisory lock tags in class "SMSD" whose
 * last field, the kind, is neither 1 nor 2. pg_advisory_lock() and friends
 * always set that field to 1 (int8 key) or 2 (int4 pair), so no role, with
 * or without grants, can take these locks from SQL and stall the senders.
 */
#define SMS_LOCK_CLASS 0x534D5344
#define SMS_LOCK_PHONE_GUARD 0x5344 /* key: hash of a phone number */
#define SMS_LOCK_ALARM_NUMBER 0x4E4F	/* key: an alarm number, 0..9999 */

/* The tag of the private lock of that kind on key. */
static void
set_private_locktag(LOCKTAG *tag, uint32 key, uint16 kind)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, SMS_LOCK_CLASS, key, kind);
}

static const char *const sms_types[] = {
	"verification", "medication_request", "text", "2FA"
};

/*
 * The priority an SMS of this type gets unless its sender says otherwise:
 * codes a person is waiting for before bulk text. Alarms' SMS are
 * SMS_PRIORITY_ALARM, set where the escalation queues them.
 */
int
sms_default_priority(const char *type)
{
	if (strcmp(type, "verification") == 0 || strcmp(type, "2FA") == 0)
		return 3;
	if (strcmp(type, "medication_request") == 0)
		return 5;
	return 7;
}

/* SQL: smsdispatch.default_priority(type) -> the type's default priority */
Datum
sms_default_priority_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(sms_default_priority(text_to_cstring(PG_GETARG_TEXT_PP(0))));
}

/* Refuses a priority outside the documented range, naming it. */
static void
check_priority(int priority)
{
	if (priority < SMS_PRIORITY_MIN || priority > SMS_PRIORITY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("priority %d of an SMS is out of range", priority),
				 errhint("Priorities go from %d (most urgent, as alarms) to %d (least urgent).",
						 SMS_PRIORITY_MIN, SMS_PRIORITY_MAX)));
}

/* Whether channel is registered in this database (smsdispatch.channel_registry). */
static bool
channel_registered(const char *channel)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(channel)};
	const char *sql = "SELECT 1 FROM smsdispatch.channel_registry r WHERE r.name OPERATOR(pg_catalog.=) $1::text";
	int			ret;
	bool		found;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "smsdispatch: SPI_connect failed");
	sms_keep_plan(&plan, sql, 1, types);
	ret = SPI_execute_plan(plan, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "smsdispatch: \"%s\" failed: %s", sql, SPI_result_code_string(ret));
	found = SPI_processed > 0;
	SPI_finish();
	return found;
}

/*
 * The channel a call asked for, or smsdispatch.default_channel: ip2sms,
 * modem or a registered channel of this database.
 */
const char *
sms_resolve_channel(const char *channel)
{
	if (channel == NULL)
		return sms_default_channel;
	if (strcmp(channel, "ip2sms") != 0 && strcmp(channel, "modem") != 0 &&
		!channel_registered(channel))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown channel \"%s\"", channel),
				 errhint("Channels are ip2sms, modem and those smsdispatch.channels lists (smsdispatch.channel_add adds one).")));
	return channel;
}

/* SQL: smsdispatch.resolve_channel(channel) -> the channel to use */
Datum
sms_resolve_channel_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(sms_resolve_channel(PG_ARGISNULL(0) ? NULL :
														 text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}

/* Refuses an SMS type the log's CHECK would refuse, with a better message. */
static void
check_type(const char *type)
{
	int			i;

	if (type == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("type of an SMS must not be NULL")));
	for (i = 0; i < lengthof(sms_types); i++)
		if (strcmp(type, sms_types[i]) == 0)
			return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown SMS type \"%s\"", type),
			 errhint("Types are verification, medication_request, text and 2FA.")));
}

/*
 * Whether id is among the n ids of seen; adds it when not. The ids of rows
 * an unfinished transaction writes, which a dirty scan can meet twice.
 */
static bool
seen_before(int64 *seen, int *n, int64 id)
{
	int			i;

	for (i = 0; i < *n; i++)
		if (seen[i] == id)
			return true;
	seen[(*n)++] = id;
	return false;
}

/*
 * How many SMS to phone in the last hour count towards the abuse guard (all
 * but those written failed without an attempt, i.e. refused), stopping at
 * limit. A hand-made scan of sms_log_phone_idx rather than a query: a plan
 * cached while sms_log was small would scan the whole table once it grew,
 * and this runs on every SMS. The scan's dirty snapshot sees, besides the
 * committed rows and our own, the rows of senders whose transactions are
 * still open, so the count is exact without waiting for them to end (a row
 * whose transaction later rolls back counted while it lasted). A row that an
 * open transaction is updating shows in two versions, both marked by that
 * transaction (xmax on the old one, xmin on the new); its id counts once.
 */
static int
count_recent(Relation heap, const char *phone, int limit)
{
	Oid			indexoid = get_relname_relid("sms_log_phone_idx",
											 RelationGetNamespace(heap));
	Relation	index;
	ScanKeyData keys[2];
	SnapshotData dirty;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	AttrNumber	id_att;
	AttrNumber	state_att;
	AttrNumber	attempts_att;
	int64	   *unfinished;
	int			n_unfinished = 0;
	int			n = 0;

	if (!OidIsValid(indexoid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("index verification.sms_log_phone_idx of the abuse guard does not exist"),
				 errhint("Reinstall the extension, or set smsdispatch.max_per_phone_per_hour to 0.")));
	index = index_open(indexoid, AccessShareLock);
	id_att = SPI_fnumber(RelationGetDescr(heap), "id");
	state_att = SPI_fnumber(RelationGetDescr(heap), "send_state");
	attempts_att = SPI_fnumber(RelationGetDescr(heap), "attempts");

	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_TEXTEQ,
				CStringGetTextDatum(phone));
	keys[0].sk_collation = index->rd_indcollation[0];
	ScanKeyInit(&keys[1], 2, BTGreaterStrategyNumber, F_TIMESTAMPTZ_GT,
				TimestampTzGetDatum(GetCurrentTransactionStartTimestamp() - USECS_PER_HOUR));

	InitDirtySnapshot(dirty);
	scan = sms_index_beginscan(heap, index, &dirty, 2, 0);
	index_rescan(scan, keys, 2, NULL, 0);
	slot = table_slot_create(heap, NULL);
	/* at most limit of them count, so at most limit ids are remembered */
	unfinished = palloc(sizeof(int64) * limit);
	while (n < limit && index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		bool		isnull;
		Datum		state = slot_getattr(slot, state_att, &isnull);
		int32		attempts = DatumGetInt32(slot_getattr(slot, attempts_att, &isnull));

		if (attempts == 0 && sms_text_equals(state, "failed"))
			continue;
		/* the visibility check left the open writer's xid in the snapshot */
		if ((TransactionIdIsValid(dirty.xmin) || TransactionIdIsValid(dirty.xmax)) &&
			seen_before(unfinished, &n_unfinished,
						DatumGetInt64(slot_getattr(slot, id_att, &isnull))))
			continue;
		n++;
	}
	pfree(unfinished);
	ExecDropSingleTupleTableSlot(slot);
	index_endscan(scan);
	index_close(index, AccessShareLock);
	return n;
}

/*
 * Opens verification.sms_log for writing. Looked up without the caller's
 * privileges (an application inserting into a watched table may have none
 * on the schema verification), as the log's owner will write it.
 */
static Relation
open_sms_log(void)
{
	Oid			relid = get_relname_relid("sms_log", get_namespace_oid("verification", false));

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table verification.sms_log does not exist"),
				 errhint("Reinstall the extension smsdispatch.")));
	return table_open(relid, RowExclusiveLock);
}

/*
 * Writes one sms_log row for an already checked body; returns its id. With a
 * refusal, or past the abuse guard, the row is written failed with the reason
 * and nothing is sent.
 *
 * Callers need no privilege on the log: the row is written as the log's
 * owner, the way PostgreSQL's foreign-key triggers act as the owner of the
 * table they check. Nothing here resolves a name through search_path, so
 * the caller's cannot redirect it; that spares these hot paths SECURITY
 * DEFINER's SET search_path, a GUC save and restore on every call.
 */
int64
sms_queue_insert(const char *phone, const char *body, const char *type,
				 const char *channel, const char *verification_id,
				 const char *refusal, int priority)
{
	Relation	log;
	SmsLogRow	row;
	Oid			save_userid;
	int			save_sec_context;
	int64		id;

	bool		guarded = refusal == NULL && sms_max_per_phone_per_hour > 0;
	LOCKTAG		guard;

	log = open_sms_log();
	if (guarded)
	{
		int			recent;

		/*
		 * Senders to one number count and write one at a time, so that each
		 * count includes the rows written before it. The lock lasts only
		 * until our row is written, not to the end of our transaction:
		 * count_recent sees the rows of open transactions without waiting
		 * for them.
		 */
		set_private_locktag(&guard,
							hash_bytes((const unsigned char *) phone, strlen(phone)),
							SMS_LOCK_PHONE_GUARD);
		(void) LockAcquire(&guard, ExclusiveLock, false, false);
		recent = count_recent(log, phone, sms_max_per_phone_per_hour);
		if (recent >= sms_max_per_phone_per_hour)
			refusal = psprintf("abuse guard: %d SMS to %s in the last hour reached smsdispatch.max_per_phone_per_hour",
							   recent, phone);
	}

	row.phone_number = phone;
	row.type = type;
	row.body = body;
	row.channel = channel;
	row.verification_id = verification_id;
	row.send_state = refusal ? "failed" : "queued";
	row.last_error = refusal;
	row.priority = priority;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(log->rd_rel->relowner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	id = sms_log_insert(log, &row);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	if (guarded)
		LockRelease(&guard, ExclusiveLock, false);
	table_close(log, NoLock);
	return id;
}

/* SQL: sms_send(phone, body, type, channel, priority) -> sms_log id */
Datum
sms_send(PG_FUNCTION_ARGS)
{
	char	   *phone;
	char	   *body = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *type = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	const char *channel;
	int			priority;
	int64		id;

	phone = sms_normalize_phone_text(PG_ARGISNULL(0) ? NULL :
									 text_to_cstring(PG_GETARG_TEXT_PP(0)), "phone");
	sms_check_body_text(body, "body");
	check_type(type);
	channel = sms_resolve_channel(PG_ARGISNULL(3) ? NULL :
								  text_to_cstring(PG_GETARG_TEXT_PP(3)));
	/* a database still on 1.0's script calls us without a priority */
	priority = PG_NARGS() < 5 || PG_ARGISNULL(4) ? sms_default_priority(type) :
		PG_GETARG_INT32(4);
	check_priority(priority);

	id = sms_queue_insert(phone, body, type, channel, NULL, NULL, priority);
	PG_RETURN_INT64(id);
}

/*
 * Whether alarm number candidate (as text) belongs to an open alarm or to
 * one closed less than quarantine ago, as committed now or written by us:
 * the latest snapshot, not the transaction's, so that a REPEATABLE READ
 * enqueue also sees what was given while it ran.
 */
static bool
alarm_number_in_use(Datum candidate, Datum quarantine)
{
	static SPIPlanPtr plan = NULL;
	Oid			types[2] = {TEXTOID, INTERVALOID};
	Datum		values[2] = {candidate, quarantine};
	const char *sql = "SELECT 1 FROM smsdispatch.message m WHERE m.number = $1 "
		"AND (m.state = 'open' OR m.closed_at > now() - $2)";
	int			ret;
	bool		in_use;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "smsdispatch: SPI_connect failed");
	sms_keep_plan(&plan, sql, 2, types);
	ret = SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(),
							   InvalidSnapshot, true, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "smsdispatch: \"%s\" failed: %s", sql, SPI_result_code_string(ret));
	in_use = SPI_processed > 0;
	SPI_finish();
	return in_use;
}

/*
 * SQL: smsdispatch.reserve_number(candidate int, quarantine interval) ->
 * whether this transaction may give alarm number candidate. It may when no
 * other open transaction is giving it (each holds the number's private lock
 * until it ends, taken here without waiting) and no alarm has it, open or
 * closed less than quarantine ago. The allocator tries the next candidate
 * rather than wait for another session, whatever that session does next.
 */
Datum
sms_reserve_number(PG_FUNCTION_ARGS)
{
	int32		candidate = PG_GETARG_INT32(0);
	LOCKTAG		tag;

	if (candidate < 0 || candidate > 9999)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("alarm number %d is out of range", candidate),
				 errhint("Alarm numbers go from 0 to 9999.")));
	set_private_locktag(&tag, (uint32) candidate, SMS_LOCK_ALARM_NUMBER);
	if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		PG_RETURN_BOOL(false);
	if (alarm_number_in_use(CStringGetTextDatum(psprintf("%04d", candidate)),
							PG_GETARG_DATUM(1)))
	{
		LockRelease(&tag, ExclusiveLock, false);
		PG_RETURN_BOOL(false);
	}
	PG_RETURN_BOOL(true);
}

/*
 * The text of a column of the trigger's row, or NULL; errors when the table
 * has no such column (it was dropped or renamed after watching began).
 */
static char *
column_text(TriggerData *trigdata, const char *column)
{
	TupleDesc	tupdesc = RelationGetDescr(trigdata->tg_relation);
	int			attnum = SPI_fnumber(tupdesc, column);

	if (attnum == SPI_ERROR_NOATTRIBUTE)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" does not exist in table \"%s\"",
						column, RelationGetRelationName(trigdata->tg_relation)),
				 errhint("Attach the trigger again with smsdispatch.watch_verifications() naming the right columns.")));
	return SPI_getvalue(trigdata->tg_trigtuple, tupdesc, attnum);
}

/* The verification text: the template with every {code} replaced. */
static char *
verification_body(const char *code)
{
	StringInfoData buf;
	const char *p = sms_verification_template;
	const char *hit;

	initStringInfo(&buf);
	while ((hit = strstr(p, "{code}")) != NULL)
	{
		appendBinaryStringInfo(&buf, p, hit - p);
		appendStringInfoString(&buf, code);
		p = hit + strlen("{code}");
	}
	appendStringInfoString(&buf, p);
	return buf.data;
}

/*
 * AFTER INSERT row trigger on a verifications table; arguments are the phone
 * and the code column. Queues one verification SMS per new row. A row whose
 * phone cannot be made E.164, or that has no code, is logged as failed with
 * the reason rather than aborting the application's insert.
 */
Datum
sms_verification_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	char	   *raw_phone;
	char	   *code;
	char	   *phone = NULL;
	const char *detail = "the phone number is NULL";
	char	   *verification_id = NULL;
	char	   *refusal = NULL;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("smsdispatch.verification_trigger() must be an AFTER INSERT FOR EACH ROW trigger")));
	trigger = trigdata->tg_trigger;
	if (trigger->tgnargs != 2)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("smsdispatch.verification_trigger() takes the phone and the code column names")));

	raw_phone = column_text(trigdata, trigger->tgargs[0]);
	code = column_text(trigdata, trigger->tgargs[1]);
	if (SPI_fnumber(RelationGetDescr(trigdata->tg_relation), "id") > 0)
		verification_id = column_text(trigdata, "id");
	if (raw_phone != NULL)
		phone = sms_try_normalize_phone(raw_phone, &detail);
	if (phone == NULL)
		refusal = psprintf("invalid phone number: %s", detail);
	else if (code == NULL)
		refusal = psprintf("the verification code (column \"%s\") is NULL",
						   trigger->tgargs[1]);

	sms_queue_insert(phone ? phone : (raw_phone ? raw_phone : ""),
					 verification_body(code ? code : ""), "verification",
					 sms_default_channel, verification_id, refusal,
					 sms_default_priority("verification"));
	return PointerGetDatum(NULL);
}

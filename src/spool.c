/*-------------------------------------------------------------------------
 *
 * spool.c
 *	  Imports the XML files of the spool directory (smsdispatch.spool_dir):
 *	  <SMS><RECIPIENT_LIST>oncall</RECIPIENT_LIST><MSG>text</MSG></SMS>
 *	  becomes an alarm; <TO> elements instead of the list (and an optional
 *	  <TYPE>) become one SMS each; an optional <CHANNEL> picks the channel.
 *
 * A writer creates a file under another name and renames it to *.xml, so
 * only *.xml names are read, and a *.xml file is complete. Every file is
 * treated as hostile: no symbolic links (lstat, then O_NOFOLLOW and a check
 * that the opened file is the one examined), regular files of at most
 * SPOOL_MAX_FILE_SIZE bytes read in one piece; libxml2 parses with no
 * network access and no entity substitution, and a DOCTYPE stops the parse
 * at once, so that neither external entities nor entity bombs get anywhere.
 * libxml2's messages go to our handler (into the .reason file), never to
 * stderr. A bad file never aborts the pass.
 *
 * Imported files move to processed/, bad ones to failed/ with a .reason
 * file beside them, a WARNING and a row in smsdispatch.spool_failure; a bad
 * one that named a list, whose alarm was never raised, also sends NOTIFY
 * smsdispatch_alarm, as an alarm nobody can receive does. processed/,
 * failed/ and the .reason files follow the spool directory's group and its
 * group permissions, so that the writing program can read why its file
 * failed. The moves happen when the importing transaction
 * commits, never when it rolls back; smsdispatch.spool_file remembers every
 * import, so a file left behind by a crash after the commit is moved, not
 * imported twice.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/file_perm.h"
#include "common/md5.h"
#include "common/string.h"
#include "common/username.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"
#include "xml_compat.h"

/* the largest spool file read; an alarm is a few hundred bytes */
#define SPOOL_MAX_FILE_SIZE 65536
/* files imported in one transaction; more are left for the next pass */
#define SPOOL_BATCH 100
/* characters of a refused file's list name kept for its record and alarm */
#define SPOOL_LIST_SHOWN 100

/* What a spool file asks for, as UTF-8 strings out of libxml2. */
typedef struct SpoolMessage
{
	char	   *list;
	char	   *body;
	char	   *type;
	char	   *channel;
	List	   *phones;
} SpoolMessage;

/* A move to processed/ or failed/ waiting for the commit. */
typedef struct SpoolMove
{
	char	   *from;
	char	   *to;
	char	   *reason_path;	/* failed/NAME.reason, or NULL */
	char	   *reason;
	mode_t		reason_mode;	/* the spool directory's group bits too */
	gid_t		reason_gid;		/* the spool directory's group */
	SubTransactionId subid;		/* (sub)transaction that decided it */
} SpoolMove;

/* in TopTransactionContext; emptied when the transaction ends */
static List *pending_moves = NIL;
static bool callbacks_registered = false;

/* What libxml2 told us while parsing one file. */
typedef struct SpoolXmlState
{
	bool		dtd_seen;
	char		first_error[256];
} SpoolXmlState;

/* the parse in progress: libxml2's callbacks have no argument of ours */
static SpoolXmlState *xml_state = NULL;

/*
 * Writes a failed file's reason beside it, with that mode and group (set
 * explicitly: the server's umask would take the group bits away); false
 * (errno set) on failure. A group the server's user is not in is left as
 * the directory gave it.
 */
static bool
write_reason(const char *path, const char *reason, mode_t mode, gid_t gid)
{
	int			fd;
	bool		ok;
	size_t		len = strlen(reason);

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | PG_BINARY,
			  pg_file_create_mode);
	if (fd < 0)
		return false;
	ok = write(fd, reason, len) == (ssize_t) len && write(fd, "\n", 1) == 1 &&
		fchmod(fd, mode) == 0;
	if (ok && fchown(fd, (uid_t) -1, gid) != 0)
		elog(DEBUG1, "smsdispatch: could not give \"%s\" group %u: %m", path, (unsigned) gid);
	if (close(fd) != 0)
		ok = false;
	return ok;
}

/*
 * The mode of files and directories the importer creates: the owner's
 * rights, and the spool directory's group rights (setgid too, for
 * directories), so that the directory's group may read what it holds.
 */
static mode_t
spool_mode(const struct stat *dir_st, bool directory)
{
	mode_t		group = dir_st->st_mode & (S_IRGRP | S_IWGRP | S_IXGRP);

	if (directory)
		return S_IRWXU | group | (dir_st->st_mode & S_ISGID);
	return S_IRUSR | S_IWUSR | (group & (S_IRGRP | S_IWGRP));
}

/*
 * Performs one move, after the commit: nothing may fail loudly here, so a
 * problem is only logged. A file already gone was moved by another importer.
 */
static void
spool_move_now(const SpoolMove *move)
{
	if (move->reason_path != NULL &&
		!write_reason(move->reason_path, move->reason, move->reason_mode,
					  move->reason_gid))
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("smsdispatch: could not write \"%s\": %m", move->reason_path)));
	if (rename(move->from, move->to) != 0 && errno != ENOENT)
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("smsdispatch: could not move spool file \"%s\" to \"%s\": %m",
						move->from, move->to)));
}

/* Moves the files at COMMIT; forgets them at ABORT; refuses PREPARE. */
static void
spool_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			foreach(lc, pending_moves)
				spool_move_now((SpoolMove *) lfirst(lc));
			pending_moves = NIL;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			pending_moves = NIL;
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (pending_moves != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that imported spool files")));
			break;
		default:
			break;
	}
}

/*
 * A rolled back subtransaction takes its moves along: those it and its
 * children decided have subtransaction ids at least its own.
 */
static void
spool_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	List	   *kept = NIL;
	ListCell   *lc;
	MemoryContext old;

	if (event != SUBXACT_EVENT_ABORT_SUB || pending_moves == NIL)
		return;
	old = MemoryContextSwitchTo(TopTransactionContext);
	foreach(lc, pending_moves)
	{
		SpoolMove  *move = lfirst(lc);

		if (move->subid < mySubid)
			kept = lappend(kept, move);
	}
	list_free(pending_moves);
	pending_moves = kept;
	MemoryContextSwitchTo(old);
}

/* Queues the move of dir/name into dir/subdir for the commit. */
static void
spool_schedule_move(const char *dir, const struct stat *dir_st, const char *name,
					const char *subdir, const char *reason)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	SpoolMove  *move = palloc0(sizeof(SpoolMove));

	move->from = psprintf("%s/%s", dir, name);
	move->to = psprintf("%s/%s/%s", dir, subdir, name);
	if (reason != NULL)
	{
		move->reason_path = psprintf("%s.reason", move->to);
		move->reason = pstrdup(reason);
		move->reason_mode = spool_mode(dir_st, false);
		move->reason_gid = dir_st->st_gid;
	}
	move->subid = GetCurrentSubTransactionId();
	pending_moves = lappend(pending_moves, move);
	MemoryContextSwitchTo(old);
}

/* libxml2's structured errors: keeps the first for the .reason file. */
static void
spool_xml_error(void *data, SmsXmlError error)
{
	SpoolXmlState *state = xml_state;
	size_t		len;

	if (state == NULL || state->first_error[0] != '\0' || error == NULL ||
		error->message == NULL)
		return;
	snprintf(state->first_error, sizeof(state->first_error), "line %d: %s",
			 error->line, error->message);
	len = strlen(state->first_error);
	while (len > 0 && isspace((unsigned char) state->first_error[len - 1]))
		state->first_error[--len] = '\0';
}

/* libxml2's unstructured messages: dropped, never printed to stderr. */
static void
spool_xml_generic_error(void *data, const char *msg,...)
{
}

/* A DOCTYPE: stop before any entity or DTD is read. */
static void
spool_reject_dtd(void *ctx, const xmlChar *name, const xmlChar *external_id,
				 const xmlChar *system_id)
{
	if (xml_state != NULL)
		xml_state->dtd_seen = true;
	xmlStopParser((xmlParserCtxtPtr) ctx);
}

/* Text of an element, trimmed, in the current memory context. */
static char *
element_text(xmlNodePtr node)
{
	xmlChar    *content = xmlNodeGetContent(node);
	const char *start = content ? (const char *) content : "";
	const char *end;
	char	   *text;

	while (*start && isspace((unsigned char) *start))
		start++;
	end = start + strlen(start);
	while (end > start && isspace((unsigned char) end[-1]))
		end--;
	text = pnstrdup(start, end - start);
	if (content)
		xmlFree(content);
	return text;
}

/* Whether a text node holds only white space. */
static bool
blank_node(xmlNodePtr node)
{
	const xmlChar *p;

	for (p = node->content; p && *p; p++)
		if (!isspace(*p))
			return false;
	return true;
}

/*
 * Reads the elements of <SMS> into msg; returns why the document is not a
 * spool message, or NULL.
 */
static char *
spool_extract(xmlDocPtr doc, SpoolMessage *msg)
{
	xmlNodePtr	root = xmlDocGetRootElement(doc);
	xmlNodePtr	node;

	if (root == NULL)
		return pstrdup("the document has no root element");
	if (xmlStrcmp(root->name, (const xmlChar *) "SMS") != 0)
		return psprintf("the root element is <%s>, not <SMS>", (const char *) root->name);

	for (node = root->children; node != NULL; node = node->next)
	{
		const char *name = (const char *) node->name;
		char	   *text;

		if (node->type == XML_COMMENT_NODE || node->type == XML_PI_NODE ||
			(node->type == XML_TEXT_NODE && blank_node(node)))
			continue;
		if (node->type != XML_ELEMENT_NODE)
			return pstrdup("<SMS> holds text outside its elements");
		text = element_text(node);
		if (strcmp(name, "TO") == 0)
		{
			if (text[0] == '\0')
				return pstrdup("a <TO> element is empty");
			msg->phones = lappend(msg->phones, text);
			continue;
		}
		if ((strcmp(name, "RECIPIENT_LIST") == 0 && msg->list != NULL) ||
			(strcmp(name, "MSG") == 0 && msg->body != NULL) ||
			(strcmp(name, "TYPE") == 0 && msg->type != NULL) ||
			(strcmp(name, "CHANNEL") == 0 && msg->channel != NULL))
			return psprintf("<%s> appears more than once", name);
		if (strcmp(name, "RECIPIENT_LIST") == 0)
			msg->list = text;
		else if (strcmp(name, "MSG") == 0)
			msg->body = text;
		else if (strcmp(name, "TYPE") == 0)
			msg->type = text;
		else if (strcmp(name, "CHANNEL") == 0)
			msg->channel = text;
		else
			return psprintf("unknown element <%s>; a spool file holds <RECIPIENT_LIST> or <TO>, <MSG> and optionally <TYPE> and <CHANNEL>",
							name);
	}

	if (msg->body == NULL || msg->body[0] == '\0')
		return pstrdup("the text of the message (<MSG>) is missing or empty");
	if (msg->list != NULL && msg->phones != NIL)
		return pstrdup("the file has both <RECIPIENT_LIST> and <TO>; give one or the other");
	if (msg->list == NULL && msg->phones == NIL)
		return pstrdup("the file has neither <RECIPIENT_LIST> nor <TO>");
	if (msg->list != NULL && msg->list[0] == '\0')
		return pstrdup("<RECIPIENT_LIST> is empty");
	if (msg->list != NULL && msg->type != NULL)
		return pstrdup("<TYPE> applies to <TO> recipients only; an alarm to a list is of type text");
	return NULL;
}

/*
 * A parser context for a spool file: a DOCTYPE stops it (spool_reject_dtd).
 */
static xmlParserCtxtPtr
spool_new_parser(void)
{
	xmlParserCtxtPtr ctxt = xmlNewParserCtxt();

	if (ctxt == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory creating an XML parser")));
	ctxt->sax->internalSubset = spool_reject_dtd;
	return ctxt;
}

/*
 * The text of the first <RECIPIENT_LIST> under the root of doc, or NULL:
 * the list a refused file named, whatever else was wrong with it.
 */
static char *
spool_named_list(xmlDocPtr doc)
{
	xmlNodePtr	root = xmlDocGetRootElement(doc);
	xmlNodePtr	node;

	for (node = root ? root->children : NULL; node != NULL; node = node->next)
		if (node->type == XML_ELEMENT_NODE &&
			xmlStrcmp(node->name, (const xmlChar *) "RECIPIENT_LIST") == 0)
			return element_text(node);
	return NULL;
}

/*
 * Parses a file's bytes into msg; returns why it is refused, or NULL.
 * A refused file still gets msg->list when it names a list (it would have
 * raised an alarm): for XML that is not well-formed, from what libxml2's
 * recovery mode makes of it, with the same options otherwise. libxml2's
 * error handlers are ours for the parse and restored afterwards, and every
 * libxml2 object is freed, whatever happens.
 */
static char *
spool_parse(const char *buf, int len, SpoolMessage *msg)
{
	SpoolXmlState state;
	xmlStructuredErrorFunc saved_serror = xmlStructuredError;
	void	   *saved_sctx = xmlStructuredErrorContext;
	xmlGenericErrorFunc saved_gerror = xmlGenericError;
	void	   *saved_gctx = xmlGenericErrorContext;
	xmlParserCtxtPtr volatile ctxt = NULL;
	xmlDocPtr volatile doc = NULL;
	char	   *volatile reason = NULL;

	memset(&state, 0, sizeof(state));
	xmlInitParser();
	xml_state = &state;
	xmlSetStructuredErrorFunc(NULL, spool_xml_error);
	xmlSetGenericErrorFunc(NULL, spool_xml_generic_error);
	PG_TRY();
	{
		ctxt = spool_new_parser();
		/* no XML_PARSE_NOENT, XML_PARSE_DTDLOAD nor XML_PARSE_HUGE */
		doc = xmlCtxtReadMemory(ctxt, buf, len, "spool.xml", NULL,
								XML_PARSE_NONET);
		if (state.dtd_seen)
			reason = pstrdup("the file has a DOCTYPE; DTDs and entity declarations are not allowed");
		else if (doc == NULL || !ctxt->wellFormed)
		{
			reason = psprintf("malformed XML: %s%s",
							  state.first_error[0] ? state.first_error : "the parser gave up",
							  strstr(state.first_error, "Extra content at the end") ?
							  " (a spool file holds one <SMS>: write one file per message)" : "");
			/* read again, only to find the list; NULLs first, for FINALLY */
			if (doc != NULL)
				xmlFreeDoc(doc);
			doc = NULL;
			xmlFreeParserCtxt(ctxt);
			ctxt = NULL;
			ctxt = spool_new_parser();
			doc = xmlCtxtReadMemory(ctxt, buf, len, "spool.xml", NULL,
									XML_PARSE_NONET | XML_PARSE_RECOVER);
		}
		else
			reason = spool_extract(doc, msg);
		if (reason != NULL && msg->list == NULL && doc != NULL && !state.dtd_seen)
			msg->list = spool_named_list(doc);
	}
	PG_FINALLY();
	{
		if (doc != NULL)
			xmlFreeDoc(doc);
		if (ctxt != NULL)
			xmlFreeParserCtxt(ctxt);
		xml_state = NULL;
		xmlSetStructuredErrorFunc(saved_sctx, saved_serror);
		xmlSetGenericErrorFunc(saved_gctx, saved_gerror);
	}
	PG_END_TRY();
	return reason;
}

/*
 * Reads the file examined with lstat() into *buf, through a descriptor
 * that is surely that regular file; returns why it is refused, or NULL.
 * *buf is set only when the whole file was read: a file older than
 * smsdispatch.spool_max_age is read all the same (and refused), so that
 * its refusal can tell whether it was an alarm.
 */
static char *
spool_read(const char *path, const struct stat *st, char **buf, int *len)
{
	struct stat opened;
	int			fd;
	ssize_t		got = 0;
	char	   *data;
	int			read_len = 0;

	*buf = NULL;
	if (S_ISLNK(st->st_mode))
		return pstrdup("the file is a symbolic link; spool files must be regular files");
	if (!S_ISREG(st->st_mode))
		return pstrdup("not a regular file");
	if (st->st_size > SPOOL_MAX_FILE_SIZE)
		return psprintf("the file has %lld bytes, more than the %d a spool file may have",
						(long long) st->st_size, SPOOL_MAX_FILE_SIZE);

	fd = OpenTransientFile(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | PG_BINARY);
	if (fd < 0)
	{
		const char *user;
		char	   *errstr;

		if (errno == ELOOP)
			return pstrdup("the file is a symbolic link; spool files must be regular files");
		if (errno != EACCES)
			return psprintf("could not open the file: %s", strerror(errno));
		user = get_user_name(&errstr);
		return psprintf("could not open the file: %s; the server runs as user \"%s\", which must be able to read it (give the file the spool directory's group and mode 0640)",
						strerror(EACCES), user ? user : "?");
	}
	if (fstat(fd, &opened) != 0 || opened.st_ino != st->st_ino ||
		opened.st_dev != st->st_dev || !S_ISREG(opened.st_mode))
	{
		CloseTransientFile(fd);
		return pstrdup("the file was replaced while it was being opened");
	}

	data = palloc(SPOOL_MAX_FILE_SIZE + 1);
	while (read_len <= SPOOL_MAX_FILE_SIZE &&
		   (got = read(fd, data + read_len, SPOOL_MAX_FILE_SIZE + 1 - read_len)) > 0)
		read_len += got;
	if (got < 0)
	{
		char	   *reason = psprintf("could not read the file: %s", strerror(errno));

		CloseTransientFile(fd);
		return reason;
	}
	CloseTransientFile(fd);
	if (read_len > SPOOL_MAX_FILE_SIZE)
		return psprintf("the file has more than the %d bytes a spool file may have",
						SPOOL_MAX_FILE_SIZE);
	if (read_len != opened.st_size)
		return pstrdup("the file changed size while it was read; writers must rename a complete file into the directory");
	*buf = data;
	*len = read_len;
	if (st->st_mtime < time(NULL) - sms_spool_max_age_s)
		return psprintf("the file was last modified %s, longer ago than smsdispatch.spool_max_age (%d s); it is not sent",
						timestamptz_to_str(time_t_to_timestamptz(st->st_mtime)),
						sms_spool_max_age_s);
	return NULL;
}

/* Text datum of a UTF-8 string from libxml2, in the server's encoding. */
static Datum
utf8_text(const char *s)
{
	return CStringGetTextDatum(pg_any_to_server(s, strlen(s), PG_UTF8));
}

/*
 * Errors that say nothing about the file but about another session: a lock
 * it held too long, a deadlock or serialization failure with it, a statement
 * canceled. The file stays in the spool directory for a later pass and the
 * pass goes on with the next files.
 */
static bool
conflict_error(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
		sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE ||
		sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
		sqlerrcode == ERRCODE_QUERY_CANCELED;
}

/*
 * Errors that say nothing about the file but about the server (out of
 * memory or disk, an internal error, a shutdown): they end the pass, and the
 * file stays in the spool directory too.
 */
static bool
transient_error(int sqlerrcode)
{
	int			category = ERRCODE_TO_CATEGORY(sqlerrcode);

	return category == ERRCODE_TRANSACTION_ROLLBACK ||
		category == ERRCODE_INSUFFICIENT_RESOURCES ||
		category == ERRCODE_OPERATOR_INTERVENTION ||
		category == ERRCODE_SYSTEM_ERROR ||
		category == ERRCODE_INTERNAL_ERROR;
}

/* Calls smsdispatch.spool_enqueue() for a parsed file; see there. */
static char *
spool_call_enqueue(const char *name, const struct stat *st, const char *buf,
				   int len, const SpoolMessage *msg)
{
	Oid			types[9] = {TEXTOID, INT8OID, TIMESTAMPTZOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTARRAYOID, TEXTOID, TEXTOID};
	Datum		values[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	char		md5[33];
	const char *errstr = NULL;
	bool		isnull;
	Datum		result;
	char	   *outcome;
	int			ret;

	if (!pg_md5_hash(buf, len, md5, &errstr))
		elog(ERROR, "smsdispatch: could not compute MD5 of a spool file: %s", errstr);
	values[0] = CStringGetTextDatum(name);
	values[1] = Int64GetDatum((int64) st->st_size);
	values[2] = TimestampTzGetDatum(time_t_to_timestamptz(st->st_mtime) +
									st->st_mtim.tv_nsec / 1000);
	values[3] = CStringGetTextDatum(md5);
	if (msg->list)
		values[4] = utf8_text(msg->list);
	else
		nulls[4] = 'n';
	values[5] = utf8_text(msg->body);
	if (msg->phones != NIL)
	{
		Datum	   *phones = palloc(sizeof(Datum) * list_length(msg->phones));
		ListCell   *lc;
		int			i = 0;

		foreach(lc, msg->phones)
			phones[i++] = utf8_text(lfirst(lc));
		values[6] = PointerGetDatum(construct_array(phones, i, TEXTOID, -1, false,
													TYPALIGN_INT));
	}
	else
		nulls[6] = 'n';
	if (msg->type)
		values[7] = utf8_text(msg->type);
	else
		nulls[7] = 'n';
	if (msg->channel)
		values[8] = utf8_text(msg->channel);
	else
		nulls[8] = 'n';

	ret = SPI_execute_with_args("SELECT smsdispatch.spool_enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9)",
								9, types, values, nulls, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "smsdispatch: importing a spool file failed: %s",
			 SPI_result_code_string(ret));
	result = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	outcome = isnull ? NULL : TextDatumGetCString(result);
	SPI_freetuptable(SPI_tuptable);
	return outcome;
}

/*
 * Imports a parsed file in a subtransaction: a file the database refuses
 * (unknown list, bad phone, text too long) is rolled back alone and its
 * error becomes the reason. Sets *outcome to what was done (NULL when the
 * file was imported before); returns the reason or NULL. An error that is
 * not the file's (see conflict_error and transient_error) is no reason: it
 * is logged as a WARNING naming the file, which stays where it is, and
 * either sets *retry (the pass goes on) or is thrown again (it ends).
 */
static char *
spool_import_parsed(const char *name, const struct stat *st, const char *buf,
					int len, const SpoolMessage *msg, char **outcome,
					bool *retry)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *volatile reason = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		char	   *done = spool_call_enqueue(name, st, buf, len, msg);

		MemoryContextSwitchTo(cxt);
		*outcome = done ? pstrdup(done) : NULL;
		sms_subxact_release(cxt, owner);
	}
	PG_CATCH();
	{
		ErrorData  *edata = sms_subxact_abort(cxt, owner);
		bool		conflict = conflict_error(edata->sqlerrcode);

		if (conflict || transient_error(edata->sqlerrcode))
		{
			ereport(WARNING,
					(errcode(edata->sqlerrcode),
					 errmsg("smsdispatch: spool file \"%s\" stays in the spool directory and is tried again on a later pass: %s",
							name, edata->message)));
			if (!conflict)
				ReThrowError(edata);
			*retry = true;
		}
		else
			reason = edata->hint ?
				psprintf("%s (%s)", edata->message, edata->hint) : pstrdup(edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return reason;
}

/*
 * A list name read from a refused file, as its WARNING, its record and its
 * NOTIFY show it: its first SPOOL_LIST_SHOWN characters (list names have at
 * most 63; a file may hold 64 kB), converted to the server's encoding when
 * that can hold them, else with '?' for each byte that is not ASCII, so
 * that the refusal cannot itself fail on the name.
 */
static char *
spool_list_shown(const char *list)
{
	int			len = pg_encoding_mbcliplen(PG_UTF8, list, strlen(list), SPOOL_LIST_SHOWN);
	char	   *shown = pnstrdup(list, len);
	int			encoding = GetDatabaseEncoding();
	char	   *p;

	if (encoding == PG_UTF8 || encoding == PG_SQL_ASCII || pg_is_ascii(shown))
		return pg_any_to_server(shown, len, PG_UTF8);
	for (p = shown; *p; p++)
		if (IS_HIGHBIT_SET(*p))
			*p = '?';
	return shown;
}

/*
 * Refuses a file: a WARNING naming it and why, and a row in
 * smsdispatch.spool_failure (smsdispatch.spool_refuse), in the transaction
 * that moves it to failed/ at COMMIT. A file that named a list would have
 * raised an alarm, and nobody has been sent it: its WARNING says so, and
 * spool_refuse sends NOTIFY smsdispatch_alarm. The WARNING holds the whole
 * reason, as the .reason file does: the server log is the admin's.
 */
static void
spool_refuse(const char *name, const struct stat *st, bool have_st,
			 const char *reason, const char *list)
{
	Oid			types[5] = {TEXTOID, INT8OID, TIMESTAMPTZOID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			ret;

	values[0] = CStringGetTextDatum(name);
	values[3] = CStringGetTextDatum(reason);
	if (have_st)
	{
		values[1] = Int64GetDatum((int64) st->st_size);
		values[2] = TimestampTzGetDatum(time_t_to_timestamptz(st->st_mtime));
	}
	else
		nulls[1] = nulls[2] = 'n';
	if (list != NULL)
	{
		char	   *shown = spool_list_shown(list);

		ereport(WARNING,
				(errmsg("smsdispatch: spool file \"%s\" raised no alarm for list \"%s\" and goes to failed/: %s",
						name, shown, reason),
				 errhint("Nobody has been sent this alarm. Correct the file and drop it into the spool directory again.")));
		values[4] = CStringGetTextDatum(shown);
	}
	else
	{
		ereport(WARNING,
				(errmsg("smsdispatch: spool file \"%s\" goes to failed/: %s", name, reason)));
		nulls[4] = 'n';
	}
	ret = SPI_execute_with_args("SELECT smsdispatch.spool_refuse($1, $2, $3, $4, $5)",
								5, types, values, nulls, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "smsdispatch: recording a refused spool file failed: %s",
			 SPI_result_code_string(ret));
}

/* Imports dir/name, or decides it goes to failed/; the move waits for COMMIT. */
static void
spool_import_file(const char *dir, const struct stat *dir_st, const char *name,
				  SmsPassSummary *summary)
{
	char	   *path = psprintf("%s/%s", dir, name);
	struct stat st;
	SpoolMessage msg;
	char	   *buf = NULL;
	int			len = 0;
	char	   *reason;
	char	   *outcome = NULL;
	bool		have_st = false;
	bool		retry = false;

	memset(&msg, 0, sizeof(msg));
	if (lstat(path, &st) != 0)
	{
		if (errno == ENOENT)
			return;				/* taken by another importer */
		reason = psprintf("could not examine the file: %s", strerror(errno));
	}
	else
	{
		have_st = true;
		reason = spool_read(path, &st, &buf, &len);
		/* a file refused by its age is parsed too: was it an alarm? */
		if (buf != NULL)
		{
			char	   *parse_reason = spool_parse(buf, len, &msg);

			if (reason == NULL)
				reason = parse_reason;
		}
		if (reason == NULL)
			reason = spool_import_parsed(name, &st, buf, len, &msg, &outcome, &retry);
	}
	if (retry)
		return;

	if (reason != NULL)
	{
		spool_refuse(name, &st, have_st, reason, msg.list);
		spool_schedule_move(dir, dir_st, name, "failed", reason);
		summary->spool_failed++;
		return;
	}
	if (outcome != NULL)
	{
		ereport(LOG,
				(errmsg("smsdispatch: imported spool file \"%s\": %s", name, outcome)));
		summary->spool_imported++;
	}
	spool_schedule_move(dir, dir_st, name, "processed", NULL);
}

/* Spool files are *.xml; a writer's temporary or hidden name is not one. */
static bool
spool_name(const char *name)
{
	size_t		len = strlen(name);

	return name[0] != '.' && len > 4 && strcmp(name + len - 4, ".xml") == 0;
}

/* list_sort comparator of file names. */
static int
name_cmp(const ListCell *a, const ListCell *b)
{
	return strcmp(lfirst(a), lfirst(b));
}

/*
 * Creates dir/sub when missing, with the spool directory's group and group
 * rights; false (with a WARNING) when it cannot.
 */
static bool
spool_subdir(const char *dir, const struct stat *dir_st, const char *sub)
{
	char	   *path = psprintf("%s/%s", dir, sub);

	if (mkdir(path, S_IRWXU) != 0)
	{
		if (errno == EEXIST)
			return true;
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("smsdispatch: could not create spool directory \"%s\": %m", path)));
		return false;
	}
	/* the umask took the group bits away; a foreign group is left as it is */
	if (chmod(path, spool_mode(dir_st, true)) != 0)
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("smsdispatch: could not set the mode of spool directory \"%s\": %m", path)));
	if (chown(path, (uid_t) -1, dir_st->st_gid) != 0)
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("smsdispatch: could not give spool directory \"%s\" the group of \"%s\": %m",
						path, dir),
				 errhint("Make the server's user a member of that group, or make the spool directory setgid.")));
	return true;
}

/*
 * The spool duty: imports up to SPOOL_BATCH *.xml files, oldest name first,
 * each in a subtransaction of the caller's transaction. A missing or
 * unusable directory is a WARNING, so the other duties still run.
 */
void
sms_spool_import(SmsPassSummary *summary, TimestampTz *next_due)
{
	const char *dirpath = sms_spool_dir;
	DIR		   *dir;
	struct dirent *de;
	List	   *names = NIL;
	ListCell   *lc;
	MemoryContext file_cxt;
	MemoryContext old;
	struct stat dir_st;
	int			n = 0;

	if (dirpath[0] == '\0')
		return;
	if (!callbacks_registered)
	{
		RegisterXactCallback(spool_xact_callback, NULL);
		RegisterSubXactCallback(spool_subxact_callback, NULL);
		callbacks_registered = true;
	}

	dir = AllocateDir(dirpath);
	if (dir == NULL)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("smsdispatch: could not open spool directory \"%s\": %m", dirpath),
				 errhint("Create it, writable by the server, or empty smsdispatch.spool_dir.")));
		return;
	}
	while ((de = ReadDir(dir, dirpath)) != NULL)
		if (spool_name(de->d_name))
			names = lappend(names, pstrdup(de->d_name));
	FreeDir(dir);
	if (names == NIL)
		return;
	if (stat(dirpath, &dir_st) != 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("smsdispatch: could not examine spool directory \"%s\": %m", dirpath)));
		return;
	}
	if (!spool_subdir(dirpath, &dir_st, "processed") ||
		!spool_subdir(dirpath, &dir_st, "failed"))
		return;
	list_sort(names, name_cmp);

	file_cxt = AllocSetContextCreate(CurrentMemoryContext, "smsdispatch spool file",
									 ALLOCSET_DEFAULT_SIZES);
	foreach(lc, names)
	{
		if (n++ == SPOOL_BATCH)
		{
			summary->more = true;
			break;
		}
		CHECK_FOR_INTERRUPTS();
		old = MemoryContextSwitchTo(file_cxt);
		spool_import_file(dirpath, &dir_st, lfirst(lc), summary);
		MemoryContextSwitchTo(old);
		MemoryContextReset(file_cxt);
	}
	MemoryContextDelete(file_cxt);
	list_free_deep(names);
}

/*-------------------------------------------------------------------------
 *
 * gsm_text.c
 *	  GSM 03.38 text rules: which alphabet a text needs and how many SMS
 *	  parts it takes, so that a message is refused before it costs money.
 *
 * A text that fits the GSM 7-bit default alphabet (with its extension table,
 * whose characters take an escape septet and so count 2) travels as GSM-7:
 * 160 septets in one SMS, 153 per part once concatenated. Anything else goes
 * as UCS-2: 70 UTF-16 units, 67 per part; characters beyond the BMP (emoji)
 * are surrogate pairs and count 2. A two-unit character is never split
 * between parts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_segments);
PG_FUNCTION_INFO_V1(sms_check_body);

/* code points of the GSM 7-bit default alphabet beyond printable ASCII */
static const pg_wchar gsm7_basic_extra[] = {
	0x00A3, 0x00A5, 0x00E8, 0x00E9, 0x00F9, 0x00EC, 0x00F2, 0x00C7,
	0x00D8, 0x00F8, 0x00C5, 0x00E5, 0x0394, 0x03A6, 0x0393, 0x039B,
	0x03A9, 0x03A0, 0x03A8, 0x03A3, 0x0398, 0x039E, 0x00C6, 0x00E6,
	0x00DF, 0x00C9, 0x00A4, 0x00A1, 0x00C4, 0x00D6, 0x00D1, 0x00DC,
	0x00A7, 0x00BF, 0x00E4, 0x00F6, 0x00F1, 0x00FC, 0x00E0
};

/* the extension table: escape septet + one more */
static const pg_wchar gsm7_extension[] = {
	0x000C, '^', '{', '}', '\\', '[', '~', ']', '|', 0x20AC
};

/*
 * Septets a character takes in GSM-7: 1 or 2, or 0 when the alphabet lacks
 * it and the text must go as UCS-2.
 */
static int
gsm7_septets(pg_wchar c)
{
	int			i;

	if (c == '\n' || c == '\r')
		return 1;
	for (i = 0; i < lengthof(gsm7_extension); i++)
		if (c == gsm7_extension[i])
			return 2;
	/* printable ASCII except the few the alphabet lacks or moved */
	if (c >= 0x20 && c < 0x7F)
		return (c == '`') ? 0 : 1;
	for (i = 0; i < lengthof(gsm7_basic_extra); i++)
		if (c == gsm7_basic_extra[i])
			return 1;
	return 0;
}

/* Counts parts as a phone splits them: a unit pair never straddles two. */
static int
count_parts(const int *costs, int n, int single_max, int part_max)
{
	int			total = 0;
	int			parts = 1;
	int			used = 0;
	int			i;

	for (i = 0; i < n; i++)
		total += costs[i];
	if (total <= single_max)
		return 1;
	for (i = 0; i < n; i++)
	{
		if (used + costs[i] > part_max)
		{
			parts++;
			used = 0;
		}
		used += costs[i];
	}
	return parts;
}

/*
 * Encoding, units and parts of a UTF-8 text. The input must be valid UTF-8
 * (any text datum of a UTF-8 database is).
 */
SmsSegments
sms_count_segments(const char *utf8, int len)
{
	SmsSegments result;
	pg_wchar   *chars = palloc((len + 1) * sizeof(pg_wchar));
	int			nchars;
	int		   *costs;
	int			i;

	nchars = pg_encoding_mb2wchar_with_len(PG_UTF8, utf8, chars, len);
	costs = palloc((nchars + 1) * sizeof(int));

	result.gsm7 = true;
	result.units = 0;
	for (i = 0; i < nchars; i++)
	{
		costs[i] = gsm7_septets(chars[i]);
		if (costs[i] == 0)
		{
			result.gsm7 = false;
			break;
		}
		result.units += costs[i];
	}

	if (result.gsm7)
		result.parts = count_parts(costs, nchars, 160, 153);
	else
	{
		result.units = 0;
		for (i = 0; i < nchars; i++)
		{
			costs[i] = (chars[i] > 0xFFFF) ? 2 : 1;
			result.units += costs[i];
		}
		result.parts = count_parts(costs, nchars, 70, 67);
	}

	pfree(costs);
	pfree(chars);
	return result;
}

/*
 * Refuses a body that is NULL, blank or longer than smsdispatch.max_parts,
 * naming the argument it came from.
 */
void
sms_check_body_text(const char *body, const char *field)
{
	SmsSegments seg;
	const char *p;

	if (body == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s of an SMS must not be NULL", field)));
	for (p = body; *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'; p++)
		;
	if (*p == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s of an SMS must not be empty", field)));

	if (GetDatabaseEncoding() != PG_UTF8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("smsdispatch needs a UTF8 database, this one is %s",
						GetDatabaseEncodingName())));

	seg = sms_count_segments(body, strlen(body));
	if (seg.parts > sms_max_parts)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s of %d %s units needs %d SMS parts, more than smsdispatch.max_parts (%d)",
						field, seg.units, seg.gsm7 ? "GSM-7" : "UCS-2",
						seg.parts, sms_max_parts),
				 errhint("Shorten the text, or raise smsdispatch.max_parts.")));
}

/* SQL: sms_segments(body) -> (encoding, units, parts) */
Datum
sms_segments(PG_FUNCTION_ARGS)
{
	text	   *body = PG_GETARG_TEXT_PP(0);
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	SmsSegments seg;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	if (GetDatabaseEncoding() != PG_UTF8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("smsdispatch needs a UTF8 database, this one is %s",
						GetDatabaseEncodingName())));

	seg = sms_count_segments(VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body));
	values[0] = CStringGetTextDatum(seg.gsm7 ? "GSM-7" : "UCS-2");
	values[1] = Int32GetDatum(seg.units);
	values[2] = Int32GetDatum(seg.parts);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* SQL: smsdispatch.check_body(body, field) */
Datum
sms_check_body(PG_FUNCTION_ARGS)
{
	const char *field = PG_ARGISNULL(1) ? "body" : text_to_cstring(PG_GETARG_TEXT_PP(1));

	sms_check_body_text(PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0)),
						field);
	PG_RETURN_VOID();
}

/*-------------------------------------------------------------------------
 *
 * send_window.c
 *	  Quiet hours: the send window of each SMS type
 *	  (smsdispatch.send_window_<type>), in days and hours of
 *	  smsdispatch.timezone.
 *
 * A window is "always", or "[DAYS ]HH:MM[:SS]-HH:MM[:SS]" where DAYS is a
 * day ("Mon"), a range ("Mon-Fri", "Fri-Mon") or a comma list of either
 * ("Mon-Fri,Sun"). An end before the start runs past midnight ("22:00-06:00"
 * opens on the days named and closes the next morning). smsdispatch.claim_sends
 * asks smsdispatch.send_window_opens(type) for each row it is about to send:
 * NULL while the window is open, else when it next opens, and the row waits
 * queued until then.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_send_window_opens);
PG_FUNCTION_INFO_V1(sms_send_window_next);

#define WINDOW_FORMAT \
	"A send window is \"always\" or hours such as \"08:00-21:00\", optionally after days: \"Mon-Fri 08:00-21:00\"."

static const char *const day_names[7] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

/* The day of the week (0 = Sunday) named by the three letters at *p. */
static int
parse_day(const char **p)
{
	for (int d = 0; d < 7; d++)
		if (pg_strncasecmp(*p, day_names[d], 3) == 0)
		{
			*p += 3;
			return d;
		}
	return -1;
}

/* HH:MM or HH:MM:SS at *p as seconds of the day (24:00 allowed), or -1. */
static int
parse_time(const char **p)
{
	int			parts[3] = {0, 0, 0};
	int			n = 0;

	for (;;)
	{
		if (!isdigit((unsigned char) (*p)[0]) || !isdigit((unsigned char) (*p)[1]))
			return -1;
		parts[n++] = ((*p)[0] - '0') * 10 + (*p)[1] - '0';
		*p += 2;
		if (n == 3 || **p != ':')
			break;
		(*p)++;
	}
	if (n < 2 || parts[0] > 24 || parts[1] > 59 || parts[2] > 59 ||
		(parts[0] == 24 && (parts[1] || parts[2])))
		return -1;
	return parts[0] * 3600 + parts[1] * 60 + parts[2];
}

/*
 * Parses a window. Returns false with *detail saying why when it is not
 * one; "always" gives always = true.
 */
bool
sms_parse_send_window(const char *spec, SmsSendWindow *w, const char **detail)
{
	const char *p = spec;

	memset(w, 0, sizeof(*w));
	while (*p == ' ')
		p++;
	if (pg_strcasecmp(p, "always") == 0)
	{
		w->always = true;
		return true;
	}
	if (isalpha((unsigned char) *p))
	{
		spec = p;
		for (;;)
		{
			int			from = parse_day(&p);
			int			to = from;

			if (from < 0 && p == spec)
			{
				*detail = WINDOW_FORMAT;
				return false;
			}
			if (from < 0)
			{
				*detail = "Days are Mon, Tue, Wed, Thu, Fri, Sat and Sun, as one day, a range (Mon-Fri) or a list (Mon-Fri,Sun).";
				return false;
			}
			if (*p == '-')
			{
				p++;
				to = parse_day(&p);
				if (to < 0)
				{
					*detail = "A range of days ends with a day: Mon-Fri.";
					return false;
				}
			}
			for (int d = from;; d = (d + 1) % 7)
			{
				w->days |= 1 << d;
				if (d == to)
					break;
			}
			if (*p != ',')
				break;
			p++;
		}
		if (*p != ' ')
		{
			*detail = "The days come before the hours, with a space: Mon-Fri 08:00-21:00.";
			return false;
		}
		while (*p == ' ')
			p++;
	}
	else
		w->days = 0x7f;
	w->start = parse_time(&p);
	if (w->start >= 0 && *p == '-')
	{
		p++;
		w->end = parse_time(&p);
	}
	else
		w->end = -1;
	while (*p == ' ')
		p++;
	if (w->start < 0 || w->end < 0 || *p != '\0')
	{
		*detail = WINDOW_FORMAT;
		return false;
	}
	if (w->start == w->end)
	{
		*detail = "A window that opens when it closes is empty; use \"always\" for no quiet hours.";
		return false;
	}
	return true;
}

/* The instant at secs seconds into the local day julian (a Julian day) in tz. */
static TimestampTz
local_instant(int julian, int secs, pg_tz *tz)
{
	struct pg_tm tm;
	int			tzoff;
	TimestampTz result;

	memset(&tm, 0, sizeof(tm));
	j2date(julian, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
	tm.tm_hour = secs / 3600;
	tm.tm_min = secs / 60 % 60;
	tm.tm_sec = secs % 60;
	/* 24:00 is the next day's midnight */
	if (tm.tm_hour == 24)
	{
		j2date(julian + 1, &tm.tm_year, &tm.tm_mon, &tm.tm_mday);
		tm.tm_hour = 0;
	}
	tzoff = DetermineTimeZoneOffset(&tm, tz);
	if (tm2timestamp(&tm, 0, &tzoff, &result) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("send window opening out of range")));
	return result;
}

/*
 * Whether window w is open at now in tz; when it is not, *opens is when it
 * next opens.
 */
bool
sms_send_window_open(const SmsSendWindow *w, pg_tz *tz, TimestampTz now,
					 TimestampTz *opens)
{
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;
	int			today;
	int			dow;
	int			secs;

	if (w->always)
		return true;
	if (timestamp2tm(now, &tzoff, &tm, &fsec, NULL, tz) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	today = date2j(tm.tm_year, tm.tm_mon, tm.tm_mday);
	dow = j2day(today);
	secs = tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;

	if (w->start < w->end)
	{
		if ((w->days & (1 << dow)) && secs >= w->start && secs < w->end)
			return true;
	}
	else if (((w->days & (1 << dow)) && secs >= w->start) ||
			 ((w->days & (1 << ((dow + 6) % 7))) && secs < w->end))
		return true;

	/* closed: the first opening after now, within a week and a day */
	for (int d = 0; d <= 7; d++)
	{
		TimestampTz at;

		if (!(w->days & (1 << ((dow + d) % 7))))
			continue;
		at = local_instant(today + d, w->start, tz);
		if (at > now)
		{
			*opens = at;
			return false;
		}
	}
	elog(ERROR, "smsdispatch: send window never opens");
	return false;				/* keep the compiler quiet */
}

/*
 * SQL: smsdispatch.send_window_opens(type) -> NULL while the type's send
 * window is open at the transaction's now(), else when it next opens.
 */
Datum
sms_send_window_opens(PG_FUNCTION_ARGS)
{
	char	   *type = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const char *window = sms_send_window_setting(type);
	const char *detail;
	SmsSendWindow w;
	TimestampTz opens;

	if (window == NULL)
		PG_RETURN_NULL();
	if (!sms_parse_send_window(window, &w, &detail))
		elog(ERROR, "smsdispatch: bad send window \"%s\" of type %s", window, type);
	if (sms_send_window_open(&w, sms_timezone_tz(), GetCurrentTransactionStartTimestamp(),
							 &opens))
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(opens);
}

/*
 * SQL: smsdispatch.send_window_next(send_window, at) -> NULL when the window
 * is open at at, else when it next opens, in smsdispatch.timezone: for
 * trying a window before setting it.
 */
Datum
sms_send_window_next(PG_FUNCTION_ARGS)
{
	char	   *window = text_to_cstring(PG_GETARG_TEXT_PP(0));
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(1);
	const char *detail;
	SmsSendWindow w;
	TimestampTz opens;

	if (!sms_parse_send_window(window, &w, &detail))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid send window \"%s\"", window),
				 errdetail("%s", detail)));
	if (sms_send_window_open(&w, sms_timezone_tz(), at, &opens))
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(opens);
}

/*-------------------------------------------------------------------------
 *
 * log.c
 *	  The sidecar's log: one line per event on stderr, with the UTC time,
 *	  never a phone number or the text of an SMS.
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#include "http.h"

static const char *const level_words[] = {"LOG", "WARNING", "ERROR", "FATAL"};

/* Writes one line: UTC time with milliseconds, the level, the message. */
void
log_msg(LogLevel level, const char *fmt,...)
{
	struct timeval now;
	struct tm	tm;
	char		stamp[32];
	va_list		ap;

	gettimeofday(&now, NULL);
	gmtime_r(&now.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(stderr, "%s.%03d UTC smsdispatch-http %s:  ", stamp,
			(int) (now.tv_usec / 1000), level_words[level]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

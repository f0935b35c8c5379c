/*-------------------------------------------------------------------------
 *
 * log.c
 *	  The sidecar's log: one line per event, to --log FILE (reopened on
 *	  SIGHUP so that logrotate can move it) or to stderr.
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the Free
 * Software Foundation; either version 2 of the License, or (at your option)
 * any later version (libgammu, which it links, is GPL-2.0-or-later).
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "modem.h"

static FILE *log_file = NULL;
static const char *log_path = NULL;
static const char *log_name = "";

static const char *const level_words[] = {
	"DEBUG", "LOG", "WARNING", "ERROR", "FATAL"
};

/* Opens the log; without a path the log is stderr. */
void
log_open(const char *path, const char *name)
{
	log_path = path;
	log_name = name;
	log_reopen();
}

/*
 * Reopens the log file under its name. When that fails the log goes on to
 * stderr, and says so there.
 */
void
log_reopen(void)
{
	FILE	   *f;

	if (log_path == NULL)
		return;
	f = fopen(log_path, "a");
	if (f == NULL)
	{
		fprintf(stderr, "smsdispatch-modem: could not open log file \"%s\": %s\n",
				log_path, strerror(errno));
		return;
	}
	setvbuf(f, NULL, _IOLBF, 0);
	if (log_file != NULL)
		fclose(log_file);
	log_file = f;
}

/* Closes the log file at exit. */
void
log_close(void)
{
	if (log_file != NULL)
		fclose(log_file);
	log_file = NULL;
}

/* Writes one line: UTC time with milliseconds, the modem name, the level. */
void
log_msg(LogLevel level, const char *fmt,...)
{
	FILE	   *out = log_file ? log_file : stderr;
	struct timeval now;
	struct tm	tm;
	char		stamp[32];
	va_list		ap;

	gettimeofday(&now, NULL);
	gmtime_r(&now.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	fprintf(out, "%s.%03d UTC [%s] %s:  ", stamp, (int) (now.tv_usec / 1000),
			log_name, level_words[level]);
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
	fflush(out);
}

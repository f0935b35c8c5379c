/*-------------------------------------------------------------------------
 *
 * secrets.c
 *	  The IP2SMS password, read from the file smsdispatch.ip2sms_password_file.
 *
 * A password kept in a setting is not secret: members of
 * pg_read_all_settings (pg_monitor, the usual exporter role) read every
 * setting, and a reload logs each changed value. So the setting names a
 * file, and only the worker reads the file. The file is checked as libpq
 * checks ~/.pgpass: a regular file of the server's user that neither the
 * group nor others may read or write; and, since the worker must never
 * block on it, not a symbolic link, opened without blocking and checked
 * again through the opened descriptor (open_password_file). The worker
 * looks at the file once a second (and at once after a SIGHUP) and reads
 * it again when it changed, so a new password needs no restart. Nothing of
 * the file's contents is ever logged.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "smsdispatch.h"

/* a password longer than this is not a password */
#define PASSWORD_FILE_MAX	1024

/* how often the worker looks at an unchanged setting's file */
#define PASSWORD_CHECK_MS	1000

/* the file the cached password came from, to tell when it changed */
typedef struct PasswordSource
{
	char	   *path;
	dev_t		dev;
	ino_t		ino;
	mode_t		mode;
	off_t		size;
	struct timespec mtime;
	struct timespec ctime;
} PasswordSource;

static PasswordSource source;
static char *password = NULL;
static bool usable = true;
/* why the file cannot be used, for smsdispatch.channel_health; never its contents */
static char problem_text[MAXPGPATH + 128];
static TimestampTz last_check = 0;

/*
 * Opens the password file at path and says what is wrong with it, or
 * returns NULL and leaves *fd open for reading; fills *st (zeroes where
 * there is no file). The one rule for the setting's check hook and the
 * worker's refresh. The name is looked at first, so that a FIFO or a
 * device is never opened; then it is opened without following a symbolic
 * link and without blocking, and what was opened is checked again through
 * its descriptor: a name swapped between the look and the open (for a
 * symbolic link to a FIFO, whose open() would wait for a writer for ever
 * and stall the worker) is refused, not read.
 */
static char *
open_password_file(const char *path, int *fd, struct stat *st)
{
	char	   *problem = NULL;

	*fd = -1;
	memset(st, 0, sizeof(*st));
	if (lstat(path, st) != 0)
		return psprintf("could not stat it: %m");
	if (S_ISLNK(st->st_mode))
		return pstrdup("it is a symbolic link");
	if (!S_ISREG(st->st_mode))
		return pstrdup("it is not a regular file");
	*fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (*fd < 0)
		return errno == ELOOP ? pstrdup("it is a symbolic link") :
			psprintf("could not open it: %m");
	if (fstat(*fd, st) != 0)
		problem = psprintf("could not stat it: %m");
	else if (!S_ISREG(st->st_mode))
		problem = pstrdup("it is not a regular file");
	else if (st->st_uid != geteuid())
		problem = psprintf("it belongs to user id %u, not to the server's user (user id %u)",
						   (unsigned int) st->st_uid, (unsigned int) geteuid());
	else if ((st->st_mode & (S_IRWXG | S_IRWXO)) != 0)
		problem = psprintf("its mode %04o lets the group or others at it",
						   (unsigned int) (st->st_mode & 07777));
	else if (st->st_size > PASSWORD_FILE_MAX)
		problem = psprintf("it is larger than %d bytes", PASSWORD_FILE_MAX);
	if (problem != NULL)
	{
		close(*fd);
		*fd = -1;
	}
	return problem;
}

/* GUC check hook of smsdispatch.ip2sms_password_file. */
bool
sms_check_password_file(char **newval, void **extra, GucSource src)
{
	struct stat st;
	char	   *problem;
	int			fd;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	problem = open_password_file(*newval, &fd, &st);
	if (problem == NULL)
	{
		close(fd);
		return true;
	}
	GUC_check_errmsg("cannot use password file \"%s\": %s", *newval, problem);
	GUC_check_errhint("The file must be a regular file of the server's user, not a symbolic link, with mode 0600 or less: chmod 0600 %s",
					  *newval);
	return false;
}

/* Forgets the cached password, overwriting it first. */
static void
forget_password(void)
{
	sms_forget_secret(password);
	password = NULL;
}

/*
 * Reads the first line of the open file fd into *out (in TopMemoryContext), at most
 * PASSWORD_FILE_MAX bytes of it (the file may have grown since its size
 * was checked); a problem, or NULL.
 */
static char *
read_password(int fd, char **out)
{
	char		buf[PASSWORD_FILE_MAX + 1];
	size_t		len = 0;
	char	   *problem = NULL;

	while (len < sizeof(buf))
	{
		ssize_t		n = read(fd, buf + len, sizeof(buf) - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
		{
			problem = psprintf("could not read it: %m");
			break;
		}
		if (n == 0)
			break;
		len += n;
	}
	if (problem == NULL && len > PASSWORD_FILE_MAX)
		problem = psprintf("it is larger than %d bytes", PASSWORD_FILE_MAX);
	if (problem == NULL)
	{
		buf[len] = '\0';
		buf[strcspn(buf, "\r\n")] = '\0';
		if (buf[0] == '\0')
			problem = pstrdup("its first line is empty");
		else
			*out = MemoryContextStrdup(TopMemoryContext, buf);
	}
	explicit_bzero(buf, sizeof(buf));
	return problem;
}

static inline bool
same_time(struct timespec a, struct timespec b)
{
	return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/*
 * Makes the cached password current; false when the file cannot be used (a
 * WARNING said why, once per change of the file). The worker calls it
 * between I/O events; the file itself is looked at once a second at most
 * (at once when the setting names another file). No file configured means
 * no password.
 */
bool
sms_ip2sms_password_refresh(void)
{
	const char *path = sms_ip2sms_password_file;
	struct stat st;
	char	   *problem;
	int			fd;
	TimestampTz now;

	if (path[0] == '\0')
	{
		forget_password();
		usable = true;
		return true;
	}
	now = GetCurrentTimestamp();
	if (source.path != NULL && strcmp(source.path, path) == 0 &&
		!TimestampDifferenceExceeds(last_check, now, PASSWORD_CHECK_MS))
		return usable;
	last_check = now;

	/* unchanged, usable or not: nothing to read, nothing to say again */
	problem = open_password_file(path, &fd, &st);
	if (source.path != NULL && strcmp(source.path, path) == 0 &&
		source.dev == st.st_dev && source.ino == st.st_ino &&
		source.mode == st.st_mode && source.size == st.st_size &&
		same_time(source.mtime, st.st_mtim) && same_time(source.ctime, st.st_ctim))
	{
		if (fd >= 0)
			close(fd);
		if (problem != NULL)
			pfree(problem);
		return usable;
	}

	forget_password();
	if (problem == NULL)
	{
		problem = read_password(fd, &password);
		close(fd);
	}
	if (source.path != NULL)
		pfree(source.path);
	source.path = MemoryContextStrdup(TopMemoryContext, path);
	source.dev = st.st_dev;
	source.ino = st.st_ino;
	source.mode = st.st_mode;
	source.size = st.st_size;
	source.mtime = st.st_mtim;
	source.ctime = st.st_ctim;
	usable = (problem == NULL);
	problem_text[0] = '\0';
	if (!usable)
	{
		snprintf(problem_text, sizeof(problem_text),
				 "cannot use password file \"%s\": %s", path, problem);
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("smsdispatch: IP2SMS messages stay queued: %s", problem_text),
				 errhint("Give smsdispatch.ip2sms_password_file a file of the server's user, not a symbolic link, with mode 0600 holding the password on its first line.")));
		pfree(problem);
	}
	return usable;
}

/* Why the last refresh found the password file unusable ("" when it did not). */
const char *
sms_ip2sms_password_problem(void)
{
	return problem_text;
}

/* Makes the next refresh look at the file at once; after a reload. */
void
sms_ip2sms_password_reloaded(void)
{
	last_check = 0;
}

/* The password for the gateway's Basic authentication ("" for none). */
const char *
sms_ip2sms_password(void)
{
	return password != NULL ? password : "";
}

/*
 * The password in the file at path, checked by the rules of
 * smsdispatch.ip2sms_password_file, in TopMemoryContext (the caller frees
 * it with sms_forget_secret); NULL with *problem saying why the file cannot
 * be used (never what it holds). For the registered channels' password_file
 * options, read by the worker before each pass that sends.
 */
char *
sms_read_secret_file(const char *path, char **problem)
{
	struct stat st;
	char	   *secret = NULL;
	int			fd;

	*problem = open_password_file(path, &fd, &st);
	if (*problem == NULL)
	{
		*problem = read_password(fd, &secret);
		close(fd);
	}
	return secret;
}

/* Overwrites and frees a secret of sms_read_secret_file. */
void
sms_forget_secret(char *secret)
{
	if (secret == NULL)
		return;
	explicit_bzero(secret, strlen(secret));
	pfree(secret);
}

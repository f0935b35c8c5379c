/*-------------------------------------------------------------------------
 *
 * token.c
 *	  The token that received SMS must carry when smsdispatch-http runs
 *	  with --mo-token-file: for setups where others than Kannel can reach
 *	  the listener. Delivery reports carry a token of their own, per row,
 *	  which the database checks (smsdispatch.delivery_report).
 *
 * The file is read once, at start, and must be the token's alone: a regular
 * file (not a symbolic link, a FIFO or a device), mode 0600 or less, at
 * most 1 kB, the token on its first line.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "http.h"

#define TOKEN_FILE_MAX	1024

static char *mo_token = NULL;

/* Reads the token from path; logs what is wrong and returns false. */
bool
mo_token_load(const char *path)
{
	char		buf[TOKEN_FILE_MAX + 1];
	struct stat st;
	ssize_t		n;
	int			fd;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
	{
		log_msg(LOG_FATAL, "could not open --mo-token-file \"%s\": %s", path, strerror(errno));
		return false;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077) != 0
		|| st.st_size > TOKEN_FILE_MAX)
	{
		log_msg(LOG_FATAL, "--mo-token-file \"%s\" must be a regular file of at most %d bytes with mode 0600 or less (it has mode %04o)",
				path, TOKEN_FILE_MAX, (unsigned) (st.st_mode & 07777));
		close(fd);
		return false;
	}
	n = read(fd, buf, TOKEN_FILE_MAX);
	close(fd);
	if (n < 0)
	{
		log_msg(LOG_FATAL, "could not read --mo-token-file \"%s\": %s", path, strerror(errno));
		return false;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (buf[0] == '\0')
	{
		log_msg(LOG_FATAL, "--mo-token-file \"%s\" holds no token on its first line", path);
		return false;
	}
	mo_token = strdup(buf);
	memset(buf, 0, sizeof(buf));
	return mo_token != NULL;
}

/* Whether received SMS must carry the token. */
bool
mo_token_required(void)
{
	return mo_token != NULL;
}

/*
 * Whether given is the token. The comparison takes the same time wherever
 * the first wrong byte is; only a wrong length, no secret, ends it early.
 */
bool
mo_token_matches(const char *given)
{
	size_t		len = strlen(mo_token);
	unsigned char diff = 0;
	size_t		i;

	if (given == NULL || strlen(given) != len)
		return false;
	for (i = 0; i < len; i++)
		diff |= (unsigned char) (given[i] ^ mo_token[i]);
	return diff == 0;
}

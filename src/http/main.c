/*-------------------------------------------------------------------------
 *
 * main.c
 *	  smsdispatch-http: takes Kannel's callbacks over HTTP and hands them to
 *	  the database.
 *
 *	  GET /kannel/dlr?id=ID&token=TOKEN&status=%d&answer=%A&at=%T
 *		a delivery report for sms_log row ID (smsdispatch.delivery_report)
 *	  GET /kannel/mo?from=%p&to=%P&text=%a[&token=TOKEN]
 *		a received SMS (sms_receive)
 *
 * Answers 200 only after the database committed, 503 while it cannot be
 * reached (Kannel, with http-request-retry set, tries again), 400 for a
 * malformed request, 403 for a token that does not match, 404 and 405 for
 * other paths and methods. libmicrohttpd's one internal thread serves every
 * request in turn, so one database connection serves them all; the
 * connection count and each request's size are bounded.
 *
 *-------------------------------------------------------------------------
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "http.h"

/* a request's line and headers together, beyond which it is refused */
#define REQUEST_MEMORY_LIMIT	(64 * 1024)
/* seconds an idle connection is kept */
#define CONNECTION_TIMEOUT		30
/* the longest phone number and SMS text taken */
#define PHONE_MAX				64
#define TEXT_MAX				8192
#define ANSWER_MAX				1024

typedef struct Options
{
	const char *listen;
	const char *db;
	const char *mo_token_file;
	int			max_connections;
} Options;

static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: smsdispatch-http --listen HOST:PORT --db CONNINFO [OPTION]...\n"
			"Takes Kannel's delivery reports and received SMS over HTTP and hands them\n"
			"to the smsdispatch database.\n\n"
			"  --listen HOST:PORT    address to listen on, e.g. 127.0.0.1:8089 or [::1]:8089\n"
			"  --db CONNINFO         libpq connection string or URI, e.g. 'service=smsdispatch'\n"
			"                        (multi-host with target_session_attrs=read-write works)\n"
			"  --mo-token-file FILE  received SMS must carry token=<the file's first line>\n"
			"                        (mode 0600 or less; read once, at start)\n"
			"  --max-connections N   concurrent HTTP connections (default 32)\n"
			"  --help                this text\n\n"
			"Paths:\n"
			"  /kannel/dlr?id=ID&token=TOKEN&status=%%d&answer=%%A&at=%%T  (dlr-url)\n"
			"  /kannel/mo?from=%%p&to=%%P&text=%%a                        (sms-service get-url)\n");
}

/* Parses a positive integer option; exits on junk. */
static int
parse_positive(const char *option, const char *value)
{
	char	   *end;
	long		v = strtol(value, &end, 10);

	if (*value == '\0' || *end != '\0' || v < 1 || v > INT_MAX)
	{
		fprintf(stderr, "smsdispatch-http: invalid value \"%s\" for %s (a positive integer)\n",
				value, option);
		exit(2);
	}
	return (int) v;
}

static void
parse_options(int argc, char **argv, Options *opts)
{
	static const struct option longopts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"db", required_argument, NULL, 'd'},
		{"mo-token-file", required_argument, NULL, 't'},
		{"max-connections", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	memset(opts, 0, sizeof(*opts));
	opts->max_connections = 32;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'l':
				opts->listen = optarg;
				break;
			case 'd':
				opts->db = optarg;
				break;
			case 't':
				opts->mo_token_file = optarg;
				break;
			case 'c':
				opts->max_connections = parse_positive("--max-connections", optarg);
				break;
			case 'h':
				usage(stdout);
				exit(0);
			default:
				usage(stderr);
				exit(2);
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "smsdispatch-http: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		exit(2);
	}
	if (opts->listen == NULL || opts->db == NULL)
	{
		fprintf(stderr, "smsdispatch-http: --listen and --db are required\n");
		usage(stderr);
		exit(2);
	}
}

/*
 * Parses HOST:PORT ([V6ADDR]:PORT for IPv6), numeric addresses only, into
 * addr; false when it is not one.
 */
static bool
parse_listen(const char *listen, struct sockaddr_storage *addr, bool *ipv6)
{
	char		host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(listen, ':');
	size_t		hostlen;
	char	   *end;
	long		port;

	if (colon == NULL)
		return false;
	port = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || port < 1 || port > 65535)
		return false;
	hostlen = colon - listen;
	if (hostlen >= 2 && listen[0] == '[' && listen[hostlen - 1] == ']')
	{
		listen++;
		hostlen -= 2;
	}
	if (hostlen == 0 || hostlen >= sizeof(host))
		return false;
	memcpy(host, listen, hostlen);
	host[hostlen] = '\0';

	memset(addr, 0, sizeof(*addr));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *) addr)->sin_addr) == 1)
	{
		((struct sockaddr_in *) addr)->sin_family = AF_INET;
		((struct sockaddr_in *) addr)->sin_port = htons((uint16_t) port);
		*ipv6 = false;
		return true;
	}
	if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *) addr)->sin6_addr) == 1)
	{
		((struct sockaddr_in6 *) addr)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *) addr)->sin6_port = htons((uint16_t) port);
		*ipv6 = true;
		return true;
	}
	return false;
}

/* Queues a short plain text answer. */
static enum MHD_Result
respond(struct MHD_Connection *connection, unsigned int status, const char *body)
{
	struct MHD_Response *response;
	enum MHD_Result ret;

	response = MHD_create_response_from_buffer(strlen(body), (void *) body,
											   MHD_RESPMEM_MUST_COPY);
	if (response == NULL)
		return MHD_NO;
	MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
		MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, "1");
	ret = MHD_queue_response(connection, status, response);
	MHD_destroy_response(response);
	return ret;
}

/* Answers what a database call came to; body is the answer of CALL_DONE. */
static enum MHD_Result
respond_call(struct MHD_Connection *connection, CallResult result, const char *body)
{
	switch (result)
	{
		case CALL_DONE:
			return respond(connection, MHD_HTTP_OK, body);
		case CALL_BAD_REQUEST:
			return respond(connection, MHD_HTTP_BAD_REQUEST, "refused: malformed\n");
		case CALL_FORBIDDEN:
			return respond(connection, MHD_HTTP_FORBIDDEN, "refused: token\n");
		case CALL_UNAVAILABLE:
			break;
	}
	return respond(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "database unavailable, try again\n");
}

/* A GET argument, or NULL when absent or longer than max bytes. */
static const char *
argument(struct MHD_Connection *connection, const char *name, size_t max)
{
	const char *v = MHD_lookup_connection_value(connection, MHD_GET_ARGUMENT_KIND, name);

	return (v != NULL && strlen(v) <= max) ? v : NULL;
}

/* Whether s is 1 to maxlen decimal digits. */
static bool
is_number(const char *s, size_t maxlen)
{
	size_t		len = s ? strspn(s, "0123456789") : 0;

	return len > 0 && len <= maxlen && s[len] == '\0';
}

/* GET /kannel/dlr: a delivery report. */
static enum MHD_Result
handle_dlr(struct MHD_Connection *connection)
{
	const char *id = argument(connection, "id", 19);
	const char *token = argument(connection, "token", 128);
	const char *status = argument(connection, "status", 3);
	const char *answer = argument(connection, "answer", ANSWER_MAX);
	const char *at = argument(connection, "at", 20);
	char		outcome[32];
	char		body[sizeof(outcome) + 1];
	CallResult	result;

	if (at != NULL && at[0] == '\0')
		at = NULL;
	if (!is_number(id, 19) || token == NULL || !is_number(status, 3)
		|| (at != NULL && !is_number(at, 20)))
	{
		log_msg(LOG_WARNING, "delivery report refused: id, token and status are required, id, status and at numbers");
		return respond(connection, MHD_HTTP_BAD_REQUEST,
					   "refused: id, token and status are required\n");
	}
	result = db_delivery_report(id, token, status, answer, at, outcome, sizeof(outcome));
	if (result != CALL_DONE)
		return respond_call(connection, result, NULL);
	log_msg(LOG_INFO, "delivery report for sms_log id %s, status %s: %s", id, status, outcome);
	snprintf(body, sizeof(body), "%s\n", outcome);
	return respond_call(connection, result, body);
}

/*
 * GET /kannel/mo: a received SMS. The answer is empty: Kannel would send a
 * reply SMS with whatever it says (unless its sms-service has
 * max-messages = 0).
 */
static enum MHD_Result
handle_mo(struct MHD_Connection *connection)
{
	const char *from = argument(connection, "from", PHONE_MAX);
	const char *text = argument(connection, "text", TEXT_MAX);
	char		outcome[32];
	CallResult	result;

	if (mo_token_required() && !mo_token_matches(argument(connection, "token", 1024)))
	{
		log_msg(LOG_WARNING, "received SMS refused: its token does not match --mo-token-file");
		return respond(connection, MHD_HTTP_FORBIDDEN, "refused: token\n");
	}
	if (from == NULL || from[0] == '\0' || text == NULL)
	{
		log_msg(LOG_WARNING, "received SMS refused: from and text are required (from at most %d bytes, text %d)",
				PHONE_MAX, TEXT_MAX);
		return respond(connection, MHD_HTTP_BAD_REQUEST, "refused: from and text are required\n");
	}
	result = db_receive(from, text, outcome, sizeof(outcome));
	if (result != CALL_DONE)
		return respond_call(connection, result, NULL);
	log_msg(LOG_INFO, "received SMS: %s", outcome);
	return respond_call(connection, result, "");
}

/* libmicrohttpd's access handler: every request. */
static enum MHD_Result
handle_request(void *cls, struct MHD_Connection *connection, const char *url,
			   const char *method, const char *version, const char *upload_data,
			   size_t *upload_data_size, void **req_cls)
{
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
		return respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");
	if (strcmp(url, "/kannel/dlr") == 0)
		return handle_dlr(connection);
	if (strcmp(url, "/kannel/mo") == 0)
		return handle_mo(connection);
	return respond(connection, MHD_HTTP_NOT_FOUND, "no such path\n");
}

/* libmicrohttpd's own complaints (a malformed request, say) go to our log. */
static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char		line[512];

	vsnprintf(line, sizeof(line), fmt, ap);
	log_msg(LOG_WARNING, "http: %.*s", (int) strcspn(line, "\n"), line);
}

int
main(int argc, char **argv)
{
	Options		opts;
	struct sockaddr_storage addr;
	bool		ipv6;
	struct MHD_Daemon *daemon;
	sigset_t	stop_signals;
	int			signo;

	parse_options(argc, argv, &opts);
	if (!parse_listen(opts.listen, &addr, &ipv6))
	{
		fprintf(stderr, "smsdispatch-http: --listen \"%s\" is not a numeric HOST:PORT\n",
				opts.listen);
		exit(2);
	}
	if (opts.mo_token_file != NULL && !mo_token_load(opts.mo_token_file))
		exit(1);
	db_init(opts.db);

	/* the server's thread inherits the mask: only main() takes these */
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	daemon = MHD_start_daemon(MHD_USE_AUTO | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG
							  | (ipv6 ? MHD_USE_IPv6 : 0),
							  0, NULL, NULL, handle_request, NULL,
							  MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
							  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr,
							  MHD_OPTION_CONNECTION_LIMIT, (unsigned int) opts.max_connections,
							  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) REQUEST_MEMORY_LIMIT,
							  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) CONNECTION_TIMEOUT,
							  MHD_OPTION_END);
	if (daemon == NULL)
	{
		log_msg(LOG_FATAL, "could not listen on %s", opts.listen);
		exit(1);
	}
	log_msg(LOG_INFO, "listening on %s", opts.listen);

	while (sigwait(&stop_signals, &signo) != 0)
		;
	log_msg(LOG_INFO, "signal %d: stopping", signo);
	MHD_stop_daemon(daemon);
	db_close();
	return 0;
}

/*-------------------------------------------------------------------------
 *
 * ip2sms_xml.c
 *	  IP2SMS request bodies and answer parsing.
 *
 * Requests are built by hand with every text and attribute XML-escaped (a
 * well-known client forgot this). Answers are parsed by libxml2 with network
 * access off, no entity substitution, no DTD at all, a size cap, and an error
 * handler of our own so that libxml2 never prints anything. Both answer
 * forms of the protocol are understood:
 *
 *	<status id=".." date=".."><state error="..">Accepted</state></status>
 *	<status date=".."><state>sending</state><detail><id>..</id>
 *		<state>Accepted</state></detail></status>
 *
 * This file depends on libc and libxml2 only (no PostgreSQL), so the fuzz
 * target under test/fuzz links it unchanged. Everything it allocates is
 * freed before it returns, on every path.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>

#include "ip2sms_xml.h"
#include "xml_compat.h"

/*
 * The gateway state vocabulary, defined here once for both languages and
 * both channels: the XML parser and the counters read it in C, and SQL
 * reads it through smsdispatch.gateway_status_class() (gateway_status.c):
 * the domain smsdispatch.gateway_status, the alarm trigger, the reports and
 * the modem's status reports. A pending word is polled again; delivered and
 * failed are final. refused: the answer to a send that the gateway did not
 * take (the SMS never left).
 */
const Ip2smsState ip2sms_states[] = {
	{"Accepted", IP2SMS_STATE_PENDING, 0},
	{"Enroute", IP2SMS_STATE_PENDING, 0},
	{"Delivered", IP2SMS_STATE_DELIVERED, 0},
	{"Expired", IP2SMS_STATE_FAILED, 0},
	{"Deleted", IP2SMS_STATE_FAILED, 0},
	{"Undeliverable", IP2SMS_STATE_FAILED, 0},
	{"Rejected", IP2SMS_STATE_FAILED, 1},
	{"Unknown", IP2SMS_STATE_PENDING, 0},
	{"Unaccepted", IP2SMS_STATE_FAILED, 1},
	{"Terminated", IP2SMS_STATE_FAILED, 0},
	{"Pending", IP2SMS_STATE_PENDING, 0}
};
const int	ip2sms_nstates = sizeof(ip2sms_states) / sizeof(ip2sms_states[0]);

/* the class names SQL sees, by Ip2smsStateClass */
const char *const ip2sms_state_class_names[] = {"pending", "delivered", "failed"};

/* Position of a state word in ip2sms_states, or -1 for a word not in it. */
int
ip2sms_state_index(const char *state)
{
	int			i;

	for (i = 0; i < ip2sms_nstates; i++)
		if (strcmp(state, ip2sms_states[i].word) == 0)
			return i;
	return -1;
}

/* Whether a row in this state is still polled: its class is pending. */
int
ip2sms_state_pollable(const char *state)
{
	int			i = ip2sms_state_index(state);

	return i >= 0 && ip2sms_states[i].state_class == IP2SMS_STATE_PENDING;
}

/* Whether a send answered with this state was taken by the gateway. */
int
ip2sms_state_accepted(const char *state)
{
	int			i = ip2sms_state_index(state);

	return i >= 0 && !ip2sms_states[i].refused;
}

/*
 * Length of s once escaped for XML text or attribute values; when out is
 * not NULL, also writes it there. Carriage returns are kept as &#13; (XML
 * would turn them into line feeds); other control characters XML 1.0 cannot
 * carry become '?'.
 */
static size_t
xml_escape(const char *s, char *out)
{
	size_t		n = 0;

	for (; *s; s++)
	{
		const char *rep = NULL;
		char		one[2] = {*s, '\0'};
		size_t		len;

		switch (*s)
		{
			case '&':
				rep = "&amp;";
				break;
			case '<':
				rep = "&lt;";
				break;
			case '>':
				rep = "&gt;";
				break;
			case '"':
				rep = "&quot;";
				break;
			case '\'':
				rep = "&apos;";
				break;
			case '\r':
				rep = "&#13;";
				break;
			default:
				if ((unsigned char) *s < 0x20 && *s != '\t' && *s != '\n')
					one[0] = '?';
				rep = one;
				break;
		}
		len = strlen(rep);
		if (out)
			memcpy(out + n, rep, len);
		n += len;
	}
	if (out)
		out[n] = '\0';
	return n;
}

/*
 * Joins pieces into one malloc'd string; odd pieces (1, 3, ...) are
 * XML-escaped, even ones copied as they are. NULL when out of memory.
 */
static char *
xml_join(const char *const *pieces, int npieces)
{
	size_t		total = 1;
	char	   *buf;
	char	   *p;
	int			i;

	for (i = 0; i < npieces; i++)
		total += (i % 2) ? xml_escape(pieces[i], NULL) : strlen(pieces[i]);
	buf = malloc(total);
	if (buf == NULL)
		return NULL;
	p = buf;
	for (i = 0; i < npieces; i++)
	{
		if (i % 2)
			p += xml_escape(pieces[i], p);
		else
		{
			size_t		len = strlen(pieces[i]);

			memcpy(p, pieces[i], len);
			p += len;
		}
	}
	*p = '\0';
	return buf;
}

/*
 * The body of a single-SMS send request (malloc'd; NULL when out of memory).
 * to is E.164; the protocol wants it without the "+". An empty validity is
 * left out so the gateway's default applies.
 */
char *
ip2sms_build_send(const char *to, const char *text, const char *source,
				  const char *validity)
{
	const char *pieces[] = {
		"<message><service id=\"single\" source=\"", source ? source : "",
		"\"", "",
		"", "",
		"/><to>", to[0] == '+' ? to + 1 : to,
		"</to><body content-type=\"text/plain\">", text,
		"</body></message>"
	};

	if (validity && validity[0])
	{
		pieces[2] = "\" validity=\"";
		pieces[3] = validity;
		pieces[4] = "\"";
	}
	return xml_join(pieces, sizeof(pieces) / sizeof(pieces[0]));
}

/* The body of a status request for one gateway id (malloc'd or NULL). */
char *
ip2sms_build_status(const char *gateway_id)
{
	const char *pieces[] = {"<request id=\"", gateway_id, "\">status</request>"};

	return xml_join(pieces, 3);
}

/*
 * Converts the protocol's RFC 1123 date ("Wed, 28 Mar 2007 12:35:00 +0300",
 * the weekday optional, GMT/UT/UTC/Z for +0000) into ISO 8601 that
 * timestamptz input takes without fail. Returns 0 on success, -1 when the
 * text is not such a date (iso is then "").
 */
int
ip2sms_parse_date(const char *rfc1123, char *iso, size_t isolen)
{
	static const char *const months[] = {
		"Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
	};
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	const char *p = rfc1123;
	const char *comma = strchr(p, ',');
	int			day, year, hour, min, sec, month, consumed = -1;
	char		mon[4], zone[8];
	int			zh = 0, zm = 0;
	char		sign = '+';

	iso[0] = '\0';
	if (comma)
		p = comma + 1;
	if (sscanf(p, " %2d %3s %4d %2d:%2d:%2d %7s %n", &day, mon, &year,
			   &hour, &min, &sec, zone, &consumed) != 7 || consumed < 0 ||
		p[consumed] != '\0')
		return -1;
	for (month = 0; month < 12; month++)
		if (strcmp(mon, months[month]) == 0)
			break;
	if (month == 12 || year < 1900 || day < 1 || day > mdays[month] ||
		(month == 1 && day == 29 &&
		 !(year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))) ||
		hour > 23 || hour < 0 || min > 59 || min < 0 || sec > 59 || sec < 0)
		return -1;
	if (strcmp(zone, "GMT") != 0 && strcmp(zone, "UT") != 0 &&
		strcmp(zone, "UTC") != 0 && strcmp(zone, "Z") != 0)
	{
		if ((zone[0] != '+' && zone[0] != '-') || strlen(zone) != 5 ||
			strspn(zone + 1, "0123456789") != 4)
			return -1;
		sign = zone[0];
		zh = (zone[1] - '0') * 10 + (zone[2] - '0');
		zm = (zone[3] - '0') * 10 + (zone[4] - '0');
		if (zh > 14 || zm > 59)
			return -1;
	}
	snprintf(iso, isolen, "%04d-%02d-%02d %02d:%02d:%02d%c%02d:%02d",
			 year, month + 1, day, hour, min, sec, sign, zh, zm);
	return 0;
}

/* Collects the first libxml2 error of a parse instead of printing it. */
static void
collect_xml_error(void *ctx, SmsXmlError error)
{
	Ip2smsAnswer *answer = ctx;

	if (answer->error[0] == '\0' && error && error->message)
	{
		size_t		len;

		snprintf(answer->error, sizeof(answer->error), "%s", error->message);
		len = strlen(answer->error);
		while (len > 0 && answer->error[len - 1] == '\n')
			answer->error[--len] = '\0';
	}
}

/* Silences libxml2's generic (unstructured) error channel. */
static void
ignore_generic_error(void *ctx, const char *msg,...)
{
}

/* The first child element of parent named name, or NULL. */
static xmlNodePtr
child_element(xmlNodePtr parent, const char *name)
{
	xmlNodePtr	n;

	if (parent == NULL)
		return NULL;
	for (n = parent->children; n; n = n->next)
		if (n->type == XML_ELEMENT_NODE && n->ns == NULL &&
			xmlStrcmp(n->name, (const xmlChar *) name) == 0)
			return n;
	return NULL;
}

/*
 * Copies value, trimmed of surrounding white space, into buf; frees value.
 * Returns -1 when it does not fit (buf is then "", or the value cut to fit
 * when truncate is set).
 */
static int
take_trimmed(xmlChar *value, char *buf, size_t buflen, int truncate)
{
	const char *s = (const char *) value;
	size_t		len;
	int			rc = 0;

	buf[0] = '\0';
	if (value == NULL)
		return 0;
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	len = strlen(s);
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' ||
					   s[len - 1] == '\n' || s[len - 1] == '\r'))
		len--;
	if (len >= buflen)
	{
		rc = -1;
		if (truncate)
		{
			/* cut at a character boundary of the UTF-8 text */
			len = buflen - 1;
			while (len > 0 && ((unsigned char) s[len] & 0xC0) == 0x80)
				len--;
			memcpy(buf, s, len);
			buf[len] = '\0';
		}
	}
	else
	{
		memcpy(buf, s, len);
		buf[len] = '\0';
	}
	xmlFree(value);
	return rc;
}

/* Reads the answer out of a parsed document; 0 or -1 with answer->error. */
static int
read_status(xmlDocPtr doc, Ip2smsAnswer *answer)
{
	xmlNodePtr	root = xmlDocGetRootElement(doc);
	xmlNodePtr	detail;
	xmlNodePtr	state;
	char		word[32];
	char		date[64];
	size_t		i;

#define FAIL(msg) do { snprintf(answer->error, sizeof(answer->error), "%s", msg); return -1; } while (0)

	if (doc->intSubset != NULL || doc->extSubset != NULL)
		FAIL("answer has a DOCTYPE");
	if (root == NULL || root->ns != NULL ||
		xmlStrcmp(root->name, (const xmlChar *) "status") != 0)
		FAIL("answer is not a <status> element");

	detail = child_element(root, "detail");
	if (take_trimmed(xmlGetNoNsProp(root, (const xmlChar *) "id"),
					 answer->id, sizeof(answer->id), 0) < 0)
		FAIL("gateway id is longer than 25 characters");
	if (answer->id[0] == '\0' &&
		take_trimmed(xmlNodeGetContent(child_element(detail, "id")),
					 answer->id, sizeof(answer->id), 0) < 0)
		FAIL("gateway id is longer than 25 characters");
	for (i = 0; answer->id[i]; i++)
		if (answer->id[i] < '0' || answer->id[i] > '9')
			FAIL("gateway id is not a digit string");

	state = child_element(detail, "state");
	if (state == NULL)
		state = child_element(root, "state");
	if (state == NULL)
		FAIL("answer has no <state>");
	if (take_trimmed(xmlNodeGetContent(state), word, sizeof(word), 0) < 0 ||
		ip2sms_state_index(word) < 0)
		FAIL("answer has an unknown state");
	answer->state = ip2sms_states[ip2sms_state_index(word)].word;
	/* an overlong error text is kept cut */
	(void) take_trimmed(xmlGetNoNsProp(state, (const xmlChar *) "error"),
						answer->error, sizeof(answer->error), 1);

	/* an unreadable date is no date: the state is what matters */
	if (take_trimmed(xmlGetNoNsProp(root, (const xmlChar *) "date"),
					 date, sizeof(date), 0) == 0 && date[0])
		(void) ip2sms_parse_date(date, answer->date, sizeof(answer->date));
	return 0;
#undef FAIL
}

/*
 * Parses one gateway answer. Returns 0 with answer filled in, or -1 with
 * answer->error saying why the text is not an answer.
 */
int
ip2sms_parse_answer(const char *buf, size_t len, Ip2smsAnswer *answer)
{
	xmlStructuredErrorFunc saved_serror = xmlStructuredError;
	void	   *saved_sctx = xmlStructuredErrorContext;
	xmlGenericErrorFunc saved_gerror = xmlGenericError;
	void	   *saved_gctx = xmlGenericErrorContext;
	xmlDocPtr	doc;
	int			rc;

	memset(answer, 0, sizeof(*answer));
	if (len == 0 || len > IP2SMS_ANSWER_MAX)
	{
		snprintf(answer->error, sizeof(answer->error),
				 len ? "answer is larger than %d bytes" : "answer is empty",
				 IP2SMS_ANSWER_MAX);
		return -1;
	}

	xmlSetStructuredErrorFunc(answer, collect_xml_error);
	xmlSetGenericErrorFunc(NULL, ignore_generic_error);
	doc = xmlReadMemory(buf, (int) len, "ip2sms-answer.xml", NULL,
						XML_PARSE_NONET | XML_PARSE_NOERROR |
						XML_PARSE_NOWARNING | XML_PARSE_NOCDATA);
	if (doc == NULL)
	{
		if (answer->error[0] == '\0')
			snprintf(answer->error, sizeof(answer->error), "answer is not XML");
		rc = -1;
	}
	else
	{
		answer->error[0] = '\0';
		rc = read_status(doc, answer);
		xmlFreeDoc(doc);
	}
	xmlSetStructuredErrorFunc(saved_sctx, saved_serror);
	xmlSetGenericErrorFunc(saved_gctx, saved_gerror);
	return rc;
}

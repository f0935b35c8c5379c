/*-------------------------------------------------------------------------
 *
 * kannel_request.c
 *	  The HTTP side of one request of the Kannel driver (kannel.c): the
 *	  sendsms URL it sends, and what Kannel's answer means (the outcome
 *	  words of the table in kannel.c's header).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "lib/stringinfo.h"

#include "smsdispatch.h"
#include "ip2sms.h"
#include "kannel_request.h"

/* libcurl could not give what the driver needs (it is out of memory). */
void
kannel_curl_failed(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("smsdispatch: could not set up libcurl for the Kannel channels: %s", what)));
}

/* Appends &key=value to buf, value URL-encoded. */
static void
append_param(StringInfo buf, CURL *easy, const char *key, const char *value)
{
	char	   *escaped = curl_easy_escape(easy, value, 0);

	if (escaped == NULL)
		kannel_curl_failed("curl_easy_escape");
	appendStringInfo(buf, "&%s=%s", key, escaped);
	curl_free(escaped);
}

/*
 * The sendsms URL of one SMS: who, what, in UTF-8 (UCS-2 where GSM-7
 * cannot carry the text), every delivery report to its row's callback URL
 * with its token. It holds the password.
 */
char *
kannel_sendsms_url(KannelChannel *ch, const char *password, Ip2smsRequest *req, CURL *easy)
{
	StringInfoData buf;
	StringInfoData dlr;
	SmsSegments seg = sms_count_segments(req->body, strlen(req->body));
	int			base_len = strlen(ch->opts.callback_url);

	while (base_len > 0 && ch->opts.callback_url[base_len - 1] == '/')
		base_len--;
	initStringInfo(&dlr);
	appendStringInfo(&dlr, "%.*s/kannel/dlr?id=%lld&token=%s&status=%%d&answer=%%A&at=%%T",
					 base_len, ch->opts.callback_url, (long long) req->id, req->token);

	initStringInfo(&buf);
	appendStringInfo(&buf, "%s%c", ch->opts.url, strchr(ch->opts.url, '?') ? '&' : '?');
	appendStringInfoString(&buf, "charset=UTF-8&dlr-mask=31");
	if (!seg.gsm7)
		appendStringInfoString(&buf, "&coding=2");
	append_param(&buf, easy, "username", ch->opts.username);
	append_param(&buf, easy, "password", password);
	append_param(&buf, easy, "to", req->phone);
	if (ch->opts.from != NULL)
		append_param(&buf, easy, "from", ch->opts.from);
	append_param(&buf, easy, "text", req->body);
	append_param(&buf, easy, "dlr-url", dlr.data);
	pfree(dlr.data);
	return buf.data;
}

/* curl's write callback: keeps the first KANNEL_ANSWER_MAX bytes. */
size_t
kannel_on_answer(char *data, size_t size, size_t nmemb, void *arg)
{
	KannelSend *s = arg;
	size_t		n = size * nmemb;
	size_t		room = KANNEL_ANSWER_MAX - s->answer_len;

	memcpy(s->answer + s->answer_len, data, Min(n, room));
	s->answer_len += Min(n, room);
	s->answer[s->answer_len] = '\0';
	return n;
}

/* Records a failure of the channel on this request and on its channel. */
void
kannel_channel_failed(KannelSend *s, const char *detail)
{
	s->req->outcome = IP2SMS_CHANNEL_FAILED;
	strlcpy(s->req->detail, detail, sizeof(s->req->detail));
	strlcpy(s->channel->error, detail, sizeof(s->channel->error));
	s->channel->failed++;
}

/*
 * Turns what came of one request into its outcome (see the file header).
 * result is curl's.
 */
void
kannel_classify(KannelSend *s, CURLcode result)
{
	Ip2smsRequest *req = s->req;
	long		http = 0;
	long		written = 0;
	char		detail[sizeof(req->detail)];

	curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &http);
	curl_easy_getinfo(s->easy, CURLINFO_REQUEST_SIZE, &written);
	s->answer[strcspn(s->answer, "\r\n")] = '\0';

	if (result != CURLE_OK)
	{
		const char *why = s->errbuf[0] ? s->errbuf : curl_easy_strerror(result);

		if (written > 0)
		{
			/* the SMS may be at Kannel: never sent again */
			req->outcome = IP2SMS_IN_FLIGHT;
			snprintf(req->detail, sizeof(req->detail),
					 "no answer from Kannel after the request was written (%s); it may have been sent: not re-sent",
					 why);
			/* and the channel hangs: probes only, until it answers */
			strlcpy(s->channel->error, req->detail, sizeof(s->channel->error));
			s->channel->failed++;
		}
		else
		{
			snprintf(detail, sizeof(detail), "Kannel cannot be reached: %s", why);
			kannel_channel_failed(s, detail);
		}
		return;
	}
	if (http == 403)
	{
		snprintf(detail, sizeof(detail),
				 "HTTP 403 from Kannel (%s): check the username and password_file of channel %s",
				 s->answer, s->channel->name);
		kannel_channel_failed(s, detail);
		s->channel->auth_failed = true;
		return;
	}
	if (http >= 500)
	{
		snprintf(detail, sizeof(detail), "HTTP %ld from Kannel: %s", http, s->answer);
		kannel_channel_failed(s, detail);
		return;
	}
	s->channel->answered++;
	if (http >= 200 && http < 300 &&
		(strncmp(s->answer, "0:", 2) == 0 || strncmp(s->answer, "3:", 2) == 0))
	{
		req->outcome = IP2SMS_ANSWERED;
		req->answer.state = "Accepted";
		return;
	}
	req->outcome = IP2SMS_REQUEST_FAILED;
	snprintf(req->detail, sizeof(req->detail), "Kannel refused the SMS: HTTP %ld %s",
			 http, s->answer);
}

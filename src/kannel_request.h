/*-------------------------------------------------------------------------
 *
 * kannel_request.h
 *	  Within the Kannel driver: its channels and requests, and the
 *	  requests' HTTP side (kannel_request.c) that the driver (kannel.c)
 *	  uses.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KANNEL_REQUEST_H
#define KANNEL_REQUEST_H

#include "postgres.h"

#include <curl/curl.h>

#include "lib/ilist.h"

#include "smsdispatch.h"
#include "ip2sms.h"

/* Kannel's sendsms answers are one short line */
#define KANNEL_ANSWER_MAX	1024

/* A channel's options as the registry has them. */
typedef struct KannelOptions
{
	char	   *url;
	char	   *username;
	char	   *password_file;
	char	   *from;
	char	   *callback_url;
	char	   *state;
	char	   *last_error;
} KannelOptions;

/* One registered Kannel channel, in kannel.c's kannel_cxt (see its header). */
typedef struct KannelChannel
{
	dlist_node	node;			/* in channels */
	char	   *name;			/* the key */
	MemoryContext options_cxt;	/* holds opts' strings and problem */
	KannelOptions opts;
	bool		listed;			/* in the registry at its last read */
	char	   *problem;		/* why the password file is refused */
	/* requests claimed whose outcomes are not in its published health */
	bool		unpublished;
	int			on_wire;		/* of its requests */
	TimestampTz claim_again;	/* when its next rows are due */
	int			answered;		/* requests Kannel answered (the channel works) */
	int			failed;			/* requests that failed on the channel */
	bool		auth_failed;	/* a 403 */
	char		error[SMS_CHANNEL_ERROR_LEN];	/* the last channel failure */
} KannelChannel;

/* One sendsms request on the wire, in its request's memory context. */
typedef struct KannelSend
{
	dlist_node	node;			/* in on_wire */
	KannelChannel *channel;
	Ip2smsRequest *req;
	CURL	   *easy;
	char		answer[KANNEL_ANSWER_MAX + 1];
	size_t		answer_len;
	char		errbuf[CURL_ERROR_SIZE];
} KannelSend;

extern void kannel_curl_failed(const char *what);
extern char *kannel_sendsms_url(KannelChannel *ch, const char *password,
								Ip2smsRequest *req, CURL *easy);
extern size_t kannel_on_answer(char *data, size_t size, size_t nmemb, void *arg);
extern void kannel_channel_failed(KannelSend *s, const char *detail);
extern void kannel_classify(KannelSend *s, CURLcode result);

#endif							/* KANNEL_REQUEST_H */

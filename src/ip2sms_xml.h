/*-------------------------------------------------------------------------
 *
 * ip2sms_xml.h
 *	  IP2SMS request bodies and answer parsing (see ip2sms-protocol in the
 *	  README). Plain C on top of libxml2, with no PostgreSQL dependency, so
 *	  that the fuzz target links it as it is.
 *
 *-------------------------------------------------------------------------
 */
#ifndef IP2SMS_XML_H
#define IP2SMS_XML_H

#include <stddef.h>

/* the longest gateway id we accept (the protocol says 7 to 25 digits) */
#define IP2SMS_ID_MAX		25
#define IP2SMS_ERROR_MAX	256
/* answers are a few hundred bytes; anything larger is not an answer */
#define IP2SMS_ANSWER_MAX	65536

typedef struct Ip2smsAnswer
{
	char		id[IP2SMS_ID_MAX + 1];	/* "" when the answer carries none */
	const char *state;			/* the state word (a static string) */
	char		error[IP2SMS_ERROR_MAX];	/* state/@error, or why parsing failed */
	char		date[32];		/* ISO 8601 form of @date, "" when empty */
} Ip2smsAnswer;

/*
 * Every state word of the protocol and its class (ip2sms_xml.c): the one
 * definition that C and SQL (smsdispatch.gateway_status_class) share.
 */
typedef enum Ip2smsStateClass
{
	IP2SMS_STATE_PENDING,		/* polled again */
	IP2SMS_STATE_DELIVERED,		/* final */
	IP2SMS_STATE_FAILED			/* final */
} Ip2smsStateClass;

typedef struct Ip2smsState
{
	const char *word;
	Ip2smsStateClass state_class;
	int			refused;		/* an answer to a send the gateway did not take */
} Ip2smsState;

extern const Ip2smsState ip2sms_states[];
extern const char *const ip2sms_state_class_names[];
extern const int ip2sms_nstates;
extern int	ip2sms_state_index(const char *state);
extern int	ip2sms_state_pollable(const char *state);
extern int	ip2sms_state_accepted(const char *state);

extern char *ip2sms_build_send(const char *to, const char *text,
							   const char *source, const char *validity);
extern char *ip2sms_build_status(const char *gateway_id);
extern int	ip2sms_parse_answer(const char *buf, size_t len, Ip2smsAnswer *answer);
extern int	ip2sms_parse_date(const char *rfc1123, char *iso, size_t isolen);

#endif							/* IP2SMS_XML_H */

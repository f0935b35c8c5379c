/*-------------------------------------------------------------------------
 *
 * gateway_status.c
 *	  The gateway state vocabulary (ip2sms_states in ip2sms_xml.c) as SQL
 *	  sees it: smsdispatch.gateway_status_class(word).
 *
 * The domain smsdispatch.gateway_status, the alarm trigger, the reports and
 * the modem's status reports classify a state word through this function,
 * so that the words and their classes are written down once, in C, for the
 * parser, the counters and SQL alike.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"

#include "ip2sms_xml.h"
#include "pg_compat.h"

PG_FUNCTION_INFO_V1(sms_gateway_status_class);

/*
 * smsdispatch.gateway_status_class(word text) RETURNS text: 'pending' (the
 * SMS is polled again), 'delivered' or 'failed' (both final), NULL for a
 * word that is not a gateway state. IMMUTABLE: the vocabulary changes only
 * with the extension's version. Compares the bytes in place, without a
 * copy, since the domain's CHECK calls it for every status written.
 */
Datum
sms_gateway_status_class(PG_FUNCTION_ARGS)
{
	text	   *word = PG_GETARG_TEXT_PP(0);
	const char *p = VARDATA_ANY(word);
	size_t		len = VARSIZE_ANY_EXHDR(word);
	int			i;

	for (i = 0; i < ip2sms_nstates; i++)
	{
		const char *w = ip2sms_states[i].word;

		if (strlen(w) == len && memcmp(w, p, len) == 0)
			PG_RETURN_TEXT_P(cstring_to_text(ip2sms_state_class_names[ip2sms_states[i].state_class]));
	}
	PG_RETURN_NULL();
}

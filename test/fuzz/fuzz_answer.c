/*
 * libFuzzer target for the IP2SMS answer parser (src/ip2sms_xml.c): any
 * byte string must parse or be refused without a crash, a leak or undefined
 * behaviour; a parsed answer must satisfy what the worker relies on.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>

#include "ip2sms_xml.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	Ip2smsAnswer answer;
	char		iso[32];
	char	   *text;

	if (ip2sms_parse_answer((const char *) data, size, &answer) == 0)
	{
		/* the worker stores these as they are: they must be sane */
		if (answer.state == NULL || ip2sms_state_index(answer.state) < 0 ||
			strlen(answer.id) > IP2SMS_ID_MAX ||
			strspn(answer.id, "0123456789") != strlen(answer.id))
			abort();
	}

	/* the date parser sees the same bytes as a C string */
	text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	(void) ip2sms_parse_date(text, iso, sizeof(iso));
	free(text);
	return 0;
}

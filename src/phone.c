/*-------------------------------------------------------------------------
 *
 * phone.c
 *	  Phone numbers to E.164, so that a number typed by a person and the
 *	  number a modem reports as sender compare equal.
 *
 * Spaces, dots, dashes, slashes and brackets are dropped; "00" becomes "+";
 * a national number (no "+" and no "00") gets smsdispatch.default_country_code,
 * losing its trunk "0". The result is "+" and 7 to 15 digits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_normalize_phone);
PG_FUNCTION_INFO_V1(sms_try_normalize_phone_sql);

/*
 * The E.164 form of phone, palloc'd, or NULL with *detail saying why there is
 * none. Used where a bad number must not abort the caller.
 */
char *
sms_try_normalize_phone(const char *phone, const char **detail)
{
	StringInfoData digits;
	const char *p = phone;
	bool		international = false;
	const char *cc = sms_default_country_code ? sms_default_country_code : "";
	char	   *result;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '+')
	{
		international = true;
		p++;
	}
	initStringInfo(&digits);
	for (; *p; p++)
	{
		if (*p >= '0' && *p <= '9')
			appendStringInfoChar(&digits, *p);
		else if (!strchr(" \t.-/()[]", *p))
		{
			*detail = "Only digits, a leading \"+\", spaces, dots, dashes, slashes and brackets may appear.";
			return NULL;
		}
	}

	if (digits.len == 0)
	{
		*detail = "It has no digits.";
		return NULL;
	}
	if (!international && strncmp(digits.data, "00", 2) == 0)
		result = psprintf("+%s", digits.data + 2);
	else if (international)
		result = psprintf("+%s", digits.data);
	else if (cc[0] == '\0')
	{
		*detail = "It is a national number and smsdispatch.default_country_code is not set.";
		return NULL;
	}
	else if (digits.data[0] == '0')
		result = psprintf("+%s%s", cc, digits.data + 1);
	else if (strncmp(digits.data, cc, strlen(cc)) == 0 && digits.len > 10)
		result = psprintf("+%s", digits.data);
	else
		result = psprintf("+%s%s", cc, digits.data);
	pfree(digits.data);

	if (strlen(result) < 8 || strlen(result) > 16)
	{
		*detail = "An E.164 number has 7 to 15 digits.";
		return NULL;
	}
	if (result[1] == '0')
	{
		*detail = "A country code does not begin with 0.";
		return NULL;
	}
	if (!sms_phone_plan_check(result, detail))
		return NULL;
	return result;
}

/*
 * The E.164 form of phone, palloc'd; field names where it came from for the
 * error message.
 */
char *
sms_normalize_phone_text(const char *phone, const char *field)
{
	const char *detail = NULL;
	char	   *result;

	if (phone == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", field)));
	result = sms_try_normalize_phone(phone, &detail);
	if (result == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid phone number in %s: \"%s\"", field, phone),
				 errdetail_internal("%s", detail),
				 errhint("Write it in international form, for example \"+380501234567\".")));
	return result;
}

/* SQL: sms_normalize_phone(phone) -> E.164 text */
Datum
sms_normalize_phone(PG_FUNCTION_ARGS)
{
	char	   *phone = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));

	PG_RETURN_TEXT_P(cstring_to_text(sms_normalize_phone_text(phone, "phone")));
}

/*
 * SQL: smsdispatch.try_normalize_phone(phone) -> E.164 text, or NULL when
 * there is none; for matching senders without a subtransaction per SMS.
 */
Datum
sms_try_normalize_phone_sql(PG_FUNCTION_ARGS)
{
	const char *detail;
	char	   *result = sms_try_normalize_phone(text_to_cstring(PG_GETARG_TEXT_PP(0)),
												 &detail);

	if (result == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

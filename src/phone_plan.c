/*-------------------------------------------------------------------------
 *
 * phone_plan.c
 *	  Lengths of national numbers per country code, from the ITU-T E.164
 *	  national numbering plans, so that a typo ("12345" becoming
 *	  "+38012345") is refused instead of going to the gateway.
 *
 * A focused subset: the countries whose national significant numbers have
 * one length, or a narrow range of them, that is the same for every number
 * (the values are libphonenumber's possible lengths of the plan's fixed and
 * mobile numbers). A country code outside the table is held to E.164's 7
 * to 15 digits only. Country codes are prefix-free, so at most one entry
 * matches a number.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "smsdispatch.h"

PG_FUNCTION_INFO_V1(sms_phone_plan);

/* A country code and the lengths of the national number after it. */
typedef struct PhonePlan
{
	const char *code;
	int			min_digits;
	int			max_digits;
} PhonePlan;

/* in code order; see the file's comment for what is in it */
static const PhonePlan plans[] = {
	{"1", 10, 10},				/* North American Numbering Plan */
	{"7", 10, 10},				/* Russia, Kazakhstan */
	{"27", 9, 9},				/* South Africa */
	{"30", 10, 10},				/* Greece */
	{"32", 8, 9},				/* Belgium */
	{"33", 9, 9},				/* France */
	{"34", 9, 9},				/* Spain */
	{"40", 9, 9},				/* Romania */
	{"44", 7, 10},				/* United Kingdom */
	{"45", 8, 8},				/* Denmark */
	{"351", 9, 9},				/* Portugal */
	{"370", 8, 8},				/* Lithuania */
	{"371", 8, 8},				/* Latvia */
	{"373", 8, 8},				/* Moldova */
	{"374", 8, 8},				/* Armenia */
	{"380", 9, 9},				/* Ukraine */
	{"994", 9, 9},				/* Azerbaijan */
	{"995", 9, 9},				/* Georgia */
	{"998", 9, 9},				/* Uzbekistan */
};

/*
 * Whether the E.164 number ("+" and digits) fits its country's plan; when
 * not, *detail says why. Numbers of country codes outside the table fit.
 */
bool
sms_phone_plan_check(const char *e164, const char **detail)
{
	const char *digits = e164 + 1;
	int			i;

	for (i = 0; i < lengthof(plans); i++)
	{
		size_t		cc_len = strlen(plans[i].code);
		int			national;

		if (strncmp(digits, plans[i].code, cc_len) != 0)
			continue;
		national = (int) strlen(digits + cc_len);
		if (national >= plans[i].min_digits && national <= plans[i].max_digits)
			return true;
		if (plans[i].min_digits == plans[i].max_digits)
			*detail = psprintf("Numbers of country code +%s have %d digits after it; this one has %d.",
							   plans[i].code, plans[i].min_digits, national);
		else
			*detail = psprintf("Numbers of country code +%s have %d to %d digits after it; this one has %d.",
							   plans[i].code, plans[i].min_digits, plans[i].max_digits,
							   national);
		return false;
	}
	return true;
}

/*
 * SQL: smsdispatch.phone_plan() -> (country_code, min_digits, max_digits),
 * the table above, so that users (and tests) can see which countries are
 * checked.
 */
Datum
sms_phone_plan(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < lengthof(plans); i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = CStringGetTextDatum(plans[i].code);
		values[1] = Int32GetDatum(plans[i].min_digits);
		values[2] = Int32GetDatum(plans[i].max_digits);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

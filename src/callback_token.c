/*-------------------------------------------------------------------------
 *
 * callback_token.c
 *	  The tokens of Kannel's delivery reports: smsdispatch.callback_token(id)
 *	  and smsdispatch.callback_token_matches(id, token).
 *
 * A delivery report arrives as an HTTP GET at the smsdispatch-http sidecar,
 * naming the sms_log row it is about. So that nobody who can reach the
 * sidecar can write the status of a row whose dlr-url he was not given, the
 * URL carries an HMAC-SHA256 of the row id under a key that only the
 * extension's owner reads (smsdispatch.callback_key, made at CREATE
 * EXTENSION by smsdispatch.callback_key_generate()), and
 * smsdispatch.delivery_report() checks it here, in constant time.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/cryptohash.h"
#include "common/hmac.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "pg_compat.h"

/* bytes of a new key */
#define CALLBACK_KEY_BYTES	32
/* what the HMAC covers: this prefix, then the id in decimal */
#define CALLBACK_TOKEN_PREFIX	"sms_log:"
/* a token is the HMAC in lowercase hex */
#define CALLBACK_TOKEN_LEN	(PG_SHA256_DIGEST_LENGTH * 2)

PG_FUNCTION_INFO_V1(sms_callback_key_generate);
PG_FUNCTION_INFO_V1(sms_callback_token);
PG_FUNCTION_INFO_V1(sms_callback_token_matches);

/*
 * smsdispatch.callback_key_generate() RETURNS bytea: a new key from the
 * server's strong random source (what gen_random_uuid() uses too), so that
 * no other extension is needed.
 */
Datum
sms_callback_key_generate(PG_FUNCTION_ARGS)
{
	bytea	   *key = palloc(VARHDRSZ + CALLBACK_KEY_BYTES);

	SET_VARSIZE(key, VARHDRSZ + CALLBACK_KEY_BYTES);
	if (!pg_strong_random(VARDATA(key), CALLBACK_KEY_BYTES))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate the callback key: the strong random source failed")));
	PG_RETURN_BYTEA_P(key);
}

/*
 * The key of smsdispatch.callback_key, copied into the caller's memory
 * context. The table is the owner's alone, so this runs as the owner: the
 * functions here are granted to no other role, and delivery_report() that
 * calls them is SECURITY DEFINER.
 */
static bytea *
callback_key(void)
{
	MemoryContext caller = CurrentMemoryContext;
	bytea	   *key = NULL;
	bool		isnull;
	Datum		d;

	SPI_connect();
	if (SPI_execute("SELECT key FROM smsdispatch.callback_key", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read smsdispatch.callback_key");
	if (SPI_processed == 1)
	{
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
		{
			MemoryContext spi = MemoryContextSwitchTo(caller);

			key = DatumGetByteaPCopy(d);
			MemoryContextSwitchTo(spi);
		}
	}
	SPI_finish();
	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("smsdispatch.callback_key holds no key"),
				 errhint("Insert one: INSERT INTO smsdispatch.callback_key (key) VALUES (smsdispatch.callback_key_generate());")));
	return key;
}

/* Writes the token of row id (CALLBACK_TOKEN_LEN hex digits and a NUL). */
static void
compute_token(int64 id, char *token)
{
	bytea	   *key = callback_key();
	char		message[sizeof(CALLBACK_TOKEN_PREFIX) + 24];
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);
	int			len;

	len = snprintf(message, sizeof(message), CALLBACK_TOKEN_PREFIX INT64_FORMAT, id);
	if (ctx == NULL
		|| pg_hmac_init(ctx, (uint8 *) VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key)) < 0
		|| pg_hmac_update(ctx, (uint8 *) message, len) < 0
		|| pg_hmac_final(ctx, digest, sizeof(digest)) < 0)
	{
		const char *why = ctx ? pg_hmac_error(ctx) : "out of memory";

		pg_hmac_free(ctx);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute the callback token of sms_log id " INT64_FORMAT ": %s",
						id, why)));
	}
	pg_hmac_free(ctx);
	hex_encode((const char *) digest, sizeof(digest), token);
	token[CALLBACK_TOKEN_LEN] = '\0';
	explicit_bzero(digest, sizeof(digest));
	explicit_bzero(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
}

/* smsdispatch.callback_token(id bigint) RETURNS text */
Datum
sms_callback_token(PG_FUNCTION_ARGS)
{
	char		token[CALLBACK_TOKEN_LEN + 1];

	compute_token(PG_GETARG_INT64(0), token);
	PG_RETURN_TEXT_P(cstring_to_text(token));
}

/*
 * smsdispatch.callback_token_matches(id bigint, token text) RETURNS
 * boolean. The comparison takes the same time wherever the first wrong
 * digit is, so that a caller cannot find a token digit by digit; only its
 * length, which is no secret, ends it early.
 */
Datum
sms_callback_token_matches(PG_FUNCTION_ARGS)
{
	int64		id = PG_GETARG_INT64(0);
	text	   *given = PG_GETARG_TEXT_PP(1);
	char		token[CALLBACK_TOKEN_LEN + 1];

	if (VARSIZE_ANY_EXHDR(given) != CALLBACK_TOKEN_LEN)
		PG_RETURN_BOOL(false);
	compute_token(id, token);
	PG_RETURN_BOOL(timingsafe_bcmp(token, VARDATA_ANY(given), CALLBACK_TOKEN_LEN) == 0);
}

/*-------------------------------------------------------------------------
 *
 * smsdispatch.c
 *	  Module entry point: settings, shared memory and the background worker
 *	  are set up here when the library is loaded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"

#include "smsdispatch.h"
#include "ip2sms.h"

SMS_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(sms_prevent_in_transaction_block);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

/* Chains our shared memory request behind other libraries'. */
static void
smsdispatch_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	sms_shmem_request();
	sms_stats_shmem_request();
}

/* Chains our shared memory set-up behind other libraries'. */
static void
smsdispatch_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	sms_shmem_startup();
	sms_stats_shmem_startup();
}

/*
 * Defines the settings in every process that loads us; when preloaded, also
 * reserves shared memory so backends can wake the workers, and registers
 * the launcher, which starts them. Not while pg_upgrade runs the server (binary upgrade mode): the
 * worker would send from the old cluster or meet the new one half restored.
 */
void
_PG_init(void)
{
	sms_define_settings();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = smsdispatch_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = smsdispatch_shmem_startup;

	if (!IsBinaryUpgrade)
		sms_register_launcher();
}

/*
 * SQL: smsdispatch.prevent_in_transaction_block(what). A procedure that
 * commits between batches fails at its first COMMIT inside BEGIN, with an
 * error about transaction termination deep in its call stack; this says at
 * once, in the words of VACUUM's error, what to do instead.
 */
Datum
sms_prevent_in_transaction_block(PG_FUNCTION_ARGS)
{
	char	   *what = text_to_cstring(PG_GETARG_TEXT_PP(0));

	PreventInTransactionBlock(true, what);
	PG_RETURN_VOID();
}

/*-------------------------------------------------------------------------
 *
 * phone.c
 *	  The modem, through libgammu: opening and resetting the connection,
 *	  sending one SMS (libgammu encodes GSM-7 or UCS-2 and splits it into
 *	  concatenated parts), and its identity and health.
 *
 * An SMS whose fate the modem leaves unclear (no answer after the command
 * went out, a later part refused after earlier ones left) is reported as
 * unknown: it is never sent again behind anyone's back.
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the Free
 * Software Foundation; either version 2 of the License, or (at your option)
 * any later version (libgammu, which it links, is GPL-2.0-or-later).
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "modem.h"

#define OPEN_BACKOFF_MAX_SECONDS 60

/* libgammu's answer to GSM_SendSMS: the modem's status and reference. */
static void
send_status_callback(GSM_StateMachine *sm, int status, int reference, void *user_data)
{
	Phone	   *phone = user_data;

	phone->part_done = true;
	phone->part_status = status;
	phone->part_reference = reference;
}

/*
 * An incoming SMS notification. A stored message (+CMTI) only says the
 * inbox has something; a message delivered straight to us (+CMT, +CDS) is
 * kept until the database has recorded it.
 */
static void
incoming_sms_callback(GSM_StateMachine *sm, GSM_SMSMessage *sms, void *user_data)
{
	Phone	   *phone = user_data;
	DirectMessage *direct;

	phone->inbox_due = true;
	if (sms->Location != 0)
		return;
	if (phone->direct_count >= 256)
	{
		log_msg(LOG_WARNING, "too many unrecorded incoming messages; one is dropped");
		return;
	}
	direct = malloc(sizeof(DirectMessage));
	if (direct == NULL)
		return;
	direct->sms = *sms;
	direct->next = phone->direct;
	phone->direct = direct;
	phone->direct_count++;
}

/*
 * Reads section N of the gammurc into a fresh state machine. A missing
 * file or section is a configuration error the caller reports at start.
 */
bool
phone_load_config(Phone *phone, const char *gammurc, int section)
{
	INI_Section *cfg = NULL;
	GSM_Config *config;
	GSM_Error	error;

	phone->gammurc = gammurc;
	phone->section = section;
	phone->sm = GSM_AllocStateMachine();
	if (phone->sm == NULL)
	{
		log_msg(LOG_FATAL, "out of memory allocating the gammu state machine");
		return false;
	}
	error = GSM_FindGammuRC(&cfg, gammurc);
	if (error != ERR_NONE || cfg == NULL)
	{
		log_msg(LOG_FATAL, "could not read gammurc \"%s\": %s", gammurc,
				GSM_ErrorString(error));
		return false;
	}
	config = GSM_GetConfig(phone->sm, 0);
	error = GSM_ReadConfig(cfg, config, section);
	INI_Free(cfg);
	if (error != ERR_NONE)
	{
		log_msg(LOG_FATAL, "gammurc \"%s\" has no usable section %d: %s", gammurc,
				section, GSM_ErrorString(error));
		return false;
	}
	/* the section's logfile and logformat trace this modem, as in gammu */
	config->UseGlobalDebugFile = FALSE;
	GSM_SetConfigNum(phone->sm, 1);
	return true;
}

/*
 * Opens the connection to the modem when it is closed and the backoff
 * allows; reads its identity and default SMSC and asks for incoming SMS
 * notifications (a modem that cannot notify is polled anyway).
 */
bool
phone_ensure_open(Phone *phone)
{
	GSM_Error	error;
	GSM_SMSC	smsc;

	if (phone->open)
		return true;
	if (time(NULL) < phone->next_open)
		return false;

	error = GSM_InitConnection(phone->sm, 1);
	if (error != ERR_NONE)
	{
		if (phone->open_backoff < 1)
			phone->open_backoff = 1;
		log_msg(LOG_WARNING, "could not open the modem (gammurc \"%s\" section %d): %s; retrying in %d s",
				phone->gammurc, phone->section, GSM_ErrorString(error), phone->open_backoff);
		snprintf(phone->last_error, sizeof(phone->last_error), "open: %s",
				 GSM_ErrorString(error));
		phone->errors_since++;
		/* libgammu keeps the half-open device otherwise */
		if (GSM_IsConnected(phone->sm))
			GSM_TerminateConnection(phone->sm);
		phone->next_open = time(NULL) + phone->open_backoff;
		phone->open_backoff = phone->open_backoff * 2 > OPEN_BACKOFF_MAX_SECONDS ?
			OPEN_BACKOFF_MAX_SECONDS : phone->open_backoff * 2;
		return false;
	}
	/* GSM_InitConnection clears the callbacks */
	GSM_SetSendSMSStatusCallback(phone->sm, send_status_callback, phone);
	GSM_SetIncomingSMSCallback(phone->sm, incoming_sms_callback, phone);
	phone->open = true;
	phone->open_backoff = 1;
	phone->consecutive_errors = 0;
	phone->need_reset = false;

	if (GSM_GetIMEI(phone->sm, phone->imei) != ERR_NONE)
		phone->imei[0] = '\0';
	if (GSM_GetSIMIMSI(phone->sm, phone->imsi) != ERR_NONE)
		phone->imsi[0] = '\0';

	memset(&smsc, 0, sizeof(smsc));
	smsc.Location = 1;
	phone->have_smsc = (GSM_GetSMSC(phone->sm, &smsc) == ERR_NONE && smsc.Number[0] + smsc.Number[1] != 0);
	if (phone->have_smsc)
		memcpy(phone->smsc, smsc.Number, sizeof(phone->smsc));

	error = GSM_SetIncomingSMS(phone->sm, TRUE);
	if (error != ERR_NONE && error != ERR_NOTSUPPORTED && error != ERR_NOTIMPLEMENTED)
		log_msg(LOG_INFO, "the modem does not notify incoming SMS (%s); polling it",
				GSM_ErrorString(error));
	log_msg(LOG_INFO, "modem open: IMEI %s, IMSI %s", phone->imei[0] ? phone->imei : "?",
			phone->imsi[0] ? phone->imsi : "?");
	return true;
}

/* Closes the connection to the modem. */
void
phone_close(Phone *phone)
{
	if (phone->open || GSM_IsConnected(phone->sm))
		GSM_TerminateConnection(phone->sm);
	phone->open = false;
}

/*
 * Resets the modem after repeated errors: a soft reset unless it fell
 * silent (libgammu would wait on it again), then the port is closed and
 * opened again, which initialises the modem afresh.
 */
void
phone_reset(Phone *phone)
{
	log_msg(LOG_WARNING, "resetting the modem after %d consecutive error%s (last: %s)",
			phone->consecutive_errors, phone->consecutive_errors == 1 ? "" : "s",
			phone->last_error);
	if (phone->open && !phone->silent && GSM_Reset(phone->sm, FALSE) != ERR_NONE)
		log_msg(LOG_INFO, "the modem did not take a soft reset; reopening the port");
	phone_close(phone);
	phone->resets_since++;
	phone->consecutive_errors = 0;
	phone->need_reset = false;
	phone->silent = false;
	phone->next_open = 0;
	phone->open_backoff = 1;
}

/* Counts a modem error; enough of them in a row ask for a reset. */
void
phone_note_error(Phone *phone, const char *what, GSM_Error error)
{
	snprintf(phone->last_error, sizeof(phone->last_error), "%s: %s", what,
			 GSM_ErrorString(error));
	phone->errors_since++;
	phone->consecutive_errors++;
	if (phone->consecutive_errors >= MODEM_ERRORS_BEFORE_RESET)
		phone->need_reset = true;
}

/* Lets libgammu read what the modem said unprompted (notifications). */
void
phone_poll_device(Phone *phone)
{
	if (phone->open)
		(void) GSM_ReadDevice(phone->sm, FALSE);
}

/* The word modem_finish() expects for an outcome. */
const char *
send_outcome_word(SendOutcome outcome)
{
	switch (outcome)
	{
		case SEND_SUBMITTED:
			return "submitted";
		case SEND_RETRY:
			return "retry";
		case SEND_FAILED:
			return "failed";
		case SEND_UNKNOWN:
			return "unknown";
		case SEND_RELEASED:
			return "released";
	}
	return "unknown";
}

/*
 * Sends one part and waits for the modem's answer. Returns ERR_NONE with
 * the reference, or the error; *status_error tells an explicit refusal by
 * the modem or network (+CMS ERROR) from silence or a transport failure.
 */
static GSM_Error
send_part(Phone *phone, GSM_SMSMessage *part, int *reference, int *refusal)
{
	GSM_Error	error;
	time_t		deadline;

	*refusal = 0;
	phone->part_done = false;
	error = GSM_SendSMS(phone->sm, part);
	if (error != ERR_NONE)
		return error;
	deadline = time(NULL) + phone->send_timeout;
	while (!phone->part_done && time(NULL) < deadline)
		(void) GSM_ReadDevice(phone->sm, TRUE);
	if (!phone->part_done)
		return ERR_TIMEOUT;
	if (phone->part_status != 0)
	{
		*refusal = phone->part_status;
		return ERR_UNKNOWN;
	}
	*reference = phone->part_reference;
	return ERR_NONE;
}

/*
 * Sends body to number. On success references holds the message reference
 * of each part, comma-separated. error gets the reason of any other outcome.
 */
SendOutcome
phone_send(Phone *phone, const char *number, const char *body,
		   char *references, size_t references_len, char *error, size_t error_len)
{
	GSM_MultiPartSMSInfo info;
	GSM_MultiSMSMessage *multi;
	GSM_Error	gerr;
	size_t		body_len = strlen(body);
	size_t		used = 0;
	SendOutcome outcome = SEND_SUBMITTED;
	int			i;

	references[0] = '\0';
	error[0] = '\0';
	multi = calloc(1, sizeof(GSM_MultiSMSMessage));
	GSM_ClearMultiPartSMSInfo(&info);
	info.EntriesNum = 1;
	info.UnicodeCoding = FALSE;
	info.Entries[0].ID = SMS_ConcatenatedAutoTextLong;
	/* UCS-2, freed by GSM_FreeMultiPartSMSInfo */
	info.Entries[0].Buffer = malloc((body_len + 1) * 2);
	if (multi == NULL || info.Entries[0].Buffer == NULL)
	{
		free(multi);
		GSM_FreeMultiPartSMSInfo(&info);
		snprintf(error, error_len, "out of memory encoding the SMS");
		return SEND_RETRY;
	}
	DecodeUTF8(info.Entries[0].Buffer, body, body_len);
	gerr = GSM_EncodeMultiPartSMS(GSM_GetDebug(phone->sm), &info, multi);
	GSM_FreeMultiPartSMSInfo(&info);
	if (gerr != ERR_NONE)
	{
		free(multi);
		snprintf(error, error_len, "libgammu cannot encode the text (%zu bytes): %s",
				 body_len, GSM_ErrorString(gerr));
		return SEND_FAILED;
	}

	for (i = 0; i < multi->Number; i++)
	{
		GSM_SMSMessage *part = &multi->SMS[i];
		int			reference = -1;
		int			refusal;

		/* a submitted part asking for a status report, as gammu spells it */
		part->PDU = SMS_Status_Report;
		EncodeUnicode(part->Number, number, strlen(number));
		if (phone->have_smsc)
		{
			memcpy(part->SMSC.Number, phone->smsc, sizeof(part->SMSC.Number));
			part->SMSC.Location = 0;
		}
		gerr = send_part(phone, part, &reference, &refusal);
		if (gerr == ERR_NONE)
		{
			used += snprintf(references + used, references_len - used, "%s%d",
							 i > 0 ? "," : "", reference);
			if (used >= references_len)
				used = references_len - 1;
			continue;
		}
		if (refusal != 0)
		{
			snprintf(error, error_len, "part %d of %d refused by the modem: error %d",
					 i + 1, multi->Number, refusal);
			/* nothing left yet: try again later; else the rest is lost */
			outcome = (i == 0) ? SEND_RETRY : SEND_UNKNOWN;
			phone->consecutive_errors = 0;
		}
		else
		{
			snprintf(error, error_len, "part %d of %d: %s", i + 1, multi->Number,
					 GSM_ErrorString(gerr));
			/* silence after the command went out: it may have left */
			outcome = (i == 0 && gerr != ERR_TIMEOUT) ? SEND_RETRY : SEND_UNKNOWN;
			phone_note_error(phone, "send", gerr);
			/* a modem that fell silent is reset at once */
			if (gerr == ERR_TIMEOUT)
				phone->need_reset = phone->silent = true;
		}
		break;
	}
	if (outcome == SEND_SUBMITTED)
		phone->consecutive_errors = 0;
	free(multi);
	return outcome;
}

/* Signal and operator for the heartbeat; SIM fullness with a WARNING. */
void
phone_health(Phone *phone, PhoneHealth *health)
{
	GSM_SignalQuality sig;
	GSM_NetworkInfo net;
	GSM_SMSMemoryStatus mem;
	bool		full;

	health->operator_name[0] = '\0';
	health->signal_percent = -1;
	if (!phone->open || phone->need_reset)
		return;
	if (GSM_GetSignalQuality(phone->sm, &sig) == ERR_NONE && sig.SignalPercent >= 0
		&& sig.SignalPercent <= 100)
		health->signal_percent = sig.SignalPercent;
	memset(&net, 0, sizeof(net));
	if (GSM_GetNetworkInfo(phone->sm, &net) == ERR_NONE)
	{
		if (net.NetworkName[0] + net.NetworkName[1] != 0)
			EncodeUTF8(health->operator_name, net.NetworkName);
		else
			snprintf(health->operator_name, sizeof(health->operator_name), "%s",
					 net.NetworkCode);
		health->operator_name[sizeof(health->operator_name) - 1] = '\0';
	}
	memset(&mem, 0, sizeof(mem));
	if (GSM_GetSMSStatus(phone->sm, &mem) == ERR_NONE)
	{
		full = mem.SIMSize > 0 && mem.SIMUsed >= mem.SIMSize;
		if (full && !phone->sim_full)
			log_msg(LOG_WARNING, "SIM message memory is full (%d of %d): incoming SMS cannot arrive",
					mem.SIMUsed, mem.SIMSize);
		else if (!full && phone->sim_full)
			log_msg(LOG_INFO, "SIM message memory has room again (%d of %d)",
					mem.SIMUsed, mem.SIMSize);
		phone->sim_full = full;
	}
}

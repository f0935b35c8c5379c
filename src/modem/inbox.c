/*-------------------------------------------------------------------------
 *
 * inbox.c
 *	  What the modem receives: replies go to sms_receive (multipart joined,
 *	  each message once), status reports update their sms_log row. A
 *	  message leaves the modem's memory only after the database committed
 *	  what it did with it.
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

/* the most messages read from the modem in one poll */
#define INBOX_BATCH 200

/*
 * TP-Status (3GPP TS 23.040 9.2.3.15) as the word sms_log.gateway_status
 * uses: completed, still trying, or given up.
 */
const char *
status_report_word(unsigned char tp_status)
{
	if (tp_status <= 0x1F)
		return (tp_status <= 0x02) ? "Delivered" : "Unknown";
	if (tp_status <= 0x3F)
		return "Enroute";
	if (tp_status == 0x46)
		return "Expired";
	if (tp_status == 0x47 || tp_status == 0x48)
		return "Deleted";
	return "Undeliverable";
}

/* A gammu time as a timestamptz literal, or NULL when the modem gave none. */
static const char *
format_time(const GSM_DateTime *dt, char *buf, size_t len)
{
	int			tz = dt->Timezone;

	if (dt->Year == 0)
		return NULL;
	snprintf(buf, len, "%04d-%02d-%02d %02d:%02d:%02d%c%02d:%02d",
			 dt->Year, dt->Month, dt->Day, dt->Hour, dt->Minute, dt->Second,
			 tz < 0 ? '-' : '+', abs(tz) / 3600, (abs(tz) % 3600) / 60);
	return buf;
}

/* Deletes the parts of a handled message from the modem's memory. */
static void
delete_parts(Phone *phone, GSM_MultiSMSMessage *msg)
{
	int			i;
	GSM_Error	error;

	for (i = 0; i < msg->Number; i++)
	{
		error = GSM_DeleteSMS(phone->sm, &msg->SMS[i]);
		if (error != ERR_NONE && error != ERR_EMPTY)
		{
			log_msg(LOG_WARNING, "could not delete SMS at location %d from the modem: %s",
					msg->SMS[i].Location, GSM_ErrorString(error));
			phone_note_error(phone, "delete", error);
		}
	}
}

/*
 * Records one status report. Returns true when the database committed it
 * (matched or not), so that it may leave the modem.
 */
static bool
record_status_report(Phone *phone, Db *db, const GSM_SMSMessage *sms, InboxCounts *counts)
{
	char		number[GSM_MAX_NUMBER_LENGTH * 4 + 1];
	char		reference[16];
	char		when[64];
	const char *params[5];
	PGresult   *res;

	EncodeUTF8(number, sms->Number);
	snprintf(reference, sizeof(reference), "%d", sms->MessageReference);
	params[0] = db->name;
	params[1] = number;
	params[2] = reference;
	params[3] = status_report_word(sms->DeliveryStatus);
	params[4] = format_time(&sms->DateTime, when, sizeof(when));
	res = db_call(db, "SELECT smsdispatch.modem_status_report($1, $2, $3::int, $4, $5::timestamptz)",
				  5, params, PGRES_TUPLES_OK);
	if (res == NULL)
		return false;
	if (PQgetisnull(res, 0, 0))
		log_msg(LOG_INFO, "status report for %s reference %s (%s) matches no SMS",
				number, reference, params[3]);
	else
		log_msg(LOG_INFO, "status report: sms_log %s to %s is %s",
				PQgetvalue(res, 0, 0), number, params[3]);
	PQclear(res);
	counts->status_reports++;
	return true;
}

/*
 * Hands one received message (its parts in order) to the database. Returns
 * true when the database committed it, so that it may leave the modem.
 */
static bool
record_message(Db *db, const GSM_MultiSMSMessage *msg, InboxCounts *counts)
{
	char		sender[GSM_MAX_NUMBER_LENGTH * 4 + 1];
	char		when[64];
	char	   *body;
	size_t		used = 0;
	const char *params[4];
	PGresult   *res;
	int			i;

	body = malloc((size_t) msg->Number * (GSM_MAX_SMS_LENGTH * 4 + 1) + 1);
	if (body == NULL)
		return false;
	body[0] = '\0';
	for (i = 0; i < msg->Number; i++)
	{
		const GSM_SMSMessage *part = &msg->SMS[i];

		if (part->Coding == SMS_Coding_8bit)
			continue;			/* binary content is no reply */
		EncodeUTF8(body + used, part->Text);
		used += strlen(body + used);
	}
	EncodeUTF8(sender, msg->SMS[0].Number);
	params[0] = db->name;
	params[1] = sender;
	params[2] = body;
	params[3] = format_time(&msg->SMS[0].DateTime, when, sizeof(when));
	res = db_call(db, "SELECT smsdispatch.modem_receive($1, $2, $3, $4::timestamptz)",
				  4, params, PGRES_TUPLES_OK);
	if (res != NULL)
	{
		log_msg(LOG_INFO, "received SMS from %s (%d part%s): %s", sender, msg->Number,
				msg->Number == 1 ? "" : "s", PQgetvalue(res, 0, 0));
		if (strcmp(PQgetvalue(res, 0, 0), "seen") != 0)
			counts->received++;
		PQclear(res);
	}
	free(body);
	return res != NULL;
}

/* Whether a linked message still lacks parts and is young enough to wait. */
static bool
wait_for_parts(const GSM_MultiSMSMessage *msg)
{
	const GSM_SMSMessage *first = &msg->SMS[0];
	struct tm	tm;
	time_t		sent;

	if (first->UDH.Type == UDH_NoUDH || first->UDH.AllParts <= msg->Number)
		return false;
	if (first->DateTime.Year == 0)
		return true;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = first->DateTime.Year - 1900;
	tm.tm_mon = first->DateTime.Month - 1;
	tm.tm_mday = first->DateTime.Day;
	tm.tm_hour = first->DateTime.Hour;
	tm.tm_min = first->DateTime.Minute;
	tm.tm_sec = first->DateTime.Second;
	sent = timegm(&tm) - first->DateTime.Timezone;
	return time(NULL) - sent < INCOMPLETE_WAIT_SECONDS;
}

/*
 * Reads the modem's inbox folders. Fills list (NULL-terminated) with what
 * it holds; returns how many, or -1 after a modem error.
 */
static int
read_inbox(Phone *phone, GSM_MultiSMSMessage **list)
{
	GSM_MultiSMSMessage *cur = calloc(1, sizeof(GSM_MultiSMSMessage));
	GSM_Error	error;
	bool		start = true;
	int			n = 0;

	while (cur != NULL && n < INBOX_BATCH)
	{
		GSM_MultiSMSMessage *next;

		error = GSM_GetNextSMS(phone->sm, cur, start);
		start = false;
		if (error == ERR_EMPTY)
			break;
		if (error != ERR_NONE)
		{
			phone_note_error(phone, "reading messages", error);
			if (error == ERR_TIMEOUT)
				phone->need_reset = phone->silent = true;
			log_msg(LOG_WARNING, "could not read the modem's messages: %s",
					GSM_ErrorString(error));
			free(cur);
			cur = NULL;
			n = -1;
			break;
		}
		next = calloc(1, sizeof(GSM_MultiSMSMessage));
		if (next == NULL)
			break;
		next->SMS[0].Folder = cur->SMS[0].Folder;
		next->SMS[0].Location = cur->SMS[0].Location;
		if (cur->Number > 0 && cur->SMS[0].InboxFolder
			&& (cur->SMS[0].PDU == SMS_Deliver || cur->SMS[0].PDU == SMS_Status_Report))
		{
			list[n++] = cur;
			list[n] = NULL;
		}
		else
			free(cur);
		cur = next;
	}
	free(cur);
	if (n > 0)
		phone->consecutive_errors = 0;
	return n;
}

/*
 * One pass over the modem's inbox: status reports, then replies with their
 * parts linked. Anything the database did not commit stays on the modem for
 * the next pass.
 */
void
inbox_poll(Phone *phone, Db *db, InboxCounts *counts)
{
	GSM_MultiSMSMessage **all;
	GSM_MultiSMSMessage **texts;
	GSM_MultiSMSMessage **linked;
	int			n,
				ntexts = 0,
				i;

	phone->inbox_due = false;
	all = calloc(INBOX_BATCH + 1, sizeof(GSM_MultiSMSMessage *));
	texts = calloc(INBOX_BATCH + 1, sizeof(GSM_MultiSMSMessage *));
	linked = calloc(INBOX_BATCH + 1, sizeof(GSM_MultiSMSMessage *));
	if (all == NULL || texts == NULL || linked == NULL)
		goto done;
	n = read_inbox(phone, all);
	for (i = 0; i < n; i++)
	{
		if (all[i]->SMS[0].PDU == SMS_Status_Report)
		{
			if (record_status_report(phone, db, &all[i]->SMS[0], counts))
				delete_parts(phone, all[i]);
		}
		else
			texts[ntexts++] = all[i];
	}
	if (ntexts > 0 && GSM_LinkSMS(GSM_GetDebug(phone->sm), texts, linked, TRUE) == ERR_NONE)
	{
		for (i = 0; linked[i] != NULL && db->conn != NULL; i++)
		{
			if (wait_for_parts(linked[i]))
				continue;
			if (record_message(db, linked[i], counts))
				delete_parts(phone, linked[i]);
		}
	}

done:
	for (i = 0; linked && linked[i] != NULL; i++)
		free(linked[i]);
	for (i = 0; all && all[i] != NULL; i++)
		free(all[i]);
	free(all);
	free(texts);
	free(linked);
}

/*
 * Records the messages the modem handed over directly (not stored in its
 * memory); those the database did not take are kept for the next call.
 */
void
inbox_flush_direct(Phone *phone, Db *db, InboxCounts *counts)
{
	DirectMessage **link = &phone->direct;

	while (*link != NULL && db->conn != NULL)
	{
		DirectMessage *d = *link;
		bool		done;

		if (d->sms.PDU == SMS_Status_Report)
			done = record_status_report(phone, db, &d->sms, counts);
		else
		{
			GSM_MultiSMSMessage *one = calloc(1, sizeof(GSM_MultiSMSMessage));

			if (one == NULL)
				return;
			one->Number = 1;
			one->SMS[0] = d->sms;
			done = record_message(db, one, counts);
			free(one);
		}
		if (!done)
			return;
		*link = d->next;
		free(d);
		phone->direct_count--;
	}
}

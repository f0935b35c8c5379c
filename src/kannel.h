/*-------------------------------------------------------------------------
 *
 * kannel.h
 *	  The worker's driver of the registered Kannel channels.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KANNEL_H
#define KANNEL_H

#include "postgres.h"
#include "datatype/timestamp.h"

/*
 * kannel_pump() sends the due SMS of every registered Kannel channel of the
 * database, if woken (kannel_wake) or due, and lowers *next_due to when it
 * wants to run again; it returns within smsdispatch.kannel_timeout.
 * kannel_stop() records what an earlier pass could not record; at exit.
 */
extern void kannel_pump(TimestampTz *next_due);
extern void kannel_wake(void);
extern void kannel_stop(void);

#endif							/* KANNEL_H */

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
 * kannel_pump(), at each turn of the worker's loop, drives the requests of
 * the registered Kannel channels on the wire without waiting, records what
 * finished and, if woken (kannel_wake) or due, sends the due SMS of the
 * channels that have nothing on the wire; it lowers *next_due to when it
 * wants the next turn, soon while requests are on the wire.
 * kannel_read_ready() drives them between the worker's duties.
 * kannel_stop() (at SIGTERM or exit) waits until deadline for the answers
 * on the wire, records every result, and what is still unanswered becomes
 * unknown.
 */
extern void kannel_pump(TimestampTz *next_due);
extern void kannel_read_ready(void);
extern void kannel_wake(void);
extern void kannel_stop(TimestampTz deadline);

#endif							/* KANNEL_H */

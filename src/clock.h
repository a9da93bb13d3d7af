/*
 * clock.h - the one place vemilter reads the time.
 *
 * Everything that judges lifetimes takes "now" as an argument, so unit
 * tests pass any time they like and never sleep; only the callers at the
 * edges (milter, verifier, tools) call these.
 */
#ifndef VEMILTER_CLOCK_H
#define VEMILTER_CLOCK_H

#include <stdint.h>
#include <time.h>

/* clock_now_ms - wall clock, milliseconds since the epoch (for records that
 * outlive the process) */
static inline int64_t clock_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* clock_mono_ms - monotonic milliseconds (for elapsed times and deadlines) */
static inline int64_t clock_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif

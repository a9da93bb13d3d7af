/*
 * conftable.h - internal to conf.c and conftable.c: the directive table of
 * vemilter.conf and the types it is made of. Nothing else includes it; the
 * public interface is conf.h.
 */
#ifndef VEMILTER_CONFTABLE_H
#define VEMILTER_CONFTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

#define CONF_LINE_MAX        4096 /* octets in a line, newline excluded */
#define CONF_WHY_MAX         512  /* one reason inside a message */
#define CONF_DIRECTIVE_COUNT 83   /* entries in conf_directives[] */

enum conf_type {
	T_STRING,   /* char *; optional check */
	T_BOOL,     /* bool */
	T_INT,      /* int, min..max */
	T_MODE,     /* unsigned, octal, min..max */
	T_DURATION, /* int64_t milliseconds, min..max */
	T_FACILITY, /* int, syslog facility */
	T_LEVEL,    /* int, syslog priority */
	T_LIST,     /* struct conf_strings; item normalizes and appends */
	T_CIDRS,    /* struct cidr_list; item parses and appends */
	T_REPLY,    /* struct reply_template; optional check after parsing */
	T_ACTION,   /* enum conf_action; optional check */
	T_OVERRIDE, /* struct conf_overrides; item parses and appends */
};

/* Validates a string value; false with a reason in why. */
typedef bool (*check_fn)(const char *value, char *why, size_t why_size);
/* Normalizes one list item and appends it to the field; false with a reason. */
typedef bool (*item_fn)(void *field, const char *item, char *why, size_t why_size);

struct directive {
	const char *name;
	enum conf_type type;
	const char *def;     /* default, parsed like a value from the file */
	int64_t min, max;    /* T_INT, T_MODE, T_DURATION (milliseconds) */
	size_t offset;       /* of the field in struct conf */
	check_fn check;      /* T_STRING, T_REPLY, T_ACTION: optional */
	item_fn item;        /* T_LIST, T_CIDRS, T_OVERRIDE */
	const char *choices; /* T_FACILITY, T_LEVEL: names, for messages */
	const char *help;
	bool restart; /* read once at start: a reload does not apply it (only T_STRING, T_BOOL,
	               * T_INT, T_MODE, T_DURATION, T_FACILITY may be) */
};

/* Every directive: CONF_DIRECTIVE_COUNT entries (conftable.c refuses to
 * compile otherwise). */
extern const struct directive conf_directives[];

/* conf_action_from_name - "accept", "tempfail" or "reject", any case */
bool conf_action_from_name(const char *name, enum conf_action *out);

#endif

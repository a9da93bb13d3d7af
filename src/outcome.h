/*
 * outcome.h - what a verification found out, and where.
 *
 * One enum used by everything after the probe (cache, policy, logs, the CLI).
 * Only OUTCOME_INVALID and OUTCOME_NO_DOMAIN are definite negatives; only
 * they may ever reject mail by default. A struct outcome is a plain value:
 * fixed-size fields, no pointers, safe to copy and to store.
 */
#ifndef VEMILTER_OUTCOME_H
#define VEMILTER_OUTCOME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OUTCOME_TEXT_MAX 300 /* remote reply text kept, after sanitizing */

enum outcome_kind {
	OUTCOME_VALID,        /* 2xx to RCPT */
	OUTCOME_INVALID,      /* 5xx to RCPT from a reachable MX */
	OUTCOME_NO_DOMAIN,    /* NXDOMAIN, null MX, no usable mail host */
	OUTCOME_CATCH_ALL,    /* the domain accepts any local part */
	OUTCOME_TEMPFAIL,     /* 4xx, timeouts, DNS trouble, every MX unreachable */
	OUTCOME_BLOCKED,      /* the server refuses us, not the address */
	OUTCOME_UNVERIFIABLE, /* cannot be asked (e.g. SMTPUTF8 not offered) */
};
#define OUTCOME_KIND_COUNT 7

enum probe_stage {
	STAGE_NONE,
	STAGE_DNS,   /* MX / address lookup */
	STAGE_GUARD, /* network guard refused every address */
	STAGE_CONNECT,
	STAGE_BANNER,
	STAGE_EHLO,
	STAGE_HELO,
	STAGE_STARTTLS, /* the STARTTLS command */
	STAGE_TLS,      /* the handshake */
	STAGE_MAIL,
	STAGE_RCPT,
	STAGE_CATCHALL, /* the RCPT for a random local part */
	STAGE_QUIT,
};

/* What else a probe learned; kept in cache records (8 bits). */
enum outcome_flag {
	OUTCOME_F_NOT_CATCHALL = 1 << 0, /* the random address got 5xx: the domain is not catch-all */
	OUTCOME_F_FALLBACK_SENDER =
	        1 << 1,              /* the server refused probe_sender; probe_sender_fallback was used */
	OUTCOME_F_GREYLIST = 1 << 2, /* a 4xx at RCPT that looks like greylisting */
	OUTCOME_F_PROTOCOL = 1 << 3, /* the server broke the protocol (e.g. a reply before its command) */
	OUTCOME_F_LOOP = 1 << 4,     /* the MX is this host */
	OUTCOME_F_TAGGED = 1 << 5,   /* answered for the stable form of a tagged sender */
	OUTCOME_F_LIMITED = 1 << 6,  /* our own limit, memory or trouble decided (host_session_rate, a
	                              * host remembered as catch-all, no descriptor for a socket): not
	                              * an answer, never cached */
};

struct outcome {
	enum outcome_kind kind;
	unsigned flags;         /* enum outcome_flag */
	int64_t ttl_cap_ms;     /* DNS says this fact lives no longer (negative TTL, MX TTL); 0: no cap.
	                         * Applied when a record is made; not stored. */
	enum probe_stage stage; /* where it was decided */
	int code;               /* SMTP reply code, 0 if none */
	char ecode[16];         /* enhanced status code "5.1.1", "" if none */
	char text[OUTCOME_TEXT_MAX + 1]; /* remote reply text, printable ASCII */
	char reason[200];                /* our one-line explanation */
	char mx_host[256];               /* MX host name that answered, "" if none */
	char mx_addr[64];                /* its address, "" if none */
};

const char *outcome_name(enum outcome_kind kind);
bool outcome_from_name(const char *name, enum outcome_kind *kind);
const char *probe_stage_name(enum probe_stage stage);

/* outcome_flags_text - flags by name, comma-separated ("not_catchall,loop";
 * "" for none; a bit without a name as 0x..), cut to fit size */
void outcome_flags_text(unsigned flags, char *buf, size_t size);

/* outcome_flag_from_name - the bit of a flag named as outcome_flags_text
 * writes it; false if no flag has that name */
bool outcome_flag_from_name(const char *name, unsigned *bit);

/* outcome_is_definite - a negative that may reject mail */
bool outcome_is_definite(enum outcome_kind kind);

/* outcome_set - fill an outcome; text is sanitized and bounded; NULLs are "" */
void outcome_set(struct outcome *o, enum outcome_kind kind, enum probe_stage stage, int code,
                 const char *ecode, const char *text, const char *reason);

#endif

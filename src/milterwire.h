/*
 * milterwire.h - the milter protocol (version 6) as bytes: framing, the
 * parsers for what an MTA sends and the builders for what we answer.
 *
 * Pure: no I/O, no allocation, no global state. The native transport
 * (milterloop.c) feeds it what it read; the libmilter glue (milter.c) uses
 * only mw_choose(), so that both transports ask the MTA for the same steps,
 * actions and macros (one copy of that rule).
 *
 * Every parser takes an untrusted packet and either fills its result or
 * returns false: a caller closes that one connection on false. Sizes are
 * bounded by MW_DATA_MAX (libmilter's own default limit); strings handed
 * out point into the packet and are NUL-terminated there (a parser refuses
 * a packet whose strings are not).
 */
#ifndef VEMILTER_MILTERWIRE_H
#define VEMILTER_MILTERWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The largest packet (command octet + data) accepted: libmilter's
 * MILTER_MAX_DATA_SIZE, since MDS_256K/1M are never negotiated. */
#define MW_DATA_MAX    65535u
#define MW_HEADER_SIZE 4 /* the length prefix */

/* Commands (MTA to milter) */
#define MW_CMD_ABORT   'A'
#define MW_CMD_BODY    'B'
#define MW_CMD_CONNECT 'C'
#define MW_CMD_MACRO   'D'
#define MW_CMD_EOM     'E'
#define MW_CMD_HELO    'H'
#define MW_CMD_QUIT_NC 'K'
#define MW_CMD_HEADER  'L'
#define MW_CMD_MAIL    'M'
#define MW_CMD_EOH     'N'
#define MW_CMD_OPTNEG  'O'
#define MW_CMD_QUIT    'Q'
#define MW_CMD_RCPT    'R'
#define MW_CMD_DATA    'T'
#define MW_CMD_UNKNOWN 'U'

/* Replies (milter to MTA) */
#define MW_REP_ACCEPT    'a'
#define MW_REP_CONTINUE  'c'
#define MW_REP_ADDHEADER 'h'
#define MW_REP_INSHEADER 'i'
#define MW_REP_CHGHEADER 'm'
#define MW_REP_REJECT    'r'
#define MW_REP_TEMPFAIL  't'
#define MW_REP_REPLYCODE 'y'
#define MW_REP_OPTNEG    'O'

/* Actions (SMFIF_*) and protocol steps (SMFIP_*): libmilter's values */
#define MW_ACT_ADDHDRS    0x01u
#define MW_ACT_CHGHDRS    0x10u
#define MW_ACT_SETSYMLIST 0x100u

#define MW_P_NOCONNECT 0x1u
#define MW_P_NOHELO    0x2u
#define MW_P_NOBODY    0x10u
#define MW_P_NOHDRS    0x20u
#define MW_P_NOEOH     0x40u
#define MW_P_NOUNKNOWN 0x100u
#define MW_P_NODATA    0x200u
#define MW_P_NR_CONN   0x1000u

/* Macro stages (SMFIM_*) */
#define MW_STAGE_ENVFROM 2u
#define MW_STAGE_ENVRCPT 3u

#define MW_VERSION  6u
#define MW_ARGS_MAX 16 /* MAIL/RCPT arguments kept; more are ignored */

/* mw_frame results */
enum mw_frame_status {
	MW_FRAME_NEED, /* not a whole packet yet */
	MW_FRAME_OK,   /* *pkt is one packet; *used octets of the input */
	MW_FRAME_BAD,  /* length 0 or over MW_DATA_MAX: close the connection */
};

struct mw_packet {
	char cmd;
	const char *data; /* len octets after the command octet (into the input) */
	size_t len;
};

/* mw_frame - the first packet in buf[0..avail) */
enum mw_frame_status mw_frame(const void *buf, size_t avail, struct mw_packet *pkt, size_t *used);

struct mw_optneg {
	uint32_t version, actions, steps;
};

/* mw_parse_optneg - SMFIC_OPTNEG: version (>= 2), actions, steps */
bool mw_parse_optneg(const struct mw_packet *pkt, struct mw_optneg *out);

/* What vemilter asks the MTA for, from what the MTA offers. */
struct mw_choice {
	uint32_t actions, steps;
	bool symlist;           /* ask for MW_MACROS_* (SETSYMLIST) */
	bool client_from_macro; /* no CONNECT: the client is {client_addr} at MAIL */
	bool connect_noreply;   /* CONNECT is sent without a reply (NR_CONN) */
	bool header_refused;    /* a result header is wanted and the MTA cannot edit headers */
};

/* The macros asked for (SETSYMLIST), per stage. */
#define MW_MACROS_ENVFROM "i {auth_authen} {client_addr}"
#define MW_MACROS_ENVRCPT "i"

/* mw_choose - the steps, actions and macros to ask for: only what is used
 * (every step costs a packet, every reply a round trip). header: a result
 * header is configured. symlist_ok: the macro lists can be sent (false when
 * the transport failed to set them: then CONNECT stays, NR_CONN). */
void mw_choose(const struct mw_optneg *mta, bool header, bool symlist_ok, struct mw_choice *out);

/* mw_build_optneg - our OPTNEG answer for choice (macro lists included when
 * choice->symlist); the packet's length, 0 if size is too small. */
size_t mw_build_optneg(const struct mw_optneg *mta, const struct mw_choice *choice, char *buf, size_t size);

/* The macros vemilter reads; each value cut to its buffer. */
struct mw_macros {
	char queue_id[64];     /* i */
	char auth_authen[256]; /* {auth_authen} */
	char client_addr[64];  /* {client_addr} */
	bool has_queue_id, has_auth_authen, has_client_addr;
};

/* mw_parse_macros - SMFIC_MACRO: *stage is the command it is for; the
 * macros we read are put in *out (cleared first). False: malformed (no
 * stage, a name or value without its NUL). */
bool mw_parse_macros(const struct mw_packet *pkt, char *stage, struct mw_macros *out);

/* mw_macro - the value of name (one of the three) in m, or NULL */
const char *mw_macro(const struct mw_macros *m, const char *name);

/* mw_parse_args - MAIL/RCPT: NUL-terminated arguments, argv[0] the address;
 * at most max-1 kept, argv NULL-terminated. False if empty or unterminated. */
bool mw_parse_args(const struct mw_packet *pkt, const char **argv, size_t max);

/* mw_parse_header - SMFIC_HEADER: name and value */
bool mw_parse_header(const struct mw_packet *pkt, const char **name, const char **value);

struct mw_connect {
	const char *hostname;
	char family; /* '4', '6', 'L' (unix), 'U' (unknown) */
	uint16_t port;
	const char *address; /* NULL for 'U' */
};

/* mw_parse_connect - SMFIC_CONNECT */
bool mw_parse_connect(const struct mw_packet *pkt, struct mw_connect *out);

/* mw_build_simple - a reply without data (accept, continue, reject,
 * tempfail); 5 octets, 0 if size is too small */
size_t mw_build_simple(char code, char *buf, size_t size);

/* mw_build_replycode - SMFIR_REPLYCODE "code ecode text": code three digits
 * (4xx/5xx), ecode empty or "d.d.d"; a control octet in text (a CR or LF
 * would end the reply line or start another) becomes a space, so the reply
 * is one line whatever text holds. 0: invalid code or no room. */
size_t mw_build_replycode(const char *code, const char *ecode, const char *text, char *buf, size_t size);

/* mw_build_addheader - SMFIR_ADDHEADER */
size_t mw_build_addheader(const char *name, const char *value, char *buf, size_t size);

/* mw_build_chgheader - SMFIR_CHGHEADER: the index-th (1-based) field called
 * name gets value; value NULL or "" removes it */
size_t mw_build_chgheader(uint32_t index, const char *name, const char *value, char *buf, size_t size);

/* mw_build_insheader - SMFIR_INSHEADER at position index (0: first) */
size_t mw_build_insheader(uint32_t index, const char *name, const char *value, char *buf, size_t size);

#endif

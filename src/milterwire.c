/*
 * milterwire.c - the milter protocol codec (see milterwire.h).
 *
 * Wire format (libmilter's mfdef.h and Sendmail's doc/MILTER): every
 * packet is a 4-octet big-endian length, then that many octets: one command
 * (or reply) octet and its data. Strings in the data end with a NUL.
 */
#include "milterwire.h"

#include <string.h>

/* get32 - a big-endian 32-bit number */
static uint32_t get32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;
	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | (uint32_t)u[3];
}

/* put32 - write v big-endian */
static void put32(char *p, uint32_t v)
{
	p[0] = (char)(v >> 24);
	p[1] = (char)(v >> 16);
	p[2] = (char)(v >> 8);
	p[3] = (char)v;
}

/* mw_frame - see milterwire.h */
enum mw_frame_status mw_frame(const void *buf, size_t avail, struct mw_packet *pkt, size_t *used)
{
	const char *p = buf;
	if (avail < MW_HEADER_SIZE)
		return MW_FRAME_NEED;
	uint32_t len = get32(p);
	if (len == 0 || len > MW_DATA_MAX)
		return MW_FRAME_BAD;
	if (avail - MW_HEADER_SIZE < len)
		return MW_FRAME_NEED;
	pkt->cmd = p[MW_HEADER_SIZE];
	pkt->data = p + MW_HEADER_SIZE + 1;
	pkt->len = len - 1;
	*used = MW_HEADER_SIZE + len;
	return MW_FRAME_OK;
}

/* mw_parse_optneg - see milterwire.h */
bool mw_parse_optneg(const struct mw_packet *pkt, struct mw_optneg *out)
{
	if (pkt->cmd != MW_CMD_OPTNEG || pkt->len < 12)
		return false;
	out->version = get32(pkt->data);
	out->actions = get32(pkt->data + 4);
	out->steps = get32(pkt->data + 8);
	return out->version >= 2;
}

/* mw_choose - see milterwire.h */
void mw_choose(const struct mw_optneg *mta, bool header, bool symlist_ok, struct mw_choice *out)
{
	memset(out, 0, sizeof(*out));
	uint32_t skip = MW_P_NOHELO | MW_P_NOEOH | MW_P_NOBODY | MW_P_NOUNKNOWN | MW_P_NODATA;
	if (!header)
		skip |= MW_P_NOHDRS; /* headers matter only to replace a forged result header */
	if (header) {
		if ((mta->actions & (MW_ACT_ADDHDRS | MW_ACT_CHGHDRS)) == (MW_ACT_ADDHDRS | MW_ACT_CHGHDRS))
			out->actions |= MW_ACT_ADDHDRS | MW_ACT_CHGHDRS;
		else
			out->header_refused = true;
	}
	bool macro_client = false;
	if (mta->actions & MW_ACT_SETSYMLIST) {
		out->actions |= MW_ACT_SETSYMLIST;
		out->symlist = symlist_ok;
		/* Postfix sends these by default; Sendmail needs them asked for. */
		macro_client = symlist_ok && (mta->steps & MW_P_NOCONNECT) != 0;
	}
	/* The connect step never refuses: without it (the address comes with
	 * MAIL FROM), or without a reply to it, one packet or round trip less
	 * per SMTP session. */
	skip |= macro_client ? MW_P_NOCONNECT : MW_P_NR_CONN;
	out->steps = mta->steps & skip;
	out->client_from_macro = (out->steps & MW_P_NOCONNECT) != 0;
	out->connect_noreply = (out->steps & MW_P_NR_CONN) != 0;
}

/* put_symlist - one macro list (stage, names, NUL) at *len */
static bool put_symlist(char *buf, size_t size, size_t *len, uint32_t stage, const char *names)
{
	size_t n = strlen(names) + 1;
	if (size - *len < 4 + n)
		return false;
	put32(buf + *len, stage);
	memcpy(buf + *len + 4, names, n);
	*len += 4 + n;
	return true;
}

/* mw_build_optneg - see milterwire.h */
size_t mw_build_optneg(const struct mw_optneg *mta, const struct mw_choice *choice, char *buf, size_t size)
{
	size_t len = MW_HEADER_SIZE + 1 + 12;
	if (size < len)
		return 0;
	buf[MW_HEADER_SIZE] = MW_REP_OPTNEG;
	/* The MTA's version when older than ours: it knows no later one. */
	put32(buf + MW_HEADER_SIZE + 1, mta->version < MW_VERSION ? mta->version : MW_VERSION);
	put32(buf + MW_HEADER_SIZE + 5, choice->actions);
	put32(buf + MW_HEADER_SIZE + 9, choice->steps);
	if (choice->symlist && (!put_symlist(buf, size, &len, MW_STAGE_ENVFROM, MW_MACROS_ENVFROM) ||
	                        !put_symlist(buf, size, &len, MW_STAGE_ENVRCPT, MW_MACROS_ENVRCPT)))
		return 0;
	put32(buf, (uint32_t)(len - MW_HEADER_SIZE));
	return len;
}

/* next_string - the NUL-terminated string at *pos in data[0..len); false
 * when it has no NUL */
static bool next_string(const char *data, size_t len, size_t *pos, const char **out)
{
	if (*pos >= len)
		return false;
	const char *nul = memchr(data + *pos, '\0', len - *pos);
	if (nul == NULL)
		return false;
	*out = data + *pos;
	*pos = (size_t)(nul - data) + 1;
	return true;
}

/* keep - copy a macro value into its slot, cut to fit */
static void keep(char *dst, size_t size, bool *has, const char *value)
{
	size_t n = strnlen(value, size - 1);
	memcpy(dst, value, n);
	dst[n] = '\0';
	*has = true;
}

/* mw_parse_macros - see milterwire.h */
bool mw_parse_macros(const struct mw_packet *pkt, char *stage, struct mw_macros *out)
{
	memset(out, 0, sizeof(*out));
	if (pkt->cmd != MW_CMD_MACRO || pkt->len < 1)
		return false;
	*stage = pkt->data[0];
	size_t pos = 1;
	while (pos < pkt->len) {
		const char *name, *value;
		if (!next_string(pkt->data, pkt->len, &pos, &name) ||
		    !next_string(pkt->data, pkt->len, &pos, &value))
			return false;
		if (strcmp(name, "i") == 0 || strcmp(name, "{i}") == 0)
			keep(out->queue_id, sizeof(out->queue_id), &out->has_queue_id, value);
		else if (strcmp(name, "{auth_authen}") == 0)
			keep(out->auth_authen, sizeof(out->auth_authen), &out->has_auth_authen, value);
		else if (strcmp(name, "{client_addr}") == 0)
			keep(out->client_addr, sizeof(out->client_addr), &out->has_client_addr, value);
	}
	return true;
}

/* mw_macro - see milterwire.h */
const char *mw_macro(const struct mw_macros *m, const char *name)
{
	if (strcmp(name, "i") == 0 || strcmp(name, "{i}") == 0)
		return m->has_queue_id ? m->queue_id : NULL;
	if (strcmp(name, "{auth_authen}") == 0)
		return m->has_auth_authen ? m->auth_authen : NULL;
	if (strcmp(name, "{client_addr}") == 0)
		return m->has_client_addr ? m->client_addr : NULL;
	return NULL;
}

/* mw_parse_args - see milterwire.h */
bool mw_parse_args(const struct mw_packet *pkt, const char **argv, size_t max)
{
	if (max < 2 || pkt->len == 0 || pkt->data[pkt->len - 1] != '\0')
		return false;
	size_t n = 0, pos = 0;
	const char *arg;
	while (n < max - 1 && next_string(pkt->data, pkt->len, &pos, &arg))
		argv[n++] = arg;
	argv[n] = NULL;
	return n > 0;
}

/* mw_parse_header - see milterwire.h */
bool mw_parse_header(const struct mw_packet *pkt, const char **name, const char **value)
{
	size_t pos = 0;
	return next_string(pkt->data, pkt->len, &pos, name) && next_string(pkt->data, pkt->len, &pos, value);
}

/* mw_parse_connect - see milterwire.h */
bool mw_parse_connect(const struct mw_packet *pkt, struct mw_connect *out)
{
	size_t pos = 0;
	memset(out, 0, sizeof(*out));
	if (!next_string(pkt->data, pkt->len, &pos, &out->hostname) || pos >= pkt->len)
		return false;
	out->family = pkt->data[pos++];
	if (out->family == 'U')
		return true;
	if (out->family != '4' && out->family != '6' && out->family != 'L')
		return false;
	if (pkt->len - pos < 2)
		return false;
	out->port = (uint16_t)((unsigned char)pkt->data[pos] << 8 | (unsigned char)pkt->data[pos + 1]);
	pos += 2;
	return next_string(pkt->data, pkt->len, &pos, &out->address);
}

/* mw_build_simple - see milterwire.h */
size_t mw_build_simple(char code, char *buf, size_t size)
{
	if (size < MW_HEADER_SIZE + 1)
		return 0;
	put32(buf, 1);
	buf[MW_HEADER_SIZE] = code;
	return MW_HEADER_SIZE + 1;
}

/* put_text - append s (NUL included) at *len, controls made spaces when
 * clean; false if it does not fit */
static bool put_text(char *buf, size_t size, size_t *len, const char *s, bool clean)
{
	size_t n = strlen(s);
	if (size - *len < n + 1)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		buf[*len + i] = clean && (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
	}
	buf[*len + n] = '\0';
	*len += n + 1;
	return true;
}

/* finish - write the length of a built packet; 0 if over MW_DATA_MAX */
static size_t finish(char *buf, size_t len)
{
	if (len - MW_HEADER_SIZE > MW_DATA_MAX)
		return 0;
	put32(buf, (uint32_t)(len - MW_HEADER_SIZE));
	return len;
}

/* mw_build_replycode - see milterwire.h */
size_t mw_build_replycode(const char *code, const char *ecode, const char *text, char *buf, size_t size)
{
	if (strlen(code) != 3 || (code[0] != '4' && code[0] != '5') || code[1] < '0' || code[1] > '9' ||
	    code[2] < '0' || code[2] > '9')
		return 0;
	for (const char *p = ecode; *p != '\0'; p++)
		if ((*p < '0' || *p > '9') && *p != '.')
			return 0;
	size_t need = MW_HEADER_SIZE + 1 + 4 + strlen(ecode) + 1 + strlen(text) + 1;
	if (size < need)
		return 0;
	size_t len = MW_HEADER_SIZE;
	buf[len++] = MW_REP_REPLYCODE;
	memcpy(buf + len, code, 3);
	len += 3;
	buf[len++] = ' ';
	if (ecode[0] != '\0') {
		memcpy(buf + len, ecode, strlen(ecode));
		len += strlen(ecode);
		buf[len++] = ' ';
	}
	if (!put_text(buf, size, &len, text, true))
		return 0;
	return finish(buf, len);
}

/* header_packet - a header reply: [index] name NUL value NUL */
static size_t header_packet(char code, bool indexed, uint32_t index, const char *name, const char *value,
                            char *buf, size_t size)
{
	size_t len = MW_HEADER_SIZE;
	if (size < len + 1 + (indexed ? 4 : 0))
		return 0;
	buf[len++] = code;
	if (indexed) {
		put32(buf + len, index);
		len += 4;
	}
	/* A header name or value with a CR or LF would add a header line. */
	if (!put_text(buf, size, &len, name, true) ||
	    !put_text(buf, size, &len, value != NULL ? value : "", true))
		return 0;
	return finish(buf, len);
}

/* mw_build_addheader - see milterwire.h */
size_t mw_build_addheader(const char *name, const char *value, char *buf, size_t size)
{
	return header_packet(MW_REP_ADDHEADER, false, 0, name, value, buf, size);
}

/* mw_build_chgheader - see milterwire.h */
size_t mw_build_chgheader(uint32_t index, const char *name, const char *value, char *buf, size_t size)
{
	return header_packet(MW_REP_CHGHEADER, true, index, name, value, buf, size);
}

/* mw_build_insheader - see milterwire.h */
size_t mw_build_insheader(uint32_t index, const char *name, const char *value, char *buf, size_t size)
{
	return header_packet(MW_REP_INSHEADER, true, index, name, value, buf, size);
}

/*
 * fuzz_milterwire.c - a hostile MTA's byte stream through the milter codec
 * (src/milterwire.c), as the native transport reads it: frame packet after
 * packet; each one goes to the parser of its command (OPTNEG then the
 * OPTNEG reply, MACRO, MAIL/RCPT, HEADER, CONNECT); every reply builder is
 * fed the strings a parser returned.
 *
 * Invariants (abort on violation): a framed packet lies inside the input
 * and its length is at most MW_DATA_MAX; a stream is consumed or stops at a
 * bad or partial frame; every string a parser returns lies inside the
 * packet and ends there with a NUL; macro values fit their slots; every
 * built reply is one packet whose length prefix matches what was built,
 * and a REPLYCODE or header reply holds no CR or LF.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzzcheck.h"
#include "milterwire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* inside - s is a NUL-terminated string within p */
static void inside(const struct mw_packet *p, const char *s)
{
	if (s < p->data || s >= p->data + p->len)
		FAIL();
	if (memchr(s, '\0', (size_t)(p->data + p->len - s)) == NULL)
		FAIL();
}

/* check_built - a built reply of n octets is one packet, one line */
static void check_built(const char *buf, size_t n, char code)
{
	if (n == 0)
		return;
	struct mw_packet p;
	size_t used = 0;
	if (mw_frame(buf, n, &p, &used) != MW_FRAME_OK || used != n || p.cmd != code)
		FAIL();
	if ((code == 'y' || code == 'h' || code == 'm' || code == 'i') &&
	    (memchr(p.data, '\r', p.len) != NULL || memchr(p.data, '\n', p.len) != NULL))
		FAIL();
}

/* replies - every builder with strings from the input */
static void replies(const char *a, const char *b)
{
	char buf[MW_DATA_MAX + 16];
	check_built(buf, mw_build_replycode("550", "5.1.0", a, buf, sizeof(buf)), 'y');
	check_built(buf, mw_build_replycode(a, b, "x", buf, sizeof(buf)), 'y');
	check_built(buf, mw_build_addheader(a, b, buf, sizeof(buf)), 'h');
	check_built(buf, mw_build_chgheader(1, a, b, buf, sizeof(buf)), 'm');
	check_built(buf, mw_build_insheader(0, a, b, buf, sizeof(buf)), 'i');
}

/* one_packet - parse p as its command says */
static void one_packet(const struct mw_packet *p)
{
	const char *argv[MW_ARGS_MAX];
	const char *name, *value;
	struct mw_macros m;
	struct mw_optneg neg;
	struct mw_connect c;
	char stage;
	switch (p->cmd) {
	case MW_CMD_OPTNEG:
		if (mw_parse_optneg(p, &neg)) {
			char buf[256];
			for (int header = 0; header < 2; header++) {
				struct mw_choice ch;
				mw_choose(&neg, header, true, &ch);
				if ((ch.steps & ~neg.steps) != 0)
					FAIL(); /* never a step the MTA did not offer */
				check_built(buf, mw_build_optneg(&neg, &ch, buf, sizeof(buf)), 'O');
			}
		}
		break;
	case MW_CMD_MACRO:
		if (mw_parse_macros(p, &stage, &m)) {
			const char *names[] = {"i", "{auth_authen}", "{client_addr}"};
			for (size_t i = 0; i < 3; i++) {
				const char *v = mw_macro(&m, names[i]);
				if (v != NULL && strlen(v) >= sizeof(m.auth_authen))
					FAIL();
			}
		}
		break;
	case MW_CMD_MAIL:
	case MW_CMD_RCPT:
		if (mw_parse_args(p, argv, MW_ARGS_MAX)) {
			size_t i = 0;
			for (; argv[i] != NULL; i++)
				inside(p, argv[i]);
			if (i >= MW_ARGS_MAX)
				FAIL();
			replies(argv[0], argv[1] != NULL ? argv[1] : "");
		}
		break;
	case MW_CMD_HEADER:
		if (mw_parse_header(p, &name, &value)) {
			inside(p, name);
			inside(p, value);
			replies(name, value);
		}
		break;
	case MW_CMD_CONNECT:
		if (mw_parse_connect(p, &c)) {
			inside(p, c.hostname);
			if (c.family != 'U')
				inside(p, c.address);
		}
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t pos = 0;
	while (pos < size) {
		struct mw_packet p;
		size_t used = 0;
		enum mw_frame_status st = mw_frame(data + pos, size - pos, &p, &used);
		if (st != MW_FRAME_OK)
			break;
		if (used > size - pos || p.len + 1 > MW_DATA_MAX || used != p.len + 5)
			FAIL();
		/* The parsers may read the packet only: give them a copy of
		 * exactly its size, so ASan sees any read past it. */
		char *copy = malloc(p.len + 1);
		if (copy == NULL)
			return 0;
		memcpy(copy, p.data, p.len);
		struct mw_packet own = {p.cmd, copy, p.len};
		one_packet(&own);
		free(copy);
		pos += used;
	}
	return 0;
}

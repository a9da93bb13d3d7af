/*
 * test_milterwire.c - the milter codec against hand-built packets: good
 * ones parse to what the MTA meant, hostile ones (truncated, oversized,
 * unterminated) are refused, and every reply is one well-formed packet.
 */
#include <string.h>

#include "milterwire.h"
#include "unit.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* pkt - a packet of cmd and data[0..len) into buf; returns its length */
static size_t pkt(char *buf, char cmd, const char *data, size_t len)
{
	uint32_t n = (uint32_t)len + 1;
	buf[0] = (char)(n >> 24);
	buf[1] = (char)(n >> 16);
	buf[2] = (char)(n >> 8);
	buf[3] = (char)n;
	buf[4] = cmd;
	memcpy(buf + 5, data, len);
	return len + 5;
}

/* parsed - frame buf and check it is one whole packet */
static struct mw_packet parsed(const char *buf, size_t len)
{
	struct mw_packet p;
	size_t used = 0;
	ck_assert_int_eq(mw_frame(buf, len, &p, &used), MW_FRAME_OK);
	ck_assert_uint_eq(used, len);
	return p;
}

static uint32_t get32(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;
	return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

START_TEST(frame_needs_and_bounds)
{
	char buf[64];
	struct mw_packet p;
	size_t used;
	size_t len = pkt(buf, 'Q', "", 0);
	for (size_t i = 0; i < len; i++)
		ck_assert_int_eq(mw_frame(buf, i, &p, &used), MW_FRAME_NEED);
	ck_assert_int_eq(mw_frame(buf, len, &p, &used), MW_FRAME_OK);
	ck_assert_int_eq(p.cmd, 'Q');
	ck_assert_uint_eq(p.len, 0);
	/* two packets: the first one only */
	size_t two = len + pkt(buf + len, 'A', "", 0);
	ck_assert_int_eq(mw_frame(buf, two, &p, &used), MW_FRAME_OK);
	ck_assert_uint_eq(used, len);
	/* length 0, and over the limit: bad without waiting for the data */
	memcpy(buf, "\0\0\0\0", 4);
	ck_assert_int_eq(mw_frame(buf, 4, &p, &used), MW_FRAME_BAD);
	memcpy(buf, "\xff\xff\xff\xff", 4);
	ck_assert_int_eq(mw_frame(buf, 4, &p, &used), MW_FRAME_BAD);
	memcpy(buf, "\0\1\0\0", 4); /* 65536 */
	ck_assert_int_eq(mw_frame(buf, 4, &p, &used), MW_FRAME_BAD);
	memcpy(buf, "\0\0\xff\xff", 4); /* 65535: allowed, needs its data */
	ck_assert_int_eq(mw_frame(buf, 8, &p, &used), MW_FRAME_NEED);
}
END_TEST

static const struct {
	uint32_t actions, steps;
	bool header;
	uint32_t want_actions, want_steps;
	bool symlist, from_macro, noreply;
} choose_cases[] = {
        /* Postfix: everything offered */
        {0x1ff, 0x1fffff, false, 0x100, 0x1 | 0x2 | 0x10 | 0x20 | 0x40 | 0x100 | 0x200, true, true, false},
        /* no SETSYMLIST: CONNECT without a reply */
        {0x0ff, 0x1fffff, false, 0, 0x2 | 0x10 | 0x20 | 0x40 | 0x100 | 0x200 | 0x1000, false, false, true},
        /* a result header: headers sent, header actions asked for */
        {0x1ff, 0x1fffff, true, 0x111, 0x1 | 0x2 | 0x10 | 0x40 | 0x100 | 0x200, true, true, false},
        /* an old MTA offering no step flags */
        {0x1ff, 0, false, 0x100, 0, true, false, false},
};

START_TEST(choose_like_libmilter_glue)
{
	struct mw_optneg mta = {6, choose_cases[_i].actions, choose_cases[_i].steps};
	struct mw_choice c;
	mw_choose(&mta, choose_cases[_i].header, true, &c);
	ck_assert_uint_eq(c.actions, choose_cases[_i].want_actions);
	ck_assert_uint_eq(c.steps, choose_cases[_i].want_steps);
	ck_assert_int_eq(c.symlist, choose_cases[_i].symlist);
	ck_assert_int_eq(c.client_from_macro, choose_cases[_i].from_macro);
	ck_assert_int_eq(c.connect_noreply, choose_cases[_i].noreply);
}
END_TEST

START_TEST(choose_symlist_failed_keeps_connect)
{
	struct mw_optneg mta = {6, 0x1ff, 0x1fffff};
	struct mw_choice c;
	mw_choose(&mta, false, false, &c);
	ck_assert(!c.symlist);
	ck_assert(!c.client_from_macro);
	ck_assert(c.connect_noreply);
	mta.actions = 0x0; /* no header actions offered */
	mw_choose(&mta, true, true, &c);
	ck_assert(c.header_refused);
}
END_TEST

START_TEST(optneg_round_trip)
{
	char buf[256], out[256];
	char data[12] = {0, 0, 0, 6, 0, 0, 1, 0xff - 256 + 256, 0, 0x1f, (char)0xff, (char)0xff};
	data[6] = 1;
	data[7] = (char)0xff;
	size_t len = pkt(buf, 'O', data, sizeof(data));
	struct mw_packet p = parsed(buf, len);
	struct mw_optneg mta;
	ck_assert(mw_parse_optneg(&p, &mta));
	ck_assert_uint_eq(mta.version, 6);
	ck_assert_uint_eq(mta.actions, 0x1ff);
	ck_assert_uint_eq(mta.steps, 0x1fffff);
	struct mw_choice c;
	mw_choose(&mta, false, true, &c);
	size_t n = mw_build_optneg(&mta, &c, out, sizeof(out));
	ck_assert_uint_gt(n, 17);
	struct mw_packet r = parsed(out, n);
	ck_assert_int_eq(r.cmd, 'O');
	ck_assert_uint_eq(get32(r.data), 6);
	ck_assert_uint_eq(get32(r.data + 4), c.actions);
	ck_assert_uint_eq(get32(r.data + 8), c.steps);
	ck_assert_uint_eq(get32(r.data + 12), MW_STAGE_ENVFROM);
	ck_assert_str_eq(r.data + 16, MW_MACROS_ENVFROM);
	const char *next = r.data + 16 + strlen(MW_MACROS_ENVFROM) + 1;
	ck_assert_uint_eq(get32(next), MW_STAGE_ENVRCPT);
	ck_assert_str_eq(next + 4, MW_MACROS_ENVRCPT);
	ck_assert_uint_eq((size_t)(next + 4 + strlen(MW_MACROS_ENVRCPT) + 1 - out), n);
	/* too small a buffer: 0, never a partial packet */
	ck_assert_uint_eq(mw_build_optneg(&mta, &c, out, 20), 0);
	/* short, and version 1 */
	len = pkt(buf, 'O', data, 11);
	p = parsed(buf, len);
	ck_assert(!mw_parse_optneg(&p, &mta));
	data[3] = 1;
	len = pkt(buf, 'O', data, 12);
	p = parsed(buf, len);
	ck_assert(!mw_parse_optneg(&p, &mta));
	/* an older MTA gets its own version back */
	struct mw_optneg old = {2, 0x1ff, 0};
	n = mw_build_optneg(&old, &c, out, sizeof(out));
	ck_assert_uint_eq(get32(out + 5), 2);
}
END_TEST

START_TEST(macros_parse)
{
	static const char data[] = "M{mail_addr}\0a@b\0i\0Q123\0{auth_authen}\0joe\0{client_addr}\0"
	                           "192.0.2.1\0";
	char buf[256];
	size_t len = pkt(buf, 'D', data, sizeof(data) - 1);
	struct mw_packet p = parsed(buf, len);
	struct mw_macros m;
	char stage = 0;
	ck_assert(mw_parse_macros(&p, &stage, &m));
	ck_assert_int_eq(stage, 'M');
	ck_assert_str_eq(mw_macro(&m, "i"), "Q123");
	ck_assert_str_eq(mw_macro(&m, "{auth_authen}"), "joe");
	ck_assert_str_eq(mw_macro(&m, "{client_addr}"), "192.0.2.1");
	ck_assert_ptr_null(mw_macro(&m, "{mail_addr}"));
	/* a stage alone: no macros */
	len = pkt(buf, 'D', "R", 1);
	p = parsed(buf, len);
	ck_assert(mw_parse_macros(&p, &stage, &m));
	ck_assert_ptr_null(mw_macro(&m, "i"));
	/* empty, a name without its value, a value without its NUL */
	len = pkt(buf, 'D', "", 0);
	p = parsed(buf, len);
	ck_assert(!mw_parse_macros(&p, &stage, &m));
	len = pkt(buf, 'D', "Mi\0", 3);
	p = parsed(buf, len);
	ck_assert(!mw_parse_macros(&p, &stage, &m));
	len = pkt(buf, 'D', "Mi\0Q12", 6);
	p = parsed(buf, len);
	ck_assert(!mw_parse_macros(&p, &stage, &m));
	len = pkt(buf, 'D', "Mi", 2);
	p = parsed(buf, len);
	ck_assert(!mw_parse_macros(&p, &stage, &m));
}
END_TEST

START_TEST(macro_value_cut)
{
	char data[1024], buf[1100];
	size_t n = 0;
	data[n++] = 'M';
	memcpy(data + n, "i", 2);
	n += 2;
	memset(data + n, 'x', 500);
	n += 500;
	data[n++] = '\0';
	size_t len = pkt(buf, 'D', data, n);
	struct mw_packet p = parsed(buf, len);
	struct mw_macros m;
	char stage;
	ck_assert(mw_parse_macros(&p, &stage, &m));
	ck_assert_uint_eq(strlen(mw_macro(&m, "i")), sizeof(m.queue_id) - 1);
}
END_TEST

START_TEST(args_parse)
{
	char buf[256];
	const char *argv[4];
	static const char data[] = "<a@b.example>\0SIZE=10\0BODY=8BITMIME\0SMTPUTF8\0";
	size_t len = pkt(buf, 'M', data, sizeof(data) - 1);
	struct mw_packet p = parsed(buf, len);
	ck_assert(mw_parse_args(&p, argv, N(argv)));
	ck_assert_str_eq(argv[0], "<a@b.example>");
	ck_assert_str_eq(argv[1], "SIZE=10");
	ck_assert_str_eq(argv[2], "BODY=8BITMIME");
	ck_assert_ptr_null(argv[3]); /* the rest ignored, the list ended */
	len = pkt(buf, 'M', "<>", 3);
	p = parsed(buf, len);
	ck_assert(mw_parse_args(&p, argv, N(argv)));
	ck_assert_str_eq(argv[0], "<>");
	len = pkt(buf, 'M', "<a@b>", 5); /* no NUL */
	p = parsed(buf, len);
	ck_assert(!mw_parse_args(&p, argv, N(argv)));
	len = pkt(buf, 'M', "", 0);
	p = parsed(buf, len);
	ck_assert(!mw_parse_args(&p, argv, N(argv)));
}
END_TEST

START_TEST(header_and_connect_parse)
{
	char buf[256];
	const char *name, *value;
	size_t len = pkt(buf, 'L', "X-A\0 v\0", 7);
	struct mw_packet p = parsed(buf, len);
	ck_assert(mw_parse_header(&p, &name, &value));
	ck_assert_str_eq(name, "X-A");
	ck_assert_str_eq(value, " v");
	len = pkt(buf, 'L', "X-A\0 v", 6);
	p = parsed(buf, len);
	ck_assert(!mw_parse_header(&p, &name, &value));

	struct mw_connect c;
	static const char c4[] = "mx.example\0"
	                         "4\x00\x19"
	                         "192.0.2.7";
	len = pkt(buf, 'C', c4, sizeof(c4));
	p = parsed(buf, len);
	ck_assert(mw_parse_connect(&p, &c));
	ck_assert_str_eq(c.hostname, "mx.example");
	ck_assert_int_eq(c.family, '4');
	ck_assert_uint_eq(c.port, 25);
	ck_assert_str_eq(c.address, "192.0.2.7");
	len = pkt(buf, 'C', "h\0U", 3);
	p = parsed(buf, len);
	ck_assert(mw_parse_connect(&p, &c));
	ck_assert_ptr_null(c.address);
	len = pkt(buf, 'C',
	          "h\0"
	          "4\x00",
	          4); /* port cut */
	p = parsed(buf, len);
	ck_assert(!mw_parse_connect(&p, &c));
	len = pkt(buf, 'C', "h\0X\0\0a", 7); /* unknown family */
	p = parsed(buf, len);
	ck_assert(!mw_parse_connect(&p, &c));
	len = pkt(buf, 'C',
	          "h\0"
	          "4\0\x19"
	          "1.2",
	          7); /* address without NUL */
	p = parsed(buf, len);
	ck_assert(!mw_parse_connect(&p, &c));
}
END_TEST

START_TEST(replies_build)
{
	char buf[512];
	size_t n = mw_build_simple('c', buf, sizeof(buf));
	ck_assert_uint_eq(n, 5);
	ck_assert_int_eq(memcmp(buf, "\0\0\0\1c", 5), 0);
	ck_assert_uint_eq(mw_build_simple('c', buf, 4), 0);

	n = mw_build_replycode("550", "5.1.0", "no <a@b> here\r\n550 5.0.0 forged", buf, sizeof(buf));
	struct mw_packet p = parsed(buf, n);
	ck_assert_int_eq(p.cmd, 'y');
	ck_assert_str_eq(p.data, "550 5.1.0 no <a@b> here  550 5.0.0 forged");
	ck_assert_uint_eq(p.len, strlen(p.data) + 1);
	n = mw_build_replycode("451", "", "later", buf, sizeof(buf));
	p = parsed(buf, n);
	ck_assert_str_eq(p.data, "451 later");
	ck_assert_uint_eq(mw_build_replycode("250", "2.0.0", "ok", buf, sizeof(buf)), 0);
	ck_assert_uint_eq(mw_build_replycode("55", "5.0.0", "x", buf, sizeof(buf)), 0);
	ck_assert_uint_eq(mw_build_replycode("550", "5.0.0 x", "x", buf, sizeof(buf)), 0);
	ck_assert_uint_eq(mw_build_replycode("550", "5.0.0", "text", buf, 15), 0);

	n = mw_build_addheader("X-V", "valid (cached)\n", buf, sizeof(buf));
	p = parsed(buf, n);
	ck_assert_int_eq(p.cmd, 'h');
	ck_assert_str_eq(p.data, "X-V");
	ck_assert_str_eq(p.data + 4, "valid (cached) ");
	n = mw_build_chgheader(2, "X-V", NULL, buf, sizeof(buf));
	p = parsed(buf, n);
	ck_assert_int_eq(p.cmd, 'm');
	ck_assert_uint_eq(get32(p.data), 2);
	ck_assert_str_eq(p.data + 4, "X-V");
	ck_assert_str_eq(p.data + 8, "");
	ck_assert_uint_eq(p.len, 9);
	n = mw_build_insheader(0, "X-V", "v", buf, sizeof(buf));
	p = parsed(buf, n);
	ck_assert_int_eq(p.cmd, 'i');
	ck_assert_uint_eq(mw_build_addheader("X-V", "v", buf, 9), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("milterwire");
	TCase *tc = tcase_create("milterwire");
	tcase_add_test(tc, frame_needs_and_bounds);
	tcase_add_loop_test(tc, choose_like_libmilter_glue, 0, N(choose_cases));
	tcase_add_test(tc, choose_symlist_failed_keeps_connect);
	tcase_add_test(tc, optneg_round_trip);
	tcase_add_test(tc, macros_parse);
	tcase_add_test(tc, macro_value_cut);
	tcase_add_test(tc, args_parse);
	tcase_add_test(tc, header_and_connect_parse);
	tcase_add_test(tc, replies_build);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

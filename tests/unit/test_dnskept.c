/*
 * test_dnskept.c - kept DNS answers (dnskept.c): a round trip keeps every
 * host with an address, its preference, its addresses (IPv4 first, IPv6
 * intact, whatever the lengths of the names between them) and the answer's
 * status, detail and TTL; hosts without an address are left out; equal
 * preferences are shuffled among themselves only, differently from one
 * answer to the next; the TTL handed out is what is left (never 0 when
 * known, 0 when unknown); answers that are not OK keep no hosts.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dnskept.h"
#include "unit.h"

static void add4(struct dns_host *h, const char *text)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&h->addresses[h->address_count++];
	sin->sin_family = AF_INET;
	ck_assert_int_eq(inet_pton(AF_INET, text, &sin->sin_addr), 1);
}

static void add6(struct dns_host *h, const char *text)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&h->addresses[h->address_count++];
	sin6->sin6_family = AF_INET6;
	ck_assert_int_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1);
}

static const char *text_of(const struct sockaddr_storage *ss, char *buf, size_t size)
{
	const void *raw = ss->ss_family == AF_INET
	                          ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
	                          : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
	ck_assert_ptr_nonnull(inet_ntop(ss->ss_family, raw, buf, (socklen_t)size));
	return buf;
}

/* five hosts: a (10; two IPv4, one IPv6), b (10; IPv6 only; a name of odd
 * length), none (15; no address), c (20; IPv4), d (20; IPv4 and IPv6) */
static struct dns_host hosts[5];

static struct dns_answer sample(void)
{
	memset(hosts, 0, sizeof(hosts));
	snprintf(hosts[0].name, sizeof(hosts[0].name), "a.example");
	hosts[0].preference = 10;
	add4(&hosts[0], "192.0.2.1");
	add4(&hosts[0], "192.0.2.2");
	add6(&hosts[0], "2001:db8::a");
	snprintf(hosts[1].name, sizeof(hosts[1].name), "bbbbbbb.example");
	hosts[1].preference = 10;
	add6(&hosts[1], "2001:db8::b");
	snprintf(hosts[2].name, sizeof(hosts[2].name), "none.example");
	hosts[2].preference = 15;
	snprintf(hosts[3].name, sizeof(hosts[3].name), "c.example");
	hosts[3].preference = 20;
	add4(&hosts[3], "198.51.100.3");
	snprintf(hosts[4].name, sizeof(hosts[4].name), "dd.example");
	hosts[4].preference = 20;
	add4(&hosts[4], "198.51.100.4");
	add6(&hosts[4], "2001:db8::d");
	struct dns_answer a = {.status = DNS_OK, .host_count = 5, .hosts = hosts, .ttl_ms = 60000};
	snprintf(a.detail, sizeof(a.detail), "4 MX host(s)");
	return a;
}

/* find - the host of that name in an answer, or NULL */
static const struct dns_host *find(const struct dns_answer *a, const char *name)
{
	for (size_t i = 0; i < a->host_count; i++)
		if (strcmp(a->hosts[i].name, name) == 0)
			return &a->hosts[i];
	return NULL;
}

START_TEST(round_trip)
{
	struct dns_answer in = sample();
	struct dns_kept *k = dns_keep(&in);
	ck_assert_ptr_nonnull(k);
	ck_assert_int_eq(dns_kept_status(k), DNS_OK);
	ck_assert_int_eq(dns_kept_ttl_ms(k), 60000);
	struct dns_answer out;
	ck_assert(dns_kept_answer(k, 12345, &out));
	ck_assert_int_eq(out.status, DNS_OK);
	ck_assert_int_eq(out.ttl_ms, 12345);
	ck_assert_str_eq(out.detail, "4 MX host(s)");
	ck_assert_uint_eq(out.host_count, 4); /* none.example left out */
	ck_assert_ptr_null(find(&out, "none.example"));
	char buf[64];
	const struct dns_host *a = find(&out, "a.example");
	ck_assert_ptr_nonnull(a);
	ck_assert_uint_eq(a->preference, 10);
	ck_assert_uint_eq(a->address_count, 3);
	ck_assert_str_eq(text_of(&a->addresses[0], buf, sizeof(buf)), "192.0.2.1");
	ck_assert_str_eq(text_of(&a->addresses[1], buf, sizeof(buf)), "192.0.2.2");
	ck_assert_str_eq(text_of(&a->addresses[2], buf, sizeof(buf)), "2001:db8::a");
	const struct dns_host *b = find(&out, "bbbbbbb.example");
	ck_assert_ptr_nonnull(b);
	ck_assert_uint_eq(b->address_count, 1);
	ck_assert_str_eq(text_of(&b->addresses[0], buf, sizeof(buf)), "2001:db8::b");
	const struct dns_host *d = find(&out, "dd.example");
	ck_assert_ptr_nonnull(d);
	ck_assert_uint_eq(d->preference, 20);
	ck_assert_str_eq(text_of(&d->addresses[0], buf, sizeof(buf)), "198.51.100.4");
	ck_assert_str_eq(text_of(&d->addresses[1], buf, sizeof(buf)), "2001:db8::d");
	/* preferences stay in order */
	ck_assert_uint_eq(out.hosts[0].preference, 10);
	ck_assert_uint_eq(out.hosts[1].preference, 10);
	ck_assert_uint_eq(out.hosts[2].preference, 20);
	ck_assert_uint_eq(out.hosts[3].preference, 20);
	dns_answer_clear(&out);
	ck_assert_ptr_null(out.hosts);
	dns_kept_free(k);
}
END_TEST

/* equal preferences in both orders over many answers; never across */
START_TEST(equal_preferences_shuffled)
{
	struct dns_answer in = sample();
	struct dns_kept *k = dns_keep(&in);
	ck_assert_ptr_nonnull(k);
	bool a_first = false, b_first = false, c_third = false, d_third = false;
	for (int i = 0; i < 200; i++) {
		struct dns_answer out;
		ck_assert(dns_kept_answer(k, 1000, &out));
		a_first |= strcmp(out.hosts[0].name, "a.example") == 0;
		b_first |= strcmp(out.hosts[0].name, "bbbbbbb.example") == 0;
		c_third |= strcmp(out.hosts[2].name, "c.example") == 0;
		d_third |= strcmp(out.hosts[2].name, "dd.example") == 0;
		ck_assert_uint_eq(out.hosts[0].preference, 10);
		ck_assert_uint_eq(out.hosts[2].preference, 20);
		dns_answer_clear(&out);
	}
	ck_assert(a_first && b_first && c_third && d_third);
	dns_kept_free(k);
}
END_TEST

/* the TTL handed out: what is left, at least 1 ms; 0 stays unknown */
START_TEST(ttl_left)
{
	struct dns_answer in = {.status = DNS_NXDOMAIN, .ttl_ms = 3000};
	snprintf(in.detail, sizeof(in.detail), "MX x.test: NXDOMAIN");
	struct dns_kept *k = dns_keep(&in);
	ck_assert_ptr_nonnull(k);
	struct dns_answer out;
	ck_assert(dns_kept_answer(k, 0, &out));
	ck_assert_int_eq(out.status, DNS_NXDOMAIN);
	ck_assert_int_eq(out.ttl_ms, 1); /* known and over: never "unknown" */
	ck_assert_uint_eq(out.host_count, 0);
	ck_assert_str_eq(out.detail, "MX x.test: NXDOMAIN");
	dns_answer_clear(&out);
	dns_kept_free(k);
	in.ttl_ms = 0;
	k = dns_keep(&in);
	ck_assert_int_eq(dns_kept_ttl_ms(k), 0);
	ck_assert(dns_kept_answer(k, 5000, &out));
	ck_assert_int_eq(out.ttl_ms, 0);
	dns_kept_free(k);
	/* a TEMPFAIL with hosts (it never has any) keeps none */
	struct dns_answer tf = sample();
	tf.status = DNS_TEMPFAIL;
	tf.ours = true; /* our own failure (no socket) stays ours through the copy */
	k = dns_keep(&tf);
	ck_assert(dns_kept_answer(k, 5000, &out));
	ck_assert_uint_eq(out.host_count, 0);
	ck_assert(out.ours);
	ck_assert_ptr_null(out.hosts);
	dns_kept_free(k);
	dns_kept_free(NULL);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dnskept");
	TCase *tc = tcase_create("dnskept");
	tcase_add_test(tc, round_trip);
	tcase_add_test(tc, equal_preferences_shuffled);
	tcase_add_test(tc, ttl_left);
	suite_add_tcase(s, tc);
	return unit_run(s);
}

/*
 * dnskept.c - compact copies of DNS answers (see dnskept.h).
 *
 * A kept answer is one allocation: the struct, then its hosts, then their
 * addresses (struct in6_addr / in_addr; handed out IPv4 first, as dns.h
 * orders them), then their names. Owns nothing else.
 */
#include "dnskept.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* one host of a kept answer: its addresses follow in the block */
struct kept_host {
	const char *name;
	unsigned preference;
	size_t n4, n6;
	const struct in_addr *v4;
	const struct in6_addr *v6;
};

struct dns_kept {
	enum dns_status status;
	bool implicit_mx;
	bool ours;      /* TEMPFAIL of our own (dns_answer.ours) */
	int64_t ttl_ms; /* as the answer gave it: 0 unknown */
	char detail[256];
	size_t host_count;
	struct kept_host hosts[]; /* then the addresses and names */
};

/* count_family - how many of a host's addresses are of family */
static size_t count_family(const struct dns_host *h, int family)
{
	size_t n = 0;
	for (size_t a = 0; a < h->address_count && a < DNS_HOST_ADDRS_MAX; a++)
		n += h->addresses[a].ss_family == family;
	return n;
}

/* dns_keep - see dnskept.h */
struct dns_kept *dns_keep(const struct dns_answer *answer)
{
	size_t hosts = 0, addr_bytes = 0, name_bytes = 0;
	bool ok = answer->status == DNS_OK;
	for (size_t i = 0; ok && i < answer->host_count; i++) {
		const struct dns_host *h = &answer->hosts[i];
		size_t n4 = count_family(h, AF_INET), n6 = count_family(h, AF_INET6);
		if (n4 + n6 == 0)
			continue;
		hosts++;
		addr_bytes += n6 * sizeof(struct in6_addr) + n4 * sizeof(struct in_addr);
		name_bytes += strlen(h->name) + 1;
	}
	struct dns_kept *k = malloc(sizeof(*k) + hosts * sizeof(struct kept_host) + addr_bytes + name_bytes);
	if (k == NULL)
		return NULL;
	k->status = answer->status;
	k->implicit_mx = answer->implicit_mx;
	k->ours = answer->ours;
	k->ttl_ms = answer->ttl_ms > 0 ? answer->ttl_ms : 0;
	snprintf(k->detail, sizeof(k->detail), "%s", answer->detail);
	k->host_count = 0;
	/* in6_addr and in_addr need 4-byte alignment: the block after the
	 * hosts array has it, and every address is a multiple of 4 bytes, so
	 * all the addresses come first, then all the names */
	unsigned char *p = (unsigned char *)(k->hosts + hosts);
	char *names = (char *)p + addr_bytes;
	for (size_t i = 0; ok && i < answer->host_count; i++) {
		const struct dns_host *h = &answer->hosts[i];
		size_t n4 = count_family(h, AF_INET), n6 = count_family(h, AF_INET6);
		if (n4 + n6 == 0)
			continue;
		struct kept_host *kh = &k->hosts[k->host_count++];
		kh->preference = h->preference;
		kh->n4 = n4;
		kh->n6 = n6;
		struct in6_addr *v6 = (struct in6_addr *)p;
		p += n6 * sizeof(struct in6_addr);
		struct in_addr *v4 = (struct in_addr *)p;
		p += n4 * sizeof(struct in_addr);
		size_t i4 = 0, i6 = 0;
		for (size_t a = 0; a < h->address_count && a < DNS_HOST_ADDRS_MAX; a++) {
			const struct sockaddr_storage *ss = &h->addresses[a];
			if (ss->ss_family == AF_INET)
				v4[i4++] = ((const struct sockaddr_in *)ss)->sin_addr;
			else if (ss->ss_family == AF_INET6)
				v6[i6++] = ((const struct sockaddr_in6 *)ss)->sin6_addr;
		}
		kh->v4 = v4;
		kh->v6 = v6;
		size_t len = strlen(h->name) + 1;
		kh->name = memcpy(names, h->name, len);
		names += len;
	}
	return k;
}

/* dns_kept_free - see dnskept.h */
void dns_kept_free(struct dns_kept *kept)
{
	free(kept);
}

/* dns_kept_status - see dnskept.h */
enum dns_status dns_kept_status(const struct dns_kept *kept)
{
	return kept->status;
}

/* dns_kept_ttl_ms - see dnskept.h */
int64_t dns_kept_ttl_ms(const struct dns_kept *kept)
{
	return kept->ttl_ms;
}

/* dns_kept_answer - see dnskept.h */
bool dns_kept_answer(const struct dns_kept *kept, int64_t ttl_left_ms, struct dns_answer *out)
{
	memset(out, 0, sizeof(*out));
	out->status = kept->status;
	out->implicit_mx = kept->implicit_mx;
	out->ours = kept->ours;
	out->ttl_ms = kept->ttl_ms == 0 ? 0 : ttl_left_ms > 0 ? ttl_left_ms : 1;
	snprintf(out->detail, sizeof(out->detail), "%s", kept->detail);
	size_t n = kept->host_count;
	if (n == 0)
		return true;
	out->hosts = calloc(n, sizeof(*out->hosts));
	size_t *order = calloc(n, sizeof(*order));
	if (out->hosts == NULL || order == NULL) {
		free(order);
		dns_answer_clear(out);
		return false;
	}
	/* hosts are sorted by preference: shuffle each run of equal ones */
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	for (size_t start = 0, end; start < n; start = end) {
		unsigned pref = kept->hosts[start].preference;
		for (end = start + 1; end < n && kept->hosts[end].preference == pref; end++)
			;
		for (size_t i = end - 1; i > start; i--) {
			size_t j = start + (size_t)arc4random_uniform((uint32_t)(i - start + 1));
			size_t t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
	}
	for (size_t i = 0; i < n; i++) {
		const struct kept_host *kh = &kept->hosts[order[i]];
		struct dns_host *h = &out->hosts[out->host_count++];
		snprintf(h->name, sizeof(h->name), "%s", kh->name);
		h->preference = kh->preference;
		size_t a = 0;
		for (size_t k = 0; k < kh->n4 && a < DNS_HOST_ADDRS_MAX; k++, a++) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&h->addresses[a];
			sin->sin_family = AF_INET;
			sin->sin_addr = kh->v4[k];
		}
		for (size_t k = 0; k < kh->n6 && a < DNS_HOST_ADDRS_MAX; k++, a++) {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&h->addresses[a];
			sin6->sin6_family = AF_INET6;
			sin6->sin6_addr = kh->v6[k];
		}
		h->address_count = a;
	}
	free(order);
	return true;
}

/* dns_answer_clear - see dnskept.h */
void dns_answer_clear(struct dns_answer *answer)
{
	free(answer->hosts);
	answer->hosts = NULL;
	answer->host_count = 0;
}

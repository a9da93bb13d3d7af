/*
 * fuzz_milter.c - what the MTA hands the milter callbacks (src/milter.c),
 * through the functions those callbacks call with it.
 *
 * The input is split at NUL octets into: sender (MAIL FROM argv[0], with
 * any ESMTP arguments the MTA leaves in it), recipient (RCPT TO argv[0]),
 * {auth_authen}, {i} (queue id), the connect host name, and the connect
 * address (4 octets: IPv4, 16: IPv6, anything else: unknown). Then, as the
 * callbacks do: on_connect's address text (inet_ntop into INET6_ADDRSTRLEN),
 * on_envfrom's cut copy of the sender, precheck_sender() (addr_parse, the
 * trusted networks, {auth_authen}, the allow lists), policy_for_domain() for
 * a sender to verify, on_envrcpt's precheck_recipient_exempt(), the verdict
 * line (kv_add of queue id, client, sender, rcpt, detail), and refuse():
 * reply_bare_address(), reply_expand() of every reply template of a config
 * that lists domains, networks and senders, reply_double_percent().
 *
 * Invariants (abort on violation): the verdict is one of the three, reason
 * a non-empty static string, detail NUL-terminated printable ASCII; a
 * sender of bad syntax is never "verify" and a "verify" sender has a
 * non-empty domain; the verdict line is one line of printable ASCII; the
 * expanded reply is printable ASCII of at most REPLY_TEXT_MAX octets, and
 * after doubling, every "%" comes in pairs; no leak (ASan).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "conf.h"
#include "fuzzcheck.h"
#include "log.h"
#include "policy.h"
#include "precheck.h"
#include "reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf_text[] =
        "trusted_networks = 127.0.0.0/8, ::1/128, 192.0.2.0/24, 2001:db8::/32\n"
        "skip_authenticated = yes\n"
        "allow_sender_domains = trusted.example, xn--bcher-kva.example\n"
        "allow_senders = alerts@partner.example, \"quoted user\"@partner.example\n"
        "exempt_recipients = postmaster, abuse, hostmaster@example.org\n"
        "sender_domain_blocklist = disposable.example\n"
        "domain_overrides = outlook.example catch_all=accept valid=accept, skip.example skip\n"
        "invalid_reply = 550 5.1.0 Sender address <%a> rejected: mailbox does not exist (%m) %% %o %r\n";

static struct conf *conf;

static void on_conf_error(void *arg, const char *msg)
{
	fprintf(stderr, "fuzz_milter: %s\n", msg);
}

/* next_field - the next NUL-terminated field of the input, copied */
static char *next_field(const uint8_t **p, size_t *left, size_t *len)
{
	const uint8_t *nul = memchr(*p, 0, *left);
	size_t n = nul != NULL ? (size_t)(nul - *p) : *left;
	char *s = malloc(n + 1);
	if (s == NULL)
		FAIL();
	memcpy(s, *p, n);
	s[n] = '\0';
	*p += n;
	*left -= n;
	if (nul != NULL) {
		(*p)++;
		(*left)--;
	}
	if (len != NULL)
		*len = n;
	return s;
}

/* refuse - as milter.c's refuse() and reply_with() build the reply */
static void refuse(const struct reply_template *tmpl, const char *sender, const char *reason,
                   const char *outcome, const char *remote)
{
	char bare[1024];
	reply_bare_address(sender, bare, sizeof(bare));
	struct reply_vars vars = {.address = bare, .reason = reason, .outcome = outcome, .remote = remote};
	char text[REPLY_TEXT_MAX + 1];
	char escaped[2 * REPLY_TEXT_MAX + 1];
	size_t n = reply_expand(tmpl, &vars, text, sizeof(text));
	if (n != strlen(text))
		FAIL();
	fuzz_check_printable(text, REPLY_TEXT_MAX);
	reply_double_percent(text, escaped, sizeof(escaped));
	fuzz_check_printable(escaped, 2 * REPLY_TEXT_MAX);
	for (const char *e = escaped; *e != '\0'; e++)
		if (*e == '%' && *++e != '%')
			FAIL(); /* a lone "%": libmilter would read a format */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	if (conf == NULL) {
		conf = conf_load_text("fuzz_milter.conf", conf_text, on_conf_error, NULL);
		if (conf == NULL)
			FAIL();
	}
	const uint8_t *p = data;
	size_t left = size, addr_len;
	char *sender = next_field(&p, &left, NULL);
	char *rcpt = next_field(&p, &left, NULL);
	char *auth = next_field(&p, &left, NULL);
	char *qid_in = next_field(&p, &left, NULL);
	char *hostname = next_field(&p, &left, NULL);
	char *addr = next_field(&p, &left, &addr_len);

	/* on_connect */
	struct sockaddr_storage client;
	bool client_known = false;
	char client_text[INET6_ADDRSTRLEN] = "unknown";
	memset(&client, 0, sizeof(client));
	if (addr_len == 4) {
		struct sockaddr_in *a4 = (struct sockaddr_in *)&client;
		a4->sin_family = AF_INET;
		memcpy(&a4->sin_addr, addr, 4);
		client_known = inet_ntop(AF_INET, &a4->sin_addr, client_text, sizeof(client_text)) != NULL;
	} else if (addr_len == 16) {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&client;
		a6->sin6_family = AF_INET6;
		memcpy(&a6->sin6_addr, addr, 16);
		client_known = inet_ntop(AF_INET6, &a6->sin6_addr, client_text, sizeof(client_text)) != NULL;
	}
	if (addr_len == 4 || addr_len == 16)
		if (!client_known)
			FAIL();
	fuzz_check_printable(client_text, sizeof(client_text) - 1);

	/* on_envfrom */
	char msg_sender[ADDR_PATH_MAX + 3], queue_id[32];
	snprintf(msg_sender, sizeof(msg_sender), "%s", sender);
	snprintf(queue_id, sizeof(queue_id), "%s", qid_in);
	struct precheck_result check;
	precheck_sender(conf, sender, client_known ? (const struct sockaddr *)&client : NULL, auth, &check);
	if (check.reason == NULL || check.reason[0] == '\0')
		FAIL();
	fuzz_check_printable(check.detail, sizeof(check.detail) - 1);
	const char *matched = NULL;
	enum policy_domain pd = POLICY_DOMAIN_VERIFY;
	switch (check.verdict) {
	case PRECHECK_ACCEPT:
		break;
	case PRECHECK_REJECT:
		break;
	case PRECHECK_VERIFY:
		if (check.sender.domain_ascii[0] == '\0' || strcmp(check.reason, "bad_syntax") == 0)
			FAIL();
		pd = policy_for_domain(conf, check.sender.domain_ascii, &matched);
		if (pd != POLICY_DOMAIN_VERIFY && matched == NULL)
			FAIL();
		break;
	default:
		FAIL();
	}

	/* on_envrcpt */
	bool exempt = precheck_recipient_exempt(conf, rcpt);
	char line[1536];
	size_t len = 0;
	line[0] = '\0';
	kv_add(line, sizeof(line), &len, "verdict queue_id", queue_id[0] ? queue_id : "-");
	kv_add(line, sizeof(line), &len, "client", client_text);
	kv_add(line, sizeof(line), &len, "sender", msg_sender);
	kv_add(line, sizeof(line), &len, "action", exempt ? "accept" : "reject");
	kv_add(line, sizeof(line), &len, "reason", check.reason);
	kv_add(line, sizeof(line), &len, "rcpt", rcpt);
	kv_add(line, sizeof(line), &len, "detail", matched != NULL ? matched : check.detail);
	kv_add(line, sizeof(line), &len, "host", hostname);
	if (len != strlen(line) || len >= sizeof(line))
		FAIL();
	fuzz_check_printable(line, sizeof(line) - 1);

	/* refuse(): every template with the sender and the client's strings */
	const struct reply_template *tmpls[] = {
	        &conf->bad_syntax_reply, &conf->invalid_reply, &conf->no_domain_reply, &conf->reject_reply,
	        &conf->tempfail_reply,   &conf->budget_reply,  &conf->blocklist_reply};
	for (size_t i = 0; i < sizeof(tmpls) / sizeof(tmpls[0]); i++)
		refuse(tmpls[i], msg_sender, check.detail, check.reason, hostname);

	free(sender);
	free(rcpt);
	free(auth);
	free(qid_in);
	free(hostname);
	free(addr);
	return 0;
}

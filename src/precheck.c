/*
 * precheck.c - decide about a sender from the MTA's facts and the config.
 *
 * Order matters and follows what an administrator expects: the null sender
 * is never blocked (bounces must flow); trusted networks and authenticated
 * clients are ours and never checked, whatever they send; only then is the
 * address parsed, and allow-lists are matched on the parsed, normalized form
 * so "User@Example.COM" and "user@example.com" meet the same entry.
 * Owns nothing: results go into the caller's struct precheck_result.
 */
#include "precheck.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* settle - fill in a decision */
static void settle(struct precheck_result *out, enum precheck_verdict verdict, const char *reason)
{
	out->verdict = verdict;
	out->reason = reason;
}

/* allowlisted_domain - the allow_sender_domains entry covering domain, or NULL */
static const char *allowlisted_domain(const struct conf *conf, const char *domain)
{
	for (size_t i = 0; i < conf->allow_sender_domains.count; i++)
		if (addr_domain_within(domain, conf->allow_sender_domains.items[i]))
			return conf->allow_sender_domains.items[i];
	return NULL;
}

/* precheck_sender - see precheck.h */
void precheck_sender(const struct conf *conf, const char *sender, const struct sockaddr *client,
                     const char *auth_authen, struct precheck_result *out)
{
	memset(out, 0, sizeof(*out));
	const char *text = sender != NULL ? sender : "";
	size_t len = strlen(text);

	if (len == 0 || strcmp(text, "<>") == 0) {
		out->sender.is_null = true;
		settle(out, PRECHECK_ACCEPT, "null_sender");
		return;
	}
	if (client != NULL && cidr_list_contains(&conf->trusted_networks, client)) {
		settle(out, PRECHECK_ACCEPT, "trusted_network");
		return;
	}
	if (conf->skip_authenticated && auth_authen != NULL && *auth_authen != '\0') {
		snprintf(out->detail, sizeof(out->detail), "authenticated as %.100s", auth_authen);
		/* the login name is the client's text: keep the detail printable
		 * (it reaches logs and replies as it is) */
		for (char *p = out->detail; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
				*p = '?';
		settle(out, PRECHECK_ACCEPT, "authenticated");
		return;
	}
	if (!addr_parse(text, len, &out->sender, out->detail, sizeof(out->detail))) {
		settle(out, PRECHECK_REJECT, "bad_syntax");
		return;
	}
	if (out->sender.is_null) {
		/* e.g. "<@relay.example:>"-style oddities that still mean <> */
		settle(out, PRECHECK_ACCEPT, "null_sender");
		return;
	}
	const char *covering = allowlisted_domain(conf, out->sender.domain_ascii);
	if (covering != NULL) {
		snprintf(out->detail, sizeof(out->detail), "domain listed as %.120s", covering);
		settle(out, PRECHECK_ACCEPT, "allowlisted_domain");
		return;
	}
	if (conf_strings_contains(&conf->allow_senders, out->sender.normalized)) {
		settle(out, PRECHECK_ACCEPT, "allowlisted_sender");
		return;
	}
	settle(out, PRECHECK_VERIFY, "needs_verification");
}

/* strip_brackets - "<a@b>" -> a@b into buf; false when it does not fit */
static bool strip_brackets(const char *recipient, char *buf, size_t size)
{
	size_t len = strlen(recipient);
	if (len >= 2 && recipient[0] == '<' && recipient[len - 1] == '>') {
		recipient++;
		len -= 2;
	}
	if (len >= size)
		return false;
	memcpy(buf, recipient, len);
	buf[len] = '\0';
	return true;
}

/* precheck_recipient_exempt - see precheck.h */
bool precheck_recipient_exempt(const struct conf *conf, const char *recipient)
{
	char bare[ADDR_PATH_MAX + 1];
	if (recipient == NULL || !strip_brackets(recipient, bare, sizeof(bare)))
		return false;
	const char *at = strrchr(bare, '@');
	size_t local_len = at != NULL ? (size_t)(at - bare) : strlen(bare);

	for (size_t i = 0; i < conf->exempt_recipients.count; i++) {
		const char *entry = conf->exempt_recipients.items[i];
		if (strchr(entry, '@') != NULL) {
			if (strcasecmp(entry, bare) == 0)
				return true;
		} else if (strlen(entry) == local_len && strncasecmp(entry, bare, local_len) == 0) {
			return true;
		}
	}
	return false;
}

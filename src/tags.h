/*
 * tags.h - per-message sender tags: the stable form of a tagged sender.
 *
 * Some senders carry a tag in the local part that changes with every
 * message, so that each message has an envelope sender of its own. Probing
 * each of them would cost one probe a message; the verifier instead probes
 * the address as given once and remembers the answer under the stable form
 * this module computes, which every address of the same sender shares.
 *
 * Recognised patterns (the local part's prefix is matched without regard
 * to case; a quoted local part is never tagged):
 *
 *   batv  BATV "prvs" (draft-levine-smtp-batv-01, section 4.1; Exim, Postfix
 *         add-ons):      prvs=TAG=LOCAL@DOMAIN           -> LOCAL@DOMAIN
 *         Microsoft 365: msprvs1=TAG=LOCAL@DOMAIN        -> LOCAL@DOMAIN
 *         Barracuda:     btv1==TAG==LOCAL@DOMAIN         -> LOCAL@DOMAIN
 *         TAG is one or more letters, digits or '-'; LOCAL is not empty.
 *   srs   Sender Rewriting Scheme (Shevek's libsrs2, postsrsd; the
 *         separator after SRS0/SRS1 may be '=', '+' or '-'):
 *           SRS0=HASH=TT=ODOMAIN=OLOCAL@FWD    -> SRS0=odomain=OLOCAL@FWD
 *           SRS1=HASH=FWD1==HASH0=TT=ODOMAIN=OLOCAL@FWD2
 *                                              -> SRS1=fwd1==odomain=OLOCAL@FWD2
 *         HASH and TT change with the day and are dropped; the forwarder's
 *         own address (FWD, FWD2) and the original sender stay. An SRS1
 *         whose inner part is not SRS0-shaped keeps it as it is
 *         (SRS1=fwd1=REST@FWD2, only the outer hash dropped).
 *   verp  VERP-style bounce addresses of mailing lists: BASE+X@DOMAIN where
 *         X contains '=' (e.g. list-bounces+bob=example.org@lists.example)
 *         -> BASE@DOMAIN. BASE is not empty.
 *
 * A local part that has the shape of a pattern whose kind is not enabled is
 * not tagged at all (an SRS0+... address never falls through to verp).
 * The stable form of SRS is only a name for the cache: it is never probed.
 * Pure: no state, no allocation.
 */
#ifndef VEMILTER_TAGS_H
#define VEMILTER_TAGS_H

#include <stdbool.h>
#include <stddef.h>

#include "addr.h"
#include "conf.h"

enum tag_kind {
	TAG_NONE,
	TAG_BATV,
	TAG_SRS,
	TAG_VERP,
};

/* Which kinds are enabled: bits (1 << TAG_BATV) etc. */
#define TAGS_ALL ((1u << TAG_BATV) | (1u << TAG_SRS) | (1u << TAG_VERP))

/* tags_enabled - the kinds conf->tagged_senders names ("batv", "srs", "verp") */
unsigned tags_enabled(const struct conf *conf);

/* tags_stable_form - the stable form of a tagged sender into out (NUL
 * terminated, at most ADDR_PATH_MAX), and which pattern matched; TAG_NONE
 * (out "") when the address is not tagged by an enabled pattern, or the
 * stable form does not fit size. */
enum tag_kind tags_stable_form(const struct addr *address, unsigned enabled, char *out, size_t size);

/* tags_kind_name - "batv", "srs", "verp", "none" */
const char *tags_kind_name(enum tag_kind kind);

#endif

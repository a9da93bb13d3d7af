/*
 * linger.h - who owns work that goes on after a verdict was reported.
 *
 * A probe reports its verdict the moment it is known; saying QUIT, waiting
 * for its reply and closing (smtp.c), or waiting for the catch-all RCPT's
 * late answer (callout.c), happen afterwards. Such objects sit on a struct
 * linger_list: a callout keeps every live SMTP probe of its own on one, and
 * itself, once it has reported, on the engine's. Each takes itself off when
 * it ends (on_empty tells the list's owner when the last one has gone);
 * linger_close_all() ends all at once, without callbacks, when the owner
 * goes away (engine_free, a callout's release), so nothing leaks and
 * nothing calls back into a freed caller. An intrusive doubly-linked list;
 * owns nothing but the links.
 *
 * Threads: the thread that runs the event loop, like everything on it.
 */
#ifndef VEMILTER_LINGER_H
#define VEMILTER_LINGER_H

#include <stddef.h>

struct linger_item {
	struct linger_item *prev, *next;
	/* close at once, without callbacks; called after the item was taken
	 * off its list, and may free the object around it */
	void (*close)(struct linger_item *item);
};

struct linger_list {
	struct linger_item *head;
	size_t count;
	/* the last item left on its own (not by linger_close_all); may free
	 * the list's owner; NULL: nobody asks */
	void (*on_empty)(struct linger_list *l);
};

/* linger_add - item (not on any list) joins l; close is how to end it */
static inline void linger_add(struct linger_list *l, struct linger_item *item,
                              void (*close)(struct linger_item *))
{
	item->close = close;
	item->prev = NULL;
	item->next = l->head;
	if (l->head != NULL)
		l->head->prev = item;
	l->head = item;
	l->count++;
}

/* linger_remove - item (on l) leaves it */
static inline void linger_remove(struct linger_list *l, struct linger_item *item)
{
	if (item->prev != NULL)
		item->prev->next = item->next;
	else
		l->head = item->next;
	if (item->next != NULL)
		item->next->prev = item->prev;
	item->prev = item->next = NULL;
	l->count--;
	if (l->count == 0 && l->on_empty != NULL)
		l->on_empty(l); /* last: it may free l */
}

/* linger_close_all - close everything still lingering; l ends empty */
static inline void linger_close_all(struct linger_list *l)
{
	void (*on_empty)(struct linger_list *) = l->on_empty;
	l->on_empty = NULL; /* closing is not ending on its own */
	while (l->head != NULL) {
		struct linger_item *item = l->head;
		linger_remove(l, item);
		item->close(item);
	}
	l->on_empty = on_empty;
}

#endif

/*
 * linger.h - who owns the work that goes on after a verdict was reported.
 *
 * A probe reports its verdict the moment it is known; saying QUIT, waiting
 * for its reply and closing (smtp.c), or waiting for the catch-all RCPT's
 * late answer (callout.c), happen afterwards. Such lingering objects are no
 * longer their caller's: they put themselves on a struct linger_list owned by
 * whoever owns the event loop (the engine), take themselves off when they
 * end, and are closed all at once, without callbacks, when the owner goes
 * away (engine_free), so nothing leaks and nothing calls back into a freed
 * caller. An intrusive doubly-linked list; owns nothing but the links.
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
}

/* linger_close_all - close everything still lingering; l ends empty */
static inline void linger_close_all(struct linger_list *l)
{
	while (l->head != NULL) {
		struct linger_item *item = l->head;
		linger_remove(l, item);
		item->close(item);
	}
}

#endif

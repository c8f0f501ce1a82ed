/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "hash.h"
#include "llist.h"
#include "priorityq.h"
#include "dovewarden-admin-protocol.h"
#include "dovewarden-queue.h"

struct dovewarden_queue {
	struct dovewarden_queue_settings set;

	HASH_TABLE(char *, struct dovewarden_user *) users;
	/* Users not due yet, ordered by queue_due */
	struct priorityq *waiting;
	/* Due users, ordered by queue_key */
	struct priorityq *ready;
	/* Removed while syncing: freed by sync_finished() or deinit() */
	struct dovewarden_user *removed_users;
	/* Syncing and still known (they are also in users) */
	struct dovewarden_user *syncing_users;

	unsigned int syncing_count, failed_count;
	unsigned int priority_counts[DOVEWARDEN_PRIORITY_COUNT];
	/* Users with unreplicated changes, ordered by pending_age_key */
	struct priorityq *pending_age;
};

struct dovewarden_queue_iter {
	struct dovewarden_queue *queue;
	/* NULL when iterating the syncing users */
	struct hash_iterate_context *iter;
	struct dovewarden_user *next_syncing;
};

static int user_cmp_due(const void *p1, const void *p2)
{
	const struct dovewarden_user *u1 = p1, *u2 = p2;

	if (u1->queue_due < u2->queue_due)
		return -1;
	if (u1->queue_due > u2->queue_due)
		return 1;
	return 0;
}

static int user_cmp_key(const void *p1, const void *p2)
{
	const struct dovewarden_user *u1 = p1, *u2 = p2;

	if (u1->queue_key < u2->queue_key)
		return -1;
	if (u1->queue_key > u2->queue_key)
		return 1;
	/* equal keys: the more urgent change first */
	if (u1->priority > u2->priority)
		return -1;
	if (u1->priority < u2->priority)
		return 1;
	return 0;
}

static int user_cmp_pending_age(const void *p1, const void *p2)
{
	const struct dovewarden_user *u1 =
		container_of((struct priorityq_item *)p1,
			     struct dovewarden_user, pending_age_item);
	const struct dovewarden_user *u2 =
		container_of((struct priorityq_item *)p2,
			     struct dovewarden_user, pending_age_item);

	if (u1->pending_age_key < u2->pending_age_key)
		return -1;
	if (u1->pending_age_key > u2->pending_age_key)
		return 1;
	return 0;
}

/* Keep the user's place among the users with unreplicated changes:
   the oldest of pending_since and syncing_pending_since */
static void
user_update_pending_age(struct dovewarden_queue *queue,
			struct dovewarden_user *user)
{
	time_t key = user->pending_since;

	if (user->syncing_pending_since != 0 &&
	    (key == 0 || user->syncing_pending_since < key))
		key = user->syncing_pending_since;
	if (user->pending_age_queued) {
		if (key == user->pending_age_key)
			return;
		priorityq_remove(queue->pending_age, &user->pending_age_item);
		user->pending_age_queued = FALSE;
	}
	user->pending_age_key = key;
	if (key != 0 && !user->removed) {
		priorityq_add(queue->pending_age, &user->pending_age_item);
		user->pending_age_queued = TRUE;
	}
}

struct dovewarden_queue *
dovewarden_queue_init(const struct dovewarden_queue_settings *set)
{
	struct dovewarden_queue *queue;

	queue = i_new(struct dovewarden_queue, 1);
	queue->set = *set;
	/* a zero minimum would turn a failing user into a hot loop */
	if (queue->set.retry_min_secs == 0)
		queue->set.retry_min_secs = 1;
	if (queue->set.retry_max_secs < queue->set.retry_min_secs)
		queue->set.retry_max_secs = queue->set.retry_min_secs;
	if (queue->set.settle_max_secs < queue->set.settle_delay_secs)
		queue->set.settle_max_secs = queue->set.settle_delay_secs;
	hash_table_create(&queue->users, default_pool, 0, str_hash, strcmp);
	queue->waiting = priorityq_init(user_cmp_due, 1024);
	queue->ready = priorityq_init(user_cmp_key, 1024);
	queue->pending_age = priorityq_init(user_cmp_pending_age, 1024);
	return queue;
}

static void user_free(struct dovewarden_user *user)
{
	i_free(user->username);
	i_free(user->state);
	i_free(user->last_error);
	i_free(user);
}

void dovewarden_queue_deinit(struct dovewarden_queue **_queue)
{
	struct dovewarden_queue *queue = *_queue;
	struct hash_iterate_context *iter;
	struct dovewarden_user *user;
	char *username;

	*_queue = NULL;

	iter = hash_table_iterate_init(queue->users);
	while (hash_table_iterate(iter, queue->users, &username, &user))
		user_free(user);
	hash_table_iterate_deinit(&iter);
	hash_table_destroy(&queue->users);

	while (queue->removed_users != NULL) {
		user = queue->removed_users;
		DLLIST_REMOVE(&queue->removed_users, user);
		user_free(user);
	}
	priorityq_deinit(&queue->waiting);
	priorityq_deinit(&queue->ready);
	priorityq_deinit(&queue->pending_age);
	i_free(queue);
}

struct dovewarden_user *
dovewarden_queue_lookup(struct dovewarden_queue *queue, const char *username)
{
	return hash_table_lookup(queue->users, username);
}

static void
user_set_priority(struct dovewarden_queue *queue, struct dovewarden_user *user,
		  enum dovewarden_priority priority)
{
	i_assert(priority < DOVEWARDEN_PRIORITY_COUNT);
	i_assert(queue->priority_counts[user->priority] > 0);

	queue->priority_counts[user->priority]--;
	queue->priority_counts[priority]++;
	user->priority = priority;
}

static void
user_set_failures(struct dovewarden_queue *queue, struct dovewarden_user *user,
		  unsigned int failures)
{
	if (user->consecutive_failures > 0)
		queue->failed_count--;
	if (failures > 0)
		queue->failed_count++;
	user->consecutive_failures = failures;
}

/* Merge a change into the pending ones. The key only ever moves forward
   in the queue; last_update tells when the priority was last raised. */
static void
user_add_change(struct dovewarden_queue *queue, struct dovewarden_user *user,
		enum dovewarden_priority priority, time_t change_time,
		time_t change_key)
{
	if (priority == DOVEWARDEN_PRIORITY_NONE)
		return;
	if (user->pending_since == 0) {
		user->pending_since = change_time;
		user_update_pending_age(queue, user);
	}
	if (user->priority == DOVEWARDEN_PRIORITY_NONE)
		user->pending_key = change_key;
	else if (change_key < user->pending_key)
		user->pending_key = change_key;
	if (priority > user->priority) {
		user_set_priority(queue, user, priority);
		user->last_update = change_time;
	}
}

static time_t
user_next_full_sync(struct dovewarden_queue *queue,
		    const struct dovewarden_user *user)
{
	i_assert(queue->set.full_sync_interval_secs > 0);

	if (user->first_full_sync != 0)
		return user->first_full_sync;
	return user->last_full_sync + queue->set.full_sync_interval_secs;
}

/* When the user's settle is due, 0 when none is pending */
static time_t
user_settle_due(struct dovewarden_queue *queue,
		const struct dovewarden_user *user)
{
	if (user->settle_first_change == 0)
		return 0;
	return I_MIN(user->settle_last_change + queue->set.settle_delay_secs,
		     user->settle_first_change + queue->set.settle_max_secs);
}

static void
user_settle_change(struct dovewarden_queue *queue,
		   struct dovewarden_user *user, time_t now)
{
	if (queue->set.settle_delay_secs == 0)
		return;
	if (user->settle_first_change == 0)
		user->settle_first_change = now;
	user->settle_last_change = now;
	/* a new change: its settle may repair again */
	user->consecutive_repairs = 0;
	if (user->syncing)
		user->settle_changed_while_syncing = TRUE;
}

static void
queue_unlink(struct dovewarden_queue *queue, struct dovewarden_user *user)
{
	if (!user->queued)
		return;
	priorityq_remove(user->queued_ready ? queue->ready : queue->waiting,
			 &user->item);
	user->queued = FALSE;
	user->queued_ready = FALSE;
}

static void
queue_add_ready(struct dovewarden_queue *queue, struct dovewarden_user *user)
{
	if (user->priority != DOVEWARDEN_PRIORITY_NONE)
		user->queue_key = user->pending_key;
	else
		user->queue_key = user->queue_due;
	user->queued = TRUE;
	user->queued_ready = TRUE;
	priorityq_add(queue->ready, &user->item);
}

/* Computes the user's position from its fields. Every field the position
   depends on must be set before this: the heaps compare only the stored
   queue_due and queue_key, which stay fixed while the user is queued. */
static void
queue_link(struct dovewarden_queue *queue, struct dovewarden_user *user,
	   time_t now)
{
	time_t due;
	time_t settle_due;

	i_assert(!user->queued);
	i_assert(!user->syncing);
	i_assert(!user->removed);

	if (user->priority != DOVEWARDEN_PRIORITY_NONE ||
	    user->consecutive_failures > 0)
		due = user->next_try;
	else {
		due = queue->set.full_sync_interval_secs == 0 ? 0 :
			user_next_full_sync(queue, user);
		settle_due = user_settle_due(queue, user);
		if (settle_due != 0 && (due == 0 || settle_due < due))
			due = settle_due;
		if (due == 0)
			return;
	}

	if (due <= now) {
		/* next_due() reports it as due since now, or since when it
		   became due if that is known */
		user->queue_due = due > 0 ? due : I_MAX(now, 1);
		queue_add_ready(queue, user);
	} else {
		user->queue_due = due;
		user->queued = TRUE;
		user->queued_ready = FALSE;
		priorityq_add(queue->waiting, &user->item);
	}
}

static void
queue_relink(struct dovewarden_queue *queue, struct dovewarden_user *user,
	     time_t now)
{
	if (user->syncing)
		return;
	queue_unlink(queue, user);
	queue_link(queue, user, now);
}

static bool
queue_retry_failed_user(struct dovewarden_queue *queue,
			struct dovewarden_user *user, time_t now,
			dovewarden_queue_user_callback_t *callback,
			void *context)
{
	if (user->consecutive_failures == 0 || user->syncing ||
	    user->removed || user->next_try <= now)
		return FALSE;
	user->next_try = now;
	queue_relink(queue, user, now);
	if (callback != NULL)
		callback(user, context);
	return TRUE;
}

unsigned int dovewarden_queue_retry_failed(struct dovewarden_queue *queue,
					   struct dovewarden_user *user,
					   time_t now,
					   dovewarden_queue_user_callback_t *callback,
					   void *context)
{
	struct hash_iterate_context *iter;
	char *username;
	unsigned int count = 0;

	if (user != NULL) {
		return queue_retry_failed_user(queue, user, now,
					       callback, context) ? 1 : 0;
	}
	if (queue->failed_count == 0)
		return 0;
	iter = hash_table_iterate_init(queue->users);
	while (hash_table_iterate(iter, queue->users, &username, &user)) {
		if (queue_retry_failed_user(queue, user, now,
					    callback, context))
			count++;
	}
	hash_table_iterate_deinit(&iter);
	return count;
}

void dovewarden_queue_requeue(struct dovewarden_queue *queue,
			      struct dovewarden_user *user, time_t now)
{
	queue_relink(queue, user, now);
}

static struct dovewarden_user *
queue_get_user(struct dovewarden_queue *queue, const char *username,
	       time_t now, bool *created_r)
{
	struct dovewarden_user *user;
	unsigned int interval = queue->set.full_sync_interval_secs;

	user = hash_table_lookup(queue->users, username);
	if (user != NULL) {
		*created_r = FALSE;
		return user;
	}
	user = i_new(struct dovewarden_user, 1);
	user->username = i_strdup(username);
	user->state = i_strdup("");
	user->priority = DOVEWARDEN_PRIORITY_NONE;
	/* when it is due without a change: spread, so that a first start
	   does not fully sync every user at once */
	if (interval > 0)
		user->first_full_sync = dovewarden_queue_full_sync_slot(username, interval,
							 now);
	queue->priority_counts[DOVEWARDEN_PRIORITY_NONE]++;
	hash_table_insert(queue->users, user->username, user);
	*created_r = TRUE;
	return user;
}

/* Whether the change needs the user's settle full sync (see
   dovewarden_queue_settle_kind), and record it as evidence */
static bool
user_settle_needed(struct dovewarden_queue *queue,
		   struct dovewarden_user *user,
		   enum dovewarden_priority priority,
		   enum dovewarden_queue_settle_kind kind, time_t now)
{
	bool concurrent;

	switch (kind) {
	case DOVEWARDEN_QUEUE_SETTLE_ALWAYS:
		return TRUE;
	case DOVEWARDEN_QUEUE_SETTLE_CLIENT:
		concurrent = dovewarden_queue_settle_concurrent(&queue->set,
			user->last_import, FALSE, now);
		user->last_client_change = now;
		if (priority != DOVEWARDEN_PRIORITY_NONE)
			user->client_change_pending = TRUE;
		return concurrent;
	case DOVEWARDEN_QUEUE_SETTLE_IMPORT:
		/* a client change that no sync has carried yet (also the
		   one of this import's own sync) overlaps it */
		concurrent = dovewarden_queue_settle_concurrent(&queue->set,
			user->last_client_change,
			user->client_change_pending ||
			(user->syncing && user->syncing_client_change),
			now);
		user->last_import = now;
		user->state_stale = TRUE;
		return concurrent;
	}
	i_unreached();
}

struct dovewarden_user *
dovewarden_queue_notify(struct dovewarden_queue *queue, const char *username,
			enum dovewarden_priority priority, time_t now)
{
	return dovewarden_queue_notify_kind(queue, username, priority,
					    DOVEWARDEN_QUEUE_SETTLE_ALWAYS,
					    now);
}

struct dovewarden_user *
dovewarden_queue_notify_kind(struct dovewarden_queue *queue,
			     const char *username,
			     enum dovewarden_priority priority,
			     enum dovewarden_queue_settle_kind kind,
			     time_t now)
{
	struct dovewarden_user *user;
	enum dovewarden_priority old_priority;
	time_t old_key;
	bool created, settle;

	user = queue_get_user(queue, username, now, &created);
	old_priority = user->priority;
	old_key = user->pending_key;
	user_add_change(queue, user, priority, now,
			now - dovewarden_queue_priority_boost(priority));
	/* an import of NONE priority arms the settle only by the rule */
	settle = user_settle_needed(queue, user, priority, kind, now) &&
		(priority != DOVEWARDEN_PRIORITY_NONE ||
		 kind == DOVEWARDEN_QUEUE_SETTLE_IMPORT);
	if (settle)
		user_settle_change(queue, user, now);

	if (user->syncing) {
		/* sync_finished() queues it again */
		return user;
	}
	if (created || user->priority != old_priority ||
	    user->pending_key != old_key ||
	    (settle && user->priority == DOVEWARDEN_PRIORITY_NONE))
		queue_relink(queue, user, now);
	return user;
}

struct dovewarden_user *
dovewarden_queue_add(struct dovewarden_queue *queue, const char *username,
		     time_t now)
{
	struct dovewarden_user *user;
	bool created;

	user = queue_get_user(queue, username, now, &created);
	if (!created)
		return user;
	queue_link(queue, user, now);
	return user;
}

struct dovewarden_user *
dovewarden_queue_restore(struct dovewarden_queue *queue,
			 const struct dovewarden_user *fields, time_t now)
{
	struct dovewarden_user *user;
	enum dovewarden_priority priority = fields->priority;
	unsigned int interval = queue->set.full_sync_interval_secs;
	bool created;

	user = queue_get_user(queue, fields->username, now, &created);
	i_assert(created);

	i_free(user->state);
	user->state = i_strdup(fields->state == NULL ? "" : fields->state);
	/* whether the other server synced the user since is not kept (the
	   imports in the journal are replayed after this): the first sync
	   after a start follows up */
	user->state_stale = user->state[0] != '\0';
	if (fields->last_error != NULL && fields->last_error[0] != '\0')
		user->last_error = i_strdup(fields->last_error);
	user->last_fast_sync = fields->last_fast_sync;
	user->last_full_sync = fields->last_full_sync;
	user->last_successful_sync = fields->last_successful_sync;
	user->next_try = fields->next_try;
	user->force_full_sync = fields->force_full_sync;
	if (queue->set.settle_delay_secs > 0) {
		user->settle_first_change = fields->settle_first_change;
		user->settle_last_change = fields->settle_last_change;
		if (user->settle_first_change == 0)
			user->settle_last_change = 0;
		else if (user->settle_last_change < user->settle_first_change)
			user->settle_last_change = user->settle_first_change;
	}
	user->last_verified = fields->last_verified;
	user->last_repaired = fields->last_repaired;
	user_set_failures(queue, user, fields->consecutive_failures);
	if (user->force_full_sync && priority < DOVEWARDEN_PRIORITY_LOW)
		priority = DOVEWARDEN_PRIORITY_LOW;
	user_add_change(queue, user, priority, fields->last_update,
			fields->last_update - dovewarden_queue_priority_boost(priority));
	user->last_update = fields->last_update;
	/* queue_get_user() gave the user its slot. It keeps it if it
	   never had a full sync, or if the next one is overdue already
	   (after a downtime): all of those at once would go before every
	   new change. */
	if (interval > 0 && user->last_full_sync != 0 &&
	    user->last_full_sync + interval > now)
		user->first_full_sync = 0;
	queue_link(queue, user, now);
	return user;
}

void dovewarden_queue_force_full_sync(struct dovewarden_queue *queue,
				      struct dovewarden_user *user,
				      enum dovewarden_priority priority,
				      time_t now)
{
	i_assert(!user->removed);

	if (priority < DOVEWARDEN_PRIORITY_LOW)
		priority = DOVEWARDEN_PRIORITY_LOW;
	user->force_full_sync = TRUE;
	/* an admin's request runs now, also during a failure back-off */
	user->next_try = 0;
	user_add_change(queue, user, priority, now,
			now - dovewarden_queue_priority_boost(priority));
	queue_relink(queue, user, now);
}

static void
queue_forget(struct dovewarden_queue *queue, struct dovewarden_user *user)
{
	queue_unlink(queue, user);
	hash_table_remove(queue->users, user->username);
	i_assert(queue->priority_counts[user->priority] > 0);
	queue->priority_counts[user->priority]--;
	if (user->consecutive_failures > 0)
		queue->failed_count--;
	if (user->pending_age_queued) {
		priorityq_remove(queue->pending_age, &user->pending_age_item);
		user->pending_age_queued = FALSE;
	}
}

void dovewarden_queue_remove(struct dovewarden_queue *queue,
			     struct dovewarden_user *user)
{
	i_assert(!user->removed);

	queue_forget(queue, user);
	if (user->syncing) {
		queue->syncing_count--;
		DLLIST_REMOVE(&queue->syncing_users, user);
		user->removed = TRUE;
		DLLIST_PREPEND(&queue->removed_users, user);
		return;
	}
	user_free(user);
}

/* Move the users whose due time has come to the ready heap */
static void queue_promote_due(struct dovewarden_queue *queue, time_t now)
{
	struct priorityq_item *item;
	struct dovewarden_user *user;

	while ((item = priorityq_peek(queue->waiting)) != NULL) {
		user = (struct dovewarden_user *)item;
		if (user->queue_due > now)
			break;
		(void)priorityq_pop(queue->waiting);
		queue_add_ready(queue, user);
	}
}

const struct dovewarden_user *
dovewarden_queue_peek(struct dovewarden_queue *queue, time_t now)
{
	struct priorityq_item *item;

	queue_promote_due(queue, now);
	item = priorityq_peek(queue->ready);
	return item == NULL ? NULL : (const struct dovewarden_user *)item;
}

struct dovewarden_user *
dovewarden_queue_pop(struct dovewarden_queue *queue, time_t now)
{
	struct priorityq_item *item;
	struct dovewarden_user *user;
	unsigned int interval = queue->set.full_sync_interval_secs;
	time_t settle_due;

	queue_promote_due(queue, now);
	item = priorityq_pop(queue->ready);
	if (item == NULL)
		return NULL;
	user = (struct dovewarden_user *)item;
	i_assert(user->queued && user->queued_ready && !user->syncing);
	user->queued = FALSE;
	user->queued_ready = FALSE;

	user->syncing = TRUE;
	queue->syncing_count++;
	DLLIST_PREPEND(&queue->syncing_users, user);
	/* a user never fully synced gets a full sync first, whenever its
	   first sync runs: without -f, dsync does not merge mailboxes
	   that were created on both sides independently */
	settle_due = user_settle_due(queue, user);
	user->syncing_settle = settle_due != 0 && settle_due <= now;
	user->syncing_full = user->force_full_sync || user->syncing_settle ||
		(interval > 0 && (user->last_full_sync == 0 ||
				  user_next_full_sync(queue, user) <= now));
	user->force_full_sync = FALSE;
	user->last_fast_sync = now;
	if (user->syncing_full) {
		user->last_full_sync = now;
		user->first_full_sync = 0;
	}
	user->syncing_priority = user->priority;
	user->syncing_pending_key = user->pending_key;
	user_set_priority(queue, user, DOVEWARDEN_PRIORITY_NONE);
	user->settle_changed_while_syncing = FALSE;
	user->syncing_client_change = user->client_change_pending;
	user->client_change_pending = FALSE;
	user->syncing_state_stale = user->state_stale;
	user->state_stale = FALSE;
	/* changes that arrive from now on are not covered by this sync */
	user->syncing_pending_since = user->pending_since;
	user->pending_since = 0;
	user_update_pending_age(queue, user);
	return user;
}

bool dovewarden_queue_take_state_stale(struct dovewarden_user *user)
{
	bool stale = user->syncing_state_stale || user->state_stale;

	i_assert(user->syncing);
	user->syncing_state_stale = FALSE;
	user->state_stale = FALSE;
	/* kept for a failure: the user's state stays the stale one */
	if (stale)
		user->syncing_followup = TRUE;
	return stale;
}

time_t dovewarden_queue_user_get_next_sync(const struct dovewarden_user *user)
{
	return user->queued ? user->queue_due : 0;
}

time_t dovewarden_queue_next_due(struct dovewarden_queue *queue)
{
	struct priorityq_item *item;

	item = priorityq_peek(queue->ready);
	if (item == NULL)
		item = priorityq_peek(queue->waiting);
	if (item == NULL)
		return 0;
	return ((struct dovewarden_user *)item)->queue_due;
}

static time_t queue_backoff(struct dovewarden_queue *queue,
			    unsigned int failures, bool config)
{
	unsigned int secs =
		dovewarden_queue_retry_secs(&queue->set, failures, config);

	return secs + dovewarden_queue_retry_jitter(secs);
}

/* The sync did not replicate the changes it started with: keep them
   pending (at least LOW), and a failed full sync stays a full one. */
static void
user_restore_changes(struct dovewarden_queue *queue,
		     struct dovewarden_user *user, time_t now)
{
	enum dovewarden_priority priority = user->syncing_priority;
	time_t key = user->syncing_pending_key;
	/* pop() left last_update alone; a change during the sync moved it */
	time_t change_time = user->priority == DOVEWARDEN_PRIORITY_NONE ?
		user->last_update : user->last_fast_sync;

	if (priority == DOVEWARDEN_PRIORITY_NONE) {
		priority = DOVEWARDEN_PRIORITY_LOW;
		key = now - dovewarden_queue_priority_boost(priority);
		change_time = now;
	}
	if (user->syncing_pending_since != 0 &&
	    (user->pending_since == 0 ||
	     user->syncing_pending_since < user->pending_since))
		user->pending_since = user->syncing_pending_since;
	user_add_change(queue, user, priority, change_time, key);
	if (user->syncing_full)
		user->force_full_sync = TRUE;
	if (user->syncing_client_change)
		user->client_change_pending = TRUE;
	/* the state is still the one the sync started with */
	if (user->syncing_state_stale || user->syncing_followup)
		user->state_stale = TRUE;
}

/* A full sync succeeded: it covered every change made before it began.
   If it repaired a difference, one full sync may not have repaired all
   (dsync can need two passes, e.g. for duplicates): another one follows
   after the settle delay, up to DOVEWARDEN_QUEUE_REPAIR_SETTLE_MAX in a
   row. */
static void user_settle_verified(struct dovewarden_queue *queue,
				 struct dovewarden_user *user, time_t now)
{
	user->last_verified = user->last_full_sync;
	if (user->last_repaired == user->last_full_sync &&
	    queue->set.settle_delay_secs > 0 &&
	    user->consecutive_repairs < DOVEWARDEN_QUEUE_REPAIR_SETTLE_MAX) {
		user->consecutive_repairs++;
		user->settle_first_change = now;
		user->settle_last_change = now;
		return;
	}
	if (user->last_repaired != user->last_full_sync)
		user->consecutive_repairs = 0;
	if (!user->settle_changed_while_syncing) {
		user->settle_first_change = 0;
		user->settle_last_change = 0;
	} else if (user->settle_first_change != 0) {
		/* only the changes made during the sync are left; without
		   this, a busy user would get only full syncs once the
		   maximum delay has passed */
		user->settle_first_change = I_MAX(user->settle_first_change,
						  user->last_full_sync);
		if (user->settle_last_change < user->settle_first_change)
			user->settle_last_change = user->settle_first_change;
	}
}

static void
user_set_error(struct dovewarden_user *user, const char *error)
{
	i_free(user->last_error);
	user->last_error = i_strdup(error == NULL ? "" : error);
}

void dovewarden_queue_sync_finished(struct dovewarden_queue *queue,
				    struct dovewarden_user *user,
				    enum dovewarden_sync_result result,
				    const char *new_state, const char *error,
				    time_t now)
{
	bool busy;

	i_assert(user->syncing);
	i_assert(!user->queued);

	if (user->removed) {
		DLLIST_REMOVE(&queue->removed_users, user);
		user_free(user);
		return;
	}
	user->syncing = FALSE;
	queue->syncing_count--;
	DLLIST_REMOVE(&queue->syncing_users, user);

	switch (result) {
	case DOVEWARDEN_SYNC_RESULT_OK:
		if (new_state != NULL && new_state[0] != '\0') {
			i_free(user->state);
			user->state = i_strdup(new_state);
		}
		user->last_successful_sync = user->last_fast_sync;
		user->consecutive_changed = 0;
		/* the import of this sync's own dsync may come after its
		   result: the window of its client change counts from now */
		if (user->syncing_client_change)
			user->last_client_change = now;
		if (user->syncing_full)
			user_settle_verified(queue, user, now);
		user_set_failures(queue, user, 0);
		i_free(user->last_error);
		user->next_try = 0;
		break;
	case DOVEWARDEN_SYNC_RESULT_CHANGED:
		/* a change notified during the sync */
		busy = user->priority != DOVEWARDEN_PRIORITY_NONE;
		user_restore_changes(queue, user, now);
		user->consecutive_changed++;
		user->next_try = now + dovewarden_queue_changed_retry_secs(
			&queue->set, user->consecutive_changed, busy);
		if (user->consecutive_changed >=
		    DOVEWARDEN_QUEUE_CHANGED_FULL_SYNC_COUNT)
			user->force_full_sync = TRUE;
		break;
	case DOVEWARDEN_SYNC_RESULT_TEMPFAIL:
	case DOVEWARDEN_SYNC_RESULT_CONFIG:
		user_restore_changes(queue, user, now);
		/* as the Redis queue: a failure ends the CHANGED run */
		user->consecutive_changed = 0;
		user_set_failures(queue, user, user->consecutive_failures + 1);
		user_set_error(user, error);
		user->next_try = now + queue_backoff(queue,
			user->consecutive_failures,
			result == DOVEWARDEN_SYNC_RESULT_CONFIG);
		break;
	case DOVEWARDEN_SYNC_RESULT_NOUSER:
		queue_forget(queue, user);
		user_free(user);
		return;
	}
	user->syncing_full = FALSE;
	user->syncing_settle = FALSE;
	user->syncing_client_change = FALSE;
	user->syncing_state_stale = FALSE;
	user->syncing_followup = FALSE;
	user->settle_changed_while_syncing = FALSE;
	user->syncing_priority = DOVEWARDEN_PRIORITY_NONE;
	user->syncing_pending_since = 0;
	user_update_pending_age(queue, user);
	queue_link(queue, user, now);
}

time_t dovewarden_queue_get_oldest_pending(struct dovewarden_queue *queue)
{
	struct priorityq_item *item;
	const struct dovewarden_user *user;

	item = priorityq_peek(queue->pending_age);
	if (item == NULL)
		return 0;
	user = container_of(item, struct dovewarden_user, pending_age_item);
	return user->pending_age_key;
}

void dovewarden_queue_get_counts(struct dovewarden_queue *queue,
				 struct dovewarden_queue_stats *stats_r)
{
	unsigned int i;

	i_zero(stats_r);
	stats_r->users = hash_table_count(queue->users);
	stats_r->syncing = queue->syncing_count;
	for (i = 0; i < DOVEWARDEN_PRIORITY_COUNT; i++)
		stats_r->pending[i] = queue->priority_counts[i];
	stats_r->failed = queue->failed_count;
}

void dovewarden_queue_get_stats(struct dovewarden_queue *queue, time_t now,
				struct dovewarden_queue_stats *stats_r)
{
	unsigned int i;

	struct hash_iterate_context *iter;
	struct dovewarden_user *user;
	char *username;

	i_zero(stats_r);
	stats_r->users = hash_table_count(queue->users);
	stats_r->syncing = queue->syncing_count;
	for (i = 0; i < DOVEWARDEN_PRIORITY_COUNT; i++)
		stats_r->pending[i] = queue->priority_counts[i];
	stats_r->failed = queue->failed_count;

	iter = hash_table_iterate_init(queue->users);
	while (hash_table_iterate(iter, queue->users, &username, &user)) {
		if (!user->queued)
			continue;
		if (user->consecutive_failures > 0) {
			if (user->queue_due > now)
				stats_r->failed_waiting++;
		} else if (user->priority == DOVEWARDEN_PRIORITY_NONE &&
			   user->queue_due <= now)
			stats_r->full_sync_due++;
	}
	hash_table_iterate_deinit(&iter);
}

struct dovewarden_queue_iter *
dovewarden_queue_iter_init(struct dovewarden_queue *queue)
{
	struct dovewarden_queue_iter *iter;

	iter = i_new(struct dovewarden_queue_iter, 1);
	iter->queue = queue;
	iter->iter = hash_table_iterate_init(queue->users);
	return iter;
}

struct dovewarden_queue_iter *
dovewarden_queue_iter_init_syncing(struct dovewarden_queue *queue)
{
	struct dovewarden_queue_iter *iter;

	iter = i_new(struct dovewarden_queue_iter, 1);
	iter->queue = queue;
	iter->next_syncing = queue->syncing_users;
	return iter;
}

struct dovewarden_user *
dovewarden_queue_iter_next(struct dovewarden_queue_iter *iter)
{
	struct dovewarden_user *user;
	char *username;

	if (iter->iter == NULL) {
		user = iter->next_syncing;
		if (user != NULL)
			iter->next_syncing = user->next;
		return user;
	}
	if (!hash_table_iterate(iter->iter, iter->queue->users,
				&username, &user))
		return NULL;
	return user;
}

void dovewarden_queue_iter_deinit(struct dovewarden_queue_iter **_iter)
{
	struct dovewarden_queue_iter *iter = *_iter;

	*_iter = NULL;
	if (iter->iter != NULL)
		hash_table_iterate_deinit(&iter->iter);
	i_free(iter);
}

void
dovewarden_queue_user_status_init(struct dovewarden_admin_user_status *status_r,
				  const struct dovewarden_user *user,
				  unsigned int full_sync_interval_secs,
				  time_t now)
{
	struct dovewarden_queue_next_sync next = {
		.syncing = user->syncing,
		.due = dovewarden_queue_user_get_next_sync(user),
		.waiting = user->priority != DOVEWARDEN_PRIORITY_NONE ||
			user->force_full_sync ||
			user->consecutive_failures > 0,
		.next_try = user->next_try,
		.last_full_sync = user->last_full_sync,
	};

	i_zero(status_r);
	status_r->username = user->username;
	status_r->priority = user->priority;
	/* a running sync still works for its priority */
	if (user->syncing && user->syncing_priority > status_r->priority)
		status_r->priority = user->syncing_priority;
	status_r->last_fast_sync = user->last_fast_sync;
	status_r->last_full_sync = user->last_full_sync;
	status_r->last_successful_sync = user->last_successful_sync;
	status_r->last_verified = user->last_verified;
	status_r->last_repaired = user->last_repaired;
	status_r->consecutive_failures = user->consecutive_failures;
	status_r->next_sync_secs = dovewarden_queue_next_sync_secs(
		&next, full_sync_interval_secs, now);
	status_r->last_error = user->last_error == NULL ? "" :
		user->last_error;
}

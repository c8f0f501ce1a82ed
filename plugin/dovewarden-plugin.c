/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "module-context.h"
#include "mail-user.h"
#include "mail-storage-private.h"
#include "mailbox-list-private.h"
#include "notify-plugin.h"
#include "dovewarden-compat.h"
#include "dovewarden-settings.h"
#include "dovewarden-notify-client.h"
#include "dovewarden-user-settings.h"
#include "dovewarden-plugin.h"

#define DOVEWARDEN_USER_CONTEXT(obj) \
	MODULE_CONTEXT(obj, dovewarden_user_module)
#define DOVEWARDEN_USER_CONTEXT_REQUIRE(obj) \
	MODULE_CONTEXT_REQUIRE(obj, dovewarden_user_module)

#define DOVEWARDEN_LIST_CONTEXT_REQUIRE(obj) \
	MODULE_CONTEXT_REQUIRE(obj, dovewarden_mailbox_list_module)

#define DOVEWARDEN_NEW_MAIL_REASONS \
	(DOVEWARDEN_NOTIFY_REASON_SAVE | DOVEWARDEN_NOTIFY_REASON_COPY)

struct dovewarden_user {
	union mail_user_module_context module_ctx;
	struct event *event;
	const struct dovewarden_settings *set;
	struct dovewarden_notify_user nuser;

	/* Replication is on for the user */
	bool enabled:1;
	bool dsync_logged:1;
	/* Counted in dovewarden_session_users */
	bool session_user:1;
};

struct dovewarden_mail_txn {
	struct mail_user *user;
	enum dovewarden_notify_reason reasons;
	/* dsync's own transaction */
	bool sync:1;
	/* Saved or delivered new mail: dovewarden_sync_wait applies */
	bool new_mail:1;
};

static MODULE_CONTEXT_DEFINE_INIT(dovewarden_user_module,
				  &mail_user_module_register);
static MODULE_CONTEXT_DEFINE_INIT(dovewarden_mailbox_list_module,
				  &mailbox_list_module_register);

struct dovewarden_mailbox_list {
	union mailbox_list_module_context module_ctx;
	/* dsync's iterations that hold the list's lock */
	ARRAY(struct mailbox_list_iterate_context *) locked_iters;
};

static struct notify_context *dovewarden_notify_ctx;
static struct dovewarden_notify_client *dovewarden_client;
/* Mail users of sessions (not raw or shared-namespace ones) alive in the
   process */
static unsigned int dovewarden_session_users;
/* Set by a protocol plugin that holds replies back during sync waits */
static const struct dovewarden_sync_wait_hook *sync_wait_hook;

const char *dovewarden_plugin_version = DOVECOT_ABI_VERSION;
const char *dovewarden_plugin_dependencies[] = { "notify", NULL };

/* A change made by dsync (in doveadm) imported another server's changes:
   it needs no sync of its own (the one that made it carries it), but the
   service's settle rule needs to know of it. Mailbox list changes are
   the exception, as in Dovecot 2.3: dsync creates a missing \Noselect
   parent (a of a/b) as a real mailbox on the other side, and only a sync
   back makes the two sides equal. The echo is bounded, because the sync
   back changes nothing more. */
static void dovewarden_notify_import(struct dovewarden_user *duser,
				     enum dovewarden_priority priority,
				     enum dovewarden_notify_reason reasons)
{
	if (!duser->dsync_logged) {
		duser->dsync_logged = TRUE;
		e_debug(duser->event, "Reporting changes made by dsync as "
			"imports");
	}
	dovewarden_notify_client_add_import(dovewarden_client, &duser->nuser,
					    priority, reasons);
}

static void dovewarden_notify_full(struct mail_user *user,
				   enum dovewarden_priority priority,
				   enum dovewarden_notify_reason reasons,
				   bool sync_back)
{
	struct dovewarden_user *duser = DOVEWARDEN_USER_CONTEXT(user);

	if (duser == NULL || !duser->enabled)
		return;
	/* doveadm sets dsyncing only after the user was created, so this
	   is checked at the time of each change */
	if (user->dsyncing) {
		dovewarden_notify_import(duser, sync_back ?
					 DOVEWARDEN_PRIORITY_LOW :
					 DOVEWARDEN_PRIORITY_NONE, reasons);
		return;
	}
	dovewarden_notify_client_add(dovewarden_client, &duser->nuser,
				     priority, reasons);
}

static void dovewarden_notify(struct mail_user *user,
			      enum dovewarden_priority priority,
			      enum dovewarden_notify_reason reasons)
{
	dovewarden_notify_full(user, priority, reasons, FALSE);
}

/* LMTP delivers one mail to its recipients one after the other, and sends
   the replies only once all are done. Their waits are collected when the
   last of their mail users is freed, so the recipients' syncs run
   together and the delivery waits one timeout at most, not one per
   recipient. */
static bool dovewarden_wait_deferred(struct mail_user *user)
{
	return null_strcmp(user->service, "lmtp") == 0;
}

/* New mail committed: with dovewarden_sync_wait, return only when it is
   replicated or the wait timed out. */
static void dovewarden_notify_new_mail(struct mail_user *user,
				       enum dovewarden_notify_reason reasons)
{
	struct dovewarden_user *duser = DOVEWARDEN_USER_CONTEXT(user);
	unsigned int msecs;
	void *token;

	msecs = duser == NULL || !duser->enabled || user->dsyncing ? 0 :
		duser->set->dovewarden_sync_wait;
	if (msecs == 0) {
		dovewarden_notify(user, DOVEWARDEN_PRIORITY_HIGH, reasons);
		return;
	}
	if (!dovewarden_wait_deferred(user) && sync_wait_hook != NULL &&
	    (token = sync_wait_hook->begin(user)) != NULL) {
		/* the protocol holds the reply back: nothing blocks */
		if (dovewarden_notify_client_wait_send(dovewarden_client,
						       &duser->nuser, msecs,
						       sync_wait_hook->end,
						       token))
			return;
		sync_wait_hook->end(token);
		dovewarden_notify(user, DOVEWARDEN_PRIORITY_HIGH, reasons);
		return;
	}
	if (!dovewarden_notify_client_wait_send(dovewarden_client,
						&duser->nuser, msecs,
						NULL, NULL)) {
		dovewarden_notify(user, DOVEWARDEN_PRIORITY_HIGH, reasons);
		return;
	}
	if (!dovewarden_wait_deferred(user))
		dovewarden_notify_client_wait_run(dovewarden_client);
}

void
dovewarden_plugin_set_sync_wait_hook(const struct dovewarden_sync_wait_hook *hook)
{
	if (hook == NULL && dovewarden_client != NULL)
		dovewarden_notify_client_waits_detach(dovewarden_client);
	sync_wait_hook = hook;
}

/* Mailbox list changes made by dsync ask for a sync back (see
   dovewarden_notify_import()) */
static void dovewarden_notify_mailbox_list(struct mail_user *user,
					   enum dovewarden_notify_reason reason)
{
	dovewarden_notify_full(user, DOVEWARDEN_PRIORITY_LOW, reason, TRUE);
}

static void *
dovewarden_mail_transaction_begin(struct mailbox_transaction_context *t)
{
	struct mail_user *user = t->box->storage->user;
	struct dovewarden_user *duser = DOVEWARDEN_USER_CONTEXT(user);
	struct dovewarden_mail_txn *txn;

	if (duser == NULL || !duser->enabled)
		return NULL;
	txn = i_new(struct dovewarden_mail_txn, 1);
	txn->user = user;
	txn->sync = (t->flags & MAILBOX_TRANSACTION_FLAG_SYNC) != 0;
	return txn;
}

static void dovewarden_txn_add(void *_txn, enum dovewarden_notify_reason reason)
{
	struct dovewarden_mail_txn *txn = _txn;

	if (txn != NULL)
		txn->reasons |= reason;
}

static void dovewarden_mail_save(void *_txn, struct mail *mail ATTR_UNUSED)
{
	struct dovewarden_mail_txn *txn = _txn;

	dovewarden_txn_add(txn, DOVEWARDEN_NOTIFY_REASON_SAVE);
	if (txn != NULL)
		txn->new_mail = TRUE;
}

static void dovewarden_mail_copy(void *_txn, struct mail *src,
				 struct mail *dst)
{
	struct dovewarden_mail_txn *txn = _txn;

	dovewarden_txn_add(txn, DOVEWARDEN_NOTIFY_REASON_COPY);
	/* A copy from another storage (a delivery, a copy from another
	   user) brings new mail. One within the user's storage (IMAP COPY
	   or MOVE) leaves the original on the replica, so it doesn't
	   wait. */
	if (txn != NULL && src->box->storage != dst->box->storage)
		txn->new_mail = TRUE;
}

static void dovewarden_mail_expunge(void *txn, struct mail *mail ATTR_UNUSED)
{
	dovewarden_txn_add(txn, DOVEWARDEN_NOTIFY_REASON_EXPUNGE);
}

static void
dovewarden_mail_update_flags(void *txn, struct mail *mail ATTR_UNUSED,
			     enum mail_flags old_flags ATTR_UNUSED)
{
	dovewarden_txn_add(txn, DOVEWARDEN_NOTIFY_REASON_FLAGS);
}

static void
dovewarden_mail_update_keywords(void *txn, struct mail *mail ATTR_UNUSED,
				const char *const *old_keywords ATTR_UNUSED)
{
	dovewarden_txn_add(txn, DOVEWARDEN_NOTIFY_REASON_KEYWORDS);
}

static void
dovewarden_mail_transaction_commit(void *_txn,
	struct mail_transaction_commit_changes *changes)
{
	struct dovewarden_mail_txn *txn = _txn;
	struct dovewarden_user *duser;
	enum dovewarden_priority priority;

	if (txn == NULL)
		return;
	if (txn->sync) {
		/* dsync's own changes (another process's would be odd) */
		duser = DOVEWARDEN_USER_CONTEXT_REQUIRE(txn->user);
		if (txn->user->dsyncing && duser->enabled &&
		    txn->reasons != 0) {
			dovewarden_notify_import(duser,
						 DOVEWARDEN_PRIORITY_NONE,
						 txn->reasons);
		}
		i_free(txn);
		return;
	}
	/* Changes that only touched caches and the like are not worth a
	   sync */
	if (txn->reasons == 0 &&
	    (changes->changes_mask &
	     ENUM_NEGATE(MAIL_INDEX_TRANSACTION_CHANGE_OTHERS)) != 0)
		txn->reasons = DOVEWARDEN_NOTIFY_REASON_CHANGES;
	if (txn->new_mail)
		dovewarden_notify_new_mail(txn->user, txn->reasons);
	else if (txn->reasons != 0) {
		priority = (txn->reasons & DOVEWARDEN_NEW_MAIL_REASONS) != 0 ?
			DOVEWARDEN_PRIORITY_HIGH : DOVEWARDEN_PRIORITY_LOW;
		dovewarden_notify(txn->user, priority, txn->reasons);
	}
	i_free(txn);
}

static void dovewarden_mail_transaction_rollback(void *_txn)
{
	struct dovewarden_mail_txn *txn = _txn;

	i_free(txn);
}

static void dovewarden_mailbox_create(struct mailbox *box)
{
	dovewarden_notify_mailbox_list(box->storage->user,
				       DOVEWARDEN_NOTIFY_REASON_MAILBOX_CREATE);
}

static void dovewarden_mailbox_update(struct mailbox *box)
{
	/* dsync updates every mailbox it syncs (its UIDNEXT, modseqs and
	   the like): that imports no change of the other server */
	if (box->storage->user->dsyncing)
		return;
	dovewarden_notify(box->storage->user, DOVEWARDEN_PRIORITY_LOW,
			  DOVEWARDEN_NOTIFY_REASON_MAILBOX_UPDATE);
}

static void
dovewarden_mailbox_delete_commit(void *txn ATTR_UNUSED, struct mailbox *box)
{
	dovewarden_notify_mailbox_list(box->storage->user,
				       DOVEWARDEN_NOTIFY_REASON_MAILBOX_DELETE);
}

static void
dovewarden_mailbox_rename(struct mailbox *src, struct mailbox *dest ATTR_UNUSED)
{
	dovewarden_notify_mailbox_list(src->storage->user,
				       DOVEWARDEN_NOTIFY_REASON_MAILBOX_RENAME);
}

static void
dovewarden_mailbox_set_subscribed(struct mailbox *box, bool subscribed)
{
	dovewarden_notify_mailbox_list(box->storage->user,
		subscribed ? DOVEWARDEN_NOTIFY_REASON_SUBSCRIBE :
		DOVEWARDEN_NOTIFY_REASON_UNSUBSCRIBE);
}

static const char *
dovewarden_socket_path(struct mail_user *user,
		       const struct dovewarden_settings *set)
{
	const char *path = set->dovewarden_notify_socket_path;

	if (path[0] == '/')
		return path;
	return t_strconcat(user->set->base_dir, "/", path, NULL);
}

static void dovewarden_user_deinit(struct mail_user *user)
{
	struct dovewarden_user *duser = DOVEWARDEN_USER_CONTEXT_REQUIRE(user);

	/* Closing the namespaces may still commit changes; send after */
	duser->module_ctx.super.deinit(user);

	if (duser->enabled) {
		dovewarden_notify_client_user_deinit(dovewarden_client,
						     &duser->nuser);
		duser->enabled = FALSE;
	}
	dovewarden_settings_free(&duser->set);
	event_unref(&duser->event);

	if (duser->session_user) {
		i_assert(dovewarden_session_users > 0);
		if (--dovewarden_session_users == 0 &&
		    dovewarden_client != NULL) {
			/* the deferred (LMTP) waits */
			dovewarden_notify_client_wait_run(dovewarden_client);
		}
	}
}

static bool dovewarden_user_init(struct mail_user *user,
				 struct dovewarden_user *duser)
{
	const char *error;

	if (dovewarden_user_settings_get(user, &duser->set, &error) < 0) {
		e_error(duser->event, "%s - replication disabled", error);
		return FALSE;
	}
	if (dovewarden_settings_get_replica(duser->set)[0] == '\0') {
		e_debug(duser->event, "No dovewarden_replica or mail_replica "
			"setting - replication disabled");
		return FALSE;
	}
	if (dovewarden_settings_is_noreplicate(duser->set)) {
		e_debug(duser->event, "noreplicate is set - "
			"replication disabled");
		return FALSE;
	}
	if (!dovewarden_username_is_valid(user->username)) {
		e_warning(duser->event, "Username can't be replicated "
			  "(empty, too long, control characters or "
			  "not UTF-8) - "
			  "replication disabled");
		return FALSE;
	}
	return TRUE;
}

static void dovewarden_mail_user_created(struct mail_user *user)
{
	struct mail_user_vfuncs *v = user->vlast;
	struct dovewarden_user *duser;

	duser = p_new(user->pool, struct dovewarden_user, 1);
	duser->module_ctx.super = *v;
	user->vlast = &duser->module_ctx.super;
	v->deinit = dovewarden_user_deinit;
	MODULE_CONTEXT_SET(user, dovewarden_user_module, duser);

	duser->event = event_create(user->event);
	event_add_category(duser->event, &event_category_dovewarden);
	event_set_append_log_prefix(duser->event, "dovewarden: ");
	if (DOVEWARDEN_MAIL_USER_SERVICE_USER(user) != NULL &&
	    !user->autocreated) {
		duser->session_user = TRUE;
		dovewarden_session_users++;
	}

	if (!dovewarden_user_init(user, duser))
		return;
	duser->enabled = TRUE;
	duser->nuser.username = user->username;
	duser->nuser.event = duser->event;
	/* One connection per process: the first user decides the path */
	if (dovewarden_client == NULL) {
		dovewarden_client = dovewarden_notify_client_init(
			dovewarden_socket_path(user, duser->set));
	}
}

/* Dovecot creates, deletes and renames mailboxes with the mailbox list
   locked, but lists them without the lock, and logs a deletion or rename
   in the mailbox log only once it is done. A dsync listing during a
   DELETE saw neither the mailbox nor its deletion and copied the peer's
   mailbox back with its old GUID (from then on the deletion can't apply:
   the name was "recreated"); one listing during a RENAME saw both names
   with one GUID and gave the new name a new GUID, so the old name came
   back from the peer with a copy of the mail. Listing them locked (in
   doveadm's dsync only) gives dsync a list from before such a change,
   or from after it with its record in the log. A mail process waits at most for one
   listing; if the lock can't be had, dsync lists without it as before. */
static struct mailbox_list_iterate_context *
dovewarden_list_iter_init(struct mailbox_list *list,
			  const char *const *patterns,
			  enum mailbox_list_iter_flags flags)
{
	struct dovewarden_mailbox_list *dlist =
		DOVEWARDEN_LIST_CONTEXT_REQUIRE(list);
	struct mailbox_list_iterate_context *ctx;
	bool locked = FALSE;

	if (list->ns->user->dsyncing && mailbox_list_lock(list) == 0)
		locked = TRUE;
	ctx = dlist->module_ctx.super.iter_init(list, patterns, flags);
	if (locked) {
		if (!array_is_created(&dlist->locked_iters))
			i_array_init(&dlist->locked_iters, 4);
		array_push_back(&dlist->locked_iters, &ctx);
	}
	return ctx;
}

static int dovewarden_list_iter_deinit(struct mailbox_list_iterate_context *ctx)
{
	struct mailbox_list *list = ctx->list;
	struct dovewarden_mailbox_list *dlist =
		DOVEWARDEN_LIST_CONTEXT_REQUIRE(list);
	struct mailbox_list_iterate_context *const *iters;
	unsigned int i, count;
	bool locked = FALSE;
	int ret;

	if (array_is_created(&dlist->locked_iters)) {
		iters = array_get(&dlist->locked_iters, &count);
		for (i = 0; i < count; i++) {
			if (iters[i] == ctx) {
				array_delete(&dlist->locked_iters, i, 1);
				locked = TRUE;
				break;
			}
		}
	}
	ret = dlist->module_ctx.super.iter_deinit(ctx);
	if (locked)
		mailbox_list_unlock(list);
	return ret;
}

static void dovewarden_mailbox_list_deinit(struct mailbox_list *list)
{
	struct dovewarden_mailbox_list *dlist =
		DOVEWARDEN_LIST_CONTEXT_REQUIRE(list);

	array_free(&dlist->locked_iters);
	dlist->module_ctx.super.deinit(list);
}

static void dovewarden_mailbox_list_created(struct mailbox_list *list)
{
	struct dovewarden_user *duser =
		DOVEWARDEN_USER_CONTEXT(list->ns->user);
	struct mailbox_list_vfuncs *v = list->vlast;
	struct dovewarden_mailbox_list *dlist;

	/* doveadm sets dsyncing only later: checked at each listing */
	if (duser == NULL || !duser->enabled)
		return;
	dlist = p_new(list->pool, struct dovewarden_mailbox_list, 1);
	dlist->module_ctx.super = *v;
	list->vlast = &dlist->module_ctx.super;
	MODULE_CONTEXT_SET(list, dovewarden_mailbox_list_module, dlist);
	v->iter_init = dovewarden_list_iter_init;
	v->iter_deinit = dovewarden_list_iter_deinit;
	v->deinit = dovewarden_mailbox_list_deinit;
}

static const struct notify_vfuncs dovewarden_notify_vfuncs = {
	.mail_transaction_begin = dovewarden_mail_transaction_begin,
	.mail_save = dovewarden_mail_save,
	.mail_copy = dovewarden_mail_copy,
	.mail_expunge = dovewarden_mail_expunge,
	.mail_update_flags = dovewarden_mail_update_flags,
	.mail_update_keywords = dovewarden_mail_update_keywords,
	.mail_transaction_commit = dovewarden_mail_transaction_commit,
	.mail_transaction_rollback = dovewarden_mail_transaction_rollback,
	.mailbox_create = dovewarden_mailbox_create,
	.mailbox_update = dovewarden_mailbox_update,
	.mailbox_delete_commit = dovewarden_mailbox_delete_commit,
	.mailbox_rename = dovewarden_mailbox_rename,
	.mailbox_set_subscribed = dovewarden_mailbox_set_subscribed,
};

static struct mail_storage_hooks dovewarden_mail_storage_hooks = {
	.mail_user_created = dovewarden_mail_user_created,
	.mailbox_list_created = dovewarden_mailbox_list_created,
};

void dovewarden_plugin_init(struct module *module)
{
	dovewarden_notify_ctx = notify_register(&dovewarden_notify_vfuncs);
	mail_storage_hooks_add(module, &dovewarden_mail_storage_hooks);
}

void dovewarden_plugin_deinit(void)
{
	mail_storage_hooks_remove(&dovewarden_mail_storage_hooks);
	dovewarden_notify_unregister(&dovewarden_notify_ctx);
	if (dovewarden_client != NULL)
		dovewarden_notify_client_deinit(&dovewarden_client);
}

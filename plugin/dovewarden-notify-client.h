/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_NOTIFY_CLIENT_H
#define DOVEWARDEN_NOTIFY_CLIENT_H

#include "dovewarden-protocol.h"

/* The mail plugin's side of the notify protocol: one connection per
   process to the service's notify socket, shared by all mail users of the
   process, and the users' pending (coalesced) notifications.

   Nothing here ever blocks: connect() and writes are nonblocking, the
   output buffer is bounded, and while the service can't take more the
   users just keep their pending priority. A pending user is sent once the
   command that changed it returns (new mail) or 30 ms after its first
   change (others), so a command that changes many mails sends one line,
   but no sooner than 500 ms after the process's last notification (of new
   mail, for new mail); also when the output drains, after a reconnect, or
   at the latest by dovewarden_notify_client_user_deinit(). */

/* Why a user's mail changed. Only used for debug logging. */
enum dovewarden_notify_reason {
	DOVEWARDEN_NOTIFY_REASON_SAVE = BIT(0),
	DOVEWARDEN_NOTIFY_REASON_COPY = BIT(1),
	DOVEWARDEN_NOTIFY_REASON_EXPUNGE = BIT(2),
	DOVEWARDEN_NOTIFY_REASON_FLAGS = BIT(3),
	DOVEWARDEN_NOTIFY_REASON_KEYWORDS = BIT(4),
	/* Other committed changes, seen only in the commit's changes */
	DOVEWARDEN_NOTIFY_REASON_CHANGES = BIT(5),
	DOVEWARDEN_NOTIFY_REASON_MAILBOX_CREATE = BIT(6),
	DOVEWARDEN_NOTIFY_REASON_MAILBOX_DELETE = BIT(7),
	DOVEWARDEN_NOTIFY_REASON_MAILBOX_RENAME = BIT(8),
	DOVEWARDEN_NOTIFY_REASON_MAILBOX_UPDATE = BIT(9),
	DOVEWARDEN_NOTIFY_REASON_SUBSCRIBE = BIT(10),
	DOVEWARDEN_NOTIFY_REASON_UNSUBSCRIBE = BIT(11),
};

/* One user's pending notification. The caller embeds it (e.g. in its
   mail_user module context), sets username and event, and keeps both
   valid until dovewarden_notify_client_user_deinit() has returned. The
   other fields belong to the client. */
struct dovewarden_notify_user {
	const char *username;
	/* Log through this (the user's dovewarden event) */
	struct event *event;

	struct dovewarden_notify_user *prev, *next;
	enum dovewarden_priority priority;
	enum dovewarden_notify_reason reasons;
	/* Changes made by dsync (imports) are pending, and how urgent */
	enum dovewarden_priority import_priority;
	bool imported;
	bool queued;
	/* A failed or timed out sync wait was logged as a warning; the
	   session's later ones are logged at debug level only */
	bool sync_wait_logged;
};

/* socket_path is copied. Nothing is connected until the first
   notification. */
struct dovewarden_notify_client *
dovewarden_notify_client_init(const char *socket_path);
/* Flushes what it can without waiting and warns about what is lost. All
   users must have been deinitialized first. */
void dovewarden_notify_client_deinit(struct dovewarden_notify_client **client);

/* Merge a change into the user's pending notification (the higher
   priority wins) and schedule sending it. */
void dovewarden_notify_client_add(struct dovewarden_notify_client *client,
				  struct dovewarden_notify_user *user,
				  enum dovewarden_priority priority,
				  enum dovewarden_notify_reason reasons);
/* Merge a change that dsync made (in a doveadm process) into the user's
   pending notification: priority NONE (nothing to sync) or LOW (a
   mailbox list change that a sync from this server must follow). It is
   sent as an import (I), once the service has said that it knows them;
   to an older service only a LOW one is sent, as a change. */
void dovewarden_notify_client_add_import(struct dovewarden_notify_client *client,
					 struct dovewarden_notify_user *user,
					 enum dovewarden_priority priority,
					 enum dovewarden_notify_reason reasons);
/* The user's session ends: if a notification is still pending, make one
   last nonblocking attempt to send it, and log a warning if it is lost.
   The client forgets the user; its sent waits go on without it. */
void
dovewarden_notify_client_user_deinit(struct dovewarden_notify_client *client,
				     struct dovewarden_notify_user *user);

/* Synchronous replication of new mail (dovewarden_sync_wait).

   dovewarden_notify_client_wait_send() sends a wait request (W) for the
   user's new mail, which also makes the service sync the user at once.
   Several may be sent before dovewarden_notify_client_wait_run()
   collects their answers together: each wait ends when the service
   reports a successful sync of the user that started after the request,
   or when its own timeout (counted from the send) has passed, or when the
   connection is lost. A failure or a timeout is logged once per user
   session as a warning and the mail stays queued in the service, so it is
   replicated in the background. */

/* Returns TRUE when the request was sent. FALSE when the service can't be
   reached right now or its connection can't take more output: nothing
   was sent and the caller notifies the change as usual instead. Never
   blocks. timeout_msecs must be > 0. The user's pending notification, if
   any, is covered by the request and dropped. */
typedef void dovewarden_notify_wait_callback_t(void *context);
/* With a callback, the wait ends by itself (from the client's ioloop: at
   the answer, the deadline or a lost connection) and then calls it; the
   caller does not call dovewarden_notify_client_wait_run() for it. */
bool dovewarden_notify_client_wait_send(struct dovewarden_notify_client *client,
					struct dovewarden_notify_user *user,
					unsigned int timeout_msecs,
					dovewarden_notify_wait_callback_t *callback,
					void *context);
/* Forget the callbacks of the running waits (their owner goes away);
   they end silently. */
void dovewarden_notify_client_waits_detach(struct dovewarden_notify_client *client);
/* Block until every sent wait has ended. This runs a nested ioloop that
   only serves the service connection: nothing else in the process runs
   meanwhile, for at most the longest remaining wait timeout. Returns at
   once when nothing is waited for. */
void dovewarden_notify_client_wait_run(struct dovewarden_notify_client *client);

#endif

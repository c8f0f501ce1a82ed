/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_PLUGIN_H
#define DOVEWARDEN_PLUGIN_H

/* The mail plugin lib20_dovewarden_plugin.so. Enabled with
   mail_plugins { notify = yes  dovewarden = yes }. It tells the dovewarden
   service which users' mail changed (see dovewarden-notify-client.h);
   these are its only exported symbols (the hook is for the
   imap_dovewarden plugin). */

#define DOVEWARDEN_PLUGIN_EXPORT __attribute__((visibility("default")))

struct module;

extern DOVEWARDEN_PLUGIN_EXPORT const char *dovewarden_plugin_version;
extern DOVEWARDEN_PLUGIN_EXPORT const char *dovewarden_plugin_dependencies[];

struct mail_user;

/* How a protocol plugin (imap_dovewarden) keeps the reply to new mail back
   without blocking the process during dovewarden_sync_wait: begin() is
   called when new mail of user is committed, and returns a token when it
   holds the reply of the command running now, or NULL when it can't (then
   the plugin waits in a nested ioloop, as without the hook). end(token)
   is called once the wait has ended (replicated, timed out or failed),
   from the ioloop. */
struct dovewarden_sync_wait_hook {
	void *(*begin)(struct mail_user *user);
	void (*end)(void *token);
};
/* Set the hook, or unset it with NULL (the running waits then end without
   calling end()). */
DOVEWARDEN_PLUGIN_EXPORT void
dovewarden_plugin_set_sync_wait_hook(const struct dovewarden_sync_wait_hook *hook);

DOVEWARDEN_PLUGIN_EXPORT void dovewarden_plugin_init(struct module *module);
DOVEWARDEN_PLUGIN_EXPORT void dovewarden_plugin_deinit(void);

#endif

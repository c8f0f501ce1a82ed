/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_SETTINGS_H
#define DOVEWARDEN_SETTINGS_H

#include "net.h" /* in_port_t */
#include "settings-parser.h"

/* All dovewarden settings, written at the top level of dovecot.conf and
   read with dovewarden_settings_get() (on 2.3 the per-user ones are in
   plugin { }: see dovewarden-settings-2.3.c). The config process learns
   them from libdovewarden_settings.so (see
   plugin/dovewarden-settings-module-<version>.c); without that module
   Dovecot rejects them as unknown. Mail processes see per-user overrides
   from userdb fields of the same name; the service, which has no mail user,
   reads those fields itself (see dovewarden_userdb_fields_apply()). */
struct dovewarden_settings {
	pool_t pool;

	/* Where to replicate to: tcp:host[:port], tcps:host[:port] or the
	   path of a doveadm-server unix socket. Empty means: use
	   mail_replica. */
	const char *dovewarden_replica;
	/* The Dovecot 2.3 name, so that 2.3 userdbs keep working */
	const char *mail_replica;
	/* Replication off for this user (noreplicate is the 2.3 name) */
	bool dovewarden_noreplicate;
	bool noreplicate;

	/* Plugin: the service's notify socket, relative to base_dir */
	const char *dovewarden_notify_socket_path;
	/* Service: a notify request is taken only from a peer whose uid
	   (from the socket) is root, mail_uid, or the uid the user's mail
	   runs as (from the userdb); no: from every peer that can connect */
	bool dovewarden_notify_check_peer;
	/* Dovecot's mail_uid (the same setting), for that check */
	const char *mail_uid;
	/* Plugin: new mail (save, delivery) is acknowledged only after a
	   sync of the user that started after it was saved succeeded, or
	   after this many milliseconds. 0 = don't wait (asynchronous). */
	unsigned int dovewarden_sync_wait;

	/* Service: doveadm-server and auth-userdb sockets, relative to
	   base_dir */
	const char *dovewarden_doveadm_socket_path;
	const char *dovewarden_auth_socket_path;
	/* Service: at most this many syncs at once */
	unsigned int dovewarden_max_syncs;
	/* Service: dsync's -l <secs> lock timeout */
	unsigned int dovewarden_lock_timeout;
	/* Service: a sync that takes longer than this is aborted and
	   counted as failed */
	unsigned int dovewarden_sync_timeout;
	/* Service: first and largest retry delay after a failed sync */
	unsigned int dovewarden_retry_min_interval;
	unsigned int dovewarden_retry_max_interval;
	/* Service: every user gets a full sync (dsync -f) at least this
	   often (0 = never) */
	unsigned int dovewarden_full_sync_interval;
	/* Service: a user whose mail changed gets one full sync once it has
	   been quiet this long, so both servers converge (0 = never) */
	unsigned int dovewarden_settle_delay;
	/* Service: list all userdb users at start and then this often, to
	   learn users that have not notified yet (0 = never) */
	unsigned int dovewarden_userdb_sweep_interval;
	/* Service: with this set, POST /events on the HTTP listener needs
	   it as the Basic auth password or Bearer token (empty = none) */
	const char *dovewarden_http_secret;
	/* Service: accept POST /events without dovewarden_http_secret also
	   on a listener that is not on a loopback address (a wildcard
	   address included). Without it such a listener refuses events. */
	bool dovewarden_http_allow_insecure;

	/* Service: Dovecot 2.3's replicator.db, imported once into a queue
	   that has no state yet and then renamed to <path>.imported;
	   relative to state_dir (empty = no import) */
	const char *dovewarden_import_replicator_db;

	/* Service: where the queue lives: "builtin" (in the service, saved
	   in its state directory) or "redis" (shared by every instance that
	   uses the same Redis and prefix) */
	const char *dovewarden_queue_backend;
	/* Service, Redis backend: server (host name or address, or the path
	   of a unix socket), port, ACL user name (empty: none), password
	   (empty: no AUTH) and database number */
	const char *dovewarden_redis_host;
	in_port_t dovewarden_redis_port;
	const char *dovewarden_redis_username;
	const char *dovewarden_redis_password;
	unsigned int dovewarden_redis_db;
	/* Service, Redis backend: TLS to Redis (not with a unix socket).
	   The server's certificate is verified against the CA file (the
	   system's CAs when empty) and its name against ssl_server_name
	   (empty: dovewarden_redis_host); a client certificate and its key
	   are sent when set. */
	bool dovewarden_redis_ssl;
	const char *dovewarden_redis_ssl_ca_file;
	const char *dovewarden_redis_ssl_cert_file;
	const char *dovewarden_redis_ssl_key_file;
	const char *dovewarden_redis_ssl_server_name;
	/* Service, Redis backend: every key starts with this */
	const char *dovewarden_redis_prefix;
	/* Service, Redis backend: a command (or the connect) that takes
	   longer than this fails and the connection is made anew */
	unsigned int dovewarden_redis_timeout;
	/* Service, Redis backend: a sync claimed by an instance that has not
	   renewed its claim for this long is taken over by another one */
	unsigned int dovewarden_redis_claim_timeout;
	/* Service, Redis backend: at most this many users' notifications
	   are kept in memory while Redis can't be reached */
	unsigned int dovewarden_redis_buffer_limit;

#if !DOVECOT_PREREQ(2, 4, 0)
	/* 2.3: the plugin { } block, for the service's view of the per-user
	   settings (key, value, key, value, ...) */
	ARRAY_TYPE(const_string) plugin;
	/* 2.3: the global mail_plugins (the same setting), to tell whether
	   2.3's built-in replication plugin is still loaded */
	const char *mail_plugins;
	/* 2.3: the built-in replicator's names (and defaults) of
	   dovewarden_full_sync_interval and dovewarden_max_syncs, used where
	   those are left at their defaults */
	unsigned int replication_full_sync_interval;
	unsigned int replication_max_conns;
#endif
};

extern const struct setting_parser_info dovewarden_setting_parser_info;

/* Read the service's master settings (the config, log settings among
   them): master_service_settings_read_simple(), with the dovewarden
   root on 2.3. */
int dovewarden_settings_read_master(const char **error_r);
/* The dovewarden settings for event: the service's, or on 2.4 a mail
   user's (user->event; on 2.3 see dovewarden_user_settings_get()).
   Returns 0, or -1 with error_r when they are invalid. Free with
   dovewarden_settings_free(). */
int dovewarden_settings_get(struct event *event,
			    const struct dovewarden_settings **set_r,
			    const char **error_r);
void dovewarden_settings_free(const struct dovewarden_settings **set);

/* 2.3: settings from base with the per-user ones from getenv (plugin { }
   and userdb fields), checked as the 2.4 parser would */
typedef const char *dovewarden_settings_getenv_t(const char *key,
						  void *context);
int dovewarden_settings_from_env(const struct dovewarden_settings *base,
				 dovewarden_settings_getenv_t *getenv,
				 void *context,
				 const struct dovewarden_settings **set_r,
				 const char **error_r);

/* TRUE when dovewarden_queue_backend is "redis" */
bool dovewarden_settings_use_redis(const struct dovewarden_settings *set);

/* Returns the effective replica destination: dovewarden_replica, or else
   mail_replica, or "" when neither is set. */
const char *dovewarden_settings_get_replica(const struct dovewarden_settings *set);
/* Returns TRUE when the service's settings load Dovecot 2.3's built-in
   replication plugin (mail_plugins names "replication"): its replicator
   still replicates, so the service must not (FALSE on 2.4, which has no
   such plugin). */
bool dovewarden_settings_builtin_replication(const struct dovewarden_settings *set);
/* Returns TRUE when replication is turned off for the settings' user. */
bool dovewarden_settings_is_noreplicate(const struct dovewarden_settings *set);

/* Check that a replica destination has a form dsync accepts here:
   tcp:host[:port], tcps:host[:port] or an absolute unix socket path
   (given to dsync as tcp:/path). Returns 0, or -1 with error_r. */
int dovewarden_replica_parse(const char *replica, const char **dsync_dest_r,
			     const char **error_r);

#endif

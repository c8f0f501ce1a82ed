/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "settings-parser.h"
#include "dovewarden-compat.h"
#include "dovewarden-config.h"
#include "dovewarden-settings-private.h"

const struct dovewarden_settings dovewarden_default_settings = {
	.dovewarden_replica = "",
	.mail_replica = "",
	.dovewarden_noreplicate = FALSE,
	.noreplicate = FALSE,
	.dovewarden_notify_socket_path = "dovewarden-notify",
	.dovewarden_notify_check_peer = TRUE,
	.mail_uid = "",
	.dovewarden_sync_wait = 0,
	.dovewarden_doveadm_socket_path = "doveadm-server",
	.dovewarden_auth_socket_path = "auth-userdb",
	.dovewarden_max_syncs = 10,
	.dovewarden_lock_timeout = 30,
	.dovewarden_sync_timeout = 10 * 60,
	.dovewarden_retry_min_interval = 5,
	.dovewarden_retry_max_interval = 10 * 60,
	.dovewarden_full_sync_interval = 24 * 60 * 60,
	.dovewarden_settle_delay = 10,
	.dovewarden_userdb_sweep_interval = 24 * 60 * 60,
	.dovewarden_http_secret = "",
	.dovewarden_http_allow_insecure = FALSE,
	.dovewarden_import_replicator_db = "replicator.db",
	.dovewarden_queue_backend = "builtin:redis",
	.dovewarden_redis_host = "127.0.0.1",
	.dovewarden_redis_port = 6379,
	.dovewarden_redis_username = "",
	.dovewarden_redis_password = "",
	.dovewarden_redis_db = 0,
	.dovewarden_redis_ssl = FALSE,
	.dovewarden_redis_ssl_ca_file = "",
	.dovewarden_redis_ssl_cert_file = "",
	.dovewarden_redis_ssl_key_file = "",
	.dovewarden_redis_ssl_server_name = "",
	.dovewarden_redis_prefix = "dovewarden:",
	.dovewarden_redis_timeout = 5 * 1000,
	.dovewarden_redis_claim_timeout = 60,
	.dovewarden_redis_buffer_limit = 100000,
#if !DOVECOT_PREREQ(2, 4, 0)
	/* the same as the built-in replicator's */
	.replication_full_sync_interval = 24 * 60 * 60,
	.replication_max_conns = 10,
#endif
};

static int dovewarden_redis_ssl_check(const struct dovewarden_settings *set,
				      const char **error_r)
{
	if (!set->dovewarden_redis_ssl)
		return 0;
#ifndef DOVEWARDEN_HAVE_REDIS_TLS
	/* refused, never connected to in clear */
	*error_r = "dovewarden_redis_ssl = yes: this dovewarden was built "
		"without TLS to Redis (it needs hiredis >= 1.0 with "
		"hiredis_ssl)";
	return -1;
#endif
	if (set->dovewarden_redis_host[0] == '/') {
		*error_r = "dovewarden_redis_ssl = yes needs a TCP "
			"dovewarden_redis_host, not a unix socket";
		return -1;
	}
	if ((set->dovewarden_redis_ssl_cert_file[0] == '\0') !=
	    (set->dovewarden_redis_ssl_key_file[0] == '\0')) {
		*error_r = "dovewarden_redis_ssl_cert_file and "
			"dovewarden_redis_ssl_key_file must be set together";
		return -1;
	}
	return 0;
}

bool dovewarden_settings_check(void *_set, pool_t pool ATTR_UNUSED,
			       const char **error_r)
{
	struct dovewarden_settings *set = _set;

	if (set->dovewarden_max_syncs == 0) {
		*error_r = "dovewarden_max_syncs must not be 0";
		return FALSE;
	}
	if (set->dovewarden_retry_min_interval == 0 ||
	    set->dovewarden_retry_min_interval >
	    set->dovewarden_retry_max_interval) {
		*error_r = "dovewarden_retry_min_interval must be >0 and "
			"<= dovewarden_retry_max_interval";
		return FALSE;
	}
	if (dovewarden_settings_use_redis(set)) {
#ifndef DOVEWARDEN_HAVE_REDIS
		*error_r = "dovewarden_queue_backend = redis: this dovewarden "
			"was built without the Redis backend (it needs "
			"hiredis >= 0.14)";
		return FALSE;
#endif
		if (set->dovewarden_redis_host[0] == '\0') {
			*error_r = "dovewarden_redis_host must not be empty";
			return FALSE;
		}
		if (set->dovewarden_redis_timeout == 0 ||
		    set->dovewarden_redis_claim_timeout < 3) {
			*error_r = "dovewarden_redis_timeout must be >0 and "
				"dovewarden_redis_claim_timeout >= 3s";
			return FALSE;
		}
		if (set->dovewarden_redis_buffer_limit == 0) {
			*error_r = "dovewarden_redis_buffer_limit must not be 0";
			return FALSE;
		}
		if (dovewarden_redis_ssl_check(set, error_r) < 0)
			return FALSE;
	}
	return TRUE;
}

const char *dovewarden_settings_get_replica(const struct dovewarden_settings *set)
{
	if (set->dovewarden_replica[0] != '\0')
		return set->dovewarden_replica;
	return set->mail_replica;
}

bool dovewarden_settings_use_redis(const struct dovewarden_settings *set)
{
	return strcmp(set->dovewarden_queue_backend, "redis") == 0;
}

bool dovewarden_settings_is_noreplicate(const struct dovewarden_settings *set)
{
	return set->dovewarden_noreplicate || set->noreplicate;
}

int dovewarden_replica_parse(const char *replica, const char **dsync_dest_r,
			     const char **error_r)
{
	const char *host;

	*dsync_dest_r = replica;
	if (replica[0] == '\0')
		return 0;
	if (replica[0] == '/') {
		*dsync_dest_r = t_strconcat("tcp:", replica, NULL);
		return 0;
	}
	if (str_begins(replica, "tcp:", &host) ||
	    str_begins(replica, "tcps:", &host)) {
		if (host[0] == '\0') {
			*error_r = t_strdup_printf(
				"Replica '%s' has no host", replica);
			return -1;
		}
		return 0;
	}
	*error_r = t_strdup_printf("Replica '%s' is not tcp:host[:port], "
				   "tcps:host[:port] or a socket path",
				   replica);
	return -1;
}

/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_SETTINGS_PRIVATE_H
#define DOVEWARDEN_SETTINGS_PRIVATE_H

#include "dovewarden-settings.h"

/* What the per-version files (dovewarden-settings-2.3.c, -2.4.c) build the
   parser info from. The setting_defines, as
   DOVEWARDEN_SETTING_DEFINES(USER, SERVICE): USER(type, name) for the
   settings that mail processes read per user (on 2.3 from plugin { } and
   userdb fields, which is where 2.3 keeps them), SERVICE(type, name) for
   the ones only the service reads. A new setting goes at the end: on
   Dovecot 2.4 a mail process that still runs the previous plugin (during
   a package upgrade) reads the settings by their position, and a key
   out of place makes it turn replication off. */
#define DOVEWARDEN_SETTING_DEFINES(USER, SERVICE) \
	USER(STR, dovewarden_replica) \
	USER(STR, mail_replica) \
	USER(BOOL, dovewarden_noreplicate) \
	USER(BOOL, noreplicate) \
	USER(STR, dovewarden_notify_socket_path) \
	SERVICE(BOOL, dovewarden_notify_check_peer) \
	SERVICE(STR, mail_uid) \
	USER(TIME_MSECS, dovewarden_sync_wait) \
	SERVICE(STR, dovewarden_doveadm_socket_path) \
	SERVICE(STR, dovewarden_auth_socket_path) \
	SERVICE(UINT, dovewarden_max_syncs) \
	SERVICE(TIME, dovewarden_lock_timeout) \
	SERVICE(TIME, dovewarden_sync_timeout) \
	SERVICE(TIME, dovewarden_retry_min_interval) \
	SERVICE(TIME, dovewarden_retry_max_interval) \
	SERVICE(TIME, dovewarden_full_sync_interval) \
	SERVICE(TIME, dovewarden_settle_delay) \
	SERVICE(TIME, dovewarden_userdb_sweep_interval) \
	SERVICE(STR, dovewarden_http_secret) \
	SERVICE(BOOL, dovewarden_http_allow_insecure) \
	SERVICE(ENUM, dovewarden_queue_backend) \
	SERVICE(STR, dovewarden_redis_host) \
	SERVICE(IN_PORT, dovewarden_redis_port) \
	SERVICE(STR, dovewarden_redis_username) \
	SERVICE(STR, dovewarden_redis_password) \
	SERVICE(UINT, dovewarden_redis_db) \
	SERVICE(BOOL, dovewarden_redis_ssl) \
	SERVICE(STR, dovewarden_redis_ssl_ca_file) \
	SERVICE(STR, dovewarden_redis_ssl_cert_file) \
	SERVICE(STR, dovewarden_redis_ssl_key_file) \
	SERVICE(STR, dovewarden_redis_ssl_server_name) \
	SERVICE(STR, dovewarden_redis_prefix) \
	SERVICE(TIME_MSECS, dovewarden_redis_timeout) \
	SERVICE(TIME, dovewarden_redis_claim_timeout) \
	SERVICE(UINT, dovewarden_redis_buffer_limit) \
	SERVICE(STR, dovewarden_import_replicator_db)

#define DOVEWARDEN_SETTING_DEFINE(type, name) \
	SETTING_DEFINE_STRUCT_##type(#name, name, struct dovewarden_settings),

extern const struct dovewarden_settings dovewarden_default_settings;

/* The parser info's check_func, of the service's settings only (USER
   ones are not in 2.3's root) */
bool dovewarden_settings_check(void *set, pool_t pool, const char **error_r);

#if !DOVECOT_PREREQ(2, 4, 0)
/* 2.3: take the built-in replicator's settings (replication_*) for the
   dovewarden ones that are left at their defaults. The config process
   sends a service only the settings that are set, so a dovewarden_*
   setting at its default value counts as not set. */
void dovewarden_settings_apply_replication_names(struct dovewarden_settings *set);
#endif

#endif

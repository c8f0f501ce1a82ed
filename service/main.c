/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "restrict-access.h"
#include "master-service.h"
#include "master-service-settings.h"
#include "hostpid.h"
#include "dovewarden-compat.h"
#include "dovewarden-settings.h"
#include "dovewarden-queue-backend.h"
#include "dovewarden-replicator.h"
#include "dovewarden-sync-wait.h"
#include "dovewarden-sweep-schedule.h"
#include "dovewarden-notify-server.h"
#include "dovewarden-admin.h"
#include "dovewarden-http.h"
#include "dovewarden-metrics.h"

/* The queue state, in state_dir */
#define DOVEWARDEN_STATE_FNAME "dovewarden.db"
/* The started dsyncs (see dovewarden-orphans.h), in state_dir */
#define DOVEWARDEN_ORPHANS_FNAME "dovewarden.dsyncs"

static struct event *dovewarden_event;
static const struct dovewarden_settings *dovewarden_set;
static struct dovewarden_queue_backend *queue;
static struct dovewarden_replicator *replicator;
static struct dovewarden_sync_waits *sync_waits;
static struct dovewarden_sweep_schedule *sweep_schedule;
static struct dovewarden_notify_server *notify_server;
static struct dovewarden_http_server *http_server;

static void client_connected(struct master_service_connection *conn)
{
	const char *type = dovewarden_master_connection_type(conn);

	if (strcmp(type, "notify") == 0) {
		master_service_client_connection_accept(conn);
		dovewarden_notify_server_accept(notify_server, conn);
	} else if (strcmp(type, "admin") == 0) {
		master_service_client_connection_accept(conn);
		dovewarden_admin_client_create(conn->fd);
	} else if (strcmp(type, "http") == 0) {
		master_service_client_connection_accept(conn);
		dovewarden_http_server_accept(http_server, conn);
	} else {
		e_error(dovewarden_event, "Closing connection on listener "
			"'%s': unknown listener type '%s' (expected notify, "
			"admin or http)", conn->name, type);
	}
}

static void queue_ready(void *context ATTR_UNUSED)
{
	if (replicator != NULL)
		dovewarden_replicator_queue_changed(replicator);
	if (sweep_schedule != NULL)
		dovewarden_sweep_schedule_queue_ready(sweep_schedule);
}

static void queue_sync_done(const char *username, uint64_t seq,
			    enum dovewarden_sync_result result,
			    const char *error, void *context ATTR_UNUSED)
{
	if (sync_waits != NULL) {
		dovewarden_sync_waits_sync_done(sync_waits, username, seq,
						result, error);
	}
}

static const struct dovewarden_queue_backend_callbacks queue_callbacks = {
	.ready = queue_ready,
	.sync_done = queue_sync_done,
};

static void sweep_users_added(void *context ATTR_UNUSED)
{
	dovewarden_replicator_queue_changed(replicator);
}

static const char *main_socket_path(const char *base_dir, const char *path)
{
	return path[0] == '/' ? path : t_strconcat(base_dir, "/", path, NULL);
}

static void main_init(void)
{
	const struct master_service_settings *mset =
		dovewarden_master_service_settings();
	struct dovewarden_queue_backend_settings qset;
	const char *auth_socket_path, *backend_name, *error;
	bool no_replica, idle;

	auth_socket_path = main_socket_path(mset->base_dir,
		dovewarden_set->dovewarden_auth_socket_path);

	dovewarden_queue_backends_register_all();
	i_zero(&qset);
	qset.set = dovewarden_set;
	qset.queue.full_sync_interval_secs =
		dovewarden_set->dovewarden_full_sync_interval;
	qset.queue.retry_min_secs =
		dovewarden_set->dovewarden_retry_min_interval;
	qset.queue.retry_max_secs =
		dovewarden_set->dovewarden_retry_max_interval;
	qset.queue.settle_delay_secs = dovewarden_set->dovewarden_settle_delay;
	qset.queue.settle_max_secs = DOVEWARDEN_QUEUE_SETTLE_MAX_SECS;
	qset.server = my_hostname;
	/* Installed but not configured (the settings module adds the
	   service to every Dovecot): no sweep, no Redis, nothing written in
	   state_dir. Users whose userdb gives a replica are still synced
	   when their mail processes notify, from an in-memory queue. */
	no_replica = dovewarden_settings_get_replica(dovewarden_set)[0] == '\0';
	idle = no_replica;
	if (dovewarden_settings_builtin_replication(dovewarden_set)) {
		/* Dovecot 2.3 with its own replication still configured:
		   two replicators would sync every user twice, and the
		   replicator's replicator.db is not final yet */
		e_warning(dovewarden_event, "mail_plugins still loads Dovecot's "
			  "built-in replication plugin: idle until it is "
			  "replaced by dovewarden (see the README's migration "
			  "guide)");
		idle = TRUE;
	} else if (idle) {
		e_info(dovewarden_event, "No dovewarden_replica (or "
		       "mail_replica) set: idle (no userdb sweep, no queue "
		       "state written)");
	}
	if (idle) {
		backend_name = DOVEWARDEN_QUEUE_BACKEND_DEFAULT;
		if (no_replica &&
		    strcmp(dovewarden_set->dovewarden_queue_backend,
			   backend_name) != 0) {
			/* replicas set only in the userdb: say what is
			   not used */
			e_warning(dovewarden_event, "dovewarden_queue_backend "
				  "= %s is not used while idle: users whose "
				  "userdb sets a replica are synced from a "
				  "queue in memory (set dovewarden_replica "
				  "to use it)",
				  dovewarden_set->dovewarden_queue_backend);
		}
	} else {
		backend_name = dovewarden_set->dovewarden_queue_backend;
		qset.state_path = t_strconcat(mset->state_dir,
			"/"DOVEWARDEN_STATE_FNAME, NULL);
		if (dovewarden_set->dovewarden_import_replicator_db[0] != '\0') {
			/* relative to state_dir, as a socket's path is
			   to base_dir */
			qset.replicator_db_path = main_socket_path(
				mset->state_dir,
				dovewarden_set->dovewarden_import_replicator_db);
		}
	}
	queue = dovewarden_queue_backend_init(backend_name, &qset,
		dovewarden_event, &queue_callbacks, NULL, &error);
	if (queue == NULL)
		i_fatal("%s", error);

	replicator = dovewarden_replicator_init(dovewarden_set, mset->base_dir,
		idle ? NULL : t_strconcat(mset->state_dir,
					  "/"DOVEWARDEN_ORPHANS_FNAME, NULL),
		queue, dovewarden_event);
	sync_waits = dovewarden_sync_waits_init(queue);
	if (!idle) {
		sweep_schedule = dovewarden_sweep_schedule_init(
			dovewarden_set->dovewarden_userdb_sweep_interval,
			auth_socket_path, queue, dovewarden_event,
			sweep_users_added, NULL);
	}
	notify_server = dovewarden_notify_server_init(dovewarden_set,
		auth_socket_path, replicator, sync_waits, dovewarden_event);
	http_server = dovewarden_http_server_init(dovewarden_set, queue,
		replicator, main_socket_path(mset->base_dir,
			dovewarden_set->dovewarden_doveadm_socket_path),
		dovewarden_event);
	dovewarden_admin_server_init(queue, replicator, auth_socket_path,
				     dovewarden_event);
}

static void main_deinit(void)
{
	dovewarden_admin_server_deinit();
	dovewarden_http_server_deinit(&http_server);
	dovewarden_notify_server_deinit(&notify_server);
	dovewarden_sweep_schedule_deinit(&sweep_schedule);
	dovewarden_replicator_deinit(&replicator);
	/* its deinit fails the waits' notify requests still in flight */
	dovewarden_queue_backend_deinit(&queue);
	dovewarden_sync_waits_deinit(&sync_waits);
	dovewarden_queue_backends_unregister_all();
}

int main(int argc, char *argv[])
{
	const char *error;

	master_service = master_service_init("dovewarden",
					     MASTER_SERVICE_FLAG_NO_IDLE_DIE,
					     &argc, &argv, "");
	if (master_getopt(master_service) > 0)
		return FATAL_DEFAULT;
	if (dovewarden_settings_read_master(&error) < 0)
		i_fatal("Error reading configuration: %s", error);
	master_service_init_log(master_service);

	dovewarden_event = event_create(dovewarden_master_service_event());
	event_add_category(dovewarden_event, &event_category_dovewarden);
	if (dovewarden_settings_get(dovewarden_event, &dovewarden_set,
				    &error) < 0) {
		i_fatal("Invalid dovewarden settings, not starting: %s",
			error);
	}

	restrict_access_by_env(RESTRICT_ACCESS_FLAG_ALLOW_ROOT, NULL);
	restrict_access_allow_coredumps(TRUE);

	main_init();
	master_service_init_finish(master_service);
	master_service_run(master_service, client_connected);
	main_deinit();

	dovewarden_settings_free(&dovewarden_set);
	event_unref(&dovewarden_event);
	master_service_deinit(&master_service);
	return 0;
}

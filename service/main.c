/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "restrict-access.h"
#include "settings.h"
#include "master-service.h"
#include "master-service-settings.h"
#include "dovewarden-settings.h"
#include "dovewarden-replicator.h"
#include "dovewarden-notify-server.h"
#include "dovewarden-admin.h"
#include "dovewarden-http.h"
#include "dovewarden-metrics.h"

/* The queue state, in state_dir */
#define DOVEWARDEN_STATE_FNAME "dovewarden.db"

static struct event_category event_category_dovewarden = {
	.name = "dovewarden",
};

static struct event *dovewarden_event;
static const struct dovewarden_settings *dovewarden_set;
static struct dovewarden_replicator *replicator;
static struct dovewarden_notify_server *notify_server;
static struct dovewarden_http_server *http_server;
static char *auth_socket_path;

static void client_connected(struct master_service_connection *conn)
{
	const char *type = master_service_connection_get_type(conn);

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

static const char *
admin_sync_state(const struct dovewarden_user *user, void *context ATTR_UNUSED)
{
	return dovewarden_replicator_get_sync_state(replicator, user);
}

static void admin_queue_changed(void *context ATTR_UNUSED)
{
	dovewarden_replicator_queue_changed(replicator);
}

static void admin_replicate(const char *username,
			    enum dovewarden_priority priority, bool full_sync,
			    void *context ATTR_UNUSED)
{
	if (full_sync) {
		dovewarden_replicator_force_full_sync(replicator, username,
						      priority);
	} else {
		dovewarden_replicator_notify(replicator, username, priority);
	}
}

static bool admin_add_user(const char *username, void *context ATTR_UNUSED)
{
	return dovewarden_replicator_add_user(replicator, username);
}

static void admin_get_syncing_users(ARRAY_TYPE(dovewarden_user_p) *users,
				    void *context ATTR_UNUSED)
{
	dovewarden_replicator_get_syncing_users(replicator, users);
}

static struct dovewarden_sweep *
admin_add_users(const char *mask, dovewarden_sweep_callback_t *callback,
		void *callback_context, void *context ATTR_UNUSED)
{
	return dovewarden_sweep_start(admin_add_user, NULL, auth_socket_path,
				      mask, dovewarden_event, callback,
				      callback_context);
}

static const struct dovewarden_admin_callbacks admin_callbacks = {
	.sync_state = admin_sync_state,
	.queue_changed = admin_queue_changed,
	.replicate = admin_replicate,
	.add_users = admin_add_users,
	.add_user = admin_add_user,
	.get_syncing_users = admin_get_syncing_users,
};

static void main_init(void)
{
	const struct master_service_settings *mset =
		master_service_get_service_settings(master_service);
	const char *path = dovewarden_set->dovewarden_auth_socket_path;

	auth_socket_path = path[0] == '/' ? i_strdup(path) :
		i_strconcat(mset->base_dir, "/", path, NULL);
	replicator = dovewarden_replicator_init(dovewarden_set, mset->base_dir,
		t_strconcat(mset->state_dir, "/"DOVEWARDEN_STATE_FNAME, NULL),
		dovewarden_event);
	notify_server = dovewarden_notify_server_init(replicator,
						      dovewarden_event);
	path = dovewarden_set->dovewarden_doveadm_socket_path;
	http_server = dovewarden_http_server_init(dovewarden_set, replicator,
		path[0] == '/' ? path :
		t_strconcat(mset->base_dir, "/", path, NULL), dovewarden_event);
	dovewarden_metrics_init_from_queue(
		dovewarden_replicator_get_queue(replicator));
	dovewarden_admin_server_init(
		dovewarden_replicator_get_queue(replicator),
		dovewarden_replicator_get_queue_settings(replicator),
		&admin_callbacks, dovewarden_event);
	if (dovewarden_replicator_get_redis_queue(replicator) != NULL) {
		dovewarden_admin_server_set_redis(
			dovewarden_replicator_get_redis_queue(replicator));
	}
}

static void main_deinit(void)
{
	dovewarden_admin_server_deinit();
	dovewarden_http_server_deinit(&http_server);
	dovewarden_notify_server_deinit(&notify_server);
	dovewarden_replicator_deinit(&replicator);
	i_free(auth_socket_path);
}

int main(int argc, char *argv[])
{
	const char *error;

	master_service = master_service_init("dovewarden",
					     MASTER_SERVICE_FLAG_NO_IDLE_DIE,
					     &argc, &argv, "");
	if (master_getopt(master_service) > 0)
		return FATAL_DEFAULT;
	if (master_service_settings_read_simple(master_service, &error) < 0)
		i_fatal("Error reading configuration: %s", error);
	master_service_init_log(master_service);

	dovewarden_event =
		event_create(master_service_get_event(master_service));
	event_add_category(dovewarden_event, &event_category_dovewarden);
	if (settings_get(dovewarden_event, &dovewarden_setting_parser_info, 0,
			 &dovewarden_set, &error) < 0) {
		i_fatal("Invalid dovewarden settings, not starting: %s",
			error);
	}

	restrict_access_by_env(RESTRICT_ACCESS_FLAG_ALLOW_ROOT, NULL);
	restrict_access_allow_coredumps(TRUE);

	main_init();
	master_service_init_finish(master_service);
	master_service_run(master_service, client_connected);
	main_deinit();

	settings_free(dovewarden_set);
	event_unref(&dovewarden_event);
	master_service_deinit(&master_service);
	return 0;
}

/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "net.h"
#include "str.h"
#include "write-full.h"
#include "dovewarden-queue.h"
#include "dovewarden-sweep.h"

#include <criterion/criterion.h>
#include <unistd.h>

/* A fake auth-userdb socket: it answers every connection with a fixed
   reply (the auth-master protocol lines) and then closes it, unless the
   reply is NULL (then it keeps the connection open, silent). */

#define T_SOCKET_NAME "auth-userdb"

static char test_dir[] = "/tmp/dw-sweep-test.XXXXXX";
static const char *socket_path;
static struct ioloop *ioloop;
static struct dovewarden_queue *queue;
static int listen_fd = -1;
static struct io *io_listen;
static const char *server_reply;
static int client_fds[4];
static unsigned int client_count;
static string_t *server_request;

static bool callback_called;
static unsigned int result_listed, result_added, result_invalid;
static char *result_error;

static void suite_init(void)
{
	const struct dovewarden_queue_settings set = {
		.full_sync_interval_secs = 86400,
		.retry_min_secs = 10,
		.retry_max_secs = 600,
	};

	lib_init();
	ioloop = io_loop_create();
	cr_assert_not_null(mkdtemp(test_dir));
	socket_path = i_strconcat(test_dir, "/"T_SOCKET_NAME, NULL);
	queue = dovewarden_queue_init(&set);
	server_request = str_new(default_pool, 256);
}

static void suite_fini(void)
{
	unsigned int i;

	io_remove(&io_listen);
	for (i = 0; i < client_count; i++)
		i_close_fd(&client_fds[i]);
	if (listen_fd != -1)
		i_close_fd(&listen_fd);
	(void)unlink(socket_path);
	(void)rmdir(test_dir);
	dovewarden_queue_deinit(&queue);
	str_free(&server_request);
	i_free(result_error);
	io_loop_destroy(&ioloop);
	lib_deinit();
}

TestSuite(sweep, .init = suite_init, .fini = suite_fini);

static void server_accept(void *context ATTR_UNUSED)
{
	char buf[1024];
	ssize_t ret;
	int fd;

	fd = net_accept(listen_fd, NULL, NULL);
	if (fd < 0)
		return;
	/* the request is sent at connect; read what is there */
	net_set_nonblock(fd, FALSE);
	ret = read(fd, buf, sizeof(buf));
	if (ret > 0)
		str_append_data(server_request, buf, ret);
	if (server_reply == NULL) {
		i_assert(client_count < N_ELEMENTS(client_fds));
		client_fds[client_count++] = fd;
		return;
	}
	cr_assert_eq(write_full(fd, server_reply, strlen(server_reply)), 0);
	i_close_fd(&fd);
}

static void server_start(const char *reply)
{
	server_reply = reply;
	listen_fd = net_listen_unix(socket_path, 16);
	cr_assert_neq(listen_fd, -1, "net_listen_unix(%s): %m", socket_path);
	io_listen = io_add(listen_fd, IO_READ, server_accept, NULL);
}

static void
sweep_callback(const struct dovewarden_sweep_result *result,
	       void *context ATTR_UNUSED)
{
	callback_called = TRUE;
	result_listed = result->listed;
	result_added = result->added;
	result_invalid = result->invalid;
	result_error = i_strdup(result->error);
	io_loop_stop(ioloop);
}

static void test_timeout(void *context ATTR_UNUSED)
{
	io_loop_stop(ioloop);
}

/* what the replicator does with the built-in queue */
static bool sweep_add(const char *username, void *context ATTR_UNUSED)
{
	if (dovewarden_queue_lookup(queue, username) != NULL)
		return FALSE;
	(void)dovewarden_queue_add(queue, username, ioloop_time);
	return TRUE;
}

static void run_sweep(const char *mask)
{
	struct dovewarden_sweep *sweep;
	struct timeout *to;

	sweep = dovewarden_sweep_start(sweep_add, NULL, socket_path, mask,
				       NULL, sweep_callback, NULL);
	cr_assert_not_null(sweep);
	/* never from within start */
	cr_assert(!callback_called);
	to = timeout_add(5000, test_timeout, NULL);
	io_loop_run(ioloop);
	timeout_remove(&to);
	cr_assert(callback_called, "the sweep did not finish");
}

Test(sweep, lists_and_adds_new_users)
{
	struct dovewarden_user *known;

	known = dovewarden_queue_notify(queue, "known",
					DOVEWARDEN_PRIORITY_HIGH, ioloop_time);
	server_start("VERSION\t1\t3\nSPID\t123\n"
		     "LIST\t1\talice\n"
		     "LIST\t1\tknown\n"
		     "LIST\t1\tspace user\n"
		     "LIST\t1\ttab\001tuser\n"
		     "LIST\t1\tbob\n"
		     "DONE\t1\n");
	run_sweep("*");
	cr_assert_null(result_error, "%s", result_error);
	cr_assert_eq(result_listed, 4);
	cr_assert_eq(result_added, 3);
	/* control characters: skipped */
	cr_assert_eq(result_invalid, 1);
	cr_assert_not_null(dovewarden_queue_lookup(queue, "alice"));
	cr_assert_not_null(dovewarden_queue_lookup(queue, "bob"));
	cr_assert_not_null(dovewarden_queue_lookup(queue, "space user"));
	cr_assert_null(dovewarden_queue_lookup(queue, "tab\tuser"));
	/* known users are untouched */
	cr_assert_eq(dovewarden_queue_lookup(queue, "known"), known);
	cr_assert_eq(known->priority, DOVEWARDEN_PRIORITY_HIGH);
	/* new users are idle, their first full sync spread */
	cr_assert_eq(dovewarden_queue_lookup(queue, "alice")->priority,
		     DOVEWARDEN_PRIORITY_NONE);
	cr_assert_gt(dovewarden_queue_user_get_next_sync(
		dovewarden_queue_lookup(queue, "alice")), ioloop_time);
	/* the request */
	cr_assert(strstr(str_c(server_request), "VERSION\t1\t") ==
		  str_c(server_request));
	/* the auth field 2.3's and 2.4's auth import for the service
	   name (auth-master-connection.c) */
#if DOVECOT_PREREQ(2, 4, 0)
	cr_assert_not_null(strstr(str_c(server_request),
				  "\nLIST\t1\tuser=*\tprotocol=dovewarden\n"));
#else
	cr_assert_not_null(strstr(str_c(server_request),
				  "\nLIST\t1\tuser=*\tservice=dovewarden\n"));
#endif
}

Test(sweep, mask_and_invalid_names)
{
	string_t *reply = t_str_new(4096);

	str_append(reply, "VERSION\t1\t3\nSPID\t1\n"
		   "LIST\t1\talice\nLIST\t1\tbob\nLIST\t1\tanna\n"
		   "LIST\t1\ta");
	/* too long for a username */
	str_append_max(reply, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		       "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
		       100);
	while (str_len(reply) < 2 * DOVEWARDEN_USERNAME_MAX_LENGTH)
		str_append_c(reply, 'y');
	str_append(reply, "\nDONE\t1\n");
	server_start(str_c(reply));
	/* the userdb may ignore the mask: bob does not match */
	run_sweep("a*");
	cr_assert_null(result_error, "%s", result_error);
	cr_assert_eq(result_listed, 2);
	cr_assert_eq(result_added, 2);
	cr_assert_eq(result_invalid, 1);
	cr_assert_null(dovewarden_queue_lookup(queue, "bob"));
}

Test(sweep, listing_fails)
{
	server_start("VERSION\t1\t3\nSPID\t1\nLIST\t1\talice\nDONE\t1\tfail\n");
	run_sweep("*");
	cr_assert_not_null(result_error);
	/* the users listed before the failure stay */
	cr_assert_eq(result_added, 1);
	cr_assert_not_null(dovewarden_queue_lookup(queue, "alice"));
}

Test(sweep, disconnect_before_done)
{
	server_start("VERSION\t1\t3\nSPID\t1\nLIST\t1\talice\n");
	run_sweep("*");
	cr_assert_not_null(result_error);
	cr_assert_not_null(strstr(result_error, "disconnected"));
	cr_assert_eq(result_added, 1);
}

Test(sweep, not_an_auth_socket)
{
	server_start("VERSION\tdoveadm-server\t1\t0\n");
	run_sweep("*");
	cr_assert_not_null(result_error);
	cr_assert_not_null(strstr(result_error, "handshake"));
}

Test(sweep, connect_fails)
{
	/* no server: the failure comes later, from the ioloop */
	run_sweep("*");
	cr_assert_not_null(result_error);
	cr_assert_not_null(strstr(result_error, "net_connect_unix"));
}

Test(sweep, invalid_mask)
{
	server_start("VERSION\t1\t3\nDONE\t1\n");
	run_sweep("a\tb*");
	cr_assert_not_null(result_error);
	cr_assert_eq(str_len(server_request), 0);
}

Test(sweep, abort_calls_nothing)
{
	struct dovewarden_sweep *sweep;
	struct timeout *to;

	server_start(NULL);
	sweep = dovewarden_sweep_start(sweep_add, NULL, socket_path, "*",
				       NULL, sweep_callback, NULL);
	to = timeout_add_short(200, test_timeout, NULL);
	io_loop_run(ioloop);
	timeout_remove(&to);
	cr_assert_eq(client_count, 1);
	cr_assert(!callback_called);
	dovewarden_sweep_abort(&sweep);
	cr_assert_null(sweep);
	dovewarden_sweep_abort(&sweep);
	cr_assert(!callback_called);
}

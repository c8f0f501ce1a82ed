/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "net.h"
#include "str.h"
#include "unlink-directory.h"
#include "dovewarden-doveadm.h"

#include <criterion/criterion.h>
#include <unistd.h>

/* The doveadm-server client's deinit closes the syncs still running
   without calling their callbacks: whoever started them is going away
   too. */

static char test_dir[] = "/tmp/dw-doveadm-test.XXXXXX";
static struct ioloop *ioloop;

static void suite_init(void)
{
	lib_init();
	ioloop = io_loop_create();
	cr_assert_not_null(mkdtemp(test_dir));
}

static void suite_fini(void)
{
	const char *error;

	(void)unlink_directory(test_dir, UNLINK_DIRECTORY_FLAG_RMDIR, &error);
	io_loop_destroy(&ioloop);
	lib_deinit();
}

TestSuite(doveadm, .init = suite_init, .fini = suite_fini);

static void run_timeout(void *context ATTR_UNUSED)
{
	io_loop_stop(ioloop);
}

static void run_for(unsigned int msecs)
{
	struct timeout *to = timeout_add(msecs, run_timeout, NULL);

	io_loop_run(ioloop);
	timeout_remove(&to);
}

static void
sync_callback(const struct dovewarden_doveadm_sync_reply *reply ATTR_UNUSED,
	      void *context)
{
	unsigned int *calls = context;

	(*calls)++;
}

Test(doveadm, deinit_calls_no_callback)
{
	struct dovewarden_doveadm *doveadm;
	struct dovewarden_doveadm_sync_settings set;
	const char *path = t_strconcat(test_dir, "/doveadm-server", NULL);
	unsigned int calls = 0;
	int listen_fd;

	listen_fd = net_listen_unix(path, 16);
	cr_assert_neq(listen_fd, -1);
	doveadm = dovewarden_doveadm_init();
	i_zero(&set);
	set.socket_path = path;
	set.username = "user";
	set.state = "";
	set.destination = "tcp:replica.example.org:12345";
	set.timeout_msecs = 50;
	/* two connected ones, waiting for the server's handshake */
	(void)dovewarden_doveadm_sync_start(doveadm, &set, NULL,
					    sync_callback, &calls);
	(void)dovewarden_doveadm_sync_start(doveadm, &set, NULL,
					    sync_callback, &calls);
	/* one whose connect() failed, reported from a timeout not run yet */
	set.socket_path = t_strconcat(test_dir, "/missing", NULL);
	(void)dovewarden_doveadm_sync_start(doveadm, &set, NULL,
					    sync_callback, &calls);
	dovewarden_doveadm_deinit(&doveadm);
	cr_assert_null(doveadm);
	/* nor later from the ioloop (the syncs' timeouts are gone) */
	run_for(200);
	cr_assert_eq(calls, 0);
	i_close_fd(&listen_fd);
}

/* A doveadm-server that answers the sync command with a fixed reply */
struct fake_server {
	int listen_fd, fd;
	struct io *io_listen, *io;
	string_t *input;
	const char *reply;
};

static void fake_server_input(struct fake_server *server)
{
	const char *p;
	char buf[1024];
	ssize_t ret;

	ret = read(server->fd, buf, sizeof(buf));
	if (ret <= 0) {
		io_remove(&server->io);
		return;
	}
	str_append_data(server->input, buf, ret);
	/* VERSION, then the command once it got "+" */
	p = strchr(str_c(server->input), '\n');
	if (p != NULL && strchr(p + 1, '\n') != NULL) {
		cr_assert_eq(write(server->fd, server->reply,
				   strlen(server->reply)),
			     (ssize_t)strlen(server->reply));
	}
}

static void fake_server_accept(struct fake_server *server)
{
	server->fd = net_accept(server->listen_fd, NULL, NULL);
	cr_assert_geq(server->fd, 0);
	io_remove(&server->io_listen);
	cr_assert_eq(write(server->fd, "+\n", 2), 2);
	server->io = io_add(server->fd, IO_READ, fake_server_input, server);
}

struct reply_result {
	unsigned int calls;
	enum dovewarden_sync_result result;
	bool needs_full_sync;
};

static void
reply_callback(const struct dovewarden_doveadm_sync_reply *reply,
	       void *context)
{
	struct reply_result *result = context;

	result->calls++;
	result->result = reply->result;
	result->needs_full_sync = reply->needs_full_sync;
	io_loop_stop(ioloop);
}

/* Run a sync with state (full or not) against a server that replies
   reply after the handshake */
static struct reply_result
run_sync(const char *state, bool full, const char *reply)
{
	struct fake_server server;
	struct dovewarden_doveadm *doveadm;
	struct dovewarden_doveadm_sync_settings set;
	struct reply_result result;
	const char *path = t_strconcat(test_dir, "/doveadm-fake", NULL);

	i_zero(&server);
	i_zero(&result);
	server.fd = -1;
	server.reply = reply;
	server.input = t_str_new(256);
	i_unlink_if_exists(path);
	server.listen_fd = net_listen_unix(path, 16);
	cr_assert_neq(server.listen_fd, -1);
	server.io_listen = io_add(server.listen_fd, IO_READ,
				  fake_server_accept, &server);

	doveadm = dovewarden_doveadm_init();
	i_zero(&set);
	set.socket_path = path;
	set.username = "user";
	set.state = state;
	set.full = full;
	set.destination = "tcp:replica.example.org:12345";
	set.timeout_msecs = 5000;
	(void)dovewarden_doveadm_sync_start(doveadm, &set, NULL,
					    reply_callback, &result);
	io_loop_run(ioloop);
	dovewarden_doveadm_deinit(&doveadm);
	io_remove(&server.io);
	io_remove(&server.io_listen);
	i_close_fd(&server.fd);
	i_close_fd(&server.listen_fd);
	cr_assert_eq(result.calls, 1);
	return result;
}

/* dsync prints an empty state when it can't use the one it was given
   ("retry with a full sync"), and no state when it did not run */
Test(doveadm, an_empty_state_asks_for_a_full_sync)
{
	struct reply_result result;

	result = run_sync("AAAA", FALSE, "\t\n-TEMPFAIL\n");
	cr_assert_eq(result.result, DOVEWARDEN_SYNC_RESULT_TEMPFAIL);
	cr_assert(result.needs_full_sync);
	/* dsync did not run (e.g. the replica refused the connection) */
	result = run_sync("AAAA", FALSE, "\n-TEMPFAIL\n");
	cr_assert_eq(result.result, DOVEWARDEN_SYNC_RESULT_TEMPFAIL);
	cr_assert(!result.needs_full_sync);
	/* a full sync, or one without a state, used none */
	result = run_sync("AAAA", TRUE, "\t\n-TEMPFAIL\n");
	cr_assert(!result.needs_full_sync);
	result = run_sync("", FALSE, "\t\n-TEMPFAIL\n");
	cr_assert(!result.needs_full_sync);
	/* another failure returns the state */
	result = run_sync("AAAA", FALSE, "AAAA\t\n-TEMPFAIL\n");
	cr_assert(!result.needs_full_sync);
	result = run_sync("AAAA", FALSE, "BBBB\t\n+\n");
	cr_assert_eq(result.result, DOVEWARDEN_SYNC_RESULT_OK);
	cr_assert(!result.needs_full_sync);
}

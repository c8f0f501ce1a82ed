/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "ioloop.h"
#include "net.h"
#include "unlink-directory.h"
#include "dovewarden-doveadm.h"

#include <criterion/criterion.h>

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

/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "str.h"
#include "strescape.h"
#include "strnum.h"
#include "str-sanitize.h"
#include "ioloop.h"
#include "fd-util.h"
#include "write-full.h"
#include "istream.h"
#include "ostream.h"
#include "eacces-error.h"
#include "fdatasync-path.h"
#include "mkdir-parents.h"
#include "dovewarden-config.h"
#include "dovewarden-protocol.h"
#include "dovewarden-queue.h"
#include "dovewarden-store.h"

#include <stdio.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#ifdef __linux__
#  include <sys/prctl.h>
#  include <sys/syscall.h>
#endif

#define STORE_HEADER_NAME "dovewarden-db"
#define STORE_HEADER_VERSION "2"
/* version 1 had no settle and verification times */
#define STORE_HEADER_VERSION_1 "1"
/* The header's third field: what wrote the snapshot, for the admin (a
   snapshot moves between versions in an upgrade) */
#define STORE_WRITER "dovewarden "DOVEWARDEN_VERSION" on Dovecot "DOVECOT_VERSION
#define STORE_WRITER_MAX_LENGTH 100
#define STORE_USER_FIELD_COUNT 15
#define STORE_USER_FIELD_COUNT_V1 11
#define STORE_JOURNAL_FIELD_COUNT 3
/* What a background save's child reports through its pipe before it
   exits: this, or '-' and the error */
#define STORE_CHILD_SUCCESS '+'
/* The longest child error kept */
#define STORE_CHILD_ERROR_MAX_LEN 1024

struct dovewarden_store {
	char *path, *tmp_path, *journal_path, *journal_old_path;
	char *corrupt_path, *quarantine_path, *dir;

	int journal_fd;
	/* An append failed half-way: start the next one on a new line */
	bool journal_need_lf;

	/* The running background save: its child (-1 if none), the read
	   end of its status pipe and what came through it */
	pid_t save_pid;
	int save_fd;
	struct io *save_io;
	string_t *save_status;
	dovewarden_store_save_callback_t *save_callback;
	void *save_context;
};

struct store_reader {
	struct istream *input;
	unsigned int line_num;
	/* Dropping the rest of a line that did not fit the buffer */
	bool skipping;
	/* The file ended without LF */
	bool unterminated;
};

struct dovewarden_store *dovewarden_store_init(const char *path)
{
	struct dovewarden_store *store;
	const char *p;

	store = i_new(struct dovewarden_store, 1);
	store->path = i_strdup(path);
	store->tmp_path = i_strconcat(path, ".tmp", NULL);
	store->journal_path = i_strconcat(path, ".journal", NULL);
	store->journal_old_path = i_strconcat(path, ".journal.old", NULL);
	store->corrupt_path = i_strconcat(path, ".corrupt", NULL);
	store->quarantine_path = i_strconcat(path, ".quarantine", NULL);
	p = strrchr(path, '/');
	if (p == NULL)
		store->dir = i_strdup(".");
	else if (p == path)
		store->dir = i_strdup("/");
	else
		store->dir = i_strdup_until(path, p);
	store->journal_fd = -1;
	store->save_pid = -1;
	store->save_fd = -1;
	return store;
}

void dovewarden_store_deinit(struct dovewarden_store **_store)
{
	struct dovewarden_store *store = *_store;

	if (store == NULL)
		return;
	*_store = NULL;

	dovewarden_store_save_wait(store);
	i_close_fd(&store->journal_fd);
	i_free(store->path);
	i_free(store->tmp_path);
	i_free(store->journal_path);
	i_free(store->journal_old_path);
	i_free(store->corrupt_path);
	i_free(store->quarantine_path);
	i_free(store->dir);
	i_free(store);
}

static const char *store_syscall_error(const char *func, const char *path)
{
	if (errno == EACCES)
		return eacces_error_get(func, path);
	return t_strdup_printf("%s(%s) failed: %m", func, path);
}

static int store_mkdir(struct dovewarden_store *store, const char **error_r)
{
	if (mkdir_parents(store->dir, 0700) < 0 && errno != EEXIST) {
		*error_r = errno == EACCES ?
			eacces_error_get_creating("mkdir", store->dir) :
			t_strdup_printf("mkdir(%s) failed: %m", store->dir);
		return -1;
	}
	return 0;
}

/* Open path for writing with the given flags, creating the directory
   if it is missing. */
static int
store_open_create(struct dovewarden_store *store, const char *path,
		  int flags, int *fd_r, const char **error_r)
{
	unsigned int attempt;
	int fd;

	for (attempt = 0;; attempt++) {
		fd = open(path, flags, 0600);
		if (fd != -1) {
			*fd_r = fd;
			return 0;
		}
		if (attempt < 2 && errno == EEXIST && (flags & O_EXCL) != 0) {
			/* left behind by a save that was killed */
			if (unlink(path) < 0 && errno != ENOENT) {
				*error_r = store_syscall_error("unlink", path);
				return -1;
			}
			continue;
		}
		if (attempt < 2 && errno == ENOENT) {
			if (store_mkdir(store, error_r) < 0)
				return -1;
			continue;
		}
		*error_r = errno == EACCES ?
			eacces_error_get_creating("open", path) :
			t_strdup_printf("open(%s) failed: %m", path);
		return -1;
	}
}

static void
store_append_user(string_t *dest, const struct dovewarden_user *user,
		  bool with_state)
{
	enum dovewarden_priority priority = user->priority;
	bool force_full_sync = user->force_full_sync;

	if (user->syncing) {
		/* nobody knows whether the running sync will finish */
		if (priority < DOVEWARDEN_PRIORITY_LOW)
			priority = DOVEWARDEN_PRIORITY_LOW;
		if (user->syncing_full)
			force_full_sync = TRUE;
	}

	str_append_tabescaped(dest, user->username);
	str_printfa(dest, "\t%s\t%"PRIdTIME_T"\t%"PRIdTIME_T"\t%"PRIdTIME_T
		    "\t%"PRIdTIME_T"\t%u\t%"PRIdTIME_T"\t%c\t",
		    dovewarden_priority_to_str(priority), user->last_update,
		    user->last_fast_sync, user->last_full_sync,
		    user->last_successful_sync, user->consecutive_failures,
		    user->next_try, force_full_sync ? '1' : '0');
	if (with_state && user->state != NULL)
		str_append_tabescaped(dest, user->state);
	str_append_c(dest, '\t');
	if (with_state && user->last_error != NULL)
		str_append_tabescaped(dest, user->last_error);
	str_printfa(dest, "\t%"PRIdTIME_T"\t%"PRIdTIME_T"\t%"PRIdTIME_T
		    "\t%"PRIdTIME_T"\n", user->settle_first_change,
		    user->settle_last_change, user->last_verified,
		    user->last_repaired);
}

static int
store_write_snapshot(struct dovewarden_store *store,
		     struct dovewarden_queue *queue, int fd,
		     const char **error_r)
{
	struct dovewarden_queue_iter *iter;
	struct dovewarden_user *user;
	struct ostream *output;
	string_t *line;
	int ret = 0;

	output = o_stream_create_fd_file(fd, 0, FALSE);
	o_stream_cork(output);
	o_stream_nsend_str(output, STORE_HEADER_NAME"\t"
			   STORE_HEADER_VERSION"\t"STORE_WRITER"\n");

	line = t_str_new(256);
	iter = dovewarden_queue_iter_init(queue);
	while ((user = dovewarden_queue_iter_next(iter)) != NULL) {
		str_truncate(line, 0);
		store_append_user(line, user, TRUE);
		if (str_len(line) > DOVEWARDEN_STORE_MAX_LINE_LENGTH) {
			/* loading would skip it: keep the user at least */
			str_truncate(line, 0);
			store_append_user(line, user, FALSE);
		}
		o_stream_nsend(output, str_data(line), str_len(line));
	}
	dovewarden_queue_iter_deinit(&iter);

	if (o_stream_finish(output) < 0) {
		*error_r = t_strdup_printf("write(%s) failed: %s",
					   store->tmp_path,
					   o_stream_get_error(output));
		ret = -1;
	}
	o_stream_destroy(&output);
	if (ret == 0 && fsync(fd) < 0) {
		*error_r = t_strdup_printf("fsync(%s) failed: %m",
					   store->tmp_path);
		ret = -1;
	}
	return ret;
}

static int store_journal_open(struct dovewarden_store *store,
			      const char **error_r)
{
	if (store->journal_fd != -1)
		return 0;
	return store_open_create(store, store->journal_path,
				 O_WRONLY | O_APPEND | O_CREAT,
				 &store->journal_fd, error_r);
}

static int
store_journal_truncate(struct dovewarden_store *store, const char **error_r)
{
	if (store->journal_fd != -1) {
		if (ftruncate(store->journal_fd, 0) < 0) {
			*error_r = t_strdup_printf("ftruncate(%s) failed: %m",
						   store->journal_path);
			return -1;
		}
	} else if (truncate(store->journal_path, 0) < 0 && errno != ENOENT) {
		*error_r = store_syscall_error("truncate", store->journal_path);
		return -1;
	}
	store->journal_need_lf = FALSE;
	return 0;
}

/* Write the snapshot and rename it into place, durably */
static int
store_save_snapshot(struct dovewarden_store *store,
		    struct dovewarden_queue *queue, const char **error_r)
{
	int fd;

	if (store_open_create(store, store->tmp_path,
			      O_WRONLY | O_CREAT | O_EXCL, &fd, error_r) < 0)
		return -1;
	if (store_write_snapshot(store, queue, fd, error_r) < 0) {
		i_close_fd(&fd);
		(void)unlink(store->tmp_path);
		return -1;
	}
	if (close(fd) < 0) {
		*error_r = t_strdup_printf("close(%s) failed: %m",
					   store->tmp_path);
		(void)unlink(store->tmp_path);
		return -1;
	}
	if (rename(store->tmp_path, store->path) < 0) {
		*error_r = t_strdup_printf("rename(%s, %s) failed: %m",
					   store->tmp_path, store->path);
		(void)unlink(store->tmp_path);
		return -1;
	}
	/* the rename must be durable before the journal is emptied */
	if (fdatasync_path(store->dir) < 0) {
		*error_r = t_strdup_printf("fdatasync(%s) failed: %m",
					   store->dir);
		return -1;
	}
	return 0;
}

static int
store_journal_old_unlink(struct dovewarden_store *store, const char **error_r)
{
	if (unlink(store->journal_old_path) < 0 && errno != ENOENT) {
		*error_r = store_syscall_error("unlink",
					       store->journal_old_path);
		return -1;
	}
	return 0;
}

static int
store_save(struct dovewarden_store *store, struct dovewarden_queue *queue,
	   const char **error_r)
{
	if (store_save_snapshot(store, queue, error_r) < 0 ||
	    store_journal_old_unlink(store, error_r) < 0)
		return -1;
	return store_journal_truncate(store, error_r);
}

int dovewarden_store_save(struct dovewarden_store *store,
			  struct dovewarden_queue *queue,
			  const char **error_r)
{
	int ret;

	dovewarden_store_save_wait(store);
	T_BEGIN {
		ret = store_save(store, queue, error_r);
	} T_END_PASS_STR_IF(ret < 0, error_r);
	return ret;
}

/* Returns NULL if the child saved the snapshot, else why not */
static const char *
store_child_error(pid_t pid, const char *status, int wstatus)
{
	if (WIFSIGNALED(wstatus)) {
		return t_strdup_printf("Snapshot process %ld was killed by "
				       "signal %d", (long)pid,
				       WTERMSIG(wstatus));
	}
	if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0 &&
	    status[0] == STORE_CHILD_SUCCESS)
		return NULL;
	if (status[0] == '-' && status[1] != '\0')
		return t_strdup(status + 1);
	return t_strdup_printf("Snapshot process %ld failed without an "
			       "error (wait status %d)", (long)pid, wstatus);
}

static void store_save_finish(struct dovewarden_store *store)
{
	dovewarden_store_save_callback_t *callback = store->save_callback;
	void *context = store->save_context;
	const char *status = str_c(store->save_status);
	const char *error;
	int wstatus, ret;

	io_remove(&store->save_io);
	i_close_fd(&store->save_fd);
	/* the pipe's EOF means the child is exiting: this does not block
	   for long */
	while ((ret = waitpid(store->save_pid, &wstatus, 0)) < 0 &&
	       errno == EINTR) ;
	if (ret < 0 && errno != ECHILD) {
		error = t_strdup_printf("waitpid(%ld) failed: %m",
					(long)store->save_pid);
	} else {
		if (ret < 0) {
			/* already reaped (SIGCHLD ignored?): trust the
			   pipe */
			wstatus = status[0] == STORE_CHILD_SUCCESS ? 0 : 1 << 8;
		}
		error = store_child_error(store->save_pid, status, wstatus);
	}
	/* the snapshot covers everything the old journal has */
	if (error == NULL)
		(void)store_journal_old_unlink(store, &error);

	str_free(&store->save_status);
	store->save_pid = -1;
	store->save_callback = NULL;
	store->save_context = NULL;
	callback(error == NULL ? 0 : -1, error, context);
}

/* Returns FALSE at the pipe's EOF or on a read error */
static bool store_save_read(struct dovewarden_store *store)
{
	char buf[256];
	ssize_t ret;

	ret = read(store->save_fd, buf, sizeof(buf));
	if (ret > 0) {
		if (str_len(store->save_status) < STORE_CHILD_ERROR_MAX_LEN)
			str_append_data(store->save_status, buf, ret);
		return TRUE;
	}
	if (ret < 0 && (errno == EAGAIN || errno == EINTR))
		return TRUE;
	/* after a read error the exit status tells what happened */
	return FALSE;
}

static void store_save_input(struct dovewarden_store *store)
{
	if (!store_save_read(store)) T_BEGIN {
		store_save_finish(store);
	} T_END;
}

bool dovewarden_store_save_is_running(struct dovewarden_store *store)
{
	return store->save_pid != -1;
}

void dovewarden_store_save_wait(struct dovewarden_store *store)
{
	if (store->save_pid == -1)
		return;
	fd_set_nonblock(store->save_fd, FALSE);
	while (store_save_read(store)) ;
	T_BEGIN {
		store_save_finish(store);
	} T_END;
}

/* Start a new journal for the changes the snapshot will not have */
static int
store_journal_rotate(struct dovewarden_store *store, const char **error_r)
{
	struct stat st;

	if (lstat(store->journal_old_path, &st) == 0) {
		/* an earlier save did not finish: the journal stays, and
		   this snapshot covers both */
		return 0;
	}
	if (errno != ENOENT) {
		*error_r = store_syscall_error("lstat",
					       store->journal_old_path);
		return -1;
	}
	if (rename(store->journal_path, store->journal_old_path) < 0) {
		if (errno == ENOENT)
			return 0;
		*error_r = t_strdup_printf("rename(%s, %s) failed: %m",
					   store->journal_path,
					   store->journal_old_path);
		return -1;
	}
	i_close_fd(&store->journal_fd);
	store->journal_need_lf = FALSE;
	return 0;
}

/* Close the descriptors first..last that are open */
static void store_close_fds(int first, int last)
{
	int fd, max;

	if (first > last)
		return;
#ifdef SYS_close_range
	if (syscall(SYS_close_range, (unsigned int)first,
		    (unsigned int)last, 0) == 0)
		return;
#endif
	max = I_MIN(getdtablesize() - 1, last);
	for (fd = first; fd <= max; fd++)
		(void)close(fd);
}

static void ATTR_NORETURN
store_save_child(struct dovewarden_store *store,
		 struct dovewarden_queue *queue, pid_t parent_pid,
		 int status_fd)
{
	string_t *status;
	const char *error;
	int ret;

#ifdef __linux__
	/* a snapshot process that outlived a killed service could rename
	   its file over the one of the service's next instance */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent_pid)
		_exit(1);
#else
	(void)parent_pid;
#endif
	/* the service's connections must close when the service closes
	   them, not when this process is done */
	store_close_fds(3, status_fd - 1);
	store_close_fds(I_MAX(status_fd + 1, 3), INT_MAX);
	/* the service's handlers would only write to its closed signal
	   pipe */
	(void)signal(SIGTERM, SIG_DFL);
	(void)signal(SIGINT, SIG_DFL);
	(void)signal(SIGHUP, SIG_DFL);
	(void)signal(SIGQUIT, SIG_DFL);

	T_BEGIN {
		status = t_str_new(128);
		ret = store_save_snapshot(store, queue, &error);
		if (ret == 0)
			str_append_c(status, STORE_CHILD_SUCCESS);
		else {
			str_append_c(status, '-');
			str_append(status, error);
		}
		/* far below the pipe's capacity: does not block */
		if (write(status_fd, str_data(status),
			  I_MIN(str_len(status),
				STORE_CHILD_ERROR_MAX_LEN)) < 0)
			ret = -1;
	} T_END;
	/* no atexit handlers, no deinit: they are the service's */
	_exit(ret < 0 ? 1 : 0);
}

#undef dovewarden_store_save_background
int dovewarden_store_save_background(struct dovewarden_store *store,
				     struct dovewarden_queue *queue,
				     dovewarden_store_save_callback_t *callback,
				     void *context, const char **error_r)
{
	pid_t parent_pid = getpid(), pid;
	int fds[2];

	i_assert(store->save_pid == -1);
	i_assert(callback != NULL);

	if (pipe(fds) < 0) {
		*error_r = t_strdup_printf("pipe() failed: %m");
		return -1;
	}
	fd_close_on_exec(fds[0], TRUE);
	fd_close_on_exec(fds[1], TRUE);
	if (store_journal_rotate(store, error_r) < 0) {
		i_close_fd(&fds[0]);
		i_close_fd(&fds[1]);
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		*error_r = t_strdup_printf("fork() failed: %m");
		i_close_fd(&fds[0]);
		i_close_fd(&fds[1]);
		return -1;
	}
	if (pid == 0)
		store_save_child(store, queue, parent_pid, fds[1]);
	i_close_fd(&fds[1]);
	fd_set_nonblock(fds[0], TRUE);
	store->save_pid = pid;
	store->save_fd = fds[0];
	store->save_status = str_new(default_pool, 128);
	store->save_callback = callback;
	store->save_context = context;
	store->save_io = io_add(fds[0], IO_READ, store_save_input, store);
	return 0;
}

/* Append line (without its LF) with a single write() */
static int
store_journal_write(struct dovewarden_store *store, string_t *line,
		    const char **error_r)
{
	const unsigned char *data;
	size_t size;
	ssize_t ret;

	if (store_journal_open(store, error_r) < 0)
		return -1;
	if (store->journal_need_lf)
		str_insert(line, 0, "\n");
	str_append_c(line, '\n');

	data = str_data(line);
	size = str_len(line);
	while (size > 0) {
		ret = write(store->journal_fd, data, size);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0) {
			if (ret == 0)
				errno = ENOSPC;
			*error_r = t_strdup_printf("write(%s) failed: %m",
						   store->journal_path);
			/* a partial line would swallow the next one */
			if (size != str_len(line))
				store->journal_need_lf = TRUE;
			return -1;
		}
		data += ret;
		size -= ret;
	}
	store->journal_need_lf = FALSE;
	return 0;
}

void dovewarden_store_format_journal(string_t *dest,
				     enum dovewarden_store_journal_cmd cmd,
				     const char *username,
				     enum dovewarden_priority priority)
{
	switch (cmd) {
	case DOVEWARDEN_STORE_JOURNAL_NOTIFY:
		str_append_c(dest, 'N');
		break;
	case DOVEWARDEN_STORE_JOURNAL_FORCE_FULL_SYNC:
		str_append_c(dest, 'F');
		break;
	case DOVEWARDEN_STORE_JOURNAL_REMOVE:
		str_append_c(dest, 'R');
		break;
	case DOVEWARDEN_STORE_JOURNAL_CLIENT:
		str_append_c(dest, 'C');
		break;
	case DOVEWARDEN_STORE_JOURNAL_IMPORT:
		str_append_c(dest, 'I');
		break;
	}
	str_append_c(dest, '\t');
	str_append_tabescaped(dest, username);
	str_append_c(dest, '\t');
	str_append(dest, dovewarden_priority_to_str(priority));
}

static int
store_journal_append(struct dovewarden_store *store,
		     enum dovewarden_store_journal_cmd cmd,
		     const char *username, enum dovewarden_priority priority,
		     const char **error_r)
{
	string_t *line = t_str_new(128);

	dovewarden_store_format_journal(line, cmd, username, priority);
	return store_journal_write(store, line, error_r);
}

int dovewarden_store_journal_notify(struct dovewarden_store *store,
				    struct dovewarden_queue *queue,
				    const char *username,
				    enum dovewarden_priority priority,
				    const char **error_r)
{
	return dovewarden_store_journal_notify_kind(store, queue, username,
		priority, DOVEWARDEN_QUEUE_SETTLE_ALWAYS, error_r);
}

int dovewarden_store_journal_notify_kind(struct dovewarden_store *store,
					 struct dovewarden_queue *queue,
					 const char *username,
					 enum dovewarden_priority priority,
					 enum dovewarden_queue_settle_kind kind,
					 const char **error_r)
{
	static const enum dovewarden_store_journal_cmd kind_cmds[] = {
		[DOVEWARDEN_QUEUE_SETTLE_ALWAYS] =
			DOVEWARDEN_STORE_JOURNAL_NOTIFY,
		[DOVEWARDEN_QUEUE_SETTLE_CLIENT] =
			DOVEWARDEN_STORE_JOURNAL_CLIENT,
		[DOVEWARDEN_QUEUE_SETTLE_IMPORT] =
			DOVEWARDEN_STORE_JOURNAL_IMPORT,
	};
	struct dovewarden_user *user;
	int ret;

	i_assert(kind < N_ELEMENTS(kind_cmds));
	user = dovewarden_queue_lookup(queue, username);
	if (user != NULL && user->priority >= priority &&
	    (kind != DOVEWARDEN_QUEUE_SETTLE_IMPORT ||
	     user->last_import == ioloop_time))
		return 0;
	T_BEGIN {
		ret = store_journal_append(store, kind_cmds[kind],
					   username, priority, error_r);
	} T_END_PASS_STR_IF(ret < 0, error_r);
	return ret;
}

int dovewarden_store_journal_force_full_sync(struct dovewarden_store *store,
					     struct dovewarden_queue *queue,
					     const char *username,
					     enum dovewarden_priority priority,
					     const char **error_r)
{
	struct dovewarden_user *user;
	int ret;

	user = dovewarden_queue_lookup(queue, username);
	if (user != NULL && user->force_full_sync &&
	    user->priority >= I_MAX(priority, DOVEWARDEN_PRIORITY_LOW))
		return 0;
	T_BEGIN {
		ret = store_journal_append(store,
			DOVEWARDEN_STORE_JOURNAL_FORCE_FULL_SYNC,
			username, priority, error_r);
	} T_END_PASS_STR_IF(ret < 0, error_r);
	return ret;
}

int dovewarden_store_journal_user(struct dovewarden_store *store,
				  struct dovewarden_queue *queue,
				  const char *username, const char **error_r)
{
	const struct dovewarden_user *user;
	string_t *line;
	int ret;

	user = dovewarden_queue_lookup(queue, username);
	T_BEGIN {
		if (user == NULL) {
			ret = store_journal_append(store,
				DOVEWARDEN_STORE_JOURNAL_REMOVE, username,
				DOVEWARDEN_PRIORITY_NONE, error_r);
		} else {
			line = t_str_new(256);
			str_append(line, "U\t");
			store_append_user(line, user, TRUE);
			str_truncate(line, str_len(line) - 1);
			/* loading would skip it: the sync is redone after a
			   crash, as without this line */
			ret = str_len(line) > DOVEWARDEN_STORE_MAX_LINE_LENGTH - 1 ?
				0 : store_journal_write(store, line, error_r);
		}
	} T_END_PASS_STR_IF(ret < 0, error_r);
	return ret;
}

int dovewarden_store_journal_remove(struct dovewarden_store *store,
				    struct dovewarden_queue *queue,
				    const char *username, const char **error_r)
{
	int ret;

	if (dovewarden_queue_lookup(queue, username) == NULL)
		return 0;
	T_BEGIN {
		ret = store_journal_append(store,
					   DOVEWARDEN_STORE_JOURNAL_REMOVE,
					   username, DOVEWARDEN_PRIORITY_NONE,
					   error_r);
	} T_END_PASS_STR_IF(ret < 0, error_r);
	return ret;
}

/* Returns 1 with the next line in line_r, or with NULL when the line is
   unusable (longer than the buffer, or the last one and without LF);
   0 at the end of the file; -1 on a read error. */
static int store_read_line(struct store_reader *reader, char **line_r)
{
	struct istream *input = reader->input;
	char *line;
	ssize_t ret;

	for (;;) {
		line = i_stream_next_line(input);
		if (line != NULL) {
			reader->line_num++;
			*line_r = reader->skipping ? NULL : line;
			reader->skipping = FALSE;
			return 1;
		}
		ret = i_stream_read(input);
		if (ret > 0)
			continue;
		if (ret == -2) {
			i_stream_skip(input, i_stream_get_data_size(input));
			reader->skipping = TRUE;
			continue;
		}
		i_assert(ret == -1);
		if (input->stream_errno != 0)
			return -1;
		if (!reader->skipping && i_stream_get_data_size(input) == 0)
			return 0;
		i_stream_skip(input, i_stream_get_data_size(input));
		reader->skipping = FALSE;
		reader->unterminated = TRUE;
		reader->line_num++;
		*line_r = NULL;
		return 1;
	}
}

static int
store_open_read(const char *path, struct store_reader *reader_r,
		const char **error_r)
{
	int fd;

	i_zero(reader_r);
	fd = open(path, O_RDONLY);
	if (fd == -1) {
		if (errno == ENOENT)
			return 0;
		*error_r = store_syscall_error("open", path);
		return -1;
	}
	reader_r->input = i_stream_create_fd_autoclose(
		&fd, DOVEWARDEN_STORE_MAX_LINE_LENGTH);
	return 1;
}

static int
store_read_error(struct store_reader *reader, const char **error_r)
{
	*error_r = t_strdup_printf("read(%s) failed: %s",
				   i_stream_get_name(reader->input),
				   i_stream_get_error(reader->input));
	return -1;
}

static bool store_parse_time(const char *str, time_t *time_r)
{
	/* the queue adds intervals to these: keep them far from
	   overflowing */
	return str_to_time(str, time_r) == 0 && *time_r >= 0 &&
		*time_r <= DOVEWARDEN_STORE_MAX_TIME;
}

int dovewarden_store_exists(struct dovewarden_store *store,
			    const char **error_r)
{
	const char *paths[] = {
		store->path, store->journal_path, store->journal_old_path
	};
	struct stat st;

	for (unsigned int i = 0; i < N_ELEMENTS(paths); i++) {
		if (lstat(paths[i], &st) == 0)
			return 1;
		if (errno != ENOENT) {
			*error_r = store_syscall_error("lstat", paths[i]);
			return -1;
		}
	}
	return 0;
}

bool dovewarden_store_parse_time(const char *str, time_t *time_r)
{
	return store_parse_time(str, time_r);
}

int dovewarden_store_parse_user(char *line, unsigned int version,
				struct dovewarden_user *fields_r,
				const char **reason_r)
{
	char **args = p_strsplit_tabescaped(pool_datastack_create(), line);

	i_zero(fields_r);
	if (str_array_length((const char *const *)args) !=
	    (version == 1 ? STORE_USER_FIELD_COUNT_V1 :
	     STORE_USER_FIELD_COUNT)) {
		*reason_r = "wrong number of fields";
		return -1;
	}
	if (version > 1 &&
	    (!store_parse_time(args[11], &fields_r->settle_first_change) ||
	     !store_parse_time(args[12], &fields_r->settle_last_change) ||
	     !store_parse_time(args[13], &fields_r->last_verified) ||
	     !store_parse_time(args[14], &fields_r->last_repaired))) {
		*reason_r = "invalid time";
		return -1;
	}
	fields_r->username = args[0];
	fields_r->state = args[9];
	fields_r->last_error = args[10][0] == '\0' ? NULL : args[10];
	if (!dovewarden_username_is_valid(args[0])) {
		*reason_r = "invalid username";
		return -1;
	}
	if (!dovewarden_priority_parse(args[1], &fields_r->priority)) {
		*reason_r = "unknown priority";
		return -1;
	}
	if (!store_parse_time(args[2], &fields_r->last_update) ||
	    !store_parse_time(args[3], &fields_r->last_fast_sync) ||
	    !store_parse_time(args[4], &fields_r->last_full_sync) ||
	    !store_parse_time(args[5], &fields_r->last_successful_sync) ||
	    !store_parse_time(args[7], &fields_r->next_try)) {
		*reason_r = "invalid time";
		return -1;
	}
	if (str_to_uint(args[6], &fields_r->consecutive_failures) < 0) {
		*reason_r = "invalid failure count";
		return -1;
	}
	if (strcmp(args[8], "1") == 0)
		fields_r->force_full_sync = TRUE;
	else if (strcmp(args[8], "0") != 0) {
		*reason_r = "invalid force_full_sync";
		return -1;
	}
	return 0;
}

/* What loading a snapshot's or a journal's lines needs */
struct store_load_context {
	struct dovewarden_queue *queue;
	/* the snapshot's format version */
	unsigned int version;
	time_t now;
};

static bool
store_restore_line(char *line, void *context, const char **reason_r)
{
	struct store_load_context *ctx = context;
	struct dovewarden_user fields;

	if (dovewarden_store_parse_user(t_strdup_noconst(line), ctx->version,
					&fields, reason_r) < 0)
		return FALSE;
	if (dovewarden_queue_lookup(ctx->queue, fields.username) != NULL) {
		*reason_r = "duplicate user";
		return FALSE;
	}
	(void)dovewarden_queue_restore(ctx->queue, &fields, ctx->now);
	return TRUE;
}

unsigned int dovewarden_store_parse_header(const char *line,
					   const char **writer_r)
{
	const char *const *args;
	unsigned int count, version;

	*writer_r = NULL;
	if (line == NULL)
		return 0;
	args = t_strsplit_tabescaped(line);
	count = str_array_length(args);
	/* versions before the writer field wrote two fields */
	if (count < 2 || count > 3 || strcmp(args[0], STORE_HEADER_NAME) != 0)
		return 0;
	if (strcmp(args[1], STORE_HEADER_VERSION) == 0)
		version = 2;
	else if (strcmp(args[1], STORE_HEADER_VERSION_1) == 0)
		version = 1;
	else
		return 0;
	if (count == 3)
		*writer_r = args[2];
	return version;
}

/* Append a corrupt line (NULL when the reader could not return it) to
   <path>.quarantine. Returns NULL, or the error. */
static const char *
store_quarantine_append(struct dovewarden_store *store, const char *path,
			unsigned int line_num, const char *reason,
			const char *line)
{
	const char *error = NULL;
	struct stat st;
	string_t *str;
	int fd;

	str = t_str_new(128 + (line == NULL ? 0 : strlen(line)));
	str_append_tabescaped(str, path);
	str_printfa(str, "\t%u\t", line_num);
	str_append_tabescaped(str, reason);
	str_append_c(str, '\t');
	if (line != NULL)
		str_append_tabescaped(str, line);
	str_append_c(str, '\n');

	fd = open(store->quarantine_path, O_WRONLY | O_APPEND | O_CREAT,
		  0600);
	if (fd == -1)
		return store_syscall_error("open", store->quarantine_path);
	if (fstat(fd, &st) < 0) {
		error = t_strdup_printf("fstat(%s) failed: %m",
					store->quarantine_path);
	} else if (st.st_size + str_len(str) >
		   DOVEWARDEN_STORE_QUARANTINE_MAX_SIZE) {
		error = t_strdup_printf("%s is full (%d MB)",
			store->quarantine_path,
			DOVEWARDEN_STORE_QUARANTINE_MAX_SIZE / (1024 * 1024));
	} else if (write_full(fd, str_data(str), str_len(str)) < 0) {
		error = t_strdup_printf("write(%s) failed: %m",
					store->quarantine_path);
	}
	i_close_fd(&fd);
	return error;
}

/* Keep a corrupt line for an admin, unless an earlier one failed */
static void
store_quarantine(struct dovewarden_store *store, const char *path,
		 const struct store_reader *reader, const char *reason,
		 const char *line, struct dovewarden_store_load_result *result)
{
	const char *error;

	if (result->quarantine_error != NULL) {
		result->records_not_quarantined++;
		return;
	}
	if (line == NULL) {
		reason = reader->unterminated ? "last line without LF" :
			"line longer than the limit";
	}
	T_BEGIN {
		error = store_quarantine_append(store, path, reader->line_num,
						reason, line);
	} T_END_PASS_STR_IF(error != NULL, &error);
	if (error != NULL) {
		result->quarantine_error = error;
		result->records_not_quarantined++;
	} else {
		result->records_quarantined++;
		result->quarantine_path = store->quarantine_path;
	}
}

void dovewarden_store_log_quarantine(struct event *event,
				     const struct dovewarden_store_load_result *result)
{
	if (result->records_quarantined > 0) {
		e_warning(event, "Kept the %u corrupt records in %s for "
			  "inspection (delete it when done)",
			  result->records_quarantined,
			  result->quarantine_path);
	}
	if (result->records_not_quarantined > 0) {
		e_error(event, "Dropped %u corrupt records: %s",
			result->records_not_quarantined,
			result->quarantine_error);
	}
}

static int
store_snapshot_corrupt(struct dovewarden_store *store, const char *reason,
		       struct dovewarden_store_load_result *result,
		       const char **error_r)
{
	/* keep it for a human; a later save must not overwrite it */
	if (rename(store->path, store->corrupt_path) < 0) {
		*error_r = t_strdup_printf(
			"%s is corrupt (%s), and rename(%s, %s) failed: %m",
			store->path, reason, store->path,
			store->corrupt_path);
		return -1;
	}
	result->snapshot_corrupt_error = t_strdup_printf(
		"%s is corrupt (%s)", store->path, reason);
	result->snapshot_corrupt_path = t_strdup(store->corrupt_path);
	return 0;
}

/* Pass every line of reader to callback. Count the lines it takes in
   *taken, and those it rejects (or that could not be read) in *skipped
   with the first one's line number in *first_skipped, and keep those in
   the quarantine. */
static int
store_read_lines(struct dovewarden_store *store, const char *path,
		 struct store_reader *reader,
		 dovewarden_store_line_callback_t *callback, void *context,
		 unsigned int *taken, unsigned int *skipped,
		 unsigned int *first_skipped,
		 struct dovewarden_store_load_result *result,
		 const char **error_r)
{
	const char *line_reason = NULL;
	char *line;
	bool valid;
	int ret;

	while ((ret = store_read_line(reader, &line)) > 0) {
		T_BEGIN {
			valid = line != NULL &&
				callback(line, context, &line_reason);
		} T_END;
		if (valid)
			(*taken)++;
		else {
			if ((*skipped)++ == 0)
				*first_skipped = reader->line_num;
			store_quarantine(store, path, reader, line_reason,
					 line, result);
		}
	}
	if (ret < 0)
		return store_read_error(reader, error_r);
	return 0;
}

static int
store_load_snapshot(struct dovewarden_store *store,
		    struct dovewarden_queue *queue, time_t now,
		    struct dovewarden_store_load_result *result,
		    const char **error_r)
{
	struct store_load_context ctx = {
		.queue = queue,
		.now = now,
	};
	struct store_reader reader;
	const char *reason = NULL;
	char *line;
	const char *writer;
	int ret;

	if ((ret = store_open_read(store->path, &reader, error_r)) <= 0)
		return ret;

	ret = store_read_line(&reader, &line);
	if (ret < 0) {
		ret = store_read_error(&reader, error_r);
		i_stream_destroy(&reader.input);
		return ret;
	}
	if (ret == 0)
		reason = "empty file";
	else if ((ctx.version = dovewarden_store_parse_header(line,
							      &writer)) == 0)
		reason = "missing or unknown header";
	else {
		result->snapshot_writer = writer == NULL ? NULL :
			t_strdup(str_sanitize(writer, STORE_WRITER_MAX_LENGTH));
	}
	if (reason != NULL) {
		i_stream_destroy(&reader.input);
		return store_snapshot_corrupt(store, reason, result, error_r);
	}

	ret = store_read_lines(store, store->path, &reader,
			       store_restore_line, &ctx,
			       &result->users_loaded,
			       &result->snapshot_lines_skipped,
			       &result->snapshot_first_skipped_line, result,
			       error_r);
	i_stream_destroy(&reader.input);
	return ret;
}

int dovewarden_store_read_file(struct dovewarden_store *store,
			       const char *path,
			       dovewarden_store_line_callback_t *callback,
			       void *context,
			       struct dovewarden_store_load_result *result,
			       const char **error_r)
{
	struct store_reader reader;
	unsigned int taken = 0;
	int ret;

	if ((ret = store_open_read(path, &reader, error_r)) <= 0)
		return ret;
	ret = store_read_lines(store, path, &reader, callback, context,
			       &taken, &result->snapshot_lines_skipped,
			       &result->snapshot_first_skipped_line, result,
			       error_r);
	i_stream_destroy(&reader.input);
	return ret < 0 ? -1 : 1;
}

/* A user's fields after a sync replace what the queue has of it */
static bool
store_replay_user(struct dovewarden_queue *queue, char *line, time_t now,
		  const char **reason_r)
{
	struct dovewarden_user fields, *user;

	time_t last_client_change = 0, last_import = 0;
	bool client_change_pending = FALSE;

	if (dovewarden_store_parse_user(line, 2, &fields, reason_r) < 0)
		return FALSE;
	user = dovewarden_queue_lookup(queue, fields.username);
	if (user != NULL) {
		/* the settle rule's evidence is not in the user line */
		last_client_change = user->last_client_change;
		last_import = user->last_import;
		client_change_pending = user->client_change_pending;
		dovewarden_queue_remove(queue, user);
	}
	user = dovewarden_queue_restore(queue, &fields, now);
	if (user != NULL) {
		user->last_client_change = last_client_change;
		user->last_import = last_import;
		/* perhaps carried by the sync, perhaps not: it may only
		   cost a settle */
		user->client_change_pending = client_change_pending;
	}
	return TRUE;
}

int dovewarden_store_parse_journal(const char *line,
				   struct dovewarden_store_journal_record *rec_r,
				   const char **reason_r)
{
	const char *const *args = t_strsplit_tabescaped(line);

	i_zero(rec_r);
	if (str_array_length(args) != STORE_JOURNAL_FIELD_COUNT) {
		*reason_r = "wrong number of fields";
		return -1;
	}
	if (strcmp(args[0], "N") == 0)
		rec_r->cmd = DOVEWARDEN_STORE_JOURNAL_NOTIFY;
	else if (strcmp(args[0], "F") == 0)
		rec_r->cmd = DOVEWARDEN_STORE_JOURNAL_FORCE_FULL_SYNC;
	else if (strcmp(args[0], "R") == 0)
		rec_r->cmd = DOVEWARDEN_STORE_JOURNAL_REMOVE;
	else if (strcmp(args[0], "C") == 0)
		rec_r->cmd = DOVEWARDEN_STORE_JOURNAL_CLIENT;
	else if (strcmp(args[0], "I") == 0)
		rec_r->cmd = DOVEWARDEN_STORE_JOURNAL_IMPORT;
	else {
		*reason_r = "unknown command";
		return -1;
	}
	if (!dovewarden_username_is_valid(args[1])) {
		*reason_r = "invalid username";
		return -1;
	}
	if (!dovewarden_priority_parse(args[2], &rec_r->priority)) {
		*reason_r = "unknown priority";
		return -1;
	}
	rec_r->username = args[1];
	return 0;
}

static bool
store_replay_line(char *line, void *context, const char **reason_r)
{
	struct store_load_context *ctx = context;
	struct dovewarden_queue *queue = ctx->queue;
	time_t now = ctx->now;
	struct dovewarden_store_journal_record rec;
	struct dovewarden_user *user;

	if (line[0] == 'U' && line[1] == '\t')
		return store_replay_user(queue, line + 2, now, reason_r);
	if (dovewarden_store_parse_journal(line, &rec, reason_r) < 0)
		return FALSE;

	switch (rec.cmd) {
	case DOVEWARDEN_STORE_JOURNAL_NOTIFY:
		(void)dovewarden_queue_notify(queue, rec.username,
					      rec.priority, now);
		break;
	case DOVEWARDEN_STORE_JOURNAL_CLIENT:
		(void)dovewarden_queue_notify_kind(queue, rec.username,
			rec.priority, DOVEWARDEN_QUEUE_SETTLE_CLIENT, now);
		break;
	case DOVEWARDEN_STORE_JOURNAL_IMPORT:
		(void)dovewarden_queue_notify_kind(queue, rec.username,
			rec.priority, DOVEWARDEN_QUEUE_SETTLE_IMPORT, now);
		break;
	case DOVEWARDEN_STORE_JOURNAL_FORCE_FULL_SYNC:
		user = dovewarden_queue_lookup(queue, rec.username);
		if (user == NULL)
			user = dovewarden_queue_add(queue, rec.username, now);
		dovewarden_queue_force_full_sync(queue, user, rec.priority,
						 now);
		break;
	case DOVEWARDEN_STORE_JOURNAL_REMOVE:
		user = dovewarden_queue_lookup(queue, rec.username);
		if (user != NULL)
			dovewarden_queue_remove(queue, user);
		break;
	}
	return TRUE;
}

static int
store_load_journal(struct dovewarden_store *store, const char *path,
		   struct dovewarden_queue *queue, time_t now,
		   struct dovewarden_store_load_result *result,
		   const char **error_r)
{
	struct store_load_context ctx = {
		.queue = queue,
		.now = now,
	};
	struct store_reader reader;
	unsigned int skipped_before = result->journal_lines_skipped;
	int ret;

	if ((ret = store_open_read(path, &reader, error_r)) <= 0)
		return ret;

	ret = store_read_lines(store, path, &reader, store_replay_line, &ctx,
			       &result->journal_lines_replayed,
			       &result->journal_lines_skipped,
			       &result->journal_first_skipped_line, result,
			       error_r);
	if (skipped_before == 0 && result->journal_lines_skipped > 0)
		result->journal_first_skipped_path = path;
	i_stream_destroy(&reader.input);
	/* appends must not continue a partial last line */
	if (path == store->journal_path)
		store->journal_need_lf = reader.unterminated;
	return ret;
}

int dovewarden_store_load(struct dovewarden_store *store,
			  struct dovewarden_queue *queue, time_t now,
			  struct dovewarden_store_load_result *result_r,
			  const char **error_r)
{
	i_zero(result_r);
	if (store_load_snapshot(store, queue, now, result_r, error_r) < 0 ||
	    store_load_journal(store, store->journal_old_path, queue, now,
			       result_r, error_r) < 0)
		return -1;
	return store_load_journal(store, store->journal_path, queue, now,
				  result_r, error_r);
}

uoff_t dovewarden_store_journal_get_size(struct dovewarden_store *store)
{
	struct stat st;

	if (store->journal_fd == -1 || fstat(store->journal_fd, &st) < 0)
		return 0;
	return st.st_size;
}

/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "llist.h"
#include "ioloop.h"
#include "str.h"
#include "strnum.h"
#include "str-sanitize.h"
#include "dovewarden-config.h"
#include "istream.h"
#include "write-full.h"
#include "dovewarden-protocol.h"
#include "dovewarden-log-limit.h"
#include "dovewarden-store.h"
#include "dovewarden-redis-queue.h"
#include "dovewarden-redis-queue-lua.h"

#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <hiredis/hiredis.h>

/* How often the counts are read from Redis */
#define REDIS_QUEUE_STATS_INTERVAL_MSECS 1000
/* Users moved from waiting to ready, and notifications sent, per step */
#define REDIS_QUEUE_FLUSH_BATCH 1000
/* Notifications that Redis refused are sent again after this long */
#define REDIS_QUEUE_FLUSH_RETRY_MSECS 1000
/* Invalid names and states read from Redis are logged at most this
   often a minute */
#define REDIS_QUEUE_INVALID_LOG_MAX_PER_MINUTE 10
/* The buffer file is rewritten from the buffer when it has this many
   lines more than four per buffered user (a flapping Redis makes users
   leave the buffer and come back) */
#define REDIS_QUEUE_BUFFER_FILE_SLACK_LINES 1024
/* Users looked at per step when overdue full syncs get their slots */
#define REDIS_QUEUE_RESLOT_BATCH 500
/* Longer lines are corrupt: a username is shorter */
#define REDIS_QUEUE_BUFFER_FILE_MAX_LINE 4096

/* The scripts are in lua/ (the user hash fields are described in
   lua/prelude.lua); every script starts with the prelude, which takes
   the arguments that redis_queue_args() fills in. */
static struct dovewarden_redis_script redis_queue_notify_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("notify",
				     dovewarden_redis_queue_lua_notify);
static struct dovewarden_redis_script redis_queue_pop_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("pop", dovewarden_redis_queue_lua_pop);
static struct dovewarden_redis_script redis_queue_finish_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("finish",
				     dovewarden_redis_queue_lua_finish);
static struct dovewarden_redis_script redis_queue_renew_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("renew", dovewarden_redis_queue_lua_renew);
static struct dovewarden_redis_script redis_queue_remove_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("remove",
				     dovewarden_redis_queue_lua_remove);
static struct dovewarden_redis_script redis_queue_import_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("import",
				     dovewarden_redis_queue_lua_import);
static struct dovewarden_redis_script redis_queue_stats_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("stats", dovewarden_redis_queue_lua_stats);
static struct dovewarden_redis_script redis_queue_get_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("get", dovewarden_redis_queue_lua_get);
static struct dovewarden_redis_script redis_queue_done_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("done", dovewarden_redis_queue_lua_done);

static struct dovewarden_redis_script redis_queue_takeback_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("takeback",
				     dovewarden_redis_queue_lua_takeback);
static struct dovewarden_redis_script redis_queue_retry_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("retry", dovewarden_redis_queue_lua_retry);
static struct dovewarden_redis_script redis_queue_reslot_script =
	DOVEWARDEN_REDIS_SCRIPT_INIT("reslot",
				     dovewarden_redis_queue_lua_reslot);

static struct dovewarden_redis_script *redis_queue_scripts[] = {
	&redis_queue_notify_script,
	&redis_queue_pop_script,
	&redis_queue_finish_script,
	&redis_queue_renew_script,
	&redis_queue_remove_script,
	&redis_queue_stats_script,
	&redis_queue_get_script,
	&redis_queue_done_script,
	&redis_queue_import_script,
	&redis_queue_takeback_script,
	&redis_queue_retry_script,
	&redis_queue_reslot_script,
};

struct redis_queue_buffered {
	enum dovewarden_priority priority;
	bool force_full;
	/* sent to Redis, no reply yet: it stays in the buffer (and its
	   file) until Redis confirms it */
	bool sending;
	/* changed while it was being sent: send it again */
	bool changed;
};

struct redis_queue_notify_request {
	struct dovewarden_redis_queue *queue;
	char *username;
	enum dovewarden_priority priority;
	bool force_full;
	/* sent from the buffer (where it stays until the reply) */
	bool from_buffer;
	dovewarden_redis_queue_seq_callback_t *callback;
	void *context;
};

/* A sync result to write */
struct redis_queue_finish {
	struct redis_queue_finish *prev, *next;
	struct dovewarden_redis_queue *queue;
	char *username, *state, *error;
	const char *result;
	bool repaired, no_dsync;
};

struct redis_queue_request {
	struct dovewarden_redis_queue *queue;
	void *callback;
	void *context;
	unsigned int count;
};

struct dovewarden_redis_queue {
	struct dovewarden_redis_queue_settings set;
	char *prefix, *owner, *server, *identity;
	struct event *event;
	const struct dovewarden_redis_queue_callbacks *callbacks;
	void *context;

	struct dovewarden_redis *redis, *sub;
	/* username -> what to send (both allocated from default_pool) */
	HASH_TABLE(char *, struct redis_queue_buffered *) buffer;
	uint64_t dropped, dropped_logged;
	/* the buffer's copy in set.buffer_path (-1: not open) and its
	   lines; emptied when the buffer is */
	char *buffer_path;
	int buffer_fd;
	unsigned int buffer_file_lines;
	/* writing the file failed: memory only until the buffer is empty */
	bool buffer_file_failed;
	struct timeout *to_flush, *to_renew, *to_stats;

	struct dovewarden_redis_job *jobs;
	/* results not written yet (Redis was unreachable) */
	struct redis_queue_finish *finishes;
	struct dovewarden_redis_queue_stats stats;
	/* invalid names and states read from Redis, skipped */
	uint64_t invalid_entries;
	struct dovewarden_log_limit invalid_log_limit;
	/* claims of earlier lives given back at start */
	uint64_t claims_taken_back;
	/* the outage and buffer were logged */
	bool buffering_logged:1;
	/* sending the buffer was logged */
	bool sending_logged:1;
	bool stats_running:1;
	bool deinitializing:1;
	/* the claims of our earlier lives were given back */
	bool took_back:1;
	/* this instance's entry in <prefix>writers was written */
	bool writer_written:1;
	/* overdue full syncs get their slots (reslot.lua): where in the
	   waiting set, then the ready one, and how many got one */
	unsigned int reslot_offset, reslot_count;
	bool reslot_ready:1;
	bool reslot_running:1;
	/* log reslot_count once the last step's slots are set */
	bool reslot_log:1;
	bool reslotted:1;
};

static void redis_queue_flush(struct dovewarden_redis_queue *queue);

static const char **
redis_queue_args(struct dovewarden_redis_queue *queue, unsigned int extra,
		 unsigned int *argc_r)
{
	const struct dovewarden_queue_settings *qset = &queue->set.queue;
	const char **argv = t_new(const char *, 5 + extra + 1);

	argv[0] = queue->set.prefix;
	argv[1] = dec2str(qset->full_sync_interval_secs);
	argv[2] = dec2str(qset->settle_delay_secs);
	argv[3] = dec2str(I_MAX(qset->settle_max_secs,
				qset->settle_delay_secs));
	argv[4] = dec2str(DOVEWARDEN_QUEUE_LOW_BOOST_SECS);
	*argc_r = 5;
	return argv;
}

static bool redis_reply_integer(const redisReply *reply, long long *num_r)
{
	if (reply == NULL)
		return FALSE;
	if (reply->type == REDIS_REPLY_INTEGER) {
		*num_r = reply->integer;
		return TRUE;
	}
	if (reply->type == REDIS_REPLY_STRING)
		return str_to_llong(reply->str, num_r) == 0;
	return FALSE;
}

static const char *redis_reply_string(const redisReply *reply)
{
	if (reply == NULL || reply->type != REDIS_REPLY_STRING)
		return "";
	return t_strndup(reply->str, reply->len);
}

/* Returns the reply as a username, or NULL when it is not a string or not
   a valid username (a NUL in it included) */
static const char *redis_reply_username(const redisReply *reply)
{
	const char *name;

	if (reply == NULL || reply->type != REDIS_REPLY_STRING ||
	    memchr(reply->str, '\0', reply->len) != NULL)
		return NULL;
	name = t_strndup(reply->str, reply->len);
	return dovewarden_username_is_valid(name) ? name : NULL;
}

/* A dsync state is one word of printable ASCII (base64 from dsync) */
static bool redis_state_is_valid(const char *state)
{
	for (; *state != '\0'; state++) {
		if (*state <= ' ' || *state > '~')
			return FALSE;
	}
	return TRUE;
}

/* Something read from Redis that no instance writes: someone else wrote
   to our keys, or they are damaged. Skipped, counted and logged (at most
   REDIS_QUEUE_INVALID_LOG_MAX_PER_MINUTE a minute), never trusted. */
static void
redis_queue_invalid(struct dovewarden_redis_queue *queue, const char *what,
		    const redisReply *reply)
{
	unsigned int suppressed;
	const char *value = reply == NULL ? "(none)" :
		reply->type != REDIS_REPLY_STRING ? "(not a string)" :
		t_strndup(reply->str, reply->len);

	queue->invalid_entries++;
	if (!dovewarden_log_limit_allow(&queue->invalid_log_limit,
					ioloop_time, &suppressed))
		return;
	if (suppressed > 0) {
		e_warning(queue->event, "%u more invalid entries read from "
			  "Redis were not logged in the last minute",
			  suppressed);
	}
	e_warning(queue->event, "Skipped an invalid %s read from Redis "
		  "(written by something else than dovewarden?): '%s'",
		  what, str_sanitize(value, 80));
}

uint64_t
dovewarden_redis_queue_get_invalid_count(struct dovewarden_redis_queue *queue)
{
	return queue->invalid_entries;
}

static const char *
redis_queue_reply_failure(const redisReply *reply, const char *error)
{
	const char *reply_error = dovewarden_redis_reply_error(reply);

	if (reply == NULL)
		return error;
	if (reply_error != NULL)
		return reply_error;
	return NULL;
}

/* notifications */

static const char **
redis_queue_notify_args(struct dovewarden_redis_queue *queue,
			const char *username, enum dovewarden_priority priority,
			bool force_full, bool any_server,
			enum dovewarden_queue_settle_kind kind,
			unsigned int *argc_r)
{
	const char **argv;
	unsigned int argc;

	argv = redis_queue_args(queue, 6, &argc);
	argv[argc++] = username;
	argv[argc++] = dec2str(priority);
	argv[argc++] = dec2str(dovewarden_queue_priority_boost(priority));
	argv[argc++] = dec2str(dovewarden_queue_full_sync_slot(
		username, queue->set.queue.full_sync_interval_secs,
		ioloop_time));
	argv[argc++] = force_full ? "1" : "0";
	/* where the change was made: an incremental sync from the other
	   server would not see it */
	argv[argc++] = any_server ? "" : queue->set.server;
	argv[argc++] = kind == DOVEWARDEN_QUEUE_SETTLE_CLIENT ? "c" :
		kind == DOVEWARDEN_QUEUE_SETTLE_IMPORT ? "i" : "";
	*argc_r = argc;
	return argv;
}

static void
redis_queue_buffer_file_error(struct dovewarden_redis_queue *queue,
			      const char *func, const char *path)
{
	e_error(queue->event, "%s(%s) failed: %m (until the buffer is "
		"empty again, buffered notifications are kept in memory "
		"only: a restart before Redis is back loses them)", func, path);
	i_close_fd(&queue->buffer_fd);
	queue->buffer_file_failed = TRUE;
}

static void
redis_queue_buffer_format(string_t *dest, const char *username,
			  const struct redis_queue_buffered *buf)
{
	dovewarden_store_format_journal(dest, buf->force_full ?
		DOVEWARDEN_STORE_JOURNAL_FORCE_FULL_SYNC :
		DOVEWARDEN_STORE_JOURNAL_NOTIFY, username, buf->priority);
	str_append_c(dest, '\n');
}

/* Replace the buffer file with one line per buffered user (also those
   being sent: they are in the buffer until Redis confirms them) */
static void
redis_queue_buffer_file_rewrite(struct dovewarden_redis_queue *queue)
{
	struct hash_iterate_context *iter;
	struct redis_queue_buffered *buf;
	const char *tmp_path;
	string_t *str;
	char *username;
	int fd;

	i_close_fd(&queue->buffer_fd);
	queue->buffer_file_lines = 0;
	str = str_new(default_pool,
		      128 * (hash_table_count(queue->buffer) + 1));
	iter = hash_table_iterate_init(queue->buffer);
	while (hash_table_iterate(iter, queue->buffer, &username, &buf)) {
		redis_queue_buffer_format(str, username, buf);
		queue->buffer_file_lines++;
	}
	hash_table_iterate_deinit(&iter);

	tmp_path = t_strconcat(queue->buffer_path, ".tmp", NULL);
	fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
	if (fd == -1)
		redis_queue_buffer_file_error(queue, "open", tmp_path);
	else if (write_full(fd, str_data(str), str_len(str)) < 0) {
		i_close_fd(&fd);
		redis_queue_buffer_file_error(queue, "write", tmp_path);
		i_unlink_if_exists(tmp_path);
	} else if (rename(tmp_path, queue->buffer_path) < 0) {
		i_close_fd(&fd);
		redis_queue_buffer_file_error(queue, "rename",
					      queue->buffer_path);
		i_unlink_if_exists(tmp_path);
	} else {
		queue->buffer_fd = fd;
	}
	str_free(&str);
}

static void
redis_queue_buffer_file_write(struct dovewarden_redis_queue *queue,
			      const string_t *line)
{
	if (queue->buffer_path == NULL || queue->buffer_file_failed)
		return;
	if (queue->buffer_fd == -1 ||
	    queue->buffer_file_lines >= hash_table_count(queue->buffer) * 4 +
	    REDIS_QUEUE_BUFFER_FILE_SLACK_LINES) {
		/* the buffer already holds this line's change */
		redis_queue_buffer_file_rewrite(queue);
		return;
	}
	if (write_full(queue->buffer_fd, str_data(line), str_len(line)) < 0) {
		redis_queue_buffer_file_error(queue, "write",
					      queue->buffer_path);
		return;
	}
	queue->buffer_file_lines++;
}

/* Is the file at buffer_path the one this process writes? (A process
   started by a reload may have replaced it.) */
static bool
redis_queue_buffer_file_is_ours(struct dovewarden_redis_queue *queue)
{
	struct stat st1, st2;

	return queue->buffer_fd != -1 &&
		fstat(queue->buffer_fd, &st1) == 0 &&
		stat(queue->buffer_path, &st2) == 0 &&
		st1.st_ino == st2.st_ino && st1.st_dev == st2.st_dev;
}

/* Everything in the buffer reached Redis */
static void redis_queue_buffer_emptied(struct dovewarden_redis_queue *queue)
{
	if (queue->dropped != queue->dropped_logged) {
		e_error(queue->event, "%"PRIu64" changes were "
			"dropped while the buffer was full",
			queue->dropped - queue->dropped_logged);
		queue->dropped_logged = queue->dropped;
	}
	queue->buffering_logged = FALSE;
	queue->sending_logged = FALSE;

	if (queue->buffer_path == NULL ||
	    (queue->buffer_file_lines == 0 && !queue->buffer_file_failed))
		return;
	if (queue->buffer_fd != -1) {
		if (ftruncate(queue->buffer_fd, 0) < 0) {
			redis_queue_buffer_file_error(queue, "ftruncate",
						      queue->buffer_path);
			return;
		}
	} else if (unlink(queue->buffer_path) < 0 && errno != ENOENT) {
		/* a failed write may have left a part of the buffer */
		e_error(queue->event, "unlink(%s) failed: %m",
			queue->buffer_path);
		return;
	}
	queue->buffer_file_lines = 0;
	/* the next outage tries the file again */
	queue->buffer_file_failed = FALSE;
}

/* Merge a change into the buffer: returns FALSE when nothing changed
   (or the buffer is full) */
static bool
redis_queue_buffer_update(struct dovewarden_redis_queue *queue,
			  const char *username,
			  enum dovewarden_priority priority, bool force_full)
{
	struct redis_queue_buffered *buf;
	char *name;

	buf = hash_table_lookup(queue->buffer, username);
	if (buf == NULL) {
		if (hash_table_count(queue->buffer) >=
		    queue->set.buffer_limit) {
			if (queue->dropped++ == queue->dropped_logged) {
				e_error(queue->event, "Notification buffer "
					"full (%u users, "
					"dovewarden_redis_buffer_limit): "
					"dropping changes until Redis is back; "
					"the periodic full syncs replicate "
					"them (doveadm dovewarden replicate "
					"'*' does it now)",
					queue->set.buffer_limit);
			}
			return FALSE;
		}
		name = i_strdup(username);
		buf = i_new(struct redis_queue_buffered, 1);
		hash_table_insert(queue->buffer, name, buf);
		buf->priority = priority;
		buf->force_full = force_full;
		return TRUE;
	}
	if (priority <= buf->priority && (!force_full || buf->force_full))
		return FALSE;
	if (priority > buf->priority)
		buf->priority = priority;
	if (force_full)
		buf->force_full = TRUE;
	/* what is being sent lacks this: send it again after the reply */
	if (buf->sending)
		buf->changed = TRUE;
	return TRUE;
}

static void
redis_queue_buffer_add(struct dovewarden_redis_queue *queue,
		       const char *username, enum dovewarden_priority priority,
		       bool force_full)
{
	struct redis_queue_buffered *buf;
	string_t *line;

	if (!redis_queue_buffer_update(queue, username, priority, force_full) ||
	    queue->buffer_path == NULL)
		return;
	buf = hash_table_lookup(queue->buffer, username);
	i_assert(buf != NULL);
	line = t_str_new(128);
	redis_queue_buffer_format(line, username, buf);
	redis_queue_buffer_file_write(queue, line);
}

/* Drop username's entry from the buffer (not from its file); returns
   FALSE if it had none */
static bool redis_queue_buffer_forget(struct dovewarden_redis_queue *queue,
				      const char *username)
{
	struct redis_queue_buffered *buf;
	char *key;

	if (!hash_table_lookup_full(queue->buffer, username, &key, &buf))
		return FALSE;
	hash_table_remove(queue->buffer, key);
	i_free(key);
	i_free(buf);
	return TRUE;
}

static void redis_queue_buffer_remove(struct dovewarden_redis_queue *queue,
				      const char *username)
{
	string_t *line;

	if (!redis_queue_buffer_forget(queue, username))
		return;
	if (hash_table_count(queue->buffer) == 0) {
		redis_queue_buffer_emptied(queue);
	} else if (queue->buffer_path != NULL) {
		/* a restart must not bring the user back */
		line = t_str_new(128);
		dovewarden_store_format_journal(line,
			DOVEWARDEN_STORE_JOURNAL_REMOVE, username,
			DOVEWARDEN_PRIORITY_NONE);
		str_append_c(line, '\n');
		redis_queue_buffer_file_write(queue, line);
	}
}

static void redis_queue_buffer_clear(struct dovewarden_redis_queue *queue)
{
	struct hash_iterate_context *iter;
	struct redis_queue_buffered *buf;
	char *username;

	iter = hash_table_iterate_init(queue->buffer);
	while (hash_table_iterate(iter, queue->buffer, &username, &buf)) {
		i_free(username);
		i_free(buf);
	}
	hash_table_iterate_deinit(&iter);
	hash_table_clear(queue->buffer, FALSE);
}

static void redis_queue_flush_after(struct dovewarden_redis_queue *queue,
				    unsigned int msecs)
{
	if (queue->to_flush == NULL && !queue->deinitializing &&
	    dovewarden_redis_get_state(queue->redis) ==
	    DOVEWARDEN_REDIS_STATE_CONNECTED) {
		queue->to_flush = timeout_add_short(msecs, redis_queue_flush,
						    queue);
	}
}

static void redis_queue_flush_soon(struct dovewarden_redis_queue *queue)
{
	redis_queue_flush_after(queue, 0);
}

/* The reply to a notification sent from the buffer */
static void
redis_queue_buffer_sent(struct dovewarden_redis_queue *queue,
			const char *username, bool success)
{
	struct redis_queue_buffered *buf;

	buf = hash_table_lookup(queue->buffer, username);
	if (buf == NULL || !buf->sending) {
		/* removed meanwhile */
		return;
	}
	buf->sending = FALSE;
	if (!success)
		return;
	if (buf->changed) {
		buf->changed = FALSE;
		redis_queue_flush_soon(queue);
		return;
	}
	(void)redis_queue_buffer_forget(queue, username);
	if (hash_table_count(queue->buffer) == 0)
		redis_queue_buffer_emptied(queue);
}

static void
redis_queue_notify_callback(const redisReply *reply, const char *error,
			    void *context)
{
	struct redis_queue_notify_request *request = context;
	struct dovewarden_redis_queue *queue = request->queue;
	const char *failure = redis_queue_reply_failure(reply, error);
	long long seq = 0;

	if (failure == NULL && !redis_reply_integer(reply, &seq))
		failure = "Unexpected reply to notify";
	if (failure != NULL) {
		/* not recorded (or not known to be): send it again later;
		   notify is idempotent */
		if (!queue->buffering_logged && !queue->deinitializing) {
			e_warning(queue->event, "Notification not written "
				  "(%s): keeping notifications in memory "
				  "until Redis answers", failure);
			queue->buffering_logged = TRUE;
		}
		if (!request->from_buffer) {
			T_BEGIN {
				redis_queue_buffer_add(queue,
					request->username, request->priority,
					request->force_full);
			} T_END;
		}
		/* an error reply (e.g. LOADING after a restart): try again
		   in a while; a lost connection flushes at reconnect */
		if (reply != NULL) {
			redis_queue_flush_after(queue,
				REDIS_QUEUE_FLUSH_RETRY_MSECS);
		}
	}
	if (request->from_buffer) {
		redis_queue_buffer_sent(queue, request->username,
					failure == NULL);
	}
	if (request->callback != NULL)
		request->callback(failure == NULL, (uint64_t)seq,
				  request->context);
	i_free(request->username);
	i_free(request);
}

static int
redis_queue_send_notify(struct dovewarden_redis_queue *queue,
			const char *username, enum dovewarden_priority priority,
			bool force_full, bool any_server,
			enum dovewarden_queue_settle_kind kind, bool from_buffer,
			dovewarden_redis_queue_seq_callback_t *callback,
			void *context)
{
	struct redis_queue_notify_request *request;
	const char **argv;
	unsigned int argc;
	int ret;

	argv = redis_queue_notify_args(queue, username, priority, force_full,
				       any_server, kind, &argc);

	request = i_new(struct redis_queue_notify_request, 1);
	request->queue = queue;
	request->username = i_strdup(username);
	request->priority = priority;
	request->force_full = force_full;
	request->from_buffer = from_buffer;
	request->callback = callback;
	request->context = context;
	ret = dovewarden_redis_eval(queue->redis, &redis_queue_notify_script,
				    argc, argv, redis_queue_notify_callback,
				    request);
	if (ret < 0) {
		i_free(request->username);
		i_free(request);
	}
	return ret;
}

static void redis_queue_flush(struct dovewarden_redis_queue *queue)
{
	struct hash_iterate_context *iter;
	struct redis_queue_buffered *buf;
	char *username;
	unsigned int count = 0, total;
	int ret = 0;

	timeout_remove(&queue->to_flush);
	total = hash_table_count(queue->buffer);
	if (total == 0)
		return;
	if (queue->buffering_logged && !queue->sending_logged && total > 1) {
		e_info(queue->event, "Sending %u buffered users' "
		       "notifications", total);
		queue->sending_logged = TRUE;
	}
	/* each stays in the buffer until Redis confirms it */
	iter = hash_table_iterate_init(queue->buffer);
	while (count < REDIS_QUEUE_FLUSH_BATCH && ret == 0 &&
	       hash_table_iterate(iter, queue->buffer, &username, &buf)) {
		if (buf->sending)
			continue;
		T_BEGIN {
			/* how the merged changes count for the settle is
			   not kept: settle them */
			ret = redis_queue_send_notify(queue, username,
				buf->priority, buf->force_full, FALSE,
				DOVEWARDEN_QUEUE_SETTLE_ALWAYS, TRUE,
				NULL, NULL);
		} T_END;
		if (ret == 0) {
			buf->sending = TRUE;
			buf->changed = FALSE;
			count++;
		}
	}
	hash_table_iterate_deinit(&iter);
	if (count == REDIS_QUEUE_FLUSH_BATCH) {
		/* more may wait */
		redis_queue_flush_soon(queue);
	}
}

void dovewarden_redis_queue_notify(struct dovewarden_redis_queue *queue,
				   const char *username,
				   enum dovewarden_priority priority,
				   bool force_full, bool any_server)
{
	dovewarden_redis_queue_notify_kind(queue, username, priority,
					   force_full, any_server,
					   DOVEWARDEN_QUEUE_SETTLE_ALWAYS);
}

void dovewarden_redis_queue_notify_kind(struct dovewarden_redis_queue *queue,
					const char *username,
					enum dovewarden_priority priority,
					bool force_full, bool any_server,
					enum dovewarden_queue_settle_kind kind)
{
	if (kind == DOVEWARDEN_QUEUE_SETTLE_IMPORT &&
	    priority == DOVEWARDEN_PRIORITY_NONE && !force_full) {
		/* the queue compares the servers' client changes
		   directly: an import is no evidence it needs */
		return;
	}
	if (hash_table_count(queue->buffer) == 0 &&
	    redis_queue_send_notify(queue, username, priority, force_full,
				    any_server, kind, FALSE, NULL, NULL) == 0)
		return;
	if (!queue->buffering_logged &&
	    dovewarden_redis_get_state(queue->redis) !=
	    DOVEWARDEN_REDIS_STATE_CONNECTED) {
		e_warning(queue->event, "Redis is not connected: keeping "
			  "notifications in memory%s (at most %u users)",
			  queue->buffer_path == NULL ? "" :
			  t_strdup_printf(" and in %s", queue->buffer_path),
			  queue->set.buffer_limit);
		queue->buffering_logged = TRUE;
	}
	redis_queue_buffer_add(queue, username, priority, force_full);
	redis_queue_flush_soon(queue);
}

void dovewarden_redis_queue_notify_seq(struct dovewarden_redis_queue *queue,
				       const char *username,
				       enum dovewarden_queue_settle_kind kind,
				       dovewarden_redis_queue_seq_callback_t *callback,
				       void *context)
{
	if (redis_queue_send_notify(queue, username, DOVEWARDEN_PRIORITY_SYNC,
				    FALSE, FALSE, kind, FALSE, callback,
				    context) == 0)
		return;
	dovewarden_redis_queue_notify_kind(queue, username,
					   DOVEWARDEN_PRIORITY_SYNC, FALSE,
					   FALSE, kind);
	callback(FALSE, 0, context);
}

/* claims */

static struct redis_queue_request *
redis_queue_request_new(struct dovewarden_redis_queue *queue, void *callback,
			void *context)
{
	struct redis_queue_request *request;

	request = i_new(struct redis_queue_request, 1);
	request->queue = queue;
	request->callback = callback;
	request->context = context;
	return request;
}

/* Send a command (script NULL) or run a script for a request made of
   callback and context; the reply goes to reply_callback. */
static int
redis_queue_request_send(struct dovewarden_redis_queue *queue,
			 struct dovewarden_redis_script *script,
			 unsigned int argc, const char *const *argv,
			 dovewarden_redis_callback_t *reply_callback,
			 void *callback, void *context, unsigned int count)
{
	struct redis_queue_request *request;
	int ret;

	request = redis_queue_request_new(queue, callback, context);
	request->count = count;
	ret = script != NULL ?
		dovewarden_redis_eval(queue->redis, script, argc, argv,
				      reply_callback, request) :
		dovewarden_redis_command(queue->redis, argc, argv, NULL,
					 reply_callback, request);
	if (ret < 0)
		i_free(request);
	return ret;
}

static void
redis_queue_remove_invalid_callback(const redisReply *reply ATTR_UNUSED,
				    const char *error, void *context)
{
	struct dovewarden_redis_queue *queue = context;

	if (error != NULL) {
		e_warning(queue->event, "Removing an invalid user from "
			  "Redis failed: %s", error);
	}
}

/* Removes a claimed user with an invalid name from the queue, so that it
   is not claimed again and again */
static void
redis_queue_remove_invalid(struct dovewarden_redis_queue *queue,
			   const redisReply *name)
{
	const char **argv;
	unsigned int argc;

	if (name == NULL || name->type != REDIS_REPLY_STRING)
		return;
	argv = redis_queue_args(queue, 1, &argc);
	argv[argc++] = t_strndup(name->str, name->len);
	(void)dovewarden_redis_eval(queue->redis, &redis_queue_remove_script,
				    argc, argv,
				    redis_queue_remove_invalid_callback, queue);
}

/* Returns NULL with *invalid_r=FALSE for a reply of the wrong shape, and
   with *invalid_r=TRUE for a claim of an invalid user (removed) */
static struct dovewarden_redis_job *
redis_queue_job_parse(struct dovewarden_redis_queue *queue,
		      const redisReply *reply, bool *invalid_r)
{
	struct dovewarden_redis_job *job;
	const char *username, *state;
	long long full, settle, prio, seq, failures, stale;

	*invalid_r = FALSE;
	if (reply->elements != 11 ||
	    !redis_reply_integer(reply->element[3], &full) ||
	    !redis_reply_integer(reply->element[4], &settle) ||
	    !redis_reply_integer(reply->element[5], &prio) ||
	    !redis_reply_integer(reply->element[6], &seq) ||
	    !redis_reply_integer(reply->element[7], &failures) ||
	    !redis_reply_integer(reply->element[9], &stale) ||
	    prio < 0 || prio >= DOVEWARDEN_PRIORITY_COUNT)
		return NULL;

	username = redis_reply_username(reply->element[1]);
	if (username == NULL) {
		redis_queue_invalid(queue, "username in a claim",
				    reply->element[1]);
		redis_queue_remove_invalid(queue, reply->element[1]);
		*invalid_r = TRUE;
		return NULL;
	}
	state = redis_reply_string(reply->element[2]);
	if (!redis_state_is_valid(state)) {
		/* without a state, dsync compares everything */
		redis_queue_invalid(queue, t_strdup_printf(
			"dsync state of user %s",
			str_sanitize(username, 80)), reply->element[2]);
		state = "";
	}

	job = i_new(struct dovewarden_redis_job, 1);
	job->username = i_strdup(username);
	job->state = i_strdup(state);
	job->full = full != 0;
	job->settle = settle != 0;
	job->state_stale = stale != 0;
	job->priority = prio;
	job->consecutive_failures = failures;
	job->last_error = i_strdup(redis_reply_string(reply->element[8]));
	job->seq = seq;
	DLLIST_PREPEND(&queue->jobs, job);
	return job;
}

static void redis_queue_job_free(struct dovewarden_redis_queue *queue,
				 struct dovewarden_redis_job *job)
{
	DLLIST_REMOVE(&queue->jobs, job);
	i_free(job->username);
	i_free(job->state);
	i_free(job->last_error);
	i_free(job);
}

static void
redis_queue_pop_callback(const redisReply *reply, const char *error,
			 void *context)
{
	struct redis_queue_request *request = context;
	struct dovewarden_redis_queue *queue = request->queue;
	dovewarden_redis_queue_pop_callback_t *callback = request->callback;
	struct dovewarden_redis_job *job = NULL;
	const char *failure = redis_queue_reply_failure(reply, error);
	void *callback_context = request->context;
	long long flag, next_due = -1, expired;
	bool invalid = FALSE;

	i_free(request);
	if (failure == NULL &&
	    (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
	     !redis_reply_integer(reply->element[0], &flag) ||
	     !redis_reply_integer(reply->element[reply->elements - 1],
				  &expired)))
		failure = "Unexpected reply to pop";
	if (failure == NULL && expired > 0) {
		e_warning(queue->event, "Took back %lld expired claims "
			  "(an instance died or stalled during a sync); "
			  "their users are synced again", expired);
	}
	if (failure == NULL && flag == 1) {
		job = redis_queue_job_parse(queue, reply, &invalid);
		if (invalid) {
			/* skipped: the next user may be due now */
			next_due = 0;
		} else if (job == NULL)
			failure = "Unexpected claim in the reply to pop";
	} else if (failure == NULL &&
		   !redis_reply_integer(reply->element[1], &next_due)) {
		failure = "Unexpected reply to pop";
	}
	callback(job, next_due > INT_MAX ? INT_MAX : (int)next_due, failure,
		 callback_context);
}

int dovewarden_redis_queue_pop(struct dovewarden_redis_queue *queue,
			       bool allow_background,
			       dovewarden_redis_queue_pop_callback_t *callback,
			       void *context)
{
	const char **argv;
	unsigned int argc;

	argv = redis_queue_args(queue, 4, &argc);
	argv[argc++] = queue->set.owner;
	argv[argc++] = dec2str(queue->set.claim_timeout_secs);
	/* the lowest pending priority that may be claimed */
	argv[argc++] = dec2str(allow_background ? DOVEWARDEN_PRIORITY_NONE :
			       DOVEWARDEN_QUEUE_BACKGROUND_MAX_PRIORITY + 1);
	argv[argc++] = queue->set.server;
	return redis_queue_request_send(queue, &redis_queue_pop_script, argc,
					argv, redis_queue_pop_callback,
					callback, context, 0);
}

static void
redis_queue_finish_free(struct redis_queue_finish *finish)
{
	i_free(finish->username);
	i_free(finish->state);
	i_free(finish->error);
	i_free(finish);
}

static int redis_queue_send_finish(struct dovewarden_redis_queue *queue,
				   struct redis_queue_finish *finish);

static void
redis_queue_finish_callback(const redisReply *reply, const char *error,
			    void *context)
{
	struct redis_queue_finish *finish = context;
	struct dovewarden_redis_queue *queue = finish->queue;
	const char *reply_error = dovewarden_redis_reply_error(reply);
	long long ret;

	if (reply == NULL) {
		/* not known to be written: again once Redis is back (the
		   script ignores it if the claim was taken back meanwhile) */
		if (!queue->deinitializing) {
			e_warning(queue->event, "Finishing the sync of %s "
				  "failed: %s (sent again when Redis is back)",
				  finish->username, error);
		}
		DLLIST_PREPEND(&queue->finishes, finish);
		return;
	}
	if (reply_error != NULL) {
		e_error(queue->event, "Finishing the sync of %s failed: %s "
			"(its claim expires and the sync is repeated)",
			finish->username, reply_error);
	} else if (!redis_reply_integer(reply, &ret)) {
		e_error(queue->event, "Finishing the sync of %s: "
			"Unexpected reply", finish->username);
	} else if (ret == 0) {
		e_warning(queue->event, "Claim of %s was lost during its "
			  "sync (expired or user removed): result dropped",
			  finish->username);
	}
	redis_queue_finish_free(finish);
}

static const char **
redis_queue_finish_args(struct dovewarden_redis_queue *queue,
			const struct redis_queue_finish *finish,
			unsigned int *argc_r)
{
	const struct dovewarden_queue_settings *qset = &queue->set.queue;
	const char **argv;
	unsigned int argc;

	argv = redis_queue_args(queue, 15, &argc);
	argv[argc++] = finish->username;
	argv[argc++] = queue->set.owner;
	argv[argc++] = finish->result;
	argv[argc++] = finish->state;
	argv[argc++] = finish->error;
	argv[argc++] = dec2str(qset->retry_min_secs);
	argv[argc++] = dec2str(qset->retry_max_secs);
	/* the back-off's jitter */
	argv[argc++] = t_strdup_printf("%.4f", i_rand_limit(10000) / 10000.0);
	argv[argc++] = finish->repaired ? "1" : "0";
	argv[argc++] = dec2str(DOVEWARDEN_QUEUE_CHANGED_RETRY_SECS);
	argv[argc++] = dec2str(DOVEWARDEN_QUEUE_CHANGED_FULL_SYNC_COUNT);
	argv[argc++] = queue->set.server;
	argv[argc++] = dec2str(DOVEWARDEN_QUEUE_REPAIR_SETTLE_MAX);
	argv[argc++] = finish->no_dsync ? "1" : "0";
	argv[argc++] = dec2str(DOVEWARDEN_QUEUE_CHANGED_RETRY_MAX_SECS);
	*argc_r = argc;
	return argv;
}

static int redis_queue_send_finish(struct dovewarden_redis_queue *queue,
				   struct redis_queue_finish *finish)
{
	const char **argv;
	unsigned int argc;

	argv = redis_queue_finish_args(queue, finish, &argc);
	return dovewarden_redis_eval(queue->redis, &redis_queue_finish_script,
				     argc, argv, redis_queue_finish_callback,
				     finish);
}

/* Send the finishes that could not be sent before */
static void redis_queue_send_finishes(struct dovewarden_redis_queue *queue)
{
	struct redis_queue_finish *finish;

	while ((finish = queue->finishes) != NULL) {
		DLLIST_REMOVE(&queue->finishes, finish);
		if (redis_queue_send_finish(queue, finish) < 0) {
			DLLIST_PREPEND(&queue->finishes, finish);
			break;
		}
	}
}

static void
redis_queue_finish_job(struct dovewarden_redis_queue *queue,
		       struct dovewarden_redis_job **_job, const char *result,
		       const char *new_state, const char *error, bool repaired)
{
	struct dovewarden_redis_job *job = *_job;
	struct redis_queue_finish *finish;

	*_job = NULL;
	finish = i_new(struct redis_queue_finish, 1);
	finish->queue = queue;
	finish->username = i_strdup(job->username);
	finish->result = result;
	finish->state = i_strdup(new_state == NULL ? "" : new_state);
	finish->error = i_strdup(error == NULL ? "" : error);
	finish->repaired = repaired;
	finish->no_dsync = job->no_dsync;
	redis_queue_job_free(queue, job);

	T_BEGIN {
		if (redis_queue_send_finish(queue, finish) < 0) {
			e_warning(queue->event, "Redis is not connected: the "
				  "result of the sync of %s is sent when it is "
				  "back", finish->username);
			DLLIST_PREPEND(&queue->finishes, finish);
		}
	} T_END;
}

void dovewarden_redis_queue_finish(struct dovewarden_redis_queue *queue,
				   struct dovewarden_redis_job **job,
				   enum dovewarden_sync_result result,
				   const char *new_state, const char *error,
				   bool repaired)
{
	redis_queue_finish_job(queue, job,
			       dovewarden_sync_result_to_str(result),
			       new_state, error, repaired);
}

void dovewarden_redis_queue_release(struct dovewarden_redis_queue *queue,
				    struct dovewarden_redis_job **job)
{
	redis_queue_finish_job(queue, job, "release", NULL, NULL, FALSE);
}

static void
redis_queue_renew_callback(const redisReply *reply, const char *error,
			   void *context)
{
	struct dovewarden_redis_queue *queue = context;
	const char *failure = redis_queue_reply_failure(reply, error);

	if (failure != NULL && !queue->deinitializing)
		e_warning(queue->event, "Renewing claims failed: %s", failure);
}

static void redis_queue_renew(struct dovewarden_redis_queue *queue)
{
	struct dovewarden_redis_job *job;
	ARRAY_TYPE(const_string) args;
	const char **argv;
	unsigned int i, argc;

	if (queue->jobs == NULL)
		return;
	T_BEGIN {
		argv = redis_queue_args(queue, 2, &argc);
		t_array_init(&args, argc + 16);
		for (i = 0; i < argc; i++)
			array_push_back(&args, &argv[i]);
		array_push_back(&args, &queue->set.owner);
		argv[0] = dec2str(queue->set.claim_timeout_secs);
		array_push_back(&args, &argv[0]);
		for (job = queue->jobs; job != NULL; job = job->next) {
			const char *name = job->username;
			array_push_back(&args, &name);
		}
		(void)dovewarden_redis_eval(queue->redis,
					    &redis_queue_renew_script,
					    array_count(&args),
					    array_front(&args),
					    redis_queue_renew_callback, queue);
	} T_END;
}

/* admin */

static void
redis_queue_remove_callback(const redisReply *reply, const char *error,
			    void *context)
{
	struct redis_queue_request *request = context;
	dovewarden_redis_queue_remove_callback_t *callback = request->callback;
	const char *failure = redis_queue_reply_failure(reply, error);
	void *callback_context = request->context;
	long long ret = -1;

	if (failure == NULL && !redis_reply_integer(reply, &ret))
		failure = "Unexpected reply to remove";
	i_free(request);
	callback(failure != NULL ? -1 : (ret > 0 ? 1 : 0), failure,
		 callback_context);
}

int dovewarden_redis_queue_remove(struct dovewarden_redis_queue *queue,
				  const char *username,
				  dovewarden_redis_queue_remove_callback_t *callback,
				  void *context)
{
	const char **argv;
	unsigned int argc;

	redis_queue_buffer_remove(queue, username);
	argv = redis_queue_args(queue, 1, &argc);
	argv[argc++] = username;
	return redis_queue_request_send(queue, &redis_queue_remove_script,
					argc, argv,
					redis_queue_remove_callback,
					callback, context, 0);
}

static void
redis_queue_lock_callback(const redisReply *reply, const char *error,
			  void *context)
{
	struct redis_queue_request *request = context;
	dovewarden_redis_queue_lock_callback_t *callback = request->callback;
	const char *failure = redis_queue_reply_failure(reply, error);
	void *callback_context = request->context;

	if (failure != NULL && !request->queue->deinitializing) {
		e_warning(request->queue->event, "Taking a lock failed: %s",
			  failure);
	}
	i_free(request);
	callback(failure == NULL && reply->type == REDIS_REPLY_STATUS,
		 failure, callback_context);
}

int dovewarden_redis_queue_try_lock(struct dovewarden_redis_queue *queue,
				    const char *name, unsigned int secs,
				    dovewarden_redis_queue_lock_callback_t *callback,
				    void *context)
{
	const char *argv[6];

	argv[0] = "SET";
	argv[1] = t_strconcat(queue->set.prefix, "lock:", name, NULL);
	argv[2] = queue->set.owner;
	argv[3] = "NX";
	argv[4] = "EX";
	argv[5] = dec2str(I_MAX(secs, 1U));
	return redis_queue_request_send(queue, NULL, N_ELEMENTS(argv), argv,
					redis_queue_lock_callback, callback,
					context, 0);
}

static void
redis_queue_unlock_callback(const redisReply *reply, const char *error,
			    void *context)
{
	struct redis_queue_request *request = context;
	const char *failure = redis_queue_reply_failure(reply, error);

	if (failure != NULL && !request->queue->deinitializing) {
		e_warning(request->queue->event, "Releasing a lock failed: %s",
			  failure);
	}
	i_free(request);
}

int dovewarden_redis_queue_unlock(struct dovewarden_redis_queue *queue,
				  const char *name)
{
	const char *argv[2];

	argv[0] = "DEL";
	argv[1] = t_strconcat(queue->set.prefix, "lock:", name, NULL);
	return redis_queue_request_send(queue, NULL, N_ELEMENTS(argv), argv,
					redis_queue_unlock_callback, NULL,
					NULL, 0);
}

/* Move time t of the queue's clock, whose now is queue_now, to ours.
   Returns FALSE if that overflows (the reply is garbage). */
static bool
redis_queue_time_convert(long long t, long long queue_now, time_t now,
			 time_t *time_r)
{
	long long diff, result;

	if (__builtin_sub_overflow(t, queue_now, &diff) ||
	    __builtin_add_overflow(diff, (long long)now, &result))
		return FALSE;
	*time_r = result;
	return TRUE;
}

static void
redis_queue_get_callback(const redisReply *reply, const char *error,
			 void *context)
{
	struct redis_queue_request *request = context;
	dovewarden_redis_queue_get_callback_t *callback = request->callback;
	const char *failure = redis_queue_reply_failure(reply, error);
	const struct dovewarden_redis_user **users;
	struct dovewarden_redis_user *user;
	const redisReply *r;
	long long v[11];
	unsigned int i, j, count = request->count;

	users = t_new(const struct dovewarden_redis_user *, count + 1);
	if (failure == NULL && (reply->type != REDIS_REPLY_ARRAY ||
				reply->elements != count))
		failure = "Unexpected reply";
	for (i = 0; failure == NULL && i < count; i++) {
		r = reply->element[i];
		if (r->type != REDIS_REPLY_ARRAY) {
			failure = "Unexpected reply";
			break;
		}
		if (r->elements == 0)
			continue;
		if (r->elements != 11) {
			failure = "Unexpected reply";
			break;
		}
		for (j = 0; j < 11; j++) {
			if (j != 7 && j != 9 &&
			    !redis_reply_integer(r->element[j], &v[j]))
				failure = "Unexpected reply";
		}
		if (failure != NULL)
			break;
		user = t_new(struct dovewarden_redis_user, 1);
		user->priority = v[0] < 0 || v[0] >= DOVEWARDEN_PRIORITY_COUNT ?
			DOVEWARDEN_PRIORITY_NONE : v[0];
		user->last_fast_sync = v[1];
		user->last_full_sync = v[2];
		user->last_successful_sync = v[3];
		user->last_verified = v[4];
		user->last_repaired = v[5];
		user->consecutive_failures = v[6];
		user->last_error = redis_reply_string(r->element[7]);
		/* the due time in the queue's clock, moved to ours */
		if (v[8] > 0 &&
		    !redis_queue_time_convert(v[8], v[10], ioloop_time,
					      &user->due)) {
			failure = "Unexpected reply";
			break;
		}
		user->syncing = redis_reply_string(r->element[9])[0] != '\0';
		users[i] = user;
	}
	callback(failure == NULL ? users : NULL, count, failure,
		 request->context);
	i_free(request);
}

int dovewarden_redis_queue_get_users(struct dovewarden_redis_queue *queue,
				     const char *const *usernames,
				     unsigned int count,
				     dovewarden_redis_queue_get_callback_t *callback,
				     void *context)
{
	const char **argv;
	unsigned int i, argc;

	argv = redis_queue_args(queue, count, &argc);
	for (i = 0; i < count; i++)
		argv[argc++] = usernames[i];
	return redis_queue_request_send(queue, &redis_queue_get_script, argc,
					argv, redis_queue_get_callback,
					callback, context, count);
}

static void
redis_queue_scan_callback(const redisReply *reply, const char *error,
			  void *context)
{
	struct redis_queue_request *request = context;
	struct dovewarden_redis_queue *queue = request->queue;
	dovewarden_redis_queue_scan_callback_t *callback = request->callback;
	const char *failure = redis_queue_reply_failure(reply, error);
	const char **names = NULL, *cursor = "0", *name;
	const redisReply *list;
	unsigned int i, count = 0;

	if (failure == NULL &&
	    (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	     reply->elements != 2 ||
	     reply->element[0]->type != REDIS_REPLY_STRING ||
	     reply->element[1]->type != REDIS_REPLY_ARRAY))
		failure = "Unexpected reply to SSCAN";
	if (failure == NULL) {
		cursor = redis_reply_string(reply->element[0]);
		list = reply->element[1];
		names = t_new(const char *, list->elements + 1);
		for (i = 0; i < list->elements; i++) {
			name = redis_reply_username(list->element[i]);
			if (name != NULL)
				names[count++] = name;
			else {
				redis_queue_invalid(queue, "username in the "
						    "users set",
						    list->element[i]);
			}
		}
	}
	callback(names, count, cursor, failure, request->context);
	i_free(request);
}

int dovewarden_redis_queue_scan(struct dovewarden_redis_queue *queue,
				const char *cursor,
				dovewarden_redis_queue_scan_callback_t *callback,
				void *context)
{
	const char *argv[5];

	argv[0] = "SSCAN";
	argv[1] = t_strconcat(queue->set.prefix, "users", NULL);
	argv[2] = cursor;
	argv[3] = "COUNT";
	argv[4] = "1000";
	return redis_queue_request_send(queue, NULL, N_ELEMENTS(argv), argv,
					redis_queue_scan_callback, callback,
					context, 0);
}

/* stats */

static bool
redis_queue_stats_parse(const redisReply *reply,
			struct dovewarden_redis_queue_stats *stats_r)
{
	long long v[9];
	unsigned int i;

	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 9)
		return FALSE;
	for (i = 0; i < 9; i++) {
		if (!redis_reply_integer(reply->element[i], &v[i]) || v[i] < 0)
			return FALSE;
	}
	i_zero(stats_r);
	stats_r->users = v[0];
	stats_r->syncing = v[1];
	stats_r->pending = v[2];
	stats_r->failed = v[3];
	/* in our clock */
	if (v[4] != 0 &&
	    !redis_queue_time_convert(v[4], v[5], ioloop_time,
				      &stats_r->oldest_pending))
		return FALSE;
	for (i = 0; i < 3; i++)
		stats_r->pending_by_priority[i + 1] = v[6 + i];
	return TRUE;
}

static void
redis_queue_stats_callback(const redisReply *reply, const char *error,
			   void *context)
{
	struct redis_queue_request *request = context;
	struct dovewarden_redis_queue *queue = request->queue;
	dovewarden_redis_queue_stats_callback_t *callback = request->callback;
	const char *failure = redis_queue_reply_failure(reply, error);
	struct dovewarden_redis_queue_stats stats;

	if (failure == NULL && !redis_queue_stats_parse(reply, &stats))
		failure = "Unexpected reply to stats";
	if (failure == NULL)
		queue->stats = stats;
	if (callback == NULL)
		queue->stats_running = FALSE;
	else {
		callback(failure == NULL ? &stats : NULL, failure,
			 request->context);
	}
	i_free(request);
}

int dovewarden_redis_queue_read_stats(struct dovewarden_redis_queue *queue,
				      dovewarden_redis_queue_stats_callback_t *callback,
				      void *context)
{
	const char **argv;
	unsigned int argc;

	argv = redis_queue_args(queue, 0, &argc);
	return redis_queue_request_send(queue, &redis_queue_stats_script,
					argc, argv,
					redis_queue_stats_callback, callback,
					context, 0);
}

static void redis_queue_stats_refresh(struct dovewarden_redis_queue *queue)
{
	if (queue->stats_running)
		return;
	T_BEGIN {
		if (dovewarden_redis_queue_read_stats(queue, NULL, NULL) == 0)
			queue->stats_running = TRUE;
	} T_END;
}

void dovewarden_redis_queue_get_stats(struct dovewarden_redis_queue *queue,
				      struct dovewarden_redis_queue_stats *stats_r)
{
	*stats_r = queue->stats;
}

void dovewarden_redis_queue_get_buffer(struct dovewarden_redis_queue *queue,
				       unsigned int *buffered_r,
				       uint64_t *dropped_r)
{
	*buffered_r = hash_table_count(queue->buffer);
	*dropped_r = queue->dropped;
}

bool dovewarden_redis_queue_is_connected(struct dovewarden_redis_queue *queue)
{
	return dovewarden_redis_get_state(queue->redis) ==
		DOVEWARDEN_REDIS_STATE_CONNECTED;
}

static void
redis_queue_takeback_callback(const redisReply *reply, const char *error,
			      void *context)
{
	struct redis_queue_request *request = context;
	struct dovewarden_redis_queue *queue = request->queue;
	const char *failure = redis_queue_reply_failure(reply, error);
	long long count;

	i_free(request);
	if (failure == NULL && !redis_reply_integer(reply, &count))
		failure = "Unexpected reply to takeback";
	if (failure != NULL) {
		/* they expire as any claim does */
		if (!queue->deinitializing) {
			e_warning(queue->event, "Couldn't take back the claims "
				  "of this instance's previous run: %s",
				  failure);
		}
		return;
	}
	queue->took_back = TRUE;
	if (count > 0) {
		queue->claims_taken_back += count;
		e_info(queue->event, "Took back %lld claims of this instance's "
		       "previous run (%s); their users are synced again",
		       count, queue->set.identity);
	}
}

static void redis_queue_takeback(struct dovewarden_redis_queue *queue)
{
	const char **argv;
	unsigned int argc;

	argv = redis_queue_args(queue, 2, &argc);
	argv[argc++] = t_strconcat(queue->set.identity, ":", NULL);
	argv[argc++] = queue->set.owner;
	(void)redis_queue_request_send(queue, &redis_queue_takeback_script,
				       argc, argv,
				       redis_queue_takeback_callback, NULL,
				       NULL, 0);
}

static int
redis_queue_retry_send(struct dovewarden_redis_queue *queue,
		       const char *username, const char *cursor,
		       unsigned int count,
		       dovewarden_redis_queue_retry_callback_t *callback,
		       void *context);

static void
redis_queue_retry_callback(const redisReply *reply, const char *error,
			   void *context)
{
	struct redis_queue_request *request = context;
	struct dovewarden_redis_queue *queue = request->queue;
	dovewarden_redis_queue_retry_callback_t *callback = request->callback;
	void *callback_context = request->context;
	const char *failure = redis_queue_reply_failure(reply, error);
	const char *cursor = "0";
	unsigned int count = request->count;
	long long n = 0;

	i_free(request);
	if (failure == NULL &&
	    (reply == NULL || reply->type != REDIS_REPLY_ARRAY ||
	     reply->elements != 2 ||
	     !redis_reply_integer(reply->element[0], &n) || n < 0 ||
	     reply->element[1]->type != REDIS_REPLY_STRING))
		failure = "Unexpected reply to retry";
	if (failure == NULL) {
		count += I_MIN(n, UINT_MAX - count);
		cursor = redis_reply_string(reply->element[1]);
		/* the next batch of the failed set */
		if (strcmp(cursor, "0") != 0 &&
		    redis_queue_retry_send(queue, "", cursor, count, callback,
					   callback_context) == 0)
			return;
		if (strcmp(cursor, "0") != 0)
			failure = "Redis unreachable";
	}
	if (callback != NULL)
		callback(count, failure, callback_context);
}

static int
redis_queue_retry_send(struct dovewarden_redis_queue *queue,
		       const char *username, const char *cursor,
		       unsigned int count,
		       dovewarden_redis_queue_retry_callback_t *callback,
		       void *context)
{
	const char **argv;
	unsigned int argc;

	argv = redis_queue_args(queue, 2, &argc);
	argv[argc++] = username;
	argv[argc++] = cursor;
	return redis_queue_request_send(queue, &redis_queue_retry_script,
					argc, argv,
					redis_queue_retry_callback, callback,
					context, count);
}

int dovewarden_redis_queue_retry_failed(struct dovewarden_redis_queue *queue,
					const char *username,
					dovewarden_redis_queue_retry_callback_t *callback,
					void *context)
{
	return redis_queue_retry_send(queue, username == NULL ? "" : username,
				      "0", 0, callback, context);
}

uint64_t
dovewarden_redis_queue_get_claims_taken_back(struct dovewarden_redis_queue *queue)
{
	return queue->claims_taken_back;
}

/* overdue full syncs after a downtime */

static void redis_queue_reslot_list(struct dovewarden_redis_queue *queue);

static void redis_queue_reslot_failed(struct dovewarden_redis_queue *queue,
				      const char *failure)
{
	/* again at the next connection */
	queue->reslot_running = FALSE;
	if (!queue->deinitializing) {
		e_warning(queue->event, "Couldn't give overdue full syncs "
			  "their slots: %s", failure);
	}
}

static void redis_queue_reslot_logged(struct dovewarden_redis_queue *queue)
{
	queue->reslot_log = FALSE;
	if (queue->reslot_count == 0)
		return;
	e_info(queue->event, "%u overdue full syncs run at their slots "
	       "within the next %u secs", queue->reslot_count,
	       queue->set.queue.full_sync_interval_secs);
}

static void
redis_queue_reslot_set_callback(const redisReply *reply, const char *error,
				void *context)
{
	struct redis_queue_request *request = context;
	struct dovewarden_redis_queue *queue = request->queue;
	const char *failure = redis_queue_reply_failure(reply, error);
	long long n;

	i_free(request);
	if (failure == NULL && (!redis_reply_integer(reply, &n) || n < 0))
		failure = "Unexpected reply to reslot";
	if (failure != NULL) {
		redis_queue_reslot_failed(queue, failure);
		return;
	}
	queue->reslot_count += I_MIN(n, UINT_MAX - queue->reslot_count);
	if (queue->reslot_log)
		redis_queue_reslot_logged(queue);
}

/* Give the overdue users of a list step's reply their slots */
static int
redis_queue_reslot_set(struct dovewarden_redis_queue *queue,
		       const redisReply *reply)
{
	unsigned int interval = queue->set.queue.full_sync_interval_secs;
	const char **argv, *username;
	unsigned int i, argc, count = reply->elements - 2;

	argv = redis_queue_args(queue, count * 2 + 1, &argc);
	argv[argc++] = "set";
	for (i = 0; i < count; i++) {
		username = redis_reply_username(reply->element[2 + i]);
		if (username == NULL)
			continue;
		argv[argc++] = username;
		argv[argc++] = dec2str(dovewarden_queue_full_sync_slot(
			username, interval, ioloop_time));
	}
	return redis_queue_request_send(queue, &redis_queue_reslot_script,
					argc, argv,
					redis_queue_reslot_set_callback,
					NULL, NULL, 0);
}

static void
redis_queue_reslot_list_callback(const redisReply *reply, const char *error,
				 void *context)
{
	struct redis_queue_request *request = context;
	struct dovewarden_redis_queue *queue = request->queue;
	const char *failure = redis_queue_reply_failure(reply, error);
	long long looked = 0, leaving = 0;
	bool set = FALSE;

	i_free(request);
	if (failure == NULL &&
	    (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 ||
	     !redis_reply_integer(reply->element[0], &looked) ||
	     !redis_reply_integer(reply->element[1], &leaving) ||
	     leaving < 0 || looked < leaving ||
	     looked > REDIS_QUEUE_RESLOT_BATCH))
		failure = "Unexpected reply to reslot";
	if (failure == NULL && reply->elements > 2) T_BEGIN {
		if (redis_queue_reslot_set(queue, reply) < 0)
			failure = "Redis unreachable";
		set = TRUE;
	} T_END;
	if (failure != NULL) {
		redis_queue_reslot_failed(queue, failure);
		return;
	}
	/* the ones that leave the due part shift the rest down */
	queue->reslot_offset += looked - leaving;
	if (looked == REDIS_QUEUE_RESLOT_BATCH) {
		redis_queue_reslot_list(queue);
		return;
	}
	if (!queue->reslot_ready) {
		queue->reslot_ready = TRUE;
		queue->reslot_offset = 0;
		redis_queue_reslot_list(queue);
		return;
	}
	queue->reslot_running = FALSE;
	queue->reslotted = TRUE;
	if (set)
		queue->reslot_log = TRUE;
	else
		redis_queue_reslot_logged(queue);
}

static void redis_queue_reslot_list(struct dovewarden_redis_queue *queue)
{
	const char **argv;
	unsigned int argc;
	int ret;

	T_BEGIN {
		argv = redis_queue_args(queue, 4, &argc);
		argv[argc++] = "list";
		argv[argc++] = queue->reslot_ready ? "ready" : "wait";
		argv[argc++] = dec2str(queue->reslot_offset);
		argv[argc++] = dec2str(REDIS_QUEUE_RESLOT_BATCH);
		ret = redis_queue_request_send(queue,
			&redis_queue_reslot_script, argc, argv,
			redis_queue_reslot_list_callback, NULL, NULL, 0);
	} T_END;
	if (ret < 0)
		queue->reslot_running = FALSE;
}

/* Once per process, at the first connection (before the first pop): the
   users whose periodic full sync is overdue, as after a downtime, get
   their slots within the next interval, as the built-in queue does at
   start (but not users still in a failure back-off: their retry is a
   full sync). */
static void redis_queue_reslot(struct dovewarden_redis_queue *queue)
{
	if (queue->reslotted || queue->reslot_running ||
	    queue->set.queue.full_sync_interval_secs == 0)
		return;
	queue->reslot_running = TRUE;
	queue->reslot_ready = FALSE;
	queue->reslot_offset = 0;
	queue->reslot_count = 0;
	redis_queue_reslot_list(queue);
}

static void
redis_queue_writer_callback(const redisReply *reply, const char *error,
			    void *context)
{
	struct redis_queue_request *request = context;
	struct dovewarden_redis_queue *queue = request->queue;
	const char *failure = redis_queue_reply_failure(reply, error);

	i_free(request);
	if (failure != NULL && !queue->deinitializing)
		e_warning(queue->event, "Couldn't record this instance's "
			  "version in Redis: %s", failure);
}

#define DOVEWARDEN_REDIS_QUEUE_WRITER \
	"dovewarden "DOVEWARDEN_VERSION" on Dovecot "DOVECOT_VERSION

/* <prefix>writers: which dovewarden (and Dovecot) each instance runs,
   field <server>/<identity> (or <server>), so that the data says what wrote it (an
   upgrade runs old and new instances on one queue) */
static void redis_queue_write_writer(struct dovewarden_redis_queue *queue)
{
	const char *argv[4];

	queue->writer_written = TRUE;
	argv[0] = "HSET";
	argv[1] = t_strconcat(queue->set.prefix, "writers", NULL);
	/* without an identity the server's name alone: an owner differs at
	   every run, and the hash would grow with the restarts */
	argv[2] = queue->set.identity == NULL ? queue->set.server :
		t_strconcat(queue->set.server, "/", queue->set.identity, NULL);
	argv[3] = t_strdup_printf("%s since %lld",
				  DOVEWARDEN_REDIS_QUEUE_WRITER,
				  (long long)ioloop_time);
	(void)redis_queue_request_send(queue, NULL, N_ELEMENTS(argv), argv,
				       redis_queue_writer_callback, NULL,
				       NULL, 0);
}

/* connection events */

static void redis_queue_connected(void *context)
{
	struct dovewarden_redis_queue *queue = context;

	T_BEGIN {
		/* before the first pop: our claims are due again at once */
		if (queue->set.identity != NULL && !queue->took_back)
			redis_queue_takeback(queue);
		if (!queue->writer_written)
			redis_queue_write_writer(queue);
		redis_queue_reslot(queue);
		redis_queue_send_finishes(queue);
	} T_END;
	redis_queue_flush_soon(queue);
	redis_queue_renew(queue);
	redis_queue_stats_refresh(queue);
	if (queue->callbacks->connected != NULL)
		queue->callbacks->connected(queue->context);
}

static void redis_queue_disconnected(const char *error ATTR_UNUSED,
				     void *context)
{
	struct dovewarden_redis_queue *queue = context;

	timeout_remove(&queue->to_flush);
	queue->stats_running = FALSE;
}

static const struct dovewarden_redis_callbacks redis_queue_redis_callbacks = {
	.connected = redis_queue_connected,
	.disconnected = redis_queue_disconnected,
};

static const struct dovewarden_redis_callbacks redis_queue_sub_callbacks = {
	.connected = NULL,
	.disconnected = NULL,
};

struct redis_queue_done_check {
	struct dovewarden_redis_queue *queue;
	char *username;
};

static void
redis_queue_done_callback(const redisReply *reply, const char *error,
			  void *context)
{
	struct redis_queue_done_check *check = context;
	struct dovewarden_redis_queue *queue = check->queue;
	const char *result;
	long long seq;

	/* nothing recorded (or Redis went away): no answer; a wait that
	   gets none times out */
	if (error == NULL && reply != NULL &&
	    reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
	    redis_reply_integer(reply->element[0], &seq) && seq >= 0 &&
	    !queue->deinitializing && queue->callbacks->sync_done != NULL) {
		result = redis_reply_string(reply->element[1]);
		queue->callbacks->sync_done(check->username, seq, result,
					    queue->context);
	}
	i_free(check->username);
	i_free(check);
}

/* A message on <prefix>done says that a sync of a user finished. Any
   client that may PUBLISH could send one, so it is only a hint: the
   result that answers waits is the one finish.lua recorded in the user's
   hash, read back with done.lua. */
static void redis_queue_message(const char *message, void *context)
{
	struct dovewarden_redis_queue *queue = context;
	const char *const *args = t_strsplit(message, " ");
	struct redis_queue_done_check *check;
	const char *username, **argv;
	unsigned int argc;
	uint64_t seq;

	/* the username may contain spaces: it is all after the second */
	if (str_array_length(args) < 3 || str_to_uint64(args[1], &seq) < 0)
		return;
	username = message + strlen(args[0]) + 1 + strlen(args[1]) + 1;
	if (!dovewarden_username_is_valid(username)) {
		redis_queue_invalid(queue, "username in a sync result "
				    "message", NULL);
		return;
	}
	if (queue->callbacks->sync_done == NULL)
		return;
	check = i_new(struct redis_queue_done_check, 1);
	check->queue = queue;
	check->username = i_strdup(username);
	argv = redis_queue_args(queue, 1, &argc);
	argv[argc++] = username;
	if (dovewarden_redis_eval(queue->redis, &redis_queue_done_script,
				  argc, argv, redis_queue_done_callback,
				  check) < 0) {
		i_free(check->username);
		i_free(check);
	}
}

/* Load the notifications buffered by an earlier run that could not reach
   Redis. Invalid lines are skipped; the file with them is kept aside as
   <path>.corrupt for the admin. The file is then rewritten with one line
   per user, and the buffer is sent once Redis is connected. */
static void redis_queue_buffer_file_load(struct dovewarden_redis_queue *queue)
{
	struct dovewarden_store_journal_record rec;
	struct istream *input;
	const char *line, *reason, *first_reason = NULL, *corrupt_path;
	unsigned int lines = 0, invalid = 0;
	int fd;

	fd = open(queue->buffer_path, O_RDONLY);
	if (fd == -1) {
		if (errno != ENOENT) {
			e_error(queue->event, "open(%s) failed: %m",
				queue->buffer_path);
		}
		return;
	}
	input = i_stream_create_fd_autoclose(&fd,
		REDIS_QUEUE_BUFFER_FILE_MAX_LINE);
	/* the last line may lack its LF (a full disk): parse it too, an
	   invalid one is kept aside with the file */
	i_stream_set_return_partial_line(input, TRUE);
	while ((line = i_stream_read_next_line(input)) != NULL) T_BEGIN {
		lines++;
		if (dovewarden_store_parse_journal(line, &rec, &reason) < 0) {
			if (invalid++ == 0) {
				/* a static string */
				first_reason = reason;
			}
		} else if (rec.cmd == DOVEWARDEN_STORE_JOURNAL_REMOVE) {
			(void)redis_queue_buffer_forget(queue, rec.username);
		} else {
			(void)redis_queue_buffer_update(queue, rec.username,
				rec.priority, rec.cmd ==
				DOVEWARDEN_STORE_JOURNAL_FORCE_FULL_SYNC);
		}
	} T_END;
	if (input->stream_errno != 0) {
		/* also a line longer than the buffer (ENOBUFS): what was
		   not read stays in the file kept aside */
		if (invalid++ == 0) {
			first_reason = input->stream_errno == ENOBUFS ?
				"line too long" :
				t_strdup(i_stream_get_error(input));
		}
	}
	i_stream_destroy(&input);

	if (invalid > 0) {
		corrupt_path = t_strconcat(queue->buffer_path, ".corrupt",
					   NULL);
		if (rename(queue->buffer_path, corrupt_path) < 0) {
			e_error(queue->event, "rename(%s, %s) failed: %m",
				queue->buffer_path, corrupt_path);
			corrupt_path = "(not kept)";
		}
		e_warning(queue->event, "%s: Skipped %u invalid lines of %u "
			  "(the first one: %s); the file is kept as %s",
			  queue->buffer_path, invalid, lines, first_reason,
			  corrupt_path);
	}
	if (hash_table_count(queue->buffer) > 0) {
		e_info(queue->event, "%u users' notifications that were "
		       "buffered while Redis was unreachable are sent once "
		       "it is connected (%s)", hash_table_count(queue->buffer),
		       queue->buffer_path);
		redis_queue_buffer_file_rewrite(queue);
	} else if (invalid == 0 && unlink(queue->buffer_path) < 0 &&
		   errno != ENOENT) {
		e_error(queue->event, "unlink(%s) failed: %m",
			queue->buffer_path);
	}
}

struct dovewarden_redis_queue *
dovewarden_redis_queue_init(const struct dovewarden_redis_queue_settings *set,
			    struct event *event_parent,
			    const struct dovewarden_redis_queue_callbacks *callbacks,
			    void *context)
{
	struct dovewarden_redis_queue *queue;
	struct dovewarden_redis_settings sub_set;
	unsigned int i;

	queue = i_new(struct dovewarden_redis_queue, 1);
	queue->set = *set;
	queue->set.prefix = queue->prefix = i_strdup(set->prefix);
	queue->set.owner = queue->owner = i_strdup(set->owner);
	queue->set.identity = queue->identity = i_strdup(set->identity);
	queue->set.server = queue->server = i_strdup(set->server);
	queue->callbacks = callbacks;
	queue->context = context;
	queue->event = event_create(event_parent);
	queue->invalid_log_limit.window_secs = 60;
	queue->invalid_log_limit.max_per_window =
		REDIS_QUEUE_INVALID_LOG_MAX_PER_MINUTE;
	hash_table_create(&queue->buffer, default_pool, 0, str_hash, strcmp);
	queue->buffer_fd = -1;
	if (set->buffer_path != NULL) {
		queue->set.buffer_path = queue->buffer_path =
			i_strdup(set->buffer_path);
		T_BEGIN {
			redis_queue_buffer_file_load(queue);
		} T_END;
	}

	queue->redis = dovewarden_redis_init(&set->redis, queue->event,
					     &redis_queue_redis_callbacks,
					     queue);
	for (i = 0; i < N_ELEMENTS(redis_queue_scripts); i++)
		dovewarden_redis_add_script(queue->redis, redis_queue_scripts[i]);
	sub_set = set->redis;
	sub_set.subscriber = TRUE;
	queue->sub = dovewarden_redis_init(&sub_set, queue->event,
					   &redis_queue_sub_callbacks, queue);
	dovewarden_redis_subscribe(queue->sub, t_strconcat(
		queue->set.prefix, "done", NULL), redis_queue_message, queue);

	queue->to_renew = timeout_add(I_MAX(set->claim_timeout_secs / 3, 1U) *
				      1000, redis_queue_renew, queue);
	queue->to_stats = timeout_add(REDIS_QUEUE_STATS_INTERVAL_MSECS,
				      redis_queue_stats_refresh, queue);
	return queue;
}

/* At shutdown: write what is still buffered and give the claims back,
   over a blocking connection (the ioloop is going away). Returns FALSE if
   something could not be written. */
static bool redis_queue_deinit_flush(struct dovewarden_redis_queue *queue)
{
	struct hash_iterate_context *iter;
	struct redis_queue_buffered *buf;
	struct dovewarden_redis_job *job;
	struct redis_queue_finish *finish;
	struct dovewarden_redis_blocking *redis;
	const char **argv, *error = NULL;
	char *username;
	unsigned int argc, sent = 0, total;

	total = hash_table_count(queue->buffer);
	if (total == 0 && queue->jobs == NULL && queue->finishes == NULL)
		return TRUE;

	if (dovewarden_redis_blocking_connect(&queue->set.redis, &redis,
					      &error) < 0)
		goto out;

	iter = hash_table_iterate_init(queue->buffer);
	while (error == NULL &&
	       hash_table_iterate(iter, queue->buffer, &username, &buf)) {
		argv = redis_queue_notify_args(queue, username, buf->priority,
					       buf->force_full, FALSE,
					       DOVEWARDEN_QUEUE_SETTLE_ALWAYS,
					       &argc);
		if (dovewarden_redis_blocking_eval(redis,
						   &redis_queue_notify_script,
						   argc, argv, &error) == 0)
			sent++;
	}
	hash_table_iterate_deinit(&iter);

	for (finish = queue->finishes; finish != NULL && error == NULL;
	     finish = finish->next) {
		argv = redis_queue_finish_args(queue, finish, &argc);
		(void)dovewarden_redis_blocking_eval(redis,
						     &redis_queue_finish_script,
						     argc, argv, &error);
	}
	for (job = queue->jobs; job != NULL && error == NULL;
	     job = job->next) {
		struct redis_queue_finish release = {
			.username = job->username,
			.result = "release",
			.state = (char *)"",
			.error = (char *)"",
		};

		argv = redis_queue_finish_args(queue, &release, &argc);
		(void)dovewarden_redis_blocking_eval(redis,
						     &redis_queue_finish_script,
						     argc, argv, &error);
	}
	dovewarden_redis_blocking_disconnect(&redis);
out:
	if (error != NULL && queue->buffer_fd != -1) {
		e_error(queue->event, "At shutdown: %u of %u buffered users' "
			"notifications could not be written to Redis: %s "
			"(kept in %s for the next start)",
			total - sent, total, error, queue->buffer_path);
	} else if (error != NULL) {
		e_error(queue->event, "At shutdown: %u of %u buffered users' "
			"notifications could not be written to Redis: %s "
			"(the periodic full syncs replicate them)",
			total - sent, total, error);
	} else if (total > 0) {
		e_info(queue->event, "At shutdown: wrote %u buffered users' "
		       "notifications to Redis", total);
	}
	return error == NULL;
}

void dovewarden_redis_queue_deinit(struct dovewarden_redis_queue **_queue)
{
	struct dovewarden_redis_queue *queue = *_queue;
	struct redis_queue_finish *finish;

	*_queue = NULL;
	queue->deinitializing = TRUE;
	timeout_remove(&queue->to_flush);
	timeout_remove(&queue->to_renew);
	timeout_remove(&queue->to_stats);
	/* fails the commands in flight: their notifications go back to the
	   buffer */
	dovewarden_redis_deinit(&queue->redis);
	dovewarden_redis_deinit(&queue->sub);
	T_BEGIN {
		if (redis_queue_deinit_flush(queue) &&
		    redis_queue_buffer_file_is_ours(queue) &&
		    unlink(queue->buffer_path) < 0 && errno != ENOENT) {
			e_error(queue->event, "unlink(%s) failed: %m",
				queue->buffer_path);
		}
	} T_END;
	while (queue->jobs != NULL)
		redis_queue_job_free(queue, queue->jobs);
	while ((finish = queue->finishes) != NULL) {
		DLLIST_REMOVE(&queue->finishes, finish);
		redis_queue_finish_free(finish);
	}
	redis_queue_buffer_clear(queue);
	hash_table_destroy(&queue->buffer);
	i_close_fd(&queue->buffer_fd);
	i_free(queue->buffer_path);
	event_unref(&queue->event);
	i_free(queue->prefix);
	i_free(queue->owner);
	i_free(queue->identity);
	i_free(queue->server);
	i_free(queue);
}

static void
redis_queue_import_callback(const redisReply *reply, const char *error,
			    void *context)
{
	struct redis_queue_request *request = context;
	dovewarden_redis_queue_import_callback_t *callback = request->callback;
	const char *failure = redis_queue_reply_failure(reply, error);
	void *callback_context = request->context;
	long long ret = -1;

	/* import.lua returns 1 (new user) or 0 */
	if (failure == NULL &&
	    (!redis_reply_integer(reply, &ret) || ret < 0 || ret > 1))
		failure = "Unexpected reply to import";
	i_free(request);
	callback(failure != NULL ? -1 : (int)ret, failure, callback_context);
}

int dovewarden_redis_queue_import(struct dovewarden_redis_queue *queue,
				  const struct dovewarden_redis_import_user *user,
				  dovewarden_redis_queue_import_callback_t *callback,
				  void *context)
{
	const char **argv;
	unsigned int argc;

	argv = redis_queue_args(queue, 19, &argc);
	argv[argc++] = user->username;
	argv[argc++] = dec2str(user->priority);
	argv[argc++] = dec2str(user->pending_key);
	argv[argc++] = dec2str(user->pending_since);
	argv[argc++] = dec2str(user->last_update);
	argv[argc++] = user->state;
	argv[argc++] = dec2str(user->last_fast_sync);
	argv[argc++] = dec2str(user->last_full_sync);
	argv[argc++] = dec2str(user->last_successful_sync);
	argv[argc++] = dec2str(user->consecutive_failures);
	argv[argc++] = user->last_error;
	argv[argc++] = dec2str(user->next_try);
	argv[argc++] = user->force_full_sync ? "1" : "0";
	argv[argc++] = dec2str(user->settle_first_change);
	argv[argc++] = dec2str(user->settle_last_change);
	argv[argc++] = dec2str(user->last_verified);
	argv[argc++] = dec2str(user->last_repaired);
	argv[argc++] = dec2str(user->first_full_sync);
	argv[argc++] = queue->set.server;
	return redis_queue_request_send(queue, &redis_queue_import_script,
					argc, argv,
					redis_queue_import_callback,
					callback, context, 0);
}

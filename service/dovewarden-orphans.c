/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "ioloop.h"
#include "istream.h"
#include "str.h"
#include "strescape.h"
#include "strnum.h"
#include "write-full.h"
#include "dovewarden-protocol.h"
#include "dovewarden-orphans.h"

#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>

/* Longer lines are corrupt: a username is shorter */
#define ORPHANS_MAX_LINE_LENGTH 4096

struct orphan_record {
	time_t started;
	/* started by a previous process */
	bool inherited;
	/* a sync of the user waits for it, and takes its slot */
	bool waited_for;
};

struct dovewarden_orphans {
	struct event *event;
	/* the Dovecot master this process runs under, and when it started
	   (0: unknown) */
	pid_t master_pid;
	time_t master_started;
	char *path, *tmp_path;
	/* -1 after an error: the service goes on without records */
	int fd;
	uoff_t size;

	/* username -> struct orphan_record */
	HASH_TABLE(char *, struct orphan_record *) records;
	unsigned int inherited_count;
	/* users whose dsync ended without any service process seeing its
	   result, found by the load (see
	   dovewarden_orphans_take_interrupted()): username -> itself */
	HASH_TABLE(char *, char *) interrupted;
};

int dovewarden_orphans_parse_line(const char *line, time_t *started_r,
				  pid_t *master_pid_r,
				  const char **username_r,
				  const char **reason_r)
{
	const char *const *args = t_strsplit_tabescaped(line);
	unsigned int count = str_array_length(args);
	bool ended = count > 0 && strcmp(args[0], "-") == 0;

	*started_r = 0;
	*master_pid_r = 0;
	*username_r = NULL;
	if (count != (ended ? 2 : 3)) {
		*reason_r = "wrong number of fields";
		return -1;
	}
	if (!dovewarden_username_is_valid(args[count - 1])) {
		*reason_r = "invalid username";
		return -1;
	}
	if (ended) {
		*username_r = args[1];
		return 0;
	}
	if (str_to_time(args[0], started_r) < 0 || *started_r <= 0) {
		*started_r = 0;
		*reason_r = "invalid time";
		return -1;
	}
	if (str_to_pid(args[1], master_pid_r) < 0 || *master_pid_r <= 0) {
		*started_r = 0;
		*master_pid_r = 0;
		*reason_r = "invalid pid";
		return -1;
	}
	*username_r = args[2];
	return 1;
}

static void orphans_failed(struct dovewarden_orphans *orphans,
			   const char *func, const char *path)
{
	e_error(orphans->event, "%s(%s) failed: %m (restarts may sync the "
		"users of unfinished dsyncs again at once)", func, path);
	i_close_fd(&orphans->fd);
}

static void
orphans_set(struct dovewarden_orphans *orphans, const char *username,
	    time_t started, bool inherited)
{
	struct orphan_record *rec;
	char *key;

	if (!hash_table_lookup_full(orphans->records, username, &key, &rec)) {
		key = i_strdup(username);
		rec = i_new(struct orphan_record, 1);
		hash_table_insert(orphans->records, key, rec);
	} else if (rec->inherited) {
		orphans->inherited_count--;
	}
	rec->started = started;
	rec->inherited = inherited;
	rec->waited_for = FALSE;
	if (inherited)
		orphans->inherited_count++;
}

static void
orphans_unset(struct dovewarden_orphans *orphans, const char *username)
{
	struct orphan_record *rec;
	char *key;

	if (!hash_table_lookup_full(orphans->records, username, &key, &rec))
		return;
	if (rec->inherited)
		orphans->inherited_count--;
	hash_table_remove(orphans->records, username);
	i_free(key);
	i_free(rec);
}

static void
orphans_set_interrupted(struct dovewarden_orphans *orphans,
			const char *username, bool interrupted)
{
	char *key, *value;

	if (hash_table_lookup_full(orphans->interrupted, username,
				   &key, &value)) {
		if (interrupted)
			return;
		hash_table_remove(orphans->interrupted, username);
		i_free(key);
	} else if (interrupted) {
		key = i_strdup(username);
		hash_table_insert(orphans->interrupted, key, key);
	}
}

static void orphans_clear(struct dovewarden_orphans *orphans)
{
	struct hash_iterate_context *iter;
	struct orphan_record *rec;
	char *key;

	iter = hash_table_iterate_init(orphans->records);
	while (hash_table_iterate(iter, orphans->records, &key, &rec)) {
		i_free(key);
		i_free(rec);
	}
	hash_table_iterate_deinit(&iter);
	hash_table_clear(orphans->records, FALSE);
	orphans->inherited_count = 0;
}

static void
orphans_append_started(struct dovewarden_orphans *orphans, string_t *str,
		       const char *username, time_t started)
{
	str_printfa(str, "%lld\t%ld\t", (long long)started,
		    (long)orphans->master_pid);
	str_append_tabescaped(str, username);
	str_append_c(str, '\n');
}

/* Read the file into records: returns how many lines were invalid */
static unsigned int orphans_load(struct dovewarden_orphans *orphans)
{
	struct istream *input;
	const char *line, *username, *reason, *first_reason = NULL;
	unsigned int invalid = 0;
	time_t started;
	pid_t master_pid;
	int fd, ret;

	fd = open(orphans->path, O_RDONLY);
	if (fd == -1) {
		if (errno != ENOENT)
			e_error(orphans->event, "open(%s) failed: %m",
				orphans->path);
		return 0;
	}
	input = i_stream_create_fd_autoclose(&fd, ORPHANS_MAX_LINE_LENGTH);
	while ((line = i_stream_read_next_line(input)) != NULL) T_BEGIN {
		ret = dovewarden_orphans_parse_line(line, &started,
						    &master_pid, &username,
						    &reason);
		/* a dsync whose end no service saw: its result (on the
		   other server too) is unknown, whoever stopped it */
		if (ret >= 0)
			orphans_set_interrupted(orphans, username, ret > 0);
		if (ret > 0 && master_pid == orphans->master_pid &&
		    started >= orphans->master_started)
			orphans_set(orphans, username, started, TRUE);
		else if (ret > 0) {
			/* Dovecot was restarted since: its doveadm-server
			   processes were stopped with it */
			orphans_unset(orphans, username);
		} else if (ret == 0)
			orphans_unset(orphans, username);
		else if (invalid++ == 0)
			first_reason = reason;
	} T_END;
	if (input->stream_errno != 0) {
		e_error(orphans->event, "read(%s) failed: %s", orphans->path,
			i_stream_get_error(input));
	} else if (!input->eof) {
		/* a line longer than the buffer */
		invalid++;
		first_reason = "line too long";
	}
	if (invalid > 0) {
		e_warning(orphans->event, "%s: Skipped %u invalid lines "
			  "(the first one: %s)", orphans->path, invalid,
			  first_reason);
	}
	i_stream_destroy(&input);
	return invalid;
}

/* Replace the file with the records, opened for appending */
static void orphans_rewrite(struct dovewarden_orphans *orphans)
{
	struct hash_iterate_context *iter;
	struct orphan_record *rec;
	string_t *str = t_str_new(256);
	char *key;
	int fd;

	i_close_fd(&orphans->fd);
	iter = hash_table_iterate_init(orphans->records);
	while (hash_table_iterate(iter, orphans->records, &key, &rec))
		orphans_append_started(orphans, str, key, rec->started);
	hash_table_iterate_deinit(&iter);

	fd = open(orphans->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND,
		  0600);
	if (fd == -1) {
		orphans_failed(orphans, "open", orphans->tmp_path);
		return;
	}
	orphans->fd = fd;
	if (write_full(fd, str_data(str), str_len(str)) < 0) {
		orphans_failed(orphans, "write", orphans->tmp_path);
		i_unlink_if_exists(orphans->tmp_path);
		return;
	}
	if (rename(orphans->tmp_path, orphans->path) < 0) {
		orphans_failed(orphans, "rename", orphans->path);
		i_unlink_if_exists(orphans->tmp_path);
		return;
	}
	orphans->size = str_len(str);
}

static void
orphans_append(struct dovewarden_orphans *orphans, const string_t *str)
{
	if (orphans->fd == -1)
		return;
	if (orphans->size + str_len(str) > DOVEWARDEN_ORPHANS_COMPACT_SIZE) {
		/* the records already hold this line's change */
		orphans_rewrite(orphans);
		return;
	}
	if (write_full(orphans->fd, str_data(str), str_len(str)) < 0) {
		orphans_failed(orphans, "write", orphans->path);
		return;
	}
	orphans->size += str_len(str);
}

time_t dovewarden_orphans_process_started(pid_t pid)
{
	const char *const *fields, *p;
	struct timespec boot;
	uintmax_t ticks;
	long hz = sysconf(_SC_CLK_TCK);
	char buf[1024];
	ssize_t ret;
	int fd;

	/* field 22 of /proc/<pid>/stat: when it started, in clock ticks
	   of CLOCK_BOOTTIME */
	fd = open(t_strdup_printf("/proc/%ld/stat", (long)pid), O_RDONLY);
	if (fd == -1)
		return 0;
	ret = read(fd, buf, sizeof(buf) - 1);
	i_close_fd(&fd);
	if (ret <= 0)
		return 0;
	buf[ret] = '\0';
	/* the command name may contain anything but ends with the last ')';
	   the fields after it start with field 3 */
	p = strrchr(buf, ')');
	if (p == NULL || p[1] != ' ')
		return 0;
	fields = t_strsplit_spaces(p + 2, " ");
	if (str_array_length(fields) < 20 ||
	    str_to_uintmax(fields[19], &ticks) < 0 || hz <= 0 ||
	    clock_gettime(CLOCK_BOOTTIME, &boot) < 0 ||
	    (uintmax_t)boot.tv_sec < ticks / (uintmax_t)hz)
		return 0;
	/* rounded down: never later than the real start */
	return time(NULL) - (time_t)((uintmax_t)boot.tv_sec -
				     ticks / (uintmax_t)hz) - 1;
}

struct dovewarden_orphans *
dovewarden_orphans_init(const char *path, pid_t master_pid,
			time_t master_started, struct event *event)
{
	struct dovewarden_orphans *orphans;
	struct hash_iterate_context *iter;
	struct orphan_record *rec;
	time_t next_end;
	char *key;

	orphans = i_new(struct dovewarden_orphans, 1);
	orphans->event = event;
	orphans->master_pid = master_pid;
	orphans->master_started = master_started;
	orphans->path = i_strdup(path);
	orphans->tmp_path = path == NULL ? NULL :
		i_strconcat(path, ".tmp", NULL);
	orphans->fd = -1;
	hash_table_create(&orphans->records, default_pool, 0,
			  str_hash, strcmp);
	hash_table_create(&orphans->interrupted, default_pool, 0,
			  str_hash, strcmp);
	if (path == NULL)
		return orphans;

	T_BEGIN {
		(void)orphans_load(orphans);
		/* a time in the future (the clock went back) counts as now */
		iter = hash_table_iterate_init(orphans->records);
		while (hash_table_iterate(iter, orphans->records, &key, &rec))
			rec->started = I_MIN(rec->started, ioloop_time);
		hash_table_iterate_deinit(&iter);
		/* forget the dsyncs that have most likely ended */
		(void)dovewarden_orphans_count(orphans, &next_end);
		orphans_rewrite(orphans);
	} T_END;
	if (orphans->inherited_count > 0) {
		e_info(orphans->event, "%u dsyncs started by the previous "
		       "service process may still run in doveadm-server: "
		       "their users are synced again at most %u secs after "
		       "those started", orphans->inherited_count,
		       DOVEWARDEN_ORPHAN_GRACE_SECS);
	}
	return orphans;
}

void dovewarden_orphans_deinit(struct dovewarden_orphans **_orphans)
{
	struct dovewarden_orphans *orphans = *_orphans;
	struct hash_iterate_context *iter;
	char *key, *value;

	if (orphans == NULL)
		return;
	*_orphans = NULL;

	i_close_fd(&orphans->fd);
	orphans_clear(orphans);
	hash_table_destroy(&orphans->records);
	iter = hash_table_iterate_init(orphans->interrupted);
	while (hash_table_iterate(iter, orphans->interrupted, &key, &value))
		i_free(key);
	hash_table_iterate_deinit(&iter);
	hash_table_destroy(&orphans->interrupted);
	i_free(orphans->path);
	i_free(orphans->tmp_path);
	i_free(orphans);
}

unsigned int dovewarden_orphans_count(struct dovewarden_orphans *orphans,
				      time_t *next_end_r)
{
	struct hash_iterate_context *iter;
	struct orphan_record *rec;
	ARRAY(char *) expired;
	char *key, *username;
	time_t until;
	unsigned int count = 0;

	*next_end_r = 0;
	if (orphans->inherited_count == 0)
		return 0;
	T_BEGIN {
		t_array_init(&expired, 16);
		iter = hash_table_iterate_init(orphans->records);
		while (hash_table_iterate(iter, orphans->records, &key,
					  &rec)) {
			if (!rec->inherited)
				continue;
			until = rec->started + DOVEWARDEN_ORPHAN_GRACE_SECS;
			if (until <= ioloop_time) {
				array_push_back(&expired, &key);
				continue;
			}
			if (rec->waited_for)
				continue;
			count++;
			if (*next_end_r == 0 || until < *next_end_r)
				*next_end_r = until;
		}
		hash_table_iterate_deinit(&iter);
		array_foreach_elem(&expired, username)
			orphans_unset(orphans, username);
	} T_END;
	return count;
}

time_t dovewarden_orphans_wait_until(struct dovewarden_orphans *orphans,
				     const char *username)
{
	struct orphan_record *rec;
	time_t until;

	rec = hash_table_lookup(orphans->records, username);
	if (rec == NULL || !rec->inherited)
		return 0;
	until = rec->started + DOVEWARDEN_ORPHAN_GRACE_SECS;
	if (until <= ioloop_time) {
		orphans_unset(orphans, username);
		return 0;
	}
	rec->waited_for = TRUE;
	return until;
}

/* Record a dsync of username as started now, by this process or (after
   it gave up on the dsync) as if by a previous one */
static void
orphans_record_start(struct dovewarden_orphans *orphans,
		     const char *username, bool inherited)
{
	string_t *str = t_str_new(128);

	orphans_set(orphans, username, ioloop_time, inherited);
	orphans_append_started(orphans, str, username, ioloop_time);
	orphans_append(orphans, str);
}

void dovewarden_orphans_started(struct dovewarden_orphans *orphans,
				const char *username)
{
	orphans_record_start(orphans, username, FALSE);
}

void dovewarden_orphans_abandoned(struct dovewarden_orphans *orphans,
				  const char *username)
{
	orphans_record_start(orphans, username, TRUE);
}

void dovewarden_orphans_take_interrupted(struct dovewarden_orphans *orphans,
					 dovewarden_orphans_user_callback_t *callback,
					 void *context)
{
	struct hash_iterate_context *iter;
	char *key, *value;

	iter = hash_table_iterate_init(orphans->interrupted);
	while (hash_table_iterate(iter, orphans->interrupted, &key, &value))
		callback(key, context);
	hash_table_iterate_deinit(&iter);
	iter = hash_table_iterate_init(orphans->interrupted);
	while (hash_table_iterate(iter, orphans->interrupted, &key, &value))
		i_free(key);
	hash_table_iterate_deinit(&iter);
	hash_table_clear(orphans->interrupted, FALSE);
}

void dovewarden_orphans_ended(struct dovewarden_orphans *orphans,
			      const char *username)
{
	string_t *str = t_str_new(128);

	orphans_unset(orphans, username);
	str_append(str, "-\t");
	str_append_tabescaped(str, username);
	str_append_c(str, '\n');
	orphans_append(orphans, str);
}

/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for what the Redis queue reads from Redis: every reply
   callback of dovewarden-redis-queue.c (claims, stats, status and user
   listing, import, locks, the claims taken back and the overdue full
   syncs given their slots at start, the sync results read back for sync
   waits) and the Pub/Sub message handling of
   dovewarden-redis.c and of the queue (the "<result> <seq> <username>"
   messages of <prefix>done). Both files are compiled into this target,
   so that their static callbacks can be called.

   The input is a sequence of (selector byte, reply tree): the selector
   picks the callback, the tree is built from the following bytes (any
   type, integers of any size, strings with NUL and control bytes,
   nesting, large element counts). The queue is made once, with a Redis
   it can't reach: whatever a callback sends fails as if Redis were
   down. The callbacks must neither assert nor crash, hand on only valid
   usernames, states and priorities, and log a bounded number of lines
   for each reply.

   The pool of the reply trees is made once and cleared after each
   input: a new one per input cost more than most inputs' work under
   ASan. See fuzz-target.h. */

#include "queue/dovewarden-redis.c"
#include "queue/dovewarden-redis-queue.c"
#include "fuzz-target.h"

/* per reply tree */
#define FUZZ_MAX_DEPTH 6
#define FUZZ_MAX_NODES 4096
/* aggregates of FUZZ_HUGE_COUNT NIL elements per input */
#define FUZZ_MAX_HUGE 2
#define FUZZ_HUGE_COUNT 65536
/* callbacks run for one input */
#define FUZZ_MAX_CALLS 32
/* log lines one callback may write: two of its own, and the invalid
   entries' (rate-limited: ioloop_time stands still here, so at most a
   minute's worth and the count of those suppressed) */
#define FUZZ_MAX_LOG_LINES_PER_CALL \
	(2 + REDIS_QUEUE_INVALID_LOG_MAX_PER_MINUTE + 1)

struct fuzz_input {
	const uint8_t *data, *end;
	pool_t pool;
	unsigned int nodes, huge;
};

static struct ioloop *fuzz_ioloop;
static redisReply fuzz_nil = { .type = REDIS_REPLY_NIL };
static redisReply *fuzz_nils[FUZZ_HUGE_COUNT];
static struct dovewarden_redis_queue *fuzz_queue;
static pool_t fuzz_pool;
static unsigned int fuzz_log_lines;

static uint8_t fuzz_byte(struct fuzz_input *in)
{
	return in->data < in->end ? *in->data++ : 0;
}

static long long fuzz_integer(struct fuzz_input *in)
{
	unsigned long long v = 0;
	unsigned int i;

	switch (fuzz_byte(in) % 6) {
	case 0:
		return (long long)fuzz_byte(in) - 8;
	case 1:
		return LLONG_MAX;
	case 2:
		return LLONG_MIN;
	case 3:
		return INT_MAX + (long long)fuzz_byte(in);
	case 4:
		return (long long)time(NULL) + (signed char)fuzz_byte(in);
	default:
		for (i = 0; i < 8; i++)
			v = (v << 8) | fuzz_byte(in);
		return (long long)v;
	}
}

/* A string as hiredis gives it: len bytes, NUL-terminated */
static void
fuzz_string(struct fuzz_input *in, redisReply *reply)
{
	size_t len = fuzz_byte(in);
	const char *fixed = NULL;

	switch (len) {
	case 255:
		/* a long one (more than the input, padded with 'x') */
		len = 255 + fuzz_byte(in) * 64;
		break;
	case 254:
		fixed = "message";
		break;
	case 253:
		fixed = "user01";
		break;
	case 252:
		fixed = "123";
		break;
	}
	if (fixed != NULL)
		len = strlen(fixed);
	reply->str = p_malloc(in->pool, len + 1);
	reply->len = len;
	if (fixed != NULL)
		memcpy(reply->str, fixed, len);
	else {
		size_t avail = I_MIN(len, (size_t)(in->end - in->data));

		memcpy(reply->str, in->data, avail);
		memset(reply->str + avail, 'x', len - avail);
		in->data += avail;
	}
}

static redisReply *fuzz_reply(struct fuzz_input *in, unsigned int depth)
{
	static const int types[] = {
		REDIS_REPLY_STRING, REDIS_REPLY_ARRAY, REDIS_REPLY_INTEGER,
		REDIS_REPLY_NIL, REDIS_REPLY_STATUS, REDIS_REPLY_ERROR,
		REDIS_REPLY_DOUBLE, REDIS_REPLY_BOOL, REDIS_REPLY_MAP,
		REDIS_REPLY_SET, REDIS_REPLY_ATTR, REDIS_REPLY_PUSH,
		REDIS_REPLY_BIGNUM, REDIS_REPLY_VERB,
	};
	redisReply *reply = p_new(in->pool, redisReply, 1);
	uint8_t b = fuzz_byte(in);
	size_t i, count;

	in->nodes++;
	reply->type = types[b % N_ELEMENTS(types)];
	switch (reply->type) {
	case REDIS_REPLY_STRING:
	case REDIS_REPLY_STATUS:
	case REDIS_REPLY_ERROR:
	case REDIS_REPLY_BIGNUM:
	case REDIS_REPLY_VERB:
		fuzz_string(in, reply);
		if (reply->type == REDIS_REPLY_VERB)
			memcpy(reply->vtype, "txt", 4);
		break;
	case REDIS_REPLY_DOUBLE:
		fuzz_string(in, reply);
		reply->integer = fuzz_integer(in);
		reply->dval = reply->integer;
		break;
	case REDIS_REPLY_INTEGER:
	case REDIS_REPLY_BOOL:
		reply->integer = fuzz_integer(in);
		break;
	case REDIS_REPLY_NIL:
		break;
	default:
		/* aggregates: few elements, or many (the later ones NIL
		   or the same as the last one built) */
		count = fuzz_byte(in);
		if (depth >= FUZZ_MAX_DEPTH)
			count = 0;
		else if (count == 255 && in->huge++ < FUZZ_MAX_HUGE) {
			/* all NIL, sharing one array */
			reply->elements = FUZZ_HUGE_COUNT;
			reply->element = fuzz_nils;
			break;
		} else if (count >= 240)
			count = (count - 239) * 16;
		reply->elements = count;
		reply->element = p_new(in->pool, redisReply *, I_MAX(count, 1));
		for (i = 0; i < count; i++) {
			if (in->data < in->end && in->nodes < FUZZ_MAX_NODES)
				reply->element[i] = fuzz_reply(in, depth + 1);
			else if (i > 0 && (i % 2) == 0)
				reply->element[i] = reply->element[i - 1];
			else
				reply->element[i] = &fuzz_nil;
		}
		break;
	}
	return reply;
}

/* callbacks that get what the queue made of a reply */

static void fuzz_check_user(const char *username)
{
	i_assert(username != NULL);
	i_assert(dovewarden_username_is_valid(username));
}

static void fuzz_seq_callback(bool success ATTR_UNUSED,
			      uint64_t seq ATTR_UNUSED,
			      void *context ATTR_UNUSED)
{
}

static void
fuzz_pop_callback(struct dovewarden_redis_job *job, int next_due_secs,
		  const char *error, void *context ATTR_UNUSED)
{
	if (job == NULL) {
		i_assert(error != NULL || next_due_secs <= INT_MAX);
		return;
	}
	i_assert(error == NULL);
	fuzz_check_user(job->username);
	i_assert(redis_state_is_valid(job->state));
	i_assert(job->priority < DOVEWARDEN_PRIORITY_COUNT);
	redis_queue_job_free(fuzz_queue, job);
}

static void fuzz_remove_callback(int ret, const char *error,
				 void *context ATTR_UNUSED)
{
	i_assert(ret >= -1 && ret <= 1);
	i_assert((ret == -1) == (error != NULL));
}

static void fuzz_lock_callback(bool acquired, const char *error,
			       void *context ATTR_UNUSED)
{
	/* an error never comes with the lock */
	i_assert(error == NULL || !acquired);
}

static void fuzz_retry_callback(long long count ATTR_UNUSED,
				const char *error ATTR_UNUSED,
				void *context ATTR_UNUSED)
{
}

static void
fuzz_get_callback(const struct dovewarden_redis_user *const *users,
		  unsigned int count, const char *error,
		  void *context ATTR_UNUSED)
{
	unsigned int i;

	if (users == NULL) {
		i_assert(error != NULL);
		return;
	}
	for (i = 0; i < count; i++) {
		if (users[i] == NULL)
			continue;
		i_assert(users[i]->priority < DOVEWARDEN_PRIORITY_COUNT);
		i_assert(users[i]->last_error != NULL);
	}
}

static void
fuzz_scan_callback(const char *const *usernames, unsigned int count,
		   const char *next_cursor, const char *error,
		   void *context ATTR_UNUSED)
{
	unsigned int i;

	i_assert(next_cursor != NULL);
	if (error != NULL)
		return;
	for (i = 0; i < count; i++)
		fuzz_check_user(usernames[i]);
}

static void
fuzz_stats_callback(const struct dovewarden_redis_queue_stats *stats,
		    const char *error, void *context ATTR_UNUSED)
{
	i_assert((stats == NULL) == (error != NULL));
}

static void fuzz_import_callback(int ret, const char *error,
				 void *context ATTR_UNUSED)
{
	/* a new user (1) or not (0), or an error */
	i_assert(ret >= -1 && ret <= 1);
	i_assert((ret == -1) == (error != NULL));
}

static void fuzz_sync_done(const char *username, uint64_t seq ATTR_UNUSED,
			   const char *result, void *context ATTR_UNUSED)
{
	fuzz_check_user(username);
	i_assert(result != NULL);
}

static const struct dovewarden_redis_queue_callbacks fuzz_queue_callbacks = {
	.sync_done = fuzz_sync_done,
};

static void
fuzz_log_handler(const struct failure_context *ctx ATTR_UNUSED,
		 const char *format ATTR_UNUSED, va_list args ATTR_UNUSED)
{
	fuzz_log_lines++;
}

static void fuzz_setup(void)
{
	struct dovewarden_redis_queue_settings set = {
		.redis = {
			/* nothing listens there: every command fails */
			.host = "/nonexistent/redis.sock",
			.timeout_msecs = 1000,
			.ssl_ca_file = "", .ssl_cert_file = "",
			.ssl_key_file = "", .ssl_server_name = "",
		},
		.queue = {
			.full_sync_interval_secs = 24 * 3600,
			.retry_min_secs = 60,
			.retry_max_secs = 3600,
			.settle_delay_secs = 5,
			.settle_max_secs = 300,
		},
		.prefix = "dovewarden:",
		.owner = "fuzz:1:2:3",
		.identity = "fuzz:1",
		.server = "fuzz.test",
		.claim_timeout_secs = 60,
		.buffer_limit = 1000,
	};

	unsigned int i;

	if (fuzz_queue != NULL)
		return;
	fuzz_init();
	for (i = 0; i < N_ELEMENTS(fuzz_nils); i++)
		fuzz_nils[i] = &fuzz_nil;
	i_set_error_handler(fuzz_log_handler);
	i_set_info_handler(fuzz_log_handler);
	i_set_debug_handler(fuzz_log_handler);
	fuzz_ioloop = io_loop_create();
	fuzz_pool = pool_alloconly_create("fuzz redis replies", 4096);
	fuzz_queue = dovewarden_redis_queue_init(&set, NULL,
						 &fuzz_queue_callbacks, NULL);
}

static struct redis_queue_request *
fuzz_request(void *callback, unsigned int count)
{
	struct redis_queue_request *request =
		redis_queue_request_new(fuzz_queue, callback, NULL);

	request->count = count;
	return request;
}

static void fuzz_call(uint8_t selector, const redisReply *reply)
{
	struct dovewarden_redis_queue *queue = fuzz_queue;
	struct redis_queue_notify_request *notify;
	struct redis_queue_finish *finish;
	struct redis_queue_done_check *check;

	switch (selector % 19) {
	case 0:
		notify = i_new(struct redis_queue_notify_request, 1);
		notify->queue = queue;
		notify->username = i_strdup("user01");
		notify->priority = DOVEWARDEN_PRIORITY_SYNC;
		notify->callback = fuzz_seq_callback;
		redis_queue_notify_callback(reply, NULL, notify);
		break;
	case 1:
		redis_queue_pop_callback(reply, NULL,
					 fuzz_request(fuzz_pop_callback, 0));
		break;
	case 2:
		finish = i_new(struct redis_queue_finish, 1);
		finish->queue = queue;
		finish->username = i_strdup("user01");
		finish->state = i_strdup("");
		finish->error = i_strdup("");
		finish->result = "ok";
		redis_queue_finish_callback(reply, NULL, finish);
		break;
	case 3:
		redis_queue_renew_callback(reply, NULL, queue);
		break;
	case 4:
		redis_queue_remove_callback(reply, NULL,
			fuzz_request(fuzz_remove_callback, 0));
		break;
	case 5:
		redis_queue_lock_callback(reply, NULL,
			fuzz_request(fuzz_lock_callback, 0));
		break;
	case 6:
		redis_queue_unlock_callback(reply, NULL,
					    fuzz_request(NULL, 0));
		break;
	case 7:
		/* as many users asked for as the reply has (or one more) */
		redis_queue_get_callback(reply, NULL,
			fuzz_request(fuzz_get_callback,
				     (reply->elements + selector / 19 % 2) %
				     100000));
		break;
	case 8:
		redis_queue_scan_callback(reply, NULL,
			fuzz_request(fuzz_scan_callback, 0));
		break;
	case 9:
		redis_queue_stats_callback(reply, NULL,
			fuzz_request(selector / 19 % 2 == 0 ? NULL :
				     fuzz_stats_callback, 0));
		break;
	case 10:
		redis_queue_takeback_callback(reply, NULL,
					      fuzz_request(NULL, 0));
		break;
	case 11:
		redis_queue_retry_callback(reply, NULL,
			fuzz_request(fuzz_retry_callback, 0));
		break;
	case 12:
		check = i_new(struct redis_queue_done_check, 1);
		check->queue = queue;
		check->username = i_strdup("user01");
		redis_queue_done_callback(reply, NULL, check);
		break;
	case 13:
		redis_queue_import_callback(reply, NULL,
			fuzz_request(fuzz_import_callback, 0));
		break;
	case 14:
		redis_queue_remove_invalid_callback(reply, NULL, queue);
		break;
	case 15:
		/* a Pub/Sub push on the subscriber connection */
		redis_message_callback(NULL, (void *)reply, queue->sub);
		break;
	case 16:
		/* a message on <prefix>done with the reply's text */
		if (reply->str == NULL)
			break;
		redis_queue_message(t_strndup(reply->str, reply->len), queue);
		break;
	case 17:
		/* a step of giving overdue full syncs their slots */
		queue->reslot_running = TRUE;
		redis_queue_reslot_list_callback(reply, NULL,
						 fuzz_request(NULL, 0));
		break;
	case 18:
		redis_queue_reslot_set_callback(reply, NULL,
						fuzz_request(NULL, 0));
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_input in = {
		.data = data,
		.end = data + size,
	};
	unsigned int calls = 0, lines;
	uint8_t selector;
	redisReply *reply;

	fuzz_setup();
	in.pool = fuzz_pool;
	while (in.data < in.end && calls++ < FUZZ_MAX_CALLS) {
		selector = fuzz_byte(&in);
		in.nodes = 0;
		reply = fuzz_reply(&in, 0);
		lines = fuzz_log_lines;
		T_BEGIN {
			fuzz_call(selector, reply);
		} T_END;
		i_assert(fuzz_log_lines - lines <=
			 FUZZ_MAX_LOG_LINES_PER_CALL);
	}
	/* what the notify callback buffered */
	redis_queue_buffer_clear(fuzz_queue);
	p_clear(fuzz_pool);
	return 0;
}

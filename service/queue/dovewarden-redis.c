/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "array.h"
#include "ioloop.h"
#include "hex-binary.h"
#include "sha1.h"
#include "net.h"
#include "dovewarden-compat.h"
#include "dovewarden-redis.h"
#include "dovewarden-hiredis-compat.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <unistd.h>

struct redis_request {
	struct dovewarden_redis *redis;
	dovewarden_redis_callback_t *callback;
	void *context;
};

struct dovewarden_redis_blocking {
	redisContext *ctx;
};

struct dovewarden_redis {
	struct event *event;
	struct dovewarden_redis_settings set;
	char *host, *username, *password;
	char *ssl_ca_file, *ssl_cert_file, *ssl_key_file, *ssl_server_name;
	/* created at the first connect (again at the next one if that
	   failed: the admin may fix the files) */
	SSL_CTX *ssl_ctx;
	/* the connection's, owned by hiredis (NULL without TLS) */
	SSL *ssl;
	struct timeval timeout_tv;
	const struct dovewarden_redis_callbacks *callbacks;
	void *context;

	redisAsyncContext *ac;
	enum dovewarden_redis_state state;
	struct io *io_read, *io_write;
	struct timeout *to_command, *to_reconnect;
	unsigned int reconnect_msecs;
	unsigned int pending_count;
	/* when the connection last went down (0 = it is up, or never was) */
	time_t down_since;

	ARRAY(struct dovewarden_redis_script *) scripts;
	char *channel;
	dovewarden_redis_message_callback_t *message_callback;
	void *message_context;

	bool deinitializing:1;
	/* the current outage was logged as an error already */
	bool down_logged:1;
};

static void redis_connect(struct dovewarden_redis *redis);

const char *
dovewarden_redis_settings_address(const struct dovewarden_redis_settings *set)
{
	if (set->host[0] == '/')
		return set->host;
	return t_strdup_printf("%s:%u", set->host, set->port);
}

static const char *redis_name(struct dovewarden_redis *redis)
{
	return dovewarden_redis_settings_address(&redis->set);
}

static void redis_timeval(unsigned int msecs, struct timeval *tv_r)
{
	tv_r->tv_sec = msecs / 1000;
	tv_r->tv_usec = (msecs % 1000) * 1000;
}

/* A subscriber waits for messages without a command timeout */
static const struct timeval *
redis_command_timeout(const struct dovewarden_redis_settings *set,
		      const struct timeval *timeout_tv)
{
	return set->subscriber ? NULL : timeout_tv;
}

/* The commands that set up a new connection: AUTH [username] password
   (NULL when there is no password), and SELECT (2 arguments) */
static const char *const *
redis_auth_args(const struct dovewarden_redis_settings *set,
		unsigned int *argc_r)
{
	const char **argv;
	unsigned int argc = 0;

	if (set->password[0] == '\0')
		return NULL;
	argv = t_new(const char *, 3);
	argv[argc++] = "AUTH";
	if (set->username[0] != '\0')
		argv[argc++] = set->username;
	argv[argc++] = set->password;
	*argc_r = argc;
	return argv;
}

static const char *const *
redis_select_args(const struct dovewarden_redis_settings *set)
{
	const char **argv = t_new(const char *, 2);

	argv[0] = "SELECT";
	argv[1] = dec2str(set->db);
	return argv;
}

/* TLS */

/* The reason of OpenSSL's last error; clears its error queue */
static const char *redis_ssl_last_error(void)
{
	unsigned long err = ERR_peek_last_error();
	const char *reason;
	char buf[256];

	if (err == 0)
		reason = "Unknown error";
	else if ((reason = ERR_reason_error_string(err)) == NULL) {
		ERR_error_string_n(err, buf, sizeof(buf));
		reason = buf;
	}
	reason = t_strdup(reason);
	ERR_clear_error();
	return reason;
}

static SSL_CTX *
redis_ssl_ctx_create(const struct dovewarden_redis_settings *set,
		     const char **error_r)
{
	SSL_CTX *ctx;

	ERR_clear_error();
	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		*error_r = t_strdup_printf("TLS: SSL_CTX_new() failed: %s",
					   redis_ssl_last_error());
		return NULL;
	}
	(void)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (set->ssl_ca_file[0] != '\0') {
		if (SSL_CTX_load_verify_locations(ctx, set->ssl_ca_file,
						  NULL) != 1) {
			*error_r = t_strdup_printf(
				"TLS: Can't load the CA file %s: %s",
				set->ssl_ca_file, redis_ssl_last_error());
			SSL_CTX_free(ctx);
			return NULL;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		*error_r = t_strdup_printf(
			"TLS: Can't load the system's CA certificates: %s",
			redis_ssl_last_error());
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (set->ssl_cert_file[0] == '\0')
		return ctx;
	if (SSL_CTX_use_certificate_chain_file(ctx, set->ssl_cert_file) != 1) {
		*error_r = t_strdup_printf(
			"TLS: Can't load the client certificate %s: %s",
			set->ssl_cert_file, redis_ssl_last_error());
	} else if (SSL_CTX_use_PrivateKey_file(ctx, set->ssl_key_file,
					       SSL_FILETYPE_PEM) != 1) {
		*error_r = t_strdup_printf(
			"TLS: Can't load the client key %s: %s",
			set->ssl_key_file, redis_ssl_last_error());
	} else if (SSL_CTX_check_private_key(ctx) != 1) {
		*error_r = t_strdup_printf(
			"TLS: The client key %s does not match "
			"the certificate %s: %s", set->ssl_key_file,
			set->ssl_cert_file, redis_ssl_last_error());
	} else {
		return ctx;
	}
	SSL_CTX_free(ctx);
	return NULL;
}

/* Why the TLS connection failed: the certificate verification's error
   when there was one (hiredis only knows errno) */
static const char *redis_ssl_error(SSL *ssl, const char *error)
{
	long verify = SSL_get_verify_result(ssl);

	if (verify != X509_V_OK) {
		ERR_clear_error();
		return t_strdup_printf(
			"TLS: The server's certificate is not valid: %s",
			X509_verify_cert_error_string(verify));
	}
	if (!SSL_is_init_finished(ssl)) {
		if (ERR_peek_last_error() != 0)
			error = redis_ssl_last_error();
		return t_strdup_printf("TLS handshake failed: %s", error);
	}
	return error;
}

/* Start TLS on a connected (or connecting) context: hiredis owns *ssl_r
   afterwards. */
static int redis_ssl_start(redisContext *c, SSL_CTX *ctx,
			   const struct dovewarden_redis_settings *set,
			   SSL **ssl_r, const char **error_r)
{
	const char *name = set->ssl_server_name[0] != '\0' ?
		set->ssl_server_name : set->host;
	struct ip_addr ip;
	SSL *ssl;

	ERR_clear_error();
	ssl = SSL_new(ctx);
	if (ssl == NULL) {
		*error_r = t_strdup_printf("TLS: SSL_new() failed: %s",
					   redis_ssl_last_error());
		return -1;
	}
	/* SSL_set1_host() takes an IP address too; SNI only a name */
	if ((net_addr2ip(name, &ip) < 0 &&
	     SSL_set_tlsext_host_name(ssl, name) != 1) ||
	    SSL_set1_host(ssl, name) != 1) {
		*error_r = t_strdup_printf("TLS: Invalid server name '%s': %s",
					   name, redis_ssl_last_error());
		SSL_free(ssl);
		return -1;
	}
	if (dw_hiredis_initiate_ssl(c, ssl) != REDIS_OK) {
		*error_r = redis_ssl_error(ssl, c->errstr);
		SSL_free(ssl);
		return -1;
	}
	*ssl_r = ssl;
	return 0;
}

/* hiredis event adapter */

static void redis_handle_read(struct dovewarden_redis *redis)
{
	redisAsyncHandleRead(redis->ac);
}

static void redis_handle_write(struct dovewarden_redis *redis)
{
	redisAsyncHandleWrite(redis->ac);
}

static void redis_handle_timeout(struct dovewarden_redis *redis)
{
	timeout_remove(&redis->to_command);
	dw_hiredis_async_handle_timeout(redis->ac);
}

static void redis_ev_schedule_timer(void *privdata, struct timeval tv);

/* hiredis 0.14 has no timers: arm it as 1.x does, whenever hiredis adds
   a read or write event (the connect timeout until connected) */
static void redis_ev_refresh_timer(struct dovewarden_redis *redis)
{
	if (!DW_HIREDIS_ADAPTER_ARMS_TIMER || redis->ac == NULL)
		return;
	if ((redis->ac->c.flags & REDIS_CONNECTED) == 0 ||
	    redis_command_timeout(&redis->set, &redis->timeout_tv) != NULL)
		redis_ev_schedule_timer(redis, redis->timeout_tv);
}

static void redis_ev_add_read(void *privdata)
{
	struct dovewarden_redis *redis = privdata;

	redis_ev_refresh_timer(redis);
	if (redis->io_read == NULL) {
		redis->io_read = io_add(redis->ac->c.fd, IO_READ,
					redis_handle_read, redis);
	}
}

static void redis_ev_del_read(void *privdata)
{
	struct dovewarden_redis *redis = privdata;

	io_remove(&redis->io_read);
}

static void redis_ev_add_write(void *privdata)
{
	struct dovewarden_redis *redis = privdata;

	redis_ev_refresh_timer(redis);
	if (redis->io_write == NULL) {
		redis->io_write = io_add(redis->ac->c.fd, IO_WRITE,
					 redis_handle_write, redis);
	}
}

static void redis_ev_del_write(void *privdata)
{
	struct dovewarden_redis *redis = privdata;

	io_remove(&redis->io_write);
}

static void redis_ev_cleanup(void *privdata)
{
	struct dovewarden_redis *redis = privdata;

	io_remove(&redis->io_read);
	io_remove(&redis->io_write);
	timeout_remove(&redis->to_command);
}

static void redis_ev_schedule_timer(void *privdata, struct timeval tv)
{
	struct dovewarden_redis *redis = privdata;
	unsigned int msecs = tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;

	timeout_remove(&redis->to_command);
	redis->to_command = timeout_add(msecs, redis_handle_timeout, redis);
}

/* connection state */

static void redis_schedule_reconnect(struct dovewarden_redis *redis)
{
	i_assert(redis->to_reconnect == NULL);

	redis->state = DOVEWARDEN_REDIS_STATE_DISCONNECTED;
	redis->to_reconnect = timeout_add(redis->reconnect_msecs,
					  redis_connect, redis);
	redis->reconnect_msecs = I_MIN(redis->reconnect_msecs * 2,
				       DOVEWARDEN_REDIS_RECONNECT_MAX_MSECS);
}

static void redis_went_down(struct dovewarden_redis *redis, const char *error)
{
	redis->ac = NULL;
	redis->ssl = NULL;
	if (redis->deinitializing)
		return;
	if (redis->down_since == 0)
		redis->down_since = ioloop_time;
	if (!redis->down_logged) {
		e_error(redis->event, "%s: %s (reconnecting)",
			redis_name(redis), error);
		redis->down_logged = TRUE;
	} else {
		e_debug(redis->event, "%s: %s", redis_name(redis), error);
	}
	redis_schedule_reconnect(redis);
	if (redis->callbacks->disconnected != NULL)
		redis->callbacks->disconnected(error, redis->context);
}

static const char *redis_ac_error(const redisAsyncContext *ac)
{
	if (ac->err != 0 && ac->errstr != NULL && ac->errstr[0] != '\0')
		return t_strdup(ac->errstr);
	return "Connection closed";
}

static void redis_disconnect_callback(const redisAsyncContext *ac, int status)
{
	struct dovewarden_redis *redis = ac->data;
	const char *error = status == REDIS_OK ? "Disconnected" :
		redis_ac_error(ac);

	/* hiredis frees the SSL after this */
	if (redis->ssl != NULL && status != REDIS_OK)
		error = redis_ssl_error(redis->ssl, error);
	redis_went_down(redis, error);
}

static void redis_request_callback(redisAsyncContext *ac, void *r,
				   void *privdata)
{
	struct redis_request *request = privdata;
	struct dovewarden_redis *redis = request->redis;
	const redisReply *reply = r;

	i_assert(redis->pending_count > 0);
	redis->pending_count--;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
	    str_begins_with(reply->str, "NOSCRIPT") && !redis->deinitializing) {
		/* someone ran SCRIPT FLUSH: reconnecting loads them again */
		e_warning(redis->event, "%s: Scripts missing, reconnecting",
			  redis_name(redis));
		redisAsyncDisconnect(ac);
	}
	T_BEGIN {
		request->callback(reply, reply != NULL ? NULL :
				  (redis->deinitializing ?
				   "Redis connection closed at shutdown" :
				   redis_ac_error(ac)),
				  request->context);
	} T_END;
	i_free(request);
}

const char *dovewarden_redis_reply_error(const struct redisReply *reply)
{
	if (reply == NULL || reply->type != REDIS_REPLY_ERROR)
		return NULL;
	return t_strndup(reply->str, reply->len);
}

static void redis_setup_callback(const struct redisReply *reply,
				 const char *error ATTR_UNUSED, void *context)
{
	struct dovewarden_redis *redis = context;
	const char *reply_error = dovewarden_redis_reply_error(reply);

	if (reply == NULL || redis->ac == NULL)
		return;
	if (reply_error != NULL) {
		/* wrong password, bad database number, no scripting: keep
		   retrying with back-off, the admin may fix Redis; logged
		   once until it works */
		if (!redis->down_logged) {
			e_error(redis->event, "%s: %s (retrying)",
				redis_name(redis), reply_error);
		} else {
			e_debug(redis->event, "%s: %s", redis_name(redis),
				reply_error);
		}
		if (redis->down_since == 0)
			redis->down_since = ioloop_time;
		redis->down_logged = TRUE;
		redisAsyncDisconnect(redis->ac);
	}
}

static void redis_select_callback(const struct redisReply *reply,
				  const char *error, void *context)
{
	struct dovewarden_redis *redis = context;

	redis_setup_callback(reply, error, context);
	if (reply == NULL || dovewarden_redis_reply_error(reply) != NULL)
		return;
	/* the server accepted us: the next outage starts the back-off from
	   the beginning */
	redis->reconnect_msecs = DOVEWARDEN_REDIS_RECONNECT_MIN_MSECS;
	if (redis->down_since != 0 || redis->down_logged) {
		e_info(redis->event, "%s: Connected again (down for %ld s)",
		       redis_name(redis),
		       (long)(ioloop_time - redis->down_since));
	}
	redis->down_since = 0;
	redis->down_logged = FALSE;
	if (redis->callbacks->connected != NULL)
		redis->callbacks->connected(redis->context);
}

static void redis_message_callback(redisAsyncContext *ac ATTR_UNUSED,
				   void *r, void *privdata)
{
	struct dovewarden_redis *redis = privdata;
	const redisReply *reply = r;

	if (reply == NULL || redis->deinitializing)
		return;
	if (reply->type != REDIS_REPLY_ARRAY && reply->type != REDIS_REPLY_PUSH)
		return;
	if (reply->elements != 3 ||
	    reply->element[0]->type != REDIS_REPLY_STRING ||
	    strcmp(reply->element[0]->str, "message") != 0 ||
	    reply->element[2]->type != REDIS_REPLY_STRING)
		return;
	T_BEGIN {
		redis->message_callback(t_strndup(reply->element[2]->str,
						  reply->element[2]->len),
					redis->message_context);
	} T_END;
}

static void redis_send_setup(struct dovewarden_redis *redis)
{
	struct dovewarden_redis_script *script;
	const char *const *auth_args;
	const char *argv[3];
	unsigned int argc;

	auth_args = redis_auth_args(&redis->set, &argc);
	if (auth_args != NULL) {
		(void)dovewarden_redis_command(redis, argc, auth_args, NULL,
					       redis_setup_callback, redis);
	}
	(void)dovewarden_redis_command(redis, 2, redis_select_args(&redis->set),
				       NULL, redis_select_callback, redis);
	array_foreach_elem(&redis->scripts, script) {
		argv[0] = "SCRIPT";
		argv[1] = "LOAD";
		argv[2] = script->text;
		(void)dovewarden_redis_command(redis, 3, argv, NULL,
					       redis_setup_callback, redis);
	}
	if (redis->channel != NULL) {
		argv[0] = "SUBSCRIBE";
		argv[1] = redis->channel;
		(void)redisAsyncCommandArgv(redis->ac, redis_message_callback,
					    redis, 2, argv, NULL);
	}
}

static void redis_connect_callback(const redisAsyncContext *ac, int status)
{
	struct dovewarden_redis *redis = ac->data;

	if (status != REDIS_OK) {
		/* hiredis frees the context after this */
		redis_went_down(redis, t_strdup_printf(
			"connect() failed: %s", redis_ac_error(ac)));
		return;
	}
	redis->state = DOVEWARDEN_REDIS_STATE_CONNECTED;
	T_BEGIN {
		redis_send_setup(redis);
	} T_END;
}

static void redis_connect(struct dovewarden_redis *redis)
{
	redisAsyncContext *ac;

	timeout_remove(&redis->to_reconnect);
	i_assert(redis->ac == NULL);

	ac = dw_hiredis_async_connect(redis->set.host, (int)redis->set.port,
				      &redis->timeout_tv,
				      redis_command_timeout(&redis->set,
							    &redis->timeout_tv));
	if (ac == NULL) {
		redis_went_down(redis, "Out of memory");
		return;
	}
	if (ac->err != 0) {
		const char *error = t_strdup_printf(
			"connect() failed: %s", redis_ac_error(ac));
		redisAsyncFree(ac);
		redis_went_down(redis, error);
		return;
	}
	if (redis->set.ssl) {
		const char *error;

		if ((redis->ssl_ctx == NULL &&
		     (redis->ssl_ctx = redis_ssl_ctx_create(&redis->set,
							    &error)) == NULL) ||
		    redis_ssl_start(&ac->c, redis->ssl_ctx, &redis->set,
				    &redis->ssl, &error) < 0) {
			redisAsyncFree(ac);
			redis_went_down(redis, error);
			return;
		}
	}
	redis->ac = ac;
	redis->state = DOVEWARDEN_REDIS_STATE_CONNECTING;
	ac->data = redis;
	ac->ev.data = redis;
	ac->ev.addRead = redis_ev_add_read;
	ac->ev.delRead = redis_ev_del_read;
	ac->ev.addWrite = redis_ev_add_write;
	ac->ev.delWrite = redis_ev_del_write;
	ac->ev.cleanup = redis_ev_cleanup;
	dw_hiredis_async_set_timer(ac, redis_ev_schedule_timer);
	/* the connect callback is what adds the first write event: set it
	   after the adapter */
	(void)redisAsyncSetDisconnectCallback(ac, redis_disconnect_callback);
	(void)redisAsyncSetConnectCallback(ac, redis_connect_callback);
}

struct dovewarden_redis *
dovewarden_redis_init(const struct dovewarden_redis_settings *set,
		      struct event *event_parent,
		      const struct dovewarden_redis_callbacks *callbacks,
		      void *context)
{
	struct dovewarden_redis *redis;

	redis = i_new(struct dovewarden_redis, 1);
	redis->set = *set;
	redis->set.host = redis->host = i_strdup(set->host);
	redis->set.username = redis->username = i_strdup(set->username);
	redis->set.password = redis->password = i_strdup(set->password);
	redis->set.ssl_ca_file = redis->ssl_ca_file =
		i_strdup(set->ssl_ca_file);
	redis->set.ssl_cert_file = redis->ssl_cert_file =
		i_strdup(set->ssl_cert_file);
	redis->set.ssl_key_file = redis->ssl_key_file =
		i_strdup(set->ssl_key_file);
	redis->set.ssl_server_name = redis->ssl_server_name =
		i_strdup(set->ssl_server_name);
	redis_timeval(set->timeout_msecs, &redis->timeout_tv);
	redis->callbacks = callbacks;
	redis->context = context;
	redis->event = event_create(event_parent);
	event_set_append_log_prefix(redis->event, "redis: ");
	redis->reconnect_msecs = DOVEWARDEN_REDIS_RECONNECT_MIN_MSECS;
	i_array_init(&redis->scripts, 8);
	/* from the ioloop: the caller may still be setting up */
	redis->state = DOVEWARDEN_REDIS_STATE_DISCONNECTED;
	redis->to_reconnect = timeout_add_short(0, redis_connect, redis);
	return redis;
}

void dovewarden_redis_deinit(struct dovewarden_redis **_redis)
{
	struct dovewarden_redis *redis = *_redis;

	*_redis = NULL;
	redis->deinitializing = TRUE;
	timeout_remove(&redis->to_reconnect);
	if (redis->ac != NULL) {
		/* calls the pending callbacks with reply=NULL */
		redisAsyncFree(redis->ac);
		redis->ac = NULL;
	}
	i_assert(redis->pending_count == 0);
	if (redis->ssl_ctx != NULL)
		SSL_CTX_free(redis->ssl_ctx);
	i_free(redis->ssl_ca_file);
	i_free(redis->ssl_cert_file);
	i_free(redis->ssl_key_file);
	i_free(redis->ssl_server_name);
	array_free(&redis->scripts);
	i_free(redis->channel);
	i_free(redis->host);
	i_free(redis->username);
	i_free(redis->password);
	event_unref(&redis->event);
	i_free(redis);
}

enum dovewarden_redis_state
dovewarden_redis_get_state(struct dovewarden_redis *redis)
{
	return redis->state;
}

int dovewarden_redis_command(struct dovewarden_redis *redis,
			     unsigned int argc, const char *const *argv,
			     const size_t *argvlen,
			     dovewarden_redis_callback_t *callback,
			     void *context)
{
	struct redis_request *request;

	if (redis->ac == NULL ||
	    redis->state != DOVEWARDEN_REDIS_STATE_CONNECTED)
		return -1;

	request = i_new(struct redis_request, 1);
	request->redis = redis;
	request->callback = callback;
	request->context = context;
	if (redisAsyncCommandArgv(redis->ac, redis_request_callback, request,
				  (int)argc, (const char **)argv,
				  argvlen) != REDIS_OK) {
		i_free(request);
		return -1;
	}
	redis->pending_count++;
	return 0;
}

static void redis_script_init(struct dovewarden_redis_script *script)
{
	unsigned char digest[SHA1_RESULTLEN];

	if (script->sha1[0] != '\0')
		return;
	sha1_get_digest(script->text, strlen(script->text), digest);
	i_assert(sizeof(script->sha1) == SHA1_RESULTLEN * 2 + 1);
	memcpy(script->sha1, binary_to_hex(digest, sizeof(digest)),
	       SHA1_RESULTLEN * 2);
	script->sha1[SHA1_RESULTLEN * 2] = '\0';
}

void dovewarden_redis_add_script(struct dovewarden_redis *redis,
				 struct dovewarden_redis_script *script)
{
	redis_script_init(script);
	array_push_back(&redis->scripts, &script);
}

/* EVALSHA when Redis has the script (known), else EVAL; argc + 3
   arguments */
static const char *const *
redis_eval_args(const struct dovewarden_redis_script *script, bool known,
		unsigned int argc, const char *const *argv)
{
	const char **args = t_new(const char *, argc + 3);
	unsigned int i;

	args[0] = known ? "EVALSHA" : "EVAL";
	args[1] = known ? script->sha1 : script->text;
	args[2] = "0";
	for (i = 0; i < argc; i++)
		args[i + 3] = argv[i];
	return args;
}

int dovewarden_redis_eval(struct dovewarden_redis *redis,
			  struct dovewarden_redis_script *script,
			  unsigned int argc, const char *const *argv,
			  dovewarden_redis_callback_t *callback,
			  void *context)
{
	struct dovewarden_redis_script *const *scriptp;
	bool known = FALSE;

	redis_script_init(script);
	array_foreach(&redis->scripts, scriptp) {
		if (*scriptp == script)
			known = TRUE;
	}
	return dovewarden_redis_command(redis, argc + 3,
					redis_eval_args(script, known,
							argc, argv),
					NULL, callback, context);
}

void dovewarden_redis_subscribe(struct dovewarden_redis *redis,
				const char *channel,
				dovewarden_redis_message_callback_t *callback,
				void *context)
{
	const char *argv[2];

	i_assert(redis->set.subscriber);
	i_assert(redis->channel == NULL);

	redis->channel = i_strdup(channel);
	redis->message_callback = callback;
	redis->message_context = context;
	if (redis->ac != NULL &&
	    redis->state == DOVEWARDEN_REDIS_STATE_CONNECTED) {
		argv[0] = "SUBSCRIBE";
		argv[1] = redis->channel;
		(void)redisAsyncCommandArgv(redis->ac, redis_message_callback,
					    redis, 2, argv, NULL);
	}
}

/* blocking connection */

int dovewarden_redis_blocking_connect(
	const struct dovewarden_redis_settings *set,
	struct dovewarden_redis_blocking **redis_r, const char **error_r)
{
	struct dovewarden_redis_blocking *redis;
	const char *const *auth_args;
	redisContext *ctx;
	struct timeval tv;
	unsigned int argc;

	i_assert(!set->subscriber);

	*redis_r = NULL;
	redis_timeval(set->timeout_msecs, &tv);
	ctx = dw_hiredis_connect(set->host, (int)set->port, &tv, &tv);
	if (ctx == NULL) {
		*error_r = "Out of memory";
		return -1;
	}
	if (ctx->err != 0) {
		*error_r = t_strdup(ctx->errstr);
		redisFree(ctx);
		return -1;
	}
	if (set->ssl) {
		SSL_CTX *ssl_ctx = redis_ssl_ctx_create(set, error_r);
		SSL *ssl;
		int ret = -1;

		/* the SSL keeps its own reference to the SSL_CTX */
		if (ssl_ctx != NULL) {
			ret = redis_ssl_start(ctx, ssl_ctx, set, &ssl, error_r);
			SSL_CTX_free(ssl_ctx);
		}
		if (ret < 0) {
			redisFree(ctx);
			return -1;
		}
	}
	redis = i_new(struct dovewarden_redis_blocking, 1);
	redis->ctx = ctx;

	auth_args = redis_auth_args(set, &argc);
	if ((auth_args != NULL &&
	     dovewarden_redis_blocking_command(redis, argc, auth_args,
					       error_r) < 0) ||
	    dovewarden_redis_blocking_command(redis, 2, redis_select_args(set),
					      error_r) < 0) {
		dovewarden_redis_blocking_disconnect(&redis);
		return -1;
	}
	*redis_r = redis;
	return 0;
}

void dovewarden_redis_blocking_disconnect(
	struct dovewarden_redis_blocking **_redis)
{
	struct dovewarden_redis_blocking *redis = *_redis;

	if (redis == NULL)
		return;
	*_redis = NULL;
	redisFree(redis->ctx);
	i_free(redis);
}

int dovewarden_redis_blocking_command(struct dovewarden_redis_blocking *redis,
				      unsigned int argc,
				      const char *const *argv,
				      const char **error_r)
{
	redisReply *reply;
	unsigned int waited_msecs = 0;
	int ret = 0;

	for (;;) {
		reply = redisCommandArgv(redis->ctx, (int)argc,
					 (const char **)argv, NULL);
		if (reply == NULL) {
			*error_r = t_strdup(redis->ctx->errstr);
			return -1;
		}
		if (reply->type != REDIS_REPLY_ERROR ||
		    !str_begins_with(reply->str, "LOADING") ||
		    waited_msecs >= DOVEWARDEN_REDIS_BLOCKING_LOADING_MSECS)
			break;
		freeReplyObject(reply);
		usleep(100 * 1000);
		waited_msecs += 100;
	}
	if (reply->type == REDIS_REPLY_ERROR) {
		*error_r = t_strndup(reply->str, reply->len);
		ret = -1;
	}
	freeReplyObject(reply);
	return ret;
}

int dovewarden_redis_blocking_eval(struct dovewarden_redis_blocking *redis,
				   const struct dovewarden_redis_script *script,
				   unsigned int argc, const char *const *argv,
				   const char **error_r)
{
	return dovewarden_redis_blocking_command(redis, argc + 3,
		redis_eval_args(script, FALSE, argc, argv), error_r);
}

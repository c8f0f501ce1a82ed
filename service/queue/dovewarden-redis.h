/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_REDIS_H
#define DOVEWARDEN_REDIS_H

/* A Redis connection on Dovecot's ioloop: hiredis's asynchronous API with
   an adapter of our own (io_add/timeout_add), optionally over TLS
   (hiredis_ssl >= 1.0). The connection is made at init and made anew after
   every failure (a TLS error included), with back-off
   (DOVEWARDEN_REDIS_RECONNECT_*_MSECS). Every command has a timeout;
   when it passes, or the connection breaks, every pending command's
   callback is called with reply=NULL and an error, and the connection is
   made anew. */

struct redisReply;
struct dovewarden_redis_blocking;

#define DOVEWARDEN_REDIS_RECONNECT_MIN_MSECS 100
#define DOVEWARDEN_REDIS_RECONNECT_MAX_MSECS (10 * 1000)
/* Redis answers LOADING while it reads its data after a restart: a
   blocking command waits for it this long at most */
#define DOVEWARDEN_REDIS_BLOCKING_LOADING_MSECS (5 * 1000)

enum dovewarden_redis_state {
	/* no connection: waiting for the reconnect timer */
	DOVEWARDEN_REDIS_STATE_DISCONNECTED,
	/* TCP/unix connect running */
	DOVEWARDEN_REDIS_STATE_CONNECTING,
	/* connected; AUTH and SELECT sent first (commands queue behind
	   them, so they may be sent at once) */
	DOVEWARDEN_REDIS_STATE_CONNECTED,
};

struct dovewarden_redis_settings {
	/* host name or address, or a unix socket path (starts with '/') */
	const char *host;
	unsigned int port;
	/* AUTH [username] password, unless password is empty */
	const char *username, *password;
	unsigned int db;
	/* connect and command timeout */
	unsigned int timeout_msecs;
	/* TLS (TCP only). The server's certificate is verified against
	   ssl_ca_file (the system's CAs when empty), and its name against
	   ssl_server_name (host when empty), which is also sent as SNI
	   unless it is an IP address. A client certificate is sent when
	   ssl_cert_file is set (ssl_key_file is its key). "" is unset; the
	   strings may be NULL only when ssl is FALSE. */
	bool ssl;
	const char *ssl_ca_file, *ssl_cert_file, *ssl_key_file;
	const char *ssl_server_name;
	/* For a connection that only listens to a Pub/Sub channel: no
	   command timeout (replies come whenever someone publishes) */
	bool subscriber;
};

/* Called when the connection is up and Redis accepted AUTH and SELECT
   (after every reconnect), and when it went down (error says why). */
struct dovewarden_redis_callbacks {
	void (*connected)(void *context);
	void (*disconnected)(const char *error, void *context);
};

/* reply is NULL on failure (then error is set); an error reply from Redis
   is a reply (type REDIS_REPLY_ERROR). The reply is freed after the
   callback returns. */
typedef void dovewarden_redis_callback_t(const struct redisReply *reply,
					 const char *error, void *context);

/* A Lua script run with EVALSHA (EVAL when Redis does not know it yet).
   Define them statically with DOVEWARDEN_REDIS_SCRIPT_INIT; the SHA1 is
   computed on first use. */
struct dovewarden_redis_script {
	const char *name;
	const char *text;
	char sha1[41];
};
#define DOVEWARDEN_REDIS_SCRIPT_INIT(_name, _text) \
	{ .name = (_name), .text = (_text), .sha1 = "" }

/* "host:port", or the socket path */
const char *
dovewarden_redis_settings_address(const struct dovewarden_redis_settings *set);

struct dovewarden_redis *
dovewarden_redis_init(const struct dovewarden_redis_settings *set,
		      struct event *event_parent,
		      const struct dovewarden_redis_callbacks *callbacks,
		      void *context);
/* Pending callbacks are called with reply=NULL; the connected and
   disconnected callbacks are not called any more. */
void dovewarden_redis_deinit(struct dovewarden_redis **redis);

enum dovewarden_redis_state
dovewarden_redis_get_state(struct dovewarden_redis *redis);

/* Send a command. Returns 0, or -1 when not connected (the callback is
   not called then). argvlen may be NULL (then the arguments are
   strings). */
int dovewarden_redis_command(struct dovewarden_redis *redis,
			     unsigned int argc, const char *const *argv,
			     const size_t *argvlen,
			     dovewarden_redis_callback_t *callback,
			     void *context);
/* Load the script at every (re)connect, so that eval can use EVALSHA.
   Scripts not added are sent whole (EVAL). */
void dovewarden_redis_add_script(struct dovewarden_redis *redis,
				 struct dovewarden_redis_script *script);
/* Run a script with no keys and these arguments, like
   dovewarden_redis_command(). */
int dovewarden_redis_eval(struct dovewarden_redis *redis,
			  struct dovewarden_redis_script *script,
			  unsigned int argc, const char *const *argv,
			  dovewarden_redis_callback_t *callback,
			  void *context);

/* Subscribe to a channel (subscriber connections only): the callback gets
   every message published to it (reply=NULL, error=NULL and message
   set), also after reconnects. */
typedef void dovewarden_redis_message_callback_t(const char *message,
						 void *context);
void dovewarden_redis_subscribe(struct dovewarden_redis *redis,
				const char *channel,
				dovewarden_redis_message_callback_t *callback,
				void *context);

/* An error reply's text, or NULL when the reply is not an error */
const char *dovewarden_redis_reply_error(const struct redisReply *reply);

/* A blocking connection, for when there is no ioloop to run the
   connection above on (at shutdown). It is set up the same way (AUTH,
   SELECT); set->timeout_msecs limits the connect and every command, and
   set->subscriber must be FALSE. Returns 0, or -1 with error_r set (then
   *redis_r is NULL). */
int dovewarden_redis_blocking_connect(
	const struct dovewarden_redis_settings *set,
	struct dovewarden_redis_blocking **redis_r, const char **error_r);
void dovewarden_redis_blocking_disconnect(
	struct dovewarden_redis_blocking **redis);
/* Send a command and wait for the reply. Returns 0, or -1 when the
   connection failed or Redis answered with an error (error_r says
   which). While Redis answers LOADING (it is reading its data after a
   restart), the command is sent again, for
   DOVEWARDEN_REDIS_BLOCKING_LOADING_MSECS at most. */
int dovewarden_redis_blocking_command(struct dovewarden_redis_blocking *redis,
				      unsigned int argc,
				      const char *const *argv,
				      const char **error_r);
/* Run a script with no keys and these arguments (EVAL, always whole) */
int dovewarden_redis_blocking_eval(struct dovewarden_redis_blocking *redis,
				   const struct dovewarden_redis_script *script,
				   unsigned int argc, const char *const *argv,
				   const char **error_r);

#endif

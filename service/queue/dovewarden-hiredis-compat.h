#ifndef DOVEWARDEN_HIREDIS_COMPAT_H
#define DOVEWARDEN_HIREDIS_COMPAT_H

/* What differs between hiredis >= 1.0 and 0.14 (Debian 12), in one place.
   0.14 has no redisOptions, no timers in its async API, no RESP3 and no
   hiredis_ssl. Its async timeouts are run by the ioloop adapter of
   dovewarden-redis.c, the way 1.x runs them: the timer is armed whenever
   hiredis adds a read or write event (DW_HIREDIS_ADAPTER_ARMS_TIMER), and
   dw_hiredis_async_handle_timeout() fails the connection as 1.x's
   redisAsyncHandleTimeout() does. TLS needs hiredis_ssl
   (DOVEWARDEN_HAVE_REDIS_TLS); without it the settings check refuses
   dovewarden_redis_ssl = yes. */

#include "dovewarden-config.h"

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <openssl/ssl.h>
#ifdef DOVEWARDEN_HAVE_REDIS_TLS
#  include <hiredis/hiredis_ssl.h>
#endif

#ifndef REDIS_REPLY_PUSH
/* RESP2 only: no reply has this type */
#  define REDIS_REPLY_PUSH (-1)
#endif

#if HIREDIS_MAJOR >= 1
#define DW_HIREDIS_ADAPTER_ARMS_TIMER FALSE

static inline void
dw_hiredis_options_init(const char *host, int port,
			const struct timeval *connect_tv,
			const struct timeval *command_tv,
			redisOptions *options_r)
{
	i_zero(options_r);
	if (host[0] == '/')
		REDIS_OPTIONS_SET_UNIX(options_r, host);
	else
		REDIS_OPTIONS_SET_TCP(options_r, host, port);
	options_r->connect_timeout = connect_tv;
	options_r->command_timeout = command_tv;
}

/* host is a unix socket's path when it begins with '/'; command_tv is
   NULL for no command timeout */
static inline redisContext *
dw_hiredis_connect(const char *host, int port,
		   const struct timeval *connect_tv,
		   const struct timeval *command_tv)
{
	redisOptions options;

	dw_hiredis_options_init(host, port, connect_tv, command_tv, &options);
	return redisConnectWithOptions(&options);
}

static inline redisAsyncContext *
dw_hiredis_async_connect(const char *host, int port,
			 const struct timeval *connect_tv,
			 const struct timeval *command_tv)
{
	redisOptions options;

	dw_hiredis_options_init(host, port, connect_tv, command_tv, &options);
	return redisAsyncConnectWithOptions(&options);
}

static inline void
dw_hiredis_async_set_timer(redisAsyncContext *ac,
			   void (*schedule)(void *privdata, struct timeval tv))
{
	ac->ev.scheduleTimer = schedule;
}

static inline void dw_hiredis_async_handle_timeout(redisAsyncContext *ac)
{
	redisAsyncHandleTimeout(ac);
}
#else
#define DW_HIREDIS_ADAPTER_ARMS_TIMER TRUE

static inline redisContext *
dw_hiredis_connect(const char *host, int port,
		   const struct timeval *connect_tv,
		   const struct timeval *command_tv)
{
	redisContext *ctx;

	ctx = host[0] == '/' ?
		redisConnectUnixWithTimeout(host, *connect_tv) :
		redisConnectWithTimeout(host, port, *connect_tv);
	/* sets ctx->err when it fails */
	if (ctx != NULL && ctx->err == 0 && command_tv != NULL)
		(void)redisSetTimeout(ctx, *command_tv);
	return ctx;
}

/* The adapter runs the timeouts */
static inline redisAsyncContext *
dw_hiredis_async_connect(const char *host, int port,
			 const struct timeval *connect_tv ATTR_UNUSED,
			 const struct timeval *command_tv ATTR_UNUSED)
{
	return host[0] == '/' ? redisAsyncConnectUnix(host) :
		redisAsyncConnect(host, port);
}

static inline void
dw_hiredis_async_set_timer(redisAsyncContext *ac ATTR_UNUSED,
			   void (*schedule)(void *privdata,
					    struct timeval tv) ATTR_UNUSED)
{
}

/* What 1.x's redisAsyncHandleTimeout() does: nothing while connected
   and idle, else fail the connect or the pending commands with
   "Timeout" and disconnect. Call it from the ioloop, never from one of
   hiredis's callbacks. */
static inline void dw_hiredis_async_handle_timeout(redisAsyncContext *ac)
{
	redisContext *c = &ac->c;

	if ((c->flags & REDIS_CONNECTED) != 0 && ac->replies.head == NULL)
		return;
	if (c->err == 0) {
		c->err = REDIS_ERR_IO;
		i_strocpy(c->errstr, "Timeout", sizeof(c->errstr));
	}
	if ((c->flags & REDIS_CONNECTED) == 0) {
		ac->err = c->err;
		ac->errstr = c->errstr;
		if (ac->onConnect != NULL)
			ac->onConnect(ac, REDIS_ERR);
		/* not connected: no disconnect callback */
		redisAsyncFree(ac);
		return;
	}
	/* reading fails at once on c->err: hiredis calls the pending
	   callbacks with no reply and the disconnect callback with
	   REDIS_ERR, then frees ac */
	redisAsyncHandleRead(ac);
}
#endif

#ifndef DOVEWARDEN_HAVE_REDIS_TLS
/* Never reached (the settings check refuses TLS), and never falls back
   to clear text */
static inline int dw_hiredis_initiate_ssl(redisContext *c, SSL *ssl ATTR_UNUSED)
{
	c->err = REDIS_ERR_OTHER;
	i_strocpy(c->errstr, "This build has no TLS to Redis "
		  "(it needs hiredis >= 1.0 with hiredis_ssl)",
		  sizeof(c->errstr));
	return REDIS_ERR;
}
#else
static inline int dw_hiredis_initiate_ssl(redisContext *c, SSL *ssl)
{
	return redisInitiateSSL(c, ssl);
}
#endif

#endif

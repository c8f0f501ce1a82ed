/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef DOVEWARDEN_HTTP_AUTH_H
#define DOVEWARDEN_HTTP_AUTH_H

struct http_auth_credentials;
struct ip_addr;

/* TRUE for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: a listener there is
   reachable from this host only, where POST /events needs no secret */
bool dovewarden_http_ip_is_loopback(const struct ip_addr *ip);

/* Check the parsed Authorization header of a POST /events against
   dovewarden_http_secret (not ""): "Bearer <secret>" or "Basic" with any
   user and the secret as password. Returns 1 when they match, -1 when
   not (also for an unknown scheme or credentials without data). Compares
   in time independent of where the strings differ. */
int dovewarden_http_auth_check(const struct http_auth_credentials *creds,
			       const char *secret);

#endif

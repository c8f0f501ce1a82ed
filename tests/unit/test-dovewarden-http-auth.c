/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "net.h"
#include "http-auth.h"
#include "dovewarden-http-auth.h"

#include <criterion/criterion.h>

static bool is_loopback(const char *addr)
{
	struct ip_addr ip;

	cr_assert_eq(net_addr2ip(addr, &ip), 0, "%s", addr);
	return dovewarden_http_ip_is_loopback(&ip);
}

/* A listener on these needs no dovewarden_http_secret */
Test(http_auth, loopback_addresses)
{
	cr_assert(is_loopback("127.0.0.1"));
	cr_assert(is_loopback("127.1.2.3"));
	cr_assert(is_loopback("127.255.255.255"));
	cr_assert(is_loopback("::1"));
	cr_assert(is_loopback("::ffff:127.0.0.1"));
}

/* ... and these reach other hosts */
Test(http_auth, other_addresses)
{
	struct ip_addr ip;

	cr_assert(!is_loopback("0.0.0.0"));
	cr_assert(!is_loopback("1.0.0.127"));
	cr_assert(!is_loopback("128.0.0.1"));
	cr_assert(!is_loopback("10.0.0.1"));
	cr_assert(!is_loopback("::"));
	cr_assert(!is_loopback("::2"));
	cr_assert(!is_loopback("::ffff:10.0.0.1"));
	cr_assert(!is_loopback("fe80::1"));
	i_zero(&ip);
	cr_assert(!dovewarden_http_ip_is_loopback(&ip));
}

static int check(const char *scheme, const char *data, const char *secret)
{
	struct http_auth_credentials creds;

	i_zero(&creds);
	creds.scheme = scheme;
	creds.data = data;
	return dovewarden_http_auth_check(&creds, secret);
}

Test(http_auth, bearer_and_basic)
{
	cr_assert_eq(check("Bearer", "s3cret", "s3cret"), 1);
	cr_assert_eq(check("bearer", "s3cret", "s3cret"), 1);
	cr_assert_eq(check("Bearer", "s3cre", "s3cret"), -1);
	cr_assert_eq(check("Bearer", "s3cret!", "s3cret"), -1);
	cr_assert_eq(check("Bearer", NULL, "s3cret"), -1);
	/* base64("any:s3cret") */
	cr_assert_eq(check("Basic", "YW55OnMzY3JldA==", "s3cret"), 1);
	/* base64("any:wrong") */
	cr_assert_eq(check("Basic", "YW55Ondyb25n", "s3cret"), -1);
	cr_assert_eq(check("Digest", "s3cret", "s3cret"), -1);
}

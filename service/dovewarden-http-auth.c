/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "base64.h"
#include "buffer.h"
#include "sha2.h"
#include "net.h"
#include "http-auth.h"
#include "dovewarden-http-auth.h"

bool dovewarden_http_ip_is_loopback(const struct ip_addr *ip)
{
	static const unsigned char v4mapped_prefix[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
	};
	const unsigned char *v6;

	/* not net_ip4_loopback: lib-dovecot keeps it in host byte order,
	   so it doesn't match 127.0.0.1 on little-endian hosts */
	if (IPADDR_IS_V4(ip))
		return (ntohl(ip->u.ip4.s_addr) >> 24) == 127;
	if (!IPADDR_IS_V6(ip))
		return FALSE;
	if (net_ip_compare(ip, &net_ip6_loopback))
		return TRUE;
	v6 = ip->u.ip6.s6_addr;
	return memcmp(v6, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0 &&
		v6[12] == 127;
}

/* Compares the digests, so that neither the bytes nor the length of the
   secret show in how long the comparison takes */
static bool http_secret_equals(const void *given, size_t given_size,
			       const char *secret)
{
	unsigned char given_digest[SHA256_RESULTLEN];
	unsigned char secret_digest[SHA256_RESULTLEN];

	sha256_get_digest(given, given_size, given_digest);
	sha256_get_digest(secret, strlen(secret), secret_digest);
	return mem_equals_timing_safe(given_digest, secret_digest,
				      SHA256_RESULTLEN);
}

int dovewarden_http_auth_check(const struct http_auth_credentials *creds,
			       const char *secret)
{
	const buffer_t *decoded;
	const unsigned char *p;

	if (creds->data == NULL)
		return -1;
	if (strcasecmp(creds->scheme, "Bearer") == 0)
		return http_secret_equals(creds->data, strlen(creds->data),
					  secret) ? 1 : -1;
	if (strcasecmp(creds->scheme, "Basic") != 0)
		return -1;
	decoded = t_base64_decode_str(creds->data);
	p = memchr(decoded->data, ':', decoded->used);
	if (p == NULL)
		return -1;
	p++;
	return http_secret_equals(p, decoded->used -
				  (p - (const unsigned char *)decoded->data),
				  secret) ? 1 : -1;
}

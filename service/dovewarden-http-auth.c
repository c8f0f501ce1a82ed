/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "base64.h"
#include "buffer.h"
#include "sha2.h"
#include "http-auth.h"
#include "dovewarden-http-auth.h"

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

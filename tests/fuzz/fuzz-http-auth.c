/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for the Authorization header of POST /events: the input is
   the header's value, parsed as Dovecot's HTTP server does and checked
   by dovewarden_http_auth_check() (dovewarden-http-auth.h) against a
   secret. See fuzz-target.h. */

#include "lib.h"
#include "http-auth.h"
#include "dovewarden-http-auth.h"
#include "fuzz-target.h"

#define FUZZ_SECRET "s3cret"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_auth_credentials creds;
	int ret;

	fuzz_init();
	T_BEGIN {
		i_zero(&creds);
		if (http_auth_parse_credentials(data, size, &creds) > 0) {
			ret = dovewarden_http_auth_check(&creds, FUZZ_SECRET);
			i_assert(ret == 1 || ret == -1);
			if (ret == 1)
				i_assert(creds.data != NULL);
		}
	} T_END;
	return 0;
}

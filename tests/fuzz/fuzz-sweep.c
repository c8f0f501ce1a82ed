/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for the userdb sweep's lines from auth,
   dovewarden_sweep_parse_line() in dovewarden-sweep.h: the input's lines
   as a conversation, the first one as the handshake. See
   fuzz-target.h. */

#include "lib.h"
#include "dovewarden-protocol.h"
#include "dovewarden-sweep.h"
#include "fuzz-target.h"

struct fuzz_sweep {
	bool version_received;
	bool done;
};

static void fuzz_line(const char *line, void *context)
{
	struct fuzz_sweep *ctx = context;
	const char *username;

	if (ctx->done)
		return;
	switch (dovewarden_sweep_parse_line(line, ctx->version_received,
					    &username)) {
	case DOVEWARDEN_SWEEP_LINE_USER:
		i_assert(username != NULL);
		(void)dovewarden_username_is_valid(username);
		return;
	case DOVEWARDEN_SWEEP_LINE_VERSION:
		i_assert(!ctx->version_received);
		ctx->version_received = TRUE;
		break;
	case DOVEWARDEN_SWEEP_LINE_IGNORE:
		i_assert(ctx->version_received);
		break;
	case DOVEWARDEN_SWEEP_LINE_BAD_HANDSHAKE:
		i_assert(!ctx->version_received);
		ctx->done = TRUE;
		break;
	case DOVEWARDEN_SWEEP_LINE_DONE:
	case DOVEWARDEN_SWEEP_LINE_FAILED:
	case DOVEWARDEN_SWEEP_LINE_UNEXPECTED:
		i_assert(ctx->version_received);
		ctx->done = TRUE;
		break;
	}
	i_assert(username == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_sweep ctx;

	fuzz_init();
	i_zero(&ctx);
	fuzz_foreach_line(data, size, fuzz_line, &ctx);
	return 0;
}

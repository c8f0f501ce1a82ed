/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

#include "lib.h"
#include "fuzz-target.h"

void fuzz_init(void)
{
	static bool initialized = FALSE;

	if (!initialized) {
		lib_init();
		initialized = TRUE;
	}
}

void fuzz_foreach_line(const uint8_t *data, size_t size,
		       fuzz_line_callback_t *callback, void *context)
{
	const uint8_t *p, *end = data + size;

	while (data < end) {
		p = memchr(data, '\n', end - data);
		if (p == NULL)
			p = end;
		T_BEGIN {
			callback(t_strndup(data, p - data), context);
		} T_END;
		data = p + 1;
	}
}

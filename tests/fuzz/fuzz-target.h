/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */
#ifndef FUZZ_TARGET_H
#define FUZZ_TARGET_H

/* Every fuzz target defines LLVMFuzzerTestOneInput(). With clang and
   -Dfuzz=true it is linked with libFuzzer (DOVEWARDEN_LIBFUZZER is
   defined); otherwise with fuzz-main.c, a plain program:

     fuzz-<target> <file or directory>...

   that runs every file, every prefix of it and every single-byte change
   of it to a few interesting values through the target. The unit suite
   runs it over the target's corpus, tests/fuzz/corpus/<target>/.

   A target checks its parser's invariants with i_assert(): a failed one
   aborts, which both drivers report. */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Call lib_init() once */
void fuzz_init(void);

/* Call callback for every LF-terminated (or last) line of data, as a
   NUL-terminated copy on the data stack. A NUL byte ends the line's
   string early, as it does for the services' line readers. */
typedef void fuzz_line_callback_t(const char *line, void *context);
void fuzz_foreach_line(const uint8_t *data, size_t size,
		       fuzz_line_callback_t *callback, void *context);

#endif

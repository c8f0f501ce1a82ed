/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* Fuzz target for the event exporter mapping (dovewarden-event.h).

   With clang and -Dfuzz=true this is a libFuzzer target
   (DOVEWARDEN_LIBFUZZER is defined). Otherwise it is a plain program:

     fuzz-event <file or directory>...

   runs every file, every prefix of it and every single-byte change to a
   few interesting values through the parser, and checks the results'
   invariants. The unit suite runs it over tests/unit/data/events. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "dovewarden-event.h"

#include <dirent.h>
#include <stdio.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_one(const uint8_t *data, size_t size)
{
	ARRAY_TYPE(dovewarden_event_change) changes;
	const struct dovewarden_event_change *change;
	const char *error;
	pool_t pool;

	pool = pool_alloconly_create("fuzz event", 1024);
	T_BEGIN {
		t_array_init(&changes, 4);
		if (dovewarden_event_parse(data, size, pool, &changes,
					   &error) < 0) {
			i_assert(error != NULL && error[0] != '\0');
			i_assert(array_count(&changes) == 0);
		} else {
			i_assert(size <= DOVEWARDEN_EVENT_MAX_BODY_SIZE);
			array_foreach(&changes, change) {
				i_assert(change->event_name != NULL);
				if (change->username == NULL) {
					i_assert(change->priority ==
						 DOVEWARDEN_PRIORITY_NONE);
					i_assert(change->ignore_reason != NULL);
				} else {
					i_assert(dovewarden_username_is_valid(
						change->username));
					i_assert(change->priority !=
						 DOVEWARDEN_PRIORITY_NONE);
				}
			}
		}
	} T_END;
	pool_unref(&pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool initialized = FALSE;

	if (!initialized) {
		lib_init();
		initialized = TRUE;
	}
	fuzz_one(data, size);
	return 0;
}

#ifndef DOVEWARDEN_LIBFUZZER
static const uint8_t fuzz_bytes[] = {
	'\0', '"', '\\', '{', '}', '[', ']', ',', ':', '0', ' ', 0xff, 0xc3,
};

static void fuzz_variants(const buffer_t *buf)
{
	buffer_t *copy = t_buffer_create(buf->used);
	uint8_t *p;
	size_t i, j;

	fuzz_one(buf->data, buf->used);
	for (i = 0; i < buf->used; i++)
		fuzz_one(buf->data, i);
	buffer_append_buf(copy, buf, 0, SIZE_MAX);
	p = buffer_get_modifiable_data(copy, NULL);
	for (i = 0; i < copy->used; i++) {
		uint8_t orig = p[i];

		for (j = 0; j < N_ELEMENTS(fuzz_bytes); j++) {
			p[i] = fuzz_bytes[j];
			fuzz_one(copy->data, copy->used);
		}
		p[i] = orig;
	}
}

static unsigned int fuzz_path(const char *path);

static unsigned int fuzz_dir(const char *path)
{
	struct dirent *d;
	unsigned int count = 0;
	DIR *dir;

	dir = opendir(path);
	if (dir == NULL)
		i_fatal("opendir(%s) failed: %m", path);
	while ((d = readdir(dir)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		T_BEGIN {
			count += fuzz_path(t_strconcat(path, "/", d->d_name,
						       NULL));
		} T_END;
	}
	if (closedir(dir) < 0)
		i_fatal("closedir(%s) failed: %m", path);
	return count;
}

static unsigned int fuzz_path(const char *path)
{
	buffer_t *buf;
	unsigned char data[4096];
	struct stat st;
	ssize_t ret;
	int fd;

	if (stat(path, &st) < 0)
		i_fatal("stat(%s) failed: %m", path);
	if (S_ISDIR(st.st_mode))
		return fuzz_dir(path);

	fd = open(path, O_RDONLY);
	if (fd == -1)
		i_fatal("open(%s) failed: %m", path);
	buf = t_buffer_create(st.st_size + 1);
	while ((ret = read(fd, data, sizeof(data))) > 0)
		buffer_append(buf, data, ret);
	if (ret < 0)
		i_fatal("read(%s) failed: %m", path);
	i_close_fd(&fd);
	fuzz_variants(buf);
	return 1;
}

int main(int argc, char *argv[])
{
	unsigned int count = 0;
	int i;

	lib_init();
	if (argc < 2)
		i_fatal("Usage: %s <file or directory>...", argv[0]);
	for (i = 1; i < argc; i++) T_BEGIN {
		count += fuzz_path(argv[i]);
	} T_END;
	if (count == 0)
		i_fatal("No input files");
	printf("fuzz-event: %u inputs and their variants passed\n", count);
	lib_deinit();
	return 0;
}
#endif

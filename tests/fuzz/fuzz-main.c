/* Copyright (c) 2026 dovewarden authors, see the included COPYING file */

/* The plain driver of the fuzz targets (see fuzz-target.h) */

#include "lib.h"
#include "buffer.h"
#include "fuzz-target.h"

#include <dirent.h>
#include <stdio.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t fuzz_bytes[] = {
	'\0', '\t', '\n', '\001', '\\', '"', '{', '}', ',', ':', '0', '9',
	'-', '+', ' ', '*', '$', 0xff, 0xc3,
};

static void fuzz_variants(const buffer_t *buf)
{
	buffer_t *copy = t_buffer_create(buf->used);
	uint8_t *p;
	size_t i, j;

	(void)LLVMFuzzerTestOneInput(buf->data, buf->used);
	for (i = 0; i < buf->used; i++)
		(void)LLVMFuzzerTestOneInput(buf->data, i);
	buffer_append_buf(copy, buf, 0, SIZE_MAX);
	p = buffer_get_modifiable_data(copy, NULL);
	for (i = 0; i < copy->used; i++) {
		uint8_t orig = p[i];

		for (j = 0; j < N_ELEMENTS(fuzz_bytes); j++) {
			p[i] = fuzz_bytes[j];
			(void)LLVMFuzzerTestOneInput(copy->data, copy->used);
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

	fuzz_init();
	if (argc < 2)
		i_fatal("Usage: %s <file or directory>...", argv[0]);
	for (i = 1; i < argc; i++) T_BEGIN {
		count += fuzz_path(argv[i]);
	} T_END;
	if (count == 0)
		i_fatal("No input files");
	printf("%s: %u inputs and their variants passed\n", argv[0], count);
	return 0;
}

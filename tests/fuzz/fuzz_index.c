/* SPDX-License-Identifier: MIT */
/*
 * fuzz_index: the parser of model.safetensors.index.json
 * (ckpt_index_parse) and the checks of its weight_map against the shards.
 * The input is the file's content.  What parses must be a weight_map of
 * tensor names to file names beside the index; it is then put beside the
 * shards of the golden checkpoint $GOLDEN_DIR/tiny/hf (linked into a
 * temporary directory) and the checkpoint opened, as a conversion opens
 * it.  What opens must map every tensor to the shard that holds it.
 *
 * libFuzzer options: -max_len=65536 -dict=tests/fuzz/json.dict
 */
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "fuzz.h"

#define INDEX "model.safetensors.index.json"

static char dir[4096];

static void remove_dir(void)
{
	char path[8192];
	struct dirent *d;
	DIR *dp = opendir(dir);

	while (dp && (d = readdir(dp)))
		if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0) {
			snprintf(path, sizeof(path), "%s/%s", dir, d->d_name);
			unlink(path);
		}
	if (dp)
		closedir(dp);
	rmdir(dir);
}

/* dir: links to the golden shards and config.json, no index yet. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *golden = getenv("GOLDEN_DIR"), *tmp = getenv("TMPDIR");
	char from[4096], to[8192];
	struct dirent *d;
	DIR *dp;

	(void)argc;
	(void)argv;
	if (!golden) {
		fprintf(stderr, "fuzz_index: set GOLDEN_DIR to tests/golden\n");
		exit(2);
	}
	snprintf(dir, sizeof(dir), "%s/ckptconv-fuzz.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		abort();
	atexit(remove_dir);
	snprintf(from, sizeof(from), "%s/tiny/hf", golden);
	dp = opendir(from);
	if (!dp)
		abort();
	while ((d = readdir(dp)))
		if (d->d_name[0] != '.' && strcmp(d->d_name, INDEX) != 0) {
			snprintf(to, sizeof(to), "%s/%s", dir, d->d_name);
			snprintf(from, sizeof(from), "%s/tiny/hf/%s", golden, d->d_name);
			if (symlink(from, to))
				abort();
		}
	closedir(dp);
	return 0;
}

static void open_with(const uint8_t *data, size_t size)
{
	struct ckpt *c = NULL;
	struct err e = {0};
	char path[8192];
	size_t i;
	int fd, rc;

	snprintf(path, sizeof(path), "%s/%s", dir, INDEX);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd))
		abort();
	rc = ckpt_open(dir, CKPT_REQUIRE_CONFIG, &c, &e);
	fuzz_check_err("ckpt_open", rc, &e);
	if (rc == 0) {
		if (!c->has_index || c->ntensors == 0)
			fuzz_fail("a checkpoint opened through the index has no index or tensors");
		for (i = 0; i < c->ntensors; i++)
			if (c->tensors[i].file >= c->nfiles)
				fuzz_fail("tensor '%s' is in no file", c->tensors[i].name);
	}
	ckpt_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *map = NULL, *v;
	struct err e = {0};
	const char *key;
	int rc;

	rc = ckpt_index_parse("fuzz/" INDEX, (const char *)data, size, &map, &e);
	fuzz_check_err("ckpt_index_parse", rc, &e);
	if (rc) {
		if (map)
			fuzz_fail("ckpt_index_parse failed but returned a weight_map");
		return 0;
	}
	if (!json_is_object(map))
		fuzz_fail("ckpt_index_parse accepted a weight_map that is not an object");
	json_object_foreach(map, key, v)
		if (!json_is_string(v) || strchr(json_string_value(v), '/'))
			fuzz_fail("weight_map entry '%s' is not a file name", key);
	json_decref(map);
	open_with(data, size);
	return 0;
}

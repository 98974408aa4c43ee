/* SPDX-License-Identifier: MIT */
/*
 * job_tensors: the per-tensor listing file.  Layout: the magic
 * "CKTLIST1", the tensor count n (uint64, host order), n + 1 offsets
 * (uint64) into the data, then each tensor's JSON fragment; the file is
 * mapped read-only and checked before use, so a page of the listing is
 * built by copying bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/job.h"
#include "ckptconv/job_record.h"
#include "ckptconv/job_tensors.h"
#include "ckptconv/plan.h"

#define TENSORS_MAGIC "CKTLIST1"

struct job_tensors {
	atomic_int refs;
	void *map;
	size_t map_len;
	size_t count;
	const uint64_t *offsets; /* count + 1 entries, relative to data */
	const char *data;
};

static void fragment_build(struct buf *b, const struct plan *plan, const struct plan_tensor *t)
{
	uint32_t k;
	int d;

	buf_puts(b, "{\"name\":");
	buf_json_string(b, t->name);
	buf_printf(b, ",\"dtype\":\"%s\",\"shape\":[", dtype_name(t->dtype));
	for (d = 0; d < t->ndim; d++)
		buf_printf(b, "%s%" PRIu64, d ? "," : "", t->shape[d]);
	buf_printf(b, "],\"bytes\":%" PRIu64 ",\"file\":", t->nbytes);
	buf_json_string(b, plan->files[t->file].name);
	buf_puts(b, ",\"sources\":[");
	for (k = 0; k < t->nsources; k++) {
		if (k)
			buf_append(b, ",", 1);
		buf_json_string(b, plan->src->tensors[t->sources[k]].name);
	}
	buf_puts(b, "],\"state\":\"");
}

int job_tensors_write(const struct plan *plan, const char *path, bool durable, struct err *e)
{
	struct buf data = {0}, file = {0};
	uint64_t *offsets = xcalloc(plan->ntensors + 1, sizeof(*offsets));
	uint64_t n = plan->ntensors;
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	size_t i;
	int rc;

	for (i = 0; i < plan->ntensors; i++) {
		offsets[i] = data.len;
		fragment_build(&data, plan, &plan->tensors[i]);
	}
	offsets[plan->ntensors] = data.len;
	buf_append(&file, TENSORS_MAGIC, 8);
	buf_append(&file, (const char *)&n, sizeof(n));
	buf_append(&file, (const char *)offsets, (plan->ntensors + 1) * sizeof(*offsets));
	if (data.len)
		buf_append(&file, data.data, data.len);
	snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
	rc = job_write_atomic(dir, slash ? slash + 1 : path, file.data, file.len, durable, e);
	buf_fini(&data);
	buf_fini(&file);
	free(offsets);
	return rc;
}

static int tensors_validate(struct job_tensors *t, const char *path, struct err *e)
{
	const unsigned char *base = t->map;
	uint64_t n, header, i;

	if (t->map_len < 24 || memcmp(base, TENSORS_MAGIC, 8) != 0)
		return err_set(e, ERR_IO_ERROR, "%s: not a tensor listing", path);
	memcpy(&n, base + 8, sizeof(n));
	if (n >= (t->map_len - 16) / 8)
		return err_set(e, ERR_IO_ERROR, "%s: tensor count %" PRIu64 " too large", path, n);
	header = 16 + (n + 1) * 8;
	t->count = n;
	t->offsets = (const uint64_t *)(base + 16);
	t->data = (const char *)base + header;
	for (i = 0; i < n; i++)
		if (t->offsets[i] > t->offsets[i + 1])
			return err_set(e, ERR_IO_ERROR, "%s: offsets out of order", path);
	if (t->offsets[0] != 0 || t->offsets[n] != t->map_len - header)
		return err_set(e, ERR_IO_ERROR, "%s: size does not match its offsets", path);
	return 0;
}

int job_tensors_open(const char *path, struct job_tensors **out, struct err *e)
{
	struct job_tensors *t = NULL;
	struct stat st;
	int fd, rc = -1;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set_errno(e, ERR_IO_ERROR, errno, "%s", path);
	if (fstat(fd, &st) != 0) {
		err_set_errno(e, ERR_IO_ERROR, errno, "%s", path);
		goto out_close;
	}
	t = xcalloc(1, sizeof(*t));
	atomic_init(&t->refs, 1);
	t->map_len = (size_t)st.st_size;
	t->map = t->map_len ? mmap(NULL, t->map_len, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
	if (t->map == MAP_FAILED) {
		err_set_errno(e, ERR_IO_ERROR, t->map_len ? errno : 0, "%s: cannot map", path);
		t->map = NULL;
		goto out_free;
	}
	if (tensors_validate(t, path, e) < 0)
		goto out_free;
	*out = t;
	t = NULL;
	rc = 0;
out_free:
	job_tensors_unref(t);
out_close:
	close(fd);
	return rc;
}

struct job_tensors *job_tensors_ref(struct job_tensors *t)
{
	if (t)
		atomic_fetch_add(&t->refs, 1);
	return t;
}

void job_tensors_unref(struct job_tensors *t)
{
	if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	if (t->map)
		munmap(t->map, t->map_len);
	free(t);
}

size_t job_tensors_count(const struct job_tensors *t)
{
	return t ? t->count : 0;
}

void job_tensors_fragment(const struct job_tensors *t, size_t i, const char **out, size_t *len)
{
	*out = t->data + t->offsets[i];
	*len = (size_t)(t->offsets[i + 1] - t->offsets[i]);
}

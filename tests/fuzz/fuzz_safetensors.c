/* SPDX-License-Identifier: MIT */
/*
 * fuzz_safetensors: the safetensors header parser.  The input is what a
 * checkpoint's reader learns about one file: its size (8 bytes, little
 * endian, as a listing or stat reports it) followed by the file's first
 * bytes, the 8-byte header size prefix and the header JSON.  Whatever
 * st_header_parse accepts, st_header_build must write back as a header that
 * parses to the same tensors at the same offsets.
 *
 * libFuzzer options: -max_len=65536 -dict=tests/fuzz/json.dict
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/err.h"
#include "ckptconv/safetensors.h"
#include "fuzz.h"

#define PATH "fuzz.safetensors"

static void check_same(const struct st_header *a, const struct st_header *b)
{
	size_t i;

	if (a->ntensors != b->ntensors)
		fuzz_fail("rebuilt header holds %zu tensors, not %zu", b->ntensors, a->ntensors);
	for (i = 0; i < a->ntensors; i++) {
		const struct st_tensor *x = &a->tensors[i], *y = &b->tensors[i];

		if (strcmp(x->name, y->name) != 0 || x->dtype != y->dtype || x->ndim != y->ndim ||
		    memcmp(x->shape, y->shape, sizeof(x->shape[0]) * (size_t)x->ndim) != 0 ||
		    x->begin != y->begin || x->end != y->end)
			fuzz_fail("tensor %zu ('%s') differs after st_header_build", i, x->name);
	}
}

/* st_header_build of the parsed tensors, parsed again. */
static void rebuild(const struct st_header *h)
{
	struct st_header again = {0};
	struct err e = {0};
	uint64_t header_len, data_size = h->file_size - h->data_start, file_size;
	char *built;
	size_t len;
	int rc;

	rc = st_header_build(h->tensors, h->ntensors, &built, &len, &e);
	fuzz_check_err("st_header_build", rc, &e);
	if (rc)
		fuzz_fail("st_header_build refused a parsed header: %s", e.msg);
	file_size = len + data_size;
	rc = st_prefix_parse(PATH, (const unsigned char *)built, file_size, &header_len, &e);
	if (rc == 0)
		rc = st_header_parse(PATH, built + ST_PREFIX_LEN, len - ST_PREFIX_LEN, header_len,
				     file_size, &again, &e);
	if (rc)
		fuzz_fail("a header written by st_header_build does not parse: %s", e.msg);
	check_same(h, &again);
	st_header_fini(&again);
	free(built);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct st_header h = {0};
	struct err e = {0};
	uint64_t file_size, header_len;
	char *json;
	int rc;

	if (size < 8 + ST_PREFIX_LEN)
		return 0;
	file_size = fuzz_le64(data);
	data += 8;
	size -= 8;
	rc = st_prefix_parse(PATH, data, file_size, &header_len, &e);
	fuzz_check_err("st_prefix_parse", rc, &e);
	/* A header longer than the bytes given is a read that came up short. */
	if (rc || header_len > size - ST_PREFIX_LEN)
		return 0;
	/* A buffer of exactly the header's size, so that reading past it is
	 * caught. */
	json = malloc(header_len ? (size_t)header_len : 1);
	if (!json)
		abort();
	memcpy(json, data + ST_PREFIX_LEN, (size_t)header_len);
	rc = st_header_parse(PATH, json, (size_t)header_len, header_len, file_size, &h, &e);
	free(json);
	fuzz_check_err("st_header_parse", rc, &e);
	if (rc == 0) {
		rebuild(&h);
		st_header_fini(&h);
	}
	return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * fuzz_automodel: the parsers of a NeMo Automodel sharded checkpoint.  The
 * first input byte picks one: 's' a shard header (automodel_shard_parse;
 * the rest as for fuzz_safetensors: the file's size, 8 bytes little
 * endian, then its first bytes: the 8-byte prefix and the header JSON),
 * 'm' fqn_to_file_index_mapping.json, 'd' fqn_to_dtype_mapping.json
 * (automodel_mapping_parse; the rest is the file).  What a shard parse
 * accepts must give one chunk per header tensor, with a name of the
 * header, one offset per dimension and offset + size not overflowing;
 * what a mapping parse accepts must map every name to an index 1..99999 or
 * a safetensors dtype.
 *
 * libFuzzer options: -max_len=65536 -dict=tests/fuzz/json.dict
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/automodel.h"
#include "ckptconv/err.h"
#include "ckptconv/safetensors.h"
#include "fuzz.h"

#define PATH "fuzz/shard-00001-model-00001-of-00001.safetensors"

static void check_shard(const struct automodel_shard *s)
{
	size_t i, k;
	int d;

	if (s->nchunks != s->header.ntensors)
		fuzz_fail("%zu chunks for %zu header tensors", s->nchunks, s->header.ntensors);
	for (i = 0; i < s->nchunks; i++) {
		const struct automodel_chunk *c = &s->chunks[i];

		for (k = 0; k < s->header.ntensors; k++)
			if (s->header.tensors[k].name == c->name)
				break;
		if (k == s->header.ntensors)
			fuzz_fail("chunk %zu's name is no header tensor's", i);
		if (c->ndim != s->header.tensors[k].ndim ||
		    c->dtype != s->header.tensors[k].dtype ||
		    c->begin != s->header.tensors[k].begin || c->end != s->header.tensors[k].end)
			fuzz_fail("chunk '%s' disagrees with its header entry", c->name);
		for (d = 0; d < c->ndim; d++)
			if (c->offsets[d] + c->shape[d] < c->offsets[d])
				fuzz_fail("chunk '%s' offset + size overflows in dimension %d",
					  c->name, d);
	}
}

static void shard(const uint8_t *data, size_t size)
{
	struct automodel_shard s = {0};
	struct err e = {0};
	uint64_t file_size, header_len;
	char *json;
	int rc;

	if (size < 8 + ST_PREFIX_LEN)
		return;
	file_size = fuzz_le64(data);
	data += 8;
	size -= 8;
	rc = st_prefix_parse(PATH, data, file_size, &header_len, &e);
	if (rc || header_len > size - ST_PREFIX_LEN)
		return;
	/* Exactly the header's size, so that reading past it is caught. */
	json = malloc(header_len ? (size_t)header_len : 1);
	if (!json)
		abort();
	memcpy(json, data + ST_PREFIX_LEN, (size_t)header_len);
	rc = automodel_shard_parse(PATH, json, (size_t)header_len, header_len, file_size, &s, &e);
	free(json);
	fuzz_check_err("automodel_shard_parse", rc, &e);
	if (rc == 0)
		check_shard(&s);
	else if (s.chunks || s.nchunks)
		fuzz_fail("a failed shard parse left chunks");
	automodel_shard_fini(&s);
}

static void mapping(const uint8_t *data, size_t size, bool dtypes)
{
	struct err e = {0};
	const char *key;
	json_t *map = NULL, *v;
	int rc;

	rc = automodel_mapping_parse("fuzz/mapping.json", (const char *)data, size, dtypes, &map,
				     &e);
	fuzz_check_err("automodel_mapping_parse", rc, &e);
	if (rc) {
		if (map)
			fuzz_fail("a failed mapping parse returned a mapping");
		return;
	}
	json_object_foreach(map, key, v) {
		if (dtypes ? !json_is_string(v) ||
				     dtype_from_name(json_string_value(v)) == DTYPE_INVALID :
			     !json_is_integer(v) || json_integer_value(v) < 1 ||
				     json_integer_value(v) > 99999)
			fuzz_fail("mapping entry '%s' is not what the parse promises", key);
	}
	json_decref(map);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] == 's')
		shard(data + 1, size - 1);
	else if (data[0] == 'm' || data[0] == 'd')
		mapping(data + 1, size - 1, data[0] == 'd');
	return 0;
}

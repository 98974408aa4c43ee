/* SPDX-License-Identifier: MIT */
/*
 * safetensors: strict validation of a safetensors header (the 8-byte size
 * prefix and the JSON that follows it) and construction of the header of a
 * file we write.  Every size is computed with overflow checks, and every
 * error names the file and, where there is one, the tensor at fault.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/err.h"
#include "ckptconv/safetensors.h"
#include "ckptconv/util.h"

#define METADATA_KEY "__metadata__"

static uint64_t le64(const unsigned char b[8])
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | b[i];
	return v;
}

static void put_le64(unsigned char b[8], uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
}

int st_prefix_parse(const char *path, const unsigned char prefix[ST_PREFIX_LEN], uint64_t file_size,
		    uint64_t *header_len, struct err *e)
{
	uint64_t n;

	if (file_size < ST_PREFIX_LEN)
		return err_set(e, ERR_FILE_TRUNCATED,
			       "%s: file is %" PRIu64
			       " bytes, too short for the 8-byte header size",
			       path, file_size);
	n = le64(prefix);
	if (n > ST_MAX_HEADER_LEN)
		return err_set(e, ERR_HEADER_TOO_LARGE,
			       "%s: header size %" PRIu64 " is over the limit of %llu bytes", path,
			       n, (unsigned long long)ST_MAX_HEADER_LEN);
	if (n > file_size - ST_PREFIX_LEN)
		return err_set(e, ERR_HEADER_OUT_OF_BOUNDS,
			       "%s: header size %" PRIu64 " exceeds the file size %" PRIu64, path,
			       n, file_size);
	*header_len = n;
	return 0;
}

uint64_t st_tensor_nbytes(const struct st_tensor *t)
{
	return t->end - t->begin;
}

void st_header_fini(struct st_header *h)
{
	size_t i;

	if (!h)
		return;
	for (i = 0; i < h->ntensors; i++)
		free(h->tensors[i].name);
	free(h->tensors);
	memset(h, 0, sizeof(*h));
}

static int tensor_error(struct err *e, const char *name, enum err_code code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int tensor_error(struct err *e, const char *name, enum err_code code, const char *fmt, ...)
{
	char msg[ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	err_set(e, code, "%s", msg);
	err_set_tensor(e, name);
	return -1;
}

/* A JSON integer >= 0, as the format requires for shapes and offsets. */
static bool json_to_u64(const json_t *v, uint64_t *out)
{
	json_int_t i;

	if (!json_is_integer(v))
		return false;
	i = json_integer_value(v);
	if (i < 0)
		return false;
	*out = (uint64_t)i;
	return true;
}

static int parse_dtype(const char *path, const char *name, const json_t *entry, struct st_tensor *t,
		       struct err *e)
{
	const json_t *v = json_object_get(entry, "dtype");

	if (!json_is_string(v))
		return tensor_error(e, name, ERR_UNKNOWN_DTYPE,
				    "%s: tensor '%s' has no dtype string", path, name);
	t->dtype = dtype_from_name(json_string_value(v));
	if (t->dtype == DTYPE_INVALID)
		return tensor_error(e, name, ERR_UNKNOWN_DTYPE,
				    "%s: tensor '%s' has unknown dtype '%s'", path, name,
				    json_string_value(v));
	return 0;
}

static int parse_shape(const char *path, const char *name, const json_t *entry, struct st_tensor *t,
		       struct err *e)
{
	const json_t *shape = json_object_get(entry, "shape");
	size_t i;

	if (!json_is_array(shape))
		return tensor_error(e, name, ERR_INVALID_SHAPE, "%s: tensor '%s' has no shape list",
				    path, name);
	if (json_array_size(shape) > ST_MAX_DIMS)
		return tensor_error(e, name, ERR_INVALID_SHAPE,
				    "%s: tensor '%s' has %zu dimensions, more than %d", path, name,
				    json_array_size(shape), ST_MAX_DIMS);
	t->ndim = (int)json_array_size(shape);
	for (i = 0; i < json_array_size(shape); i++)
		if (!json_to_u64(json_array_get(shape, i), &t->shape[i]))
			return tensor_error(e, name, ERR_INVALID_SHAPE,
					    "%s: tensor '%s' has a shape dimension that is not a "
					    "non-negative integer (dimension %zu)",
					    path, name, i);
	return 0;
}

static int parse_offsets(const char *path, const char *name, const json_t *entry,
			 struct st_tensor *t, struct err *e)
{
	const json_t *off = json_object_get(entry, "data_offsets");

	if (!json_is_array(off) || json_array_size(off) != 2 ||
	    !json_to_u64(json_array_get(off, 0), &t->begin) ||
	    !json_to_u64(json_array_get(off, 1), &t->end))
		return tensor_error(e, name, ERR_INVALID_OFFSETS,
				    "%s: tensor '%s' data_offsets is not [begin, end] of two "
				    "non-negative integers",
				    path, name);
	if (t->begin > t->end)
		return tensor_error(e, name, ERR_INVALID_OFFSETS,
				    "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
				    "] end before begin",
				    path, name, t->begin, t->end);
	return 0;
}

/* end - begin must be prod(shape) x the dtype's bits / 8, a whole number
 * of bytes (safetensors packs the dtypes narrower than a byte with no
 * padding), computed without overflow. */
static int check_size(const char *path, const char *name, const struct st_tensor *t,
		      uint64_t data_size, struct err *e)
{
	uint64_t nelems = 1, expect;
	int i;

	for (i = 0; i < t->ndim; i++)
		if (!u64_mul(nelems, t->shape[i], &nelems))
			return tensor_error(e, name, ERR_OFFSETS_MISMATCH,
					    "%s: tensor '%s' shape x dtype size overflows 64 bits",
					    path, name);
	if (!dtype_bytes(t->dtype, nelems, &expect)) {
		if (nelems <= UINT64_MAX / dtype_bits(t->dtype))
			return tensor_error(e, name, ERR_INVALID_TENSOR,
					    "%s: tensor '%s' holds %" PRIu64
					    " elements of %s (%u bits "
					    "each), %" PRIu64 " bits, not a whole number of bytes",
					    path, name, nelems, dtype_name(t->dtype),
					    dtype_bits(t->dtype), nelems * dtype_bits(t->dtype));
		return tensor_error(e, name, ERR_OFFSETS_MISMATCH,
				    "%s: tensor '%s' shape x dtype size overflows 64 bits", path,
				    name);
	}
	if (t->end - t->begin != expect)
		return tensor_error(e, name, ERR_OFFSETS_MISMATCH,
				    "%s: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
				    "] span %" PRIu64 " bytes but shape x %s size is %" PRIu64
				    " bytes",
				    path, name, t->begin, t->end, t->end - t->begin,
				    dtype_name(t->dtype), expect);
	if (t->end > data_size)
		return tensor_error(e, name, ERR_OFFSETS_OUT_OF_BOUNDS,
				    "%s: tensor '%s' data_offsets end %" PRIu64
				    " lies past the data area of %" PRIu64 " bytes",
				    path, name, t->end, data_size);
	return 0;
}

static int parse_tensor(const char *path, const char *name, const json_t *entry, uint64_t data_size,
			struct st_tensor *t, struct err *e)
{
	if (!json_is_object(entry))
		return tensor_error(
			e, name, ERR_INVALID_SHAPE,
			"%s: tensor '%s' is not an object with dtype, shape and data_offsets", path,
			name);
	if (parse_dtype(path, name, entry, t, e) || parse_shape(path, name, entry, t, e) ||
	    parse_offsets(path, name, entry, t, e) || check_size(path, name, t, data_size, e))
		return -1;
	t->name = xstrdup(name);
	return 0;
}

static int parse_metadata(const char *path, const json_t *meta, struct err *e)
{
	const char *key;
	json_t *v;

	if (!json_is_object(meta))
		return err_set(e, ERR_INVALID_METADATA, "%s: __metadata__ is not an object", path);
	json_object_foreach((json_t *)meta, key, v)
		if (!json_is_string(v))
			return err_set(e, ERR_INVALID_METADATA,
				       "%s: __metadata__ key '%s' does not map to a string", path,
				       key);
	return 0;
}

static int compare_by_offset(const void *pa, const void *pb)
{
	const struct st_tensor *a = pa, *b = pb;

	if (a->begin != b->begin)
		return a->begin < b->begin ? -1 : 1;
	if (a->end != b->end)
		return a->end < b->end ? -1 : 1;
	return strcmp(a->name, b->name);
}

/* Sorted by begin, the tensors must tile [0, data_size) exactly. */
static int check_coverage(const char *path, const struct st_header *h, uint64_t data_size,
			  struct err *e)
{
	const struct st_tensor *last = NULL;
	uint64_t covered = 0;
	size_t i;

	for (i = 0; i < h->ntensors; i++) {
		const struct st_tensor *t = &h->tensors[i];

		if (t->begin < covered)
			return tensor_error(e, t->name, ERR_OVERLAPPING_TENSORS,
					    "%s: tensor '%s' [%" PRIu64 ", %" PRIu64
					    ") overlaps tensor '%s' [%" PRIu64 ", %" PRIu64 ")",
					    path, t->name, t->begin, t->end, last->name,
					    last->begin, last->end);
		if (t->begin > covered)
			return tensor_error(
				e, t->name, ERR_DATA_HOLE,
				"%s: bytes [%" PRIu64 ", %" PRIu64
				") of the data area before tensor '%s' belong to no tensor",
				path, covered, t->begin, t->name);
		if (t->end > covered || !last) {
			covered = t->end;
			last = t;
		}
	}
	if (covered < data_size)
		return err_set(e, ERR_TRAILING_BYTES,
			       "%s: the file continues %" PRIu64 " bytes past the end of its data "
			       "(the tensors end at byte %" PRIu64 " of the %" PRIu64
			       " bytes after the header)",
			       path, data_size - covered, covered, data_size);
	return 0;
}

/* jansson says: duplicate object key near '"name"'. */
static int duplicate_key_error(const char *path, const char *text, struct err *e)
{
	const char *start = strstr(text, "near '\"");
	const char *end = strrchr(text, '\'');
	char name[ERR_TENSOR_MAX];
	int len;

	if (!start || end < start + 7)
		return err_set(e, ERR_DUPLICATE_TENSOR, "%s: header has a duplicate key (%s)", path,
			       text);
	start += 7;
	len = (int)(end - start) - 1;
	snprintf(name, sizeof(name), "%.*s", len < 0 ? 0 : len, start);
	return tensor_error(e, name, ERR_DUPLICATE_TENSOR,
			    "%s: tensor '%s' appears twice in the header", path, name);
}

static int load_json(const char *path, const char *json, size_t len, json_t **out, struct err *e)
{
	json_error_t jerr;
	json_t *root;

	if (len == 0 || json[0] != '{')
		return err_set(e, ERR_HEADER_NOT_OBJECT,
			       "%s: header is not a JSON object (it must start with '{')", path);
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		if (json_error_code(&jerr) == json_error_duplicate_key)
			return duplicate_key_error(path, jerr.text, e);
		return err_set(e, ERR_HEADER_INVALID_JSON,
			       "%s: header is not valid JSON: %s at byte %d", path, jerr.text,
			       jerr.position);
	}
	if (!json_is_object(root)) {
		json_decref(root);
		return err_set(e, ERR_HEADER_NOT_OBJECT, "%s: header is not a JSON object", path);
	}
	*out = root;
	return 0;
}

int st_header_parse(const char *path, const char *json, size_t len, uint64_t header_len,
		    uint64_t file_size, struct st_header *out, struct err *e)
{
	return st_header_parse_root(path, json, len, header_len, file_size, out, NULL, e);
}

int st_header_parse_root(const char *path, const char *json, size_t len, uint64_t header_len,
			 uint64_t file_size, struct st_header *out, json_t **root_out,
			 struct err *e)
{
	struct st_header h = {0};
	uint64_t data_size;
	const char *key;
	json_t *root = NULL, *v;
	int rc = -1;

	if (header_len > file_size || file_size - header_len < ST_PREFIX_LEN)
		return err_set(e, ERR_HEADER_OUT_OF_BOUNDS,
			       "%s: header size %" PRIu64 " exceeds the file size %" PRIu64, path,
			       header_len, file_size);
	data_size = file_size - ST_PREFIX_LEN - header_len;
	if (load_json(path, json, len, &root, e))
		goto out;
	h.header_len = header_len;
	h.data_start = ST_PREFIX_LEN + header_len;
	h.file_size = file_size;
	h.tensors = xcalloc(json_object_size(root), sizeof(*h.tensors));
	json_object_foreach(root, key, v) {
		if (strcmp(key, METADATA_KEY) == 0) {
			if (parse_metadata(path, v, e))
				goto out_header;
			continue;
		}
		if (parse_tensor(path, key, v, data_size, &h.tensors[h.ntensors], e))
			goto out_header;
		h.ntensors++;
	}
	qsort(h.tensors, h.ntensors, sizeof(*h.tensors), compare_by_offset);
	if (check_coverage(path, &h, data_size, e))
		goto out_header;
	*out = h;
	memset(&h, 0, sizeof(h));
	if (root_out) {
		*root_out = root;
		root = NULL;
	}
	rc = 0;
out_header:
	st_header_fini(&h);
	json_decref(root);
out:
	return rc;
}

static json_t *tensor_json(const struct st_tensor *t, uint64_t begin, uint64_t end)
{
	json_t *shape = json_array();
	int i;

	for (i = 0; i < t->ndim; i++)
		json_array_append_new(shape, json_integer((json_int_t)t->shape[i]));
	return json_pack("{s:s, s:o, s:[I,I]}", "dtype", dtype_name(t->dtype), "shape", shape,
			 "data_offsets", (json_int_t)begin, (json_int_t)end);
}

static int tensor_size(const struct st_tensor *t, uint64_t *size)
{
	uint64_t nelems = 1;
	int d;

	if (t->ndim < 0 || t->ndim > ST_MAX_DIMS)
		return -1;
	for (d = 0; d < t->ndim; d++)
		if (!u64_mul(nelems, t->shape[d], &nelems))
			return -1;
	return dtype_bytes(t->dtype, nelems, size) ? 0 : -1;
}

/* The header object: __metadata__ first, then the tensors back to back. */
static int build_object(const struct st_tensor *tensors, size_t n, json_t **out, struct err *e)
{
	json_t *root = json_object();
	uint64_t offset = 0, size, end;
	size_t i;

	json_object_set_new(root, METADATA_KEY, json_pack("{s:s}", "format", "pt"));
	for (i = 0; i < n; i++) {
		const struct st_tensor *t = &tensors[i];

		if (tensor_size(t, &size) || !u64_add(offset, size, &end) || end > INT64_MAX) {
			json_decref(root);
			return tensor_error(e, t->name, ERR_PLAN_INVALID,
					    "tensor '%s' has an invalid dtype or rank, or its size "
					    "overflows",
					    t->name);
		}
		if (strcmp(t->name, METADATA_KEY) == 0 || json_object_get(root, t->name)) {
			json_decref(root);
			return tensor_error(e, t->name, ERR_DUPLICATE_TENSOR,
					    "tensor '%s' is listed twice in one file", t->name);
		}
		json_object_set_new(root, t->name, tensor_json(t, offset, end));
		offset = end;
	}
	*out = root;
	return 0;
}

int st_header_build(const struct st_tensor *tensors, size_t n, char **out, size_t *out_len,
		    struct err *e)
{
	json_t *root = NULL;
	char *text, *buf;
	size_t len, padded;

	if (build_object(tensors, n, &root, e))
		return -1;
	text = json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT);
	json_decref(root);
	if (!text)
		return err_set(e, ERR_INTERNAL_ERROR, "cannot encode a safetensors header");
	len = strlen(text);
	padded = (ST_PREFIX_LEN + len + 7) / 8 * 8 - ST_PREFIX_LEN;
	buf = xmalloc(ST_PREFIX_LEN + padded);
	put_le64((unsigned char *)buf, padded);
	memcpy(buf + ST_PREFIX_LEN, text, len);
	memset(buf + ST_PREFIX_LEN + len, ' ', padded - len);
	free(text);
	*out = buf;
	*out_len = ST_PREFIX_LEN + padded;
	return 0;
}

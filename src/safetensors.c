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

/* One header member at a time, as the JSON object {member}. */
struct member_buf {
	char *data;
	size_t cap;
};

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

static bool json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The end of the member starting at json[i] (a key, ':' and a value): the
 * first ',' or '}' outside strings and nested values, or len when there is
 * none; (size_t)-1 for a bracket closed that was never opened.  Only
 * where members end is decided here; jansson validates each member. */
static size_t member_end(const char *json, size_t len, size_t i)
{
	bool in_string = false;
	size_t depth = 0;

	for (; i < len; i++) {
		char c = json[i];

		if (in_string) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		} else if (c == '"') {
			in_string = true;
		} else if (c == '{' || c == '[') {
			depth++;
		} else if (c == '}' || c == ']') {
			if (depth == 0)
				return c == '}' ? i : (size_t)-1;
			depth--;
		} else if (c == ',' && depth == 0) {
			return i;
		}
	}
	return len;
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

static int invalid_json(const char *path, const char *what, size_t at, struct err *e)
{
	return err_set(e, ERR_HEADER_INVALID_JSON, "%s: header is not valid JSON: %s at byte %zu",
		       path, what, at);
}

/* One member, json[begin, end), parsed by jansson as the object
 * {member}: *key and *value borrow from *obj (json_decref releases). */
static int load_member(const char *path, const char *json, size_t begin, size_t end,
		       struct member_buf *buf, json_t **obj, const char **key, json_t **value,
		       struct err *e)
{
	json_error_t jerr;
	void *iter;
	size_t n = end - begin;

	if (n + 2 > buf->cap) {
		buf->cap = (n + 2) * 2;
		buf->data = xrealloc(buf->data, buf->cap);
	}
	buf->data[0] = '{';
	memcpy(buf->data + 1, json + begin, n);
	buf->data[n + 1] = '}';
	*obj = json_loadb(buf->data, n + 2, JSON_REJECT_DUPLICATES, &jerr);
	if (!*obj && json_error_code(&jerr) == json_error_duplicate_key)
		return duplicate_key_error(path, jerr.text, e);
	if (!*obj)
		return invalid_json(path, jerr.text,
				    begin + (jerr.position > 0 ? (size_t)jerr.position - 1 : 0), e);
	iter = json_object_iter(*obj);
	if (json_object_size(*obj) != 1 || !iter) {
		json_decref(*obj);
		*obj = NULL;
		return invalid_json(path, "an object member expected", begin, e);
	}
	*key = json_object_iter_key(iter);
	*value = json_object_iter_value(iter);
	return 0;
}

static int compare_names(const void *pa, const void *pb)
{
	const struct st_tensor *const *a = pa, *const *b = pb;

	return strcmp((*a)->name, (*b)->name);
}

/* No tensor name twice (the format's keys are unique). */
static int check_unique(const char *path, const struct st_header *h, struct err *e)
{
	const struct st_tensor **by_name =
		xmalloc((h->ntensors ? h->ntensors : 1) * sizeof(*by_name));
	size_t i;
	int rc = 0;

	for (i = 0; i < h->ntensors; i++)
		by_name[i] = &h->tensors[i];
	qsort(by_name, h->ntensors, sizeof(*by_name), compare_names);
	for (i = 1; i < h->ntensors && rc == 0; i++)
		if (strcmp(by_name[i]->name, by_name[i - 1]->name) == 0)
			rc = tensor_error(e, by_name[i]->name, ERR_DUPLICATE_TENSOR,
					  "%s: tensor '%s' appears twice in the header", path,
					  by_name[i]->name);
	free(by_name);
	return rc;
}

/* One member of the header: __metadata__ or a tensor, appended to h. */
static int parse_member(const char *path, const char *key, const json_t *v, uint64_t data_size,
			struct st_header *h, size_t *cap, bool *seen_metadata, struct err *e)
{
	if (strcmp(key, METADATA_KEY) == 0) {
		if (*seen_metadata)
			return tensor_error(e, key, ERR_DUPLICATE_TENSOR,
					    "%s: tensor '%s' appears twice in the header", path, key);
		*seen_metadata = true;
		return parse_metadata(path, v, e);
	}
	if (h->ntensors == *cap) {
		*cap = *cap ? *cap * 2 : 64;
		h->tensors = xrealloc(h->tensors, *cap * sizeof(*h->tensors));
	}
	memset(&h->tensors[h->ntensors], 0, sizeof(*h->tensors));
	if (parse_tensor(path, key, v, data_size, &h->tensors[h->ntensors], e))
		return -1;
	h->ntensors++;
	return 0;
}

/* The header's members one at a time, each parsed by jansson and released
 * before the next: memory stays at the header text plus the tensors
 * parsed, not a JSON tree of the whole header (about a kilobyte per
 * tensor, which a shard of 160,000 tensors would take to 200 MB). */
static int parse_members(const char *path, const char *json, size_t len, uint64_t data_size,
			 struct st_header *h, json_t *root, struct err *e)
{
	struct member_buf buf = {0};
	bool seen_metadata = false;
	size_t i = 1, cap = 0, end;
	int rc = -1;

	while (i < len && json_space(json[i]))
		i++;
	if (i < len && json[i] == '}') {
		end = i;
		goto closed;
	}
	for (;;) {
		json_t *obj = NULL, *value;
		const char *key;

		end = member_end(json, len, i);
		if (end == (size_t)-1 || end == len)
			goto out_json;
		if (load_member(path, json, i, end, &buf, &obj, &key, &value, e) < 0)
			goto out;
		rc = parse_member(path, key, value, data_size, h, &cap, &seen_metadata, e);
		/* A duplicate key was refused by parse_member (__metadata__)
		 * or is refused by check_unique below (a tensor). */
		if (rc == 0 && root && json_object_set(root, key, value) != 0)
			rc = err_set(e, ERR_HEADER_INVALID_JSON, "%s: header is not valid JSON",
				     path);
		json_decref(obj);
		if (rc < 0)
			goto out;
		rc = -1;
		if (json[end] == '}')
			break;
		i = end + 1;
	}
closed:
	for (i = end + 1; i < len && json_space(json[i]); i++)
		;
	if (i < len) {
		invalid_json(path, "end of file expected", i, e);
		goto out;
	}
	if (h->ntensors && h->ntensors < cap) /* kept as long as the checkpoint */
		h->tensors = xrealloc(h->tensors, h->ntensors * sizeof(*h->tensors));
	rc = check_unique(path, h, e);
	goto out;
out_json:
	invalid_json(path, "the object is not closed", len, e);
out:
	free(buf.data);
	return rc;
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
	json_t *root = NULL;
	uint64_t data_size;
	int rc = -1;

	if (header_len > file_size || file_size - header_len < ST_PREFIX_LEN)
		return err_set(e, ERR_HEADER_OUT_OF_BOUNDS,
			       "%s: header size %" PRIu64 " exceeds the file size %" PRIu64, path,
			       header_len, file_size);
	data_size = file_size - ST_PREFIX_LEN - header_len;
	if (len == 0 || json[0] != '{')
		return err_set(e, ERR_HEADER_NOT_OBJECT,
			       "%s: header is not a JSON object (it must start with '{')", path);
	h.header_len = header_len;
	h.data_start = ST_PREFIX_LEN + header_len;
	h.file_size = file_size;
	if (root_out)
		root = json_object();
	if (parse_members(path, json, len, data_size, &h, root, e))
		goto out_header;
	if (h.ntensors)
		qsort(h.tensors, h.ntensors, sizeof(*h.tensors), compare_by_offset);
	if (check_coverage(path, &h, data_size, e))
		goto out_header;
	if (root_out) {
		*root_out = root;
		root = NULL;
	}
	*out = h;
	memset(&h, 0, sizeof(h));
	rc = 0;
out_header:
	json_decref(root);
	st_header_fini(&h);
	return rc;
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

/* s as jansson writes a JSON string (compact, UTF-8 kept): the header's
 * bytes stay what they were when the whole header was one jansson
 * object. */
static void append_json_string(struct buf *b, const char *s)
{
	json_t *str = json_string(s);
	size_t n;
	char *text;

	if (!str) { /* not UTF-8, which a parsed header's names always are */
		buf_json_string(b, s);
		return;
	}
	n = json_dumpb(str, NULL, 0, JSON_ENCODE_ANY);
	text = xmalloc(n ? n : 1);
	json_dumpb(str, text, n, JSON_ENCODE_ANY);
	buf_append(b, text, n);
	free(text);
	json_decref(str);
}

static int compare_name_ptrs(const void *pa, const void *pb)
{
	const struct st_tensor *const *a = pa, *const *b = pb;

	return strcmp((*a)->name, (*b)->name);
}

/* No name twice in one file, and none is __metadata__. */
static int check_build_names(const struct st_tensor *tensors, size_t n, struct err *e)
{
	const struct st_tensor **by_name = xmalloc((n ? n : 1) * sizeof(*by_name));
	const char *twice = NULL;
	size_t i;

	for (i = 0; i < n; i++) {
		by_name[i] = &tensors[i];
		if (strcmp(tensors[i].name, METADATA_KEY) == 0)
			twice = tensors[i].name;
	}
	qsort(by_name, n, sizeof(*by_name), compare_name_ptrs);
	for (i = 1; i < n && !twice; i++)
		if (strcmp(by_name[i]->name, by_name[i - 1]->name) == 0)
			twice = by_name[i]->name;
	free(by_name);
	if (twice)
		return tensor_error(e, twice, ERR_DUPLICATE_TENSOR,
				    "tensor '%s' is listed twice in one file", twice);
	return 0;
}

/* The header JSON, written directly (no JSON tree of the whole file):
 * __metadata__ first, then the tensors back to back, as jansson's compact
 * form of {"__metadata__": {"format": "pt"}, name: {"dtype", "shape",
 * "data_offsets"}, ...} in that order. */
static int build_text(const struct st_tensor *tensors, size_t n, struct buf *b, struct err *e)
{
	uint64_t offset = 0, size, end;
	size_t i;
	int d;

	if (check_build_names(tensors, n, e) < 0)
		return -1;
	buf_puts(b, "{\"" METADATA_KEY "\":{\"format\":\"pt\"}");
	for (i = 0; i < n; i++) {
		const struct st_tensor *t = &tensors[i];

		if (tensor_size(t, &size) || !u64_add(offset, size, &end) || end > INT64_MAX)
			return tensor_error(e, t->name, ERR_PLAN_INVALID,
					    "tensor '%s' has an invalid dtype or rank, or its size "
					    "overflows",
					    t->name);
		buf_puts(b, ",");
		append_json_string(b, t->name);
		buf_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", dtype_name(t->dtype));
		for (d = 0; d < t->ndim; d++)
			buf_printf(b, "%s%" PRIu64, d ? "," : "", t->shape[d]);
		buf_printf(b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", offset, end);
		offset = end;
	}
	buf_puts(b, "}");
	return 0;
}

int st_header_build(const struct st_tensor *tensors, size_t n, char **out, size_t *out_len,
		    struct err *e)
{
	struct buf text = {0};
	size_t padded;
	char *buf;

	if (build_text(tensors, n, &text, e) < 0) {
		buf_fini(&text);
		return -1;
	}
	padded = (ST_PREFIX_LEN + text.len + 7) / 8 * 8 - ST_PREFIX_LEN;
	buf = xmalloc(ST_PREFIX_LEN + padded);
	put_le64((unsigned char *)buf, padded);
	memcpy(buf + ST_PREFIX_LEN, text.data, text.len);
	memset(buf + ST_PREFIX_LEN + text.len, ' ', padded - text.len);
	buf_fini(&text);
	*out = buf;
	*out_len = ST_PREFIX_LEN + padded;
	return 0;
}

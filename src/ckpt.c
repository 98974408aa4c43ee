/* SPDX-License-Identifier: MIT */
/*
 * ckpt: opens a checkpoint for reading.  It finds the weight files (through
 * model.safetensors.index.json, or the one *.safetensors file), reads and
 * validates every header without touching tensor data, checks that the
 * index's weight_map agrees with what the files hold, loads config.json, and
 * sorts out which other top-level files a conversion copies and which it
 * skips with a warning.  Unfinished output of the local store (its
 * temporary names) is never taken for part of a checkpoint.  In a confined
 * process (store.h), a weight file, the index or config.json that leads
 * outside the allowed roots is refused with forbidden_path; any other file
 * that does is skipped with a warning.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/manifest.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

#define CONFIG_NAME "config.json"
#define ST_SUFFIX ".safetensors"
#define SMALL_FILE_MAX (64u << 20)
/* A git-lfs pointer file (git-lfs docs/spec.md) starts with this line and
 * is at most a few hundred bytes. */
#define LFS_POINTER_PREFIX "version https://git-lfs.github.com/spec/"
#define LFS_POINTER_MAX 1024

static const char *const other_weight_suffixes[] = {
	".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack",
};

static bool ends_with(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

static bool is_other_weights(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(other_weight_suffixes) / sizeof(other_weight_suffixes[0]); i++)
		if (ends_with(name, other_weight_suffixes[i]))
			return true;
	return false;
}

static void add_file(struct ckpt *c, const char *name, uint64_t size)
{
	c->files = xrealloc(c->files, (c->nfiles + 1) * sizeof(*c->files));
	memset(&c->files[c->nfiles], 0, sizeof(c->files[0]));
	c->files[c->nfiles].name = xstrdup(name);
	c->files[c->nfiles].size = size;
	c->nfiles++;
}

/* ---- git-lfs pointers ---- */

static bool is_lfs_pointer(const char *text, size_t len)
{
	return len >= strlen(LFS_POINTER_PREFIX) &&
	       memcmp(text, LFS_POINTER_PREFIX, strlen(LFS_POINTER_PREFIX)) == 0;
}

/* `name` holds the git-lfs pointer `text` instead of its content: the
 * repository was cloned without fetching its large files. */
static int lfs_pointer_error(const struct ckpt *c, const char *name, const char *text, size_t len,
			     struct err *e)
{
	const char *size = memmem(text, len, "\nsize ", 6), *end = text + len, *p;
	uint64_t bytes = 0;

	for (p = size ? size + 6 : end; p < end && *p >= '0' && *p <= '9'; p++)
		if (!u64_mul(bytes, 10, &bytes) || !u64_add(bytes, (uint64_t)(*p - '0'), &bytes))
			break;
	if (size && p > size + 6)
		return err_set(e, ERR_LFS_POINTER,
			       "%s/%s: a git-lfs pointer to %" PRIu64
			       " bytes, not the file itself; fetch the file (git lfs pull)",
			       c->store->location, name, bytes);
	return err_set(
		e, ERR_LFS_POINTER,
		"%s/%s: a git-lfs pointer, not the file itself; fetch the file (git lfs pull)",
		c->store->location, name);
}

/* ---- opening the store ---- */

/* Splits "dir/name" (or "name": dir ".") into a directory and a file name. */
static void split_path(const char *location, char **dir, char **name)
{
	const char *slash = strrchr(location, '/');

	if (!slash) {
		*dir = xstrdup(".");
		*name = xstrdup(location);
		return;
	}
	*name = xstrdup(slash + 1);
	*dir = slash == location ? xstrdup("/") : strndup(location, (size_t)(slash - location));
	if (!*dir)
		abort();
}

/* A path to a single *.safetensors file opens its directory; *single names
 * the file.  Anything else opens as a directory or prefix. */
static int open_store(const char *location, const struct store_config *cfg, struct ckpt *c,
		      char **single, struct err *e)
{
	enum store_entry_kind kind;
	bool file;
	char *dir;
	int rc;

	*single = NULL;
	if (store_location_kind(location, &kind, e))
		return -1;
	file = kind == STORE_FILE;
	if ((file && !ends_with(location, ST_SUFFIX)) || (!file && kind != STORE_DIR))
		return err_set(e, ERR_NOT_A_CHECKPOINT,
			       "%s: neither a directory nor a *.safetensors file", location);
	if (!file)
		return store_open_config(location, cfg, &c->store, e);
	split_path(location, &dir, single);
	rc = store_open_config(dir, cfg, &c->store, e);
	free(dir);
	if (rc) {
		free(*single);
		*single = NULL;
	}
	return rc;
}

/* ---- choosing the weight files ---- */

int ckpt_index_parse(const char *where, const char *text, size_t len, json_t **weight_map,
		     struct err *e)
{
	json_error_t jerr;
	json_t *root, *map, *v;
	const char *key;

	*weight_map = NULL;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return err_set(e, ERR_INDEX_INVALID, "%s: not valid JSON: %s (line %d)", where,
			       jerr.text, jerr.line);
	map = json_object_get(root, "weight_map");
	if (!json_is_object(map)) {
		json_decref(root);
		return err_set(e, ERR_INDEX_INVALID, "%s: has no \"weight_map\" object", where);
	}
	if (json_object_size(map) == 0) {
		json_decref(root);
		return err_set(e, ERR_INDEX_INVALID, "%s: the weight_map lists no tensor", where);
	}
	json_object_foreach(map, key, v) {
		if (!json_is_string(v) || strchr(json_string_value(v), '/')) {
			err_set(e, ERR_INDEX_INVALID,
				"%s: weight_map entry '%s' is not the name of a file beside the index",
				where, key);
			err_set_tensor(e, key);
			json_decref(root);
			return -1;
		}
	}
	*weight_map = json_incref(map);
	json_decref(root);
	return 0;
}

static int parse_index(struct ckpt *c, json_t **weight_map_out, struct err *e)
{
	char *text, *where;
	size_t len;
	int rc;

	if (store_read_file(c->store, CKPT_INDEX_NAME, SMALL_FILE_MAX, &text, &len, e))
		return -1;
	if (is_lfs_pointer(text, len)) {
		lfs_pointer_error(c, CKPT_INDEX_NAME, text, len, e);
		free(text);
		return -1;
	}
	if (asprintf(&where, "%s/%s", c->store->location, CKPT_INDEX_NAME) < 0)
		abort();
	rc = ckpt_index_parse(where, text, len, weight_map_out, e);
	free(where);
	free(text);
	return rc;
}

static int compare_names(const void *pa, const void *pb)
{
	const char *a = *(const char *const *)pa, *b = *(const char *const *)pb;

	return strcmp(a, b);
}

/* The files the index refers to, each once, in name order; all must exist. */
static int files_from_index(struct ckpt *c, const json_t *map, const struct store_entry *entries,
			    size_t n, struct err *e)
{
	const char **names = xcalloc(json_object_size(map), sizeof(*names));
	const struct store_entry *entry;
	size_t count = 0, i;
	const char *key;
	json_t *v;
	int rc = 0;

	json_object_foreach((json_t *)map, key, v)
		names[count++] = json_string_value(v);
	qsort(names, count, sizeof(*names), compare_names);
	for (i = 0; i < count && rc == 0; i++) {
		if (i > 0 && strcmp(names[i], names[i - 1]) == 0)
			continue;
		entry = store_entries_find(entries, n, names[i]);
		if (entry && entry->kind == STORE_OUTSIDE)
			rc = store_outside_error(c->store, names[i], e);
		else if (!entry || entry->kind != STORE_FILE)
			rc = err_set(e, ERR_INDEX_MISSING_FILE,
				     "%s/%s: the index names '%s', which does not exist",
				     c->store->location, CKPT_INDEX_NAME, names[i]);
		else
			add_file(c, entry->name, entry->size);
	}
	free(names);
	return rc;
}

/* A *.safetensors file of the listing that may hold weights (not
 * unfinished output), leading outside the roots or not. */
static bool is_weight_candidate(const struct store_entry *entry)
{
	return (entry->kind == STORE_FILE || entry->kind == STORE_OUTSIDE) &&
	       ends_with(entry->name, ST_SUFFIX) && !store_is_temporary(entry->name);
}

static int files_from_listing(struct ckpt *c, const struct store_entry *entries, size_t n,
			      struct err *e)
{
	size_t i, found = 0;

	for (i = 0; i < n; i++)
		if (is_weight_candidate(&entries[i]))
			found++;
	if (found > 1)
		return err_set(e, ERR_NOT_A_CHECKPOINT,
			       "%s: holds %zu *.safetensors files but no %s saying how they form "
			       "one checkpoint",
			       c->store->location, found, CKPT_INDEX_NAME);
	if (found == 0)
		return err_set(e, ERR_NOT_A_CHECKPOINT, "%s: holds no *.safetensors file nor %s",
			       c->store->location, CKPT_INDEX_NAME);
	for (i = 0; i < n; i++) {
		if (!is_weight_candidate(&entries[i]))
			continue;
		if (entries[i].kind == STORE_OUTSIDE)
			return store_outside_error(c->store, entries[i].name, e);
		add_file(c, entries[i].name, entries[i].size);
	}
	return 0;
}

static int file_from_path(struct ckpt *c, const char *single, const struct store_entry *entries,
			  size_t n, struct err *e)
{
	const struct store_entry *entry = store_entries_find(entries, n, single);

	if (store_is_temporary(single))
		return err_set(e, ERR_NOT_A_CHECKPOINT,
			       "%s/%s: an unfinished output file of ckptconv, not a checkpoint",
			       c->store->location, single);
	if (entry && entry->kind == STORE_OUTSIDE)
		return store_outside_error(c->store, single, e);
	if (!entry || entry->kind != STORE_FILE)
		return err_set(e, ERR_SOURCE_NOT_FOUND, "%s/%s: no such file", c->store->location,
			       single);
	add_file(c, entry->name, entry->size);
	return 0;
}

/* ---- headers and the tensor table ---- */

/* A file whose first bytes spell "version " may be a git-lfs pointer. */
static int check_lfs_pointer(struct ckpt *c, const struct ckpt_file *f, struct err *e)
{
	char text[LFS_POINTER_MAX];
	size_t len = f->size < sizeof(text) ? (size_t)f->size : sizeof(text);

	if (store_read(c->store, f->name, 0, text, len, e))
		return -1;
	return is_lfs_pointer(text, len) ? lfs_pointer_error(c, f->name, text, len, e) : 0;
}

static int read_header(struct ckpt *c, struct ckpt_file *f, struct err *e)
{
	unsigned char prefix[ST_PREFIX_LEN];
	uint64_t header_len;
	char *path, *json;
	int rc = -1;

	if (asprintf(&path, "%s/%s", c->store->location, f->name) < 0)
		abort();
	if (f->size < ST_PREFIX_LEN) {
		st_prefix_parse(path, prefix, f->size, &header_len, e);
		goto out;
	}
	if (store_read(c->store, f->name, 0, prefix, sizeof(prefix), e))
		goto out;
	if (memcmp(prefix, LFS_POINTER_PREFIX, ST_PREFIX_LEN) == 0 && check_lfs_pointer(c, f, e))
		goto out;
	if (st_prefix_parse(path, prefix, f->size, &header_len, e))
		goto out;
	json = xmalloc((size_t)header_len + 1);
	if (store_read(c->store, f->name, ST_PREFIX_LEN, json, (size_t)header_len, e) == 0)
		rc = st_header_parse(path, json, (size_t)header_len, header_len, f->size, &f->header,
				     e);
	free(json);
out:
	free(path);
	return rc;
}

static int compare_tensors(const void *pa, const void *pb)
{
	const struct ckpt_tensor *a = pa, *b = pb;
	int c = natural_compare(a->name, b->name);

	return c ? c : strcmp(a->name, b->name);
}

static int build_tensor_table(struct ckpt *c, struct err *e)
{
	struct ckpt_tensor *t;
	size_t total = 0, i, j;

	for (i = 0; i < c->nfiles; i++)
		total += c->files[i].header.ntensors;
	c->tensors = xcalloc(total, sizeof(*c->tensors));
	for (i = 0; i < c->nfiles; i++) {
		const struct st_header *h = &c->files[i].header;

		for (j = 0; j < h->ntensors; j++) {
			t = &c->tensors[c->ntensors++];
			t->name = h->tensors[j].name;
			t->dtype = h->tensors[j].dtype;
			t->ndim = h->tensors[j].ndim;
			memcpy(t->shape, h->tensors[j].shape, sizeof(t->shape));
			t->file = (uint32_t)i;
			t->offset = h->data_start + h->tensors[j].begin;
			t->nbytes = st_tensor_nbytes(&h->tensors[j]);
			c->total_bytes += t->nbytes;
		}
	}
	qsort(c->tensors, c->ntensors, sizeof(*c->tensors), compare_tensors);
	for (i = 1; i < c->ntensors; i++) {
		if (strcmp(c->tensors[i].name, c->tensors[i - 1].name) == 0) {
			err_set(e, ERR_DUPLICATE_TENSOR, "%s: tensor '%s' is in both %s and %s",
				c->store->location, c->tensors[i].name,
				c->files[c->tensors[i - 1].file].name, c->files[c->tensors[i].file].name);
			err_set_tensor(e, c->tensors[i].name);
			return -1;
		}
	}
	return 0;
}

/* Every tensor must be mapped to the file holding it, and every mapped
 * tensor must be held by some file. */
static int check_weight_map(struct ckpt *c, const json_t *map, struct err *e)
{
	const char *key, *missing = NULL, *file;
	json_t *v;
	size_t i;

	for (i = 0; i < c->ntensors; i++) {
		const struct ckpt_tensor *t = &c->tensors[i];

		v = json_object_get(map, t->name);
		file = c->files[t->file].name;
		if (!v)
			err_set(e, ERR_WEIGHT_MAP_MISMATCH,
				"%s/%s: tensor '%s' is in %s but the weight_map does not list it",
				c->store->location, CKPT_INDEX_NAME, t->name, file);
		else if (strcmp(json_string_value(v), file) != 0)
			err_set(e, ERR_WEIGHT_MAP_MISMATCH,
				"%s/%s: the weight_map puts tensor '%s' in %s but it is in %s",
				c->store->location, CKPT_INDEX_NAME, t->name, json_string_value(v),
				file);
		if (err_is_set(e)) {
			err_set_tensor(e, t->name);
			return -1;
		}
	}
	json_object_foreach((json_t *)map, key, v)
		if (ckpt_find(c, key) < 0 && (!missing || natural_compare(key, missing) < 0))
			missing = key;
	if (missing) {
		err_set(e, ERR_WEIGHT_MAP_MISMATCH,
			"%s/%s: the weight_map puts tensor '%s' in %s but no file holds it",
			c->store->location, CKPT_INDEX_NAME, missing,
			json_string_value(json_object_get(map, missing)));
		err_set_tensor(e, missing);
		return -1;
	}
	return 0;
}

/* ---- config.json and the other files ---- */

int ckpt_config_parse(const char *where, const char *text, size_t len, json_t **config,
		      struct err *e)
{
	json_error_t jerr;
	json_t *root;

	*config = NULL;
	root = json_loadb(text, len, 0, &jerr);
	if (!root)
		return err_set(e, ERR_CONFIG_INVALID, "%s: not valid JSON: %s (line %d)", where,
			       jerr.text, jerr.line);
	if (!json_is_object(root)) {
		json_decref(root);
		return err_set(e, ERR_CONFIG_INVALID, "%s: not a JSON object", where);
	}
	*config = root;
	return 0;
}

static int load_config(struct ckpt *c, const struct store_entry *entries, size_t n,
		       unsigned flags, struct err *e)
{
	const struct store_entry *entry = store_entries_find(entries, n, CONFIG_NAME);
	char *text, *where;
	size_t len;
	int rc;

	if (entry && entry->kind == STORE_OUTSIDE)
		return store_outside_error(c->store, CONFIG_NAME, e);
	if (!entry || entry->kind != STORE_FILE) {
		if (flags & CKPT_REQUIRE_CONFIG)
			return err_set(e, ERR_MISSING_CONFIG, "%s: config.json is missing",
				       c->store->location);
		return 0;
	}
	if (store_read_file(c->store, CONFIG_NAME, SMALL_FILE_MAX, &text, &len, e))
		return -1;
	if (is_lfs_pointer(text, len)) {
		lfs_pointer_error(c, CONFIG_NAME, text, len, e);
		free(text);
		return -1;
	}
	if (asprintf(&where, "%s/%s", c->store->location, CONFIG_NAME) < 0)
		abort();
	rc = ckpt_config_parse(where, text, len, &c->config, e);
	free(where);
	free(text);
	return rc;
}

static bool is_weight_file(const struct ckpt *c, const char *name)
{
	size_t i;

	for (i = 0; i < c->nfiles; i++)
		if (strcmp(c->files[i].name, name) == 0)
			return true;
	return false;
}

static void sort_other_files(struct ckpt *c, const struct store_entry *entries, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		const char *name = entries[i].name;

		/* (A conversion's records are about that output, not this one.) */
		if (strcmp(name, CKPT_INDEX_NAME) == 0 || is_weight_file(c, name) ||
		    store_is_temporary(name) || manifest_is_record(name))
			continue;
		if (entries[i].kind == STORE_OUTSIDE)
			strvec_pushf(&c->warnings,
				     "skipped '%s': it resolves outside the allowed roots", name);
		else if (entries[i].kind == STORE_DIR)
			strvec_pushf(&c->warnings, "skipped subdirectory '%s'", name);
		else if (entries[i].kind != STORE_FILE)
			strvec_pushf(&c->warnings, "skipped '%s': not a regular file", name);
		else if (ends_with(name, ST_SUFFIX))
			strvec_pushf(&c->warnings, "skipped %s: not part of this checkpoint", name);
		else if (is_other_weights(name))
			strvec_pushf(&c->warnings,
				     "skipped %s: weights in other formats are not converted", name);
		else
			strvec_push(&c->copy_files, name);
	}
}

/* ---- the whole ---- */

static int open_files(struct ckpt *c, const char *single, unsigned flags, struct err *e)
{
	const struct store_entry *index;
	struct store_entry *entries = NULL;
	json_t *map = NULL;
	size_t n = 0, i;
	int rc = -1;

	if (store_list(c->store, &entries, &n, e))
		goto out;
	if (n == 0 && !(store_caps(c->store) & STORE_DIRECTORIES)) {
		err_set(e, ERR_SOURCE_NOT_FOUND, "%s: no such prefix", c->store->location);
		goto out_entries;
	}
	if (single)
		rc = file_from_path(c, single, entries, n, e);
	else if ((index = store_entries_find(entries, n, CKPT_INDEX_NAME))) {
		c->has_index = true;
		rc = index->kind == STORE_OUTSIDE ?
			     store_outside_error(c->store, CKPT_INDEX_NAME, e) :
			     parse_index(c, &map, e);
		if (rc == 0)
			rc = files_from_index(c, map, entries, n, e);
	} else
		rc = files_from_listing(c, entries, n, e);
	if (rc || (rc = load_config(c, entries, n, flags, e)))
		goto out_map;
	for (i = 0; i < c->nfiles && rc == 0; i++)
		rc = read_header(c, &c->files[i], e);
	if (rc == 0)
		rc = build_tensor_table(c, e);
	if (rc == 0 && map)
		rc = check_weight_map(c, map, e);
	if (rc == 0)
		sort_other_files(c, entries, n);
out_map:
	json_decref(map);
out_entries:
	store_entries_free(entries, n);
out:
	return rc;
}

int ckpt_open(const char *location, unsigned flags, struct ckpt **out, struct err *e)
{
	return ckpt_open_config(location, flags, NULL, out, e);
}

int ckpt_open_config(const char *location, unsigned flags, const struct store_config *cfg,
		     struct ckpt **out, struct err *e)
{
	struct ckpt *c = xcalloc(1, sizeof(*c));
	char *single = NULL;
	int rc;

	*out = NULL;
	rc = open_store(location, cfg, c, &single, e);
	if (rc == 0)
		rc = open_files(c, single, flags, e);
	free(single);
	if (rc) {
		ckpt_free(c);
		return -1;
	}
	*out = c;
	return 0;
}

void ckpt_free(struct ckpt *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->nfiles; i++) {
		free(c->files[i].name);
		st_header_fini(&c->files[i].header);
	}
	free(c->files);
	free(c->tensors);
	json_decref(c->config);
	strvec_fini(&c->copy_files);
	strvec_fini(&c->warnings);
	store_free(c->store);
	free(c);
}

long ckpt_find(const struct ckpt *c, const char *name)
{
	size_t lo = 0, hi = c->ntensors, mid;
	int cmp;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		cmp = natural_compare(name, c->tensors[mid].name);
		if (cmp == 0)
			cmp = strcmp(name, c->tensors[mid].name);
		if (cmp == 0)
			return (long)mid;
		if (cmp < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

int ckpt_config_int(const struct ckpt *c, const char *key, int64_t *out, struct err *e)
{
	const json_t *v;

	if (!c->config)
		return err_set(e, ERR_MISSING_CONFIG, "%s: config.json is missing", c->store->location);
	v = json_object_get(c->config, key);
	if (!v)
		return err_set(e, ERR_MISSING_CONFIG_KEY, "config.json lacks required key '%s'", key);
	if (!json_is_integer(v))
		return err_set(e, ERR_CONFIG_INVALID, "config.json key '%s' is not an integer", key);
	*out = (int64_t)json_integer_value(v);
	return 0;
}

const char *ckpt_config_string(const struct ckpt *c, const char *key)
{
	return c->config ? json_string_value(json_object_get(c->config, key)) : NULL;
}

const char *ckpt_config_dtype_key(const struct ckpt *c)
{
	static const char *const keys[] = {"dtype", "torch_dtype"};
	size_t i;

	for (i = 0; c->config && i < sizeof(keys) / sizeof(keys[0]); i++) {
		const json_t *v = json_object_get(c->config, keys[i]);

		if (v && !json_is_null(v))
			return keys[i];
	}
	return NULL;
}

/* SPDX-License-Identifier: MIT */
/*
 * automodel: opening a NeMo Automodel sharded checkpoint — the shard
 * headers and their DCP_SHARDING_INFO, `.hf_metadata/` — and checking that
 * the chunks tile every full tensor exactly (docs/consolidation.md §2, §3).  The
 * consolidation plan is built in automodel_plan.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckptconv/automodel.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/exec.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"
#include "automodel_internal.h"

#define SHARD_PREFIX "shard-"
#define ST_SUFFIX ".safetensors"
#define SHARDING_INFO_KEY "DCP_SHARDING_INFO"
#define MAPPING_MAX (64u << 20)
/* Gap search: at most this many candidate points are tried to name an
 * element no chunk covers. */
#define GAP_PROBES 100000

/* ---- one shard header ---------------------------------------------------- */

static int parse_offsets(const char *where, const char *name, const json_t *entry,
			 struct automodel_chunk *c, struct err *e)
{
	const json_t *offsets = json_is_object(entry) ? json_object_get(entry, "saved_offsets") :
							NULL;
	size_t i;

	if (!json_is_array(offsets) || json_object_size(entry) != 1)
		goto bad;
	if (json_array_size(offsets) != (size_t)c->ndim) {
		err_set(e, ERR_SHARDING_INFO_INVALID,
			"%s: DCP_SHARDING_INFO gives '%s' %zu offsets for its %d dimensions", where,
			name, json_array_size(offsets), c->ndim);
		err_set_tensor(e, name);
		return -1;
	}
	for (i = 0; i < (size_t)c->ndim; i++) {
		const json_t *v = json_array_get(offsets, i);
		uint64_t end;

		if (!json_is_integer(v) || json_integer_value(v) < 0)
			goto bad;
		c->offsets[i] = (uint64_t)json_integer_value(v);
		if (!u64_add(c->offsets[i], c->shape[i], &end))
			goto bad;
	}
	return 0;
bad:
	err_set(e, ERR_SHARDING_INFO_INVALID,
		"%s: DCP_SHARDING_INFO entry of '%s' is not {\"saved_offsets\": [n, ...]} "
		"with non-negative offsets",
		where, name);
	err_set_tensor(e, name);
	return -1;
}

static const struct st_tensor *header_tensor(const struct st_header *h, const char *name,
					     size_t hint)
{
	size_t i;

	if (hint < h->ntensors && strcmp(h->tensors[hint].name, name) == 0)
		return &h->tensors[hint];
	for (i = 0; i < h->ntensors; i++)
		if (strcmp(h->tensors[i].name, name) == 0)
			return &h->tensors[i];
	return NULL;
}

static int parse_sharding_info(const char *where, const json_t *root, json_t **out, struct err *e)
{
	const json_t *meta = json_object_get(root, "__metadata__");
	const json_t *info = json_is_object(meta) ? json_object_get(meta, SHARDING_INFO_KEY) : NULL;
	const char *text = json_string_value(info);
	json_error_t jerr;
	json_t *doc;

	if (!text)
		return err_set(e, ERR_SHARDING_INFO_MISSING,
			       "%s: the header has no __metadata__.%s: not a shard of an "
			       "Automodel sharded checkpoint",
			       where, SHARDING_INFO_KEY);
	doc = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(doc)) {
		json_decref(doc);
		return err_set(e, ERR_SHARDING_INFO_INVALID, "%s: %s is not a JSON object (%s)",
			       where, SHARDING_INFO_KEY, doc ? "another JSON value" : jerr.text);
	}
	*out = doc;
	return 0;
}

int automodel_shard_parse(const char *where, const char *json, size_t len, uint64_t header_len,
			  uint64_t file_size, struct automodel_shard *out, struct err *e)
{
	struct automodel_shard s = {0};
	json_t *root = NULL, *info = NULL, *v;
	const char *key;
	size_t n = 0;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	/* The JSON kept for what st_header drops: header order and metadata. */
	if (st_header_parse_root(where, json, len, header_len, file_size, &s.header, &root, e))
		goto out;
	if (parse_sharding_info(where, root, &info, e))
		goto out;
	s.chunks = xcalloc(s.header.ntensors ? s.header.ntensors : 1, sizeof(*s.chunks));
	json_object_foreach(root, key, v) {
		const struct st_tensor *t;
		struct automodel_chunk *c;
		json_t *entry;

		if (strcmp(key, "__metadata__") == 0)
			continue;
		t = header_tensor(&s.header, key, n);
		entry = json_object_get(info, key);
		if (!t || n >= s.header.ntensors)
			break;
		c = &s.chunks[n++];
		c->name = t->name;
		c->dtype = t->dtype;
		c->ndim = t->ndim;
		memcpy(c->shape, t->shape, sizeof(c->shape));
		c->begin = t->begin;
		c->end = t->end;
		if (!entry) {
			err_set(e, ERR_SHARDING_INFO_INVALID, "%s: %s has no entry for tensor '%s'",
				where, SHARDING_INFO_KEY, key);
			err_set_tensor(e, key);
			goto out;
		}
		if (parse_offsets(where, key, entry, c, e))
			goto out;
	}
	s.nchunks = n;
	/* Every header tensor has an entry: with as many entries as tensors,
	 * no entry names a tensor the header lacks (keys are unique). */
	json_object_foreach(info, key, v) {
		if (json_object_size(info) == n)
			break;
		if (!header_tensor(&s.header, key, 0)) {
			err_set(e, ERR_SHARDING_INFO_INVALID,
				"%s: %s names tensor '%s', which the header lacks", where,
				SHARDING_INFO_KEY, key);
			err_set_tensor(e, key);
			goto out;
		}
	}
	*out = s;
	memset(&s, 0, sizeof(s));
	rc = 0;
out:
	automodel_shard_fini(&s);
	json_decref(info);
	json_decref(root);
	return rc;
}

void automodel_shard_fini(struct automodel_shard *s)
{
	if (!s)
		return;
	st_header_fini(&s->header);
	free(s->chunks);
	memset(s, 0, sizeof(*s));
}

/* ---- .hf_metadata ------------------------------------------------------ */

int automodel_mapping_parse(const char *where, const char *text, size_t len, bool want_dtypes,
			    json_t **out, struct err *e)
{
	json_error_t jerr;
	const char *key;
	json_t *root, *v;

	*out = NULL;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root)) {
		json_decref(root);
		return err_set(e, ERR_MAPPING_INVALID, "%s: not a JSON object (%s)", where,
			       root ? "another JSON value" : jerr.text);
	}
	json_object_foreach(root, key, v) {
		bool ok = want_dtypes ?
				  json_is_string(v) &&
					  dtype_from_name(json_string_value(v)) != DTYPE_INVALID :
				  json_is_integer(v) && json_integer_value(v) >= 1 &&
					  json_integer_value(v) <= 99999;

		if (!ok) {
			err_set(e, ERR_MAPPING_INVALID, "%s: '%s' maps to %s", where, key,
				want_dtypes ? "no safetensors dtype" :
					      "no output file index (an integer 1..99999)");
			err_set_tensor(e, key);
			json_decref(root);
			return -1;
		}
	}
	*out = root;
	return 0;
}

static int read_small(struct store *s, const char *dir, const char *name, char **text, size_t *len,
		      struct err *e)
{
	char *path;
	int rc;

	if (asprintf(&path, "%s/%s", dir, name) < 0)
		abort();
	rc = store_read_file(s, path, MAPPING_MAX, text, len, e);
	free(path);
	return rc;
}

static int load_mapping(struct automodel *am, struct store *s, const char *name, bool dtypes,
			json_t **out, struct err *e)
{
	struct err missing = {0};
	char *text, *where;
	size_t len;
	int rc;

	if (read_small(s, AUTOMODEL_METADATA_DIR, name, &text, &len, &missing)) {
		if (dtypes && missing.code == ERR_SOURCE_NOT_FOUND)
			return 0; /* written only when not empty */
		if (missing.code == ERR_SOURCE_NOT_FOUND)
			return err_set(e, ERR_HF_METADATA_MISSING, "%s/%s/%s: no such file",
				       am->location, AUTOMODEL_METADATA_DIR, name);
		*e = missing;
		return -1;
	}
	if (asprintf(&where, "%s/%s/%s", am->location, AUTOMODEL_METADATA_DIR, name) < 0)
		abort();
	rc = automodel_mapping_parse(where, text, len, dtypes, out, e);
	free(where);
	free(text);
	return rc;
}

static int load_metadata(struct automodel *am, struct ckpt *c, struct err *e)
{
	struct store_entry *entries = NULL;
	struct store *meta = NULL;
	char *location, *text;
	size_t n = 0, i, len;
	int rc = -1;

	const char *key;
	json_t *v;

	if (load_mapping(am, c->store, AUTOMODEL_FILE_MAPPING, false, &am->mapping, e) ||
	    load_mapping(am, c->store, AUTOMODEL_DTYPE_MAPPING, true, &am->dtypes, e))
		return -1;
	json_object_foreach(am->mapping, key, v)
		if ((uint32_t)json_integer_value(v) > am->max_index)
			am->max_index = (uint32_t)json_integer_value(v);
	if (asprintf(&location, "%s/%s", am->location, AUTOMODEL_METADATA_DIR) < 0)
		abort();
	if (store_open_config(location, am->cfg, &meta, e) || store_list(meta, &entries, &n, e))
		goto out;
	for (i = 0; i < n; i++) {
		const char *name = entries[i].name;

		if (strcmp(name, AUTOMODEL_FILE_MAPPING) == 0 ||
		    strcmp(name, AUTOMODEL_DTYPE_MAPPING) == 0 || store_is_temporary(name))
			continue;
		if (entries[i].kind != STORE_FILE) {
			strvec_pushf(&c->warnings, "%s/%s: not copied (only files are)",
				     AUTOMODEL_METADATA_DIR, name);
			continue;
		}
		strvec_push(&am->metadata_files, name);
	}
	if (read_small(c->store, AUTOMODEL_METADATA_DIR, "config.json", &text, &len, NULL) == 0) {
		rc = ckpt_config_parse(AUTOMODEL_METADATA_DIR "/config.json", text, len, &c->config,
				       e);
		free(text);
		if (rc)
			goto out;
	}
	rc = 0;
out:
	store_entries_free(entries, n);
	store_free(meta);
	free(location);
	return rc;
}

/* ---- finding and reading the shards ----------------------------------- */

static bool is_shard_name(const char *name)
{
	size_t n = strlen(name);

	return strncmp(name, SHARD_PREFIX, strlen(SHARD_PREFIX)) == 0 && strstr(name, "-model-") &&
	       n > strlen(ST_SUFFIX) && strcmp(name + n - strlen(ST_SUFFIX), ST_SUFFIX) == 0;
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int read_shard(struct automodel *am, struct ckpt *c, size_t f, struct err *e)
{
	struct ckpt_file *file = &c->files[f];
	unsigned char prefix[ST_PREFIX_LEN];
	uint64_t header_len;
	char *where, *json = NULL;
	int rc = -1;

	if (asprintf(&where, "%s/%s", am->location, file->name) < 0)
		abort();
	if (file->size < ST_PREFIX_LEN) {
		st_prefix_parse(where, prefix, file->size, &header_len, e);
		goto out;
	}
	if (store_read(c->store, file->name, 0, prefix, sizeof(prefix), e) ||
	    st_prefix_parse(where, prefix, file->size, &header_len, e))
		goto out;
	json = xmalloc((size_t)header_len + 1);
	if (store_read(c->store, file->name, ST_PREFIX_LEN, json, (size_t)header_len, e))
		goto out;
	rc = automodel_shard_parse(where, json, (size_t)header_len, header_len, file->size,
				   &am->shards[f], e);
	if (rc == 0) {
		/* The shard's tensors are the chunks; the st_header's copy keeps
		 * the names that ckpt_free does not own. */
		file->header.header_len = am->shards[f].header.header_len;
		file->header.data_start = am->shards[f].header.data_start;
		file->header.file_size = am->shards[f].header.file_size;
	}
out:
	free(json);
	free(where);
	return rc;
}

/* The shard files, by name (= rank order, zero-padded). */
static int list_shards(struct automodel *am, struct ckpt *c, struct err *e)
{
	struct store_entry *entries = NULL;
	bool has_metadata = false;
	size_t n = 0, i, k;
	char **names;
	int rc = -1;

	if (store_list(c->store, &entries, &n, e))
		return -1;
	names = xcalloc(n ? n : 1, sizeof(*names));
	for (i = k = 0; i < n; i++) {
		if (strcmp(entries[i].name, AUTOMODEL_METADATA_DIR) == 0 &&
		    entries[i].kind == STORE_DIR)
			has_metadata = true;
		if (entries[i].kind == STORE_FILE && is_shard_name(entries[i].name) &&
		    !store_is_temporary(entries[i].name))
			names[k++] = entries[i].name;
	}
	rc = 1;
	if (k == 0)
		goto out;
	rc = -1;
	if (!has_metadata) {
		err_set(e, ERR_HF_METADATA_MISSING,
			"%s: sharded checkpoint (shard-*-model-*.safetensors) without its %s/ "
			"folder: nothing says which output file takes which tensor",
			am->location, AUTOMODEL_METADATA_DIR);
		goto out;
	}
	qsort(names, k, sizeof(*names), compare_strings);
	c->files = xcalloc(k, sizeof(*c->files));
	am->shards = xcalloc(k, sizeof(*am->shards));
	for (i = 0; i < k; i++) {
		size_t j;

		for (j = 0; j < n && entries[j].name != names[i]; j++)
			;
		c->files[i].name = xstrdup(names[i]);
		c->files[i].size = entries[j].size;
	}
	c->nfiles = am->nshards = k;
	rc = 0;
out:
	free(names);
	store_entries_free(entries, n);
	return rc;
}

/* Shard headers read and parsed by several threads: each shard is
 * independent, and the headers of a checkpoint of many ranks are most of
 * the time before the first byte is copied (on S3, a request each). */
struct shard_readers {
	struct automodel *am;
	struct ckpt *c;
	atomic_size_t next; /* the next shard to claim, in order */
	atomic_bool failed;
	int *rc;
	struct err *errs;
};

static void *shard_reader_main(void *arg)
{
	struct shard_readers *r = arg;
	size_t i;

	/* Shards are claimed in order and claiming stops at a failure, so
	 * every shard before a failed one has been read: the first failure in
	 * order is the one a single reader would have met. */
	while (!atomic_load(&r->failed) && (i = atomic_fetch_add(&r->next, 1)) < r->am->nshards) {
		r->rc[i] = read_shard(r->am, r->c, i, &r->errs[i]);
		if (r->rc[i])
			atomic_store(&r->failed, true);
	}
	return NULL;
}

static int read_shards(struct automodel *am, struct ckpt *c, struct err *e)
{
	struct shard_readers r = {.am = am, .c = c};
	bool remote = (store_caps(c->store) & STORE_REMOTE) != 0;
	unsigned nthreads = remote ? 8 : exec_cpus_available(), started = 0, i;
	pthread_t *threads;
	int rc = 0;

	if (nthreads > am->nshards)
		nthreads = (unsigned)am->nshards;
	r.rc = xcalloc(am->nshards, sizeof(*r.rc));
	r.errs = xcalloc(am->nshards, sizeof(*r.errs));
	threads = xcalloc(nthreads ? nthreads : 1, sizeof(*threads));
	for (i = 1; i < nthreads; i++) {
		if (pthread_create(&threads[started], NULL, shard_reader_main, &r) != 0)
			break; /* fewer readers */
		started++;
	}
	shard_reader_main(&r);
	for (i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	for (i = 0; i < am->nshards; i++) {
		if (r.rc[i]) {
			*e = r.errs[i];
			rc = -1;
			break;
		}
	}
	free(threads);
	free(r.errs);
	free(r.rc);
	return rc;
}

/* ---- full tensors --------------------------------------------------------- */

static uint64_t chunk_elems(const struct automodel_chunk *c)
{
	uint64_t n = 1;
	int d;

	for (d = 0; d < c->ndim; d++)
		n *= c->shape[d];
	return n;
}

static bool chunk_contains(const struct automodel_chunk *c, int ndim, const uint64_t *point)
{
	int d;

	for (d = 0; d < ndim; d++)
		if (point[d] < c->offsets[d] || point[d] >= c->offsets[d] + c->shape[d])
			return false;
	return true;
}

static bool boxes_overlap(const struct automodel_chunk *a, const struct automodel_chunk *b)
{
	int d;

	if (chunk_elems(a) == 0 || chunk_elems(b) == 0)
		return false;
	for (d = 0; d < a->ndim; d++)
		if (a->offsets[d] + a->shape[d] <= b->offsets[d] ||
		    b->offsets[d] + b->shape[d] <= a->offsets[d])
			return false;
	return true;
}

static void format_index(char *buf, size_t len, int ndim, const uint64_t *v)
{
	size_t used = 0;
	int d;

	used += (size_t)snprintf(buf, len, "[");
	for (d = 0; d < ndim && used < len; d++)
		used += (size_t)snprintf(buf + used, len - used, "%s%" PRIu64, d ? ", " : "", v[d]);
	if (used < len)
		snprintf(buf + used, len - used, "]");
}

/* An element no chunk covers, tried at the corners the chunks define;
 * false when none is found within GAP_PROBES tries. */
static bool find_gap(const struct automodel *am, const struct automodel_tensor *t, uint64_t *point)
{
	uint64_t *cand[ST_MAX_DIMS], idx[ST_MAX_DIMS] = {0}, probes = 0;
	size_t ncand[ST_MAX_DIMS];
	bool found = false;
	uint32_t i;
	int d;

	for (d = 0; d < t->ndim; d++) {
		cand[d] = xcalloc(t->nchunks + 1, sizeof(uint64_t));
		ncand[d] = 0;
		cand[d][ncand[d]++] = 0;
		for (i = 0; i < t->nchunks; i++) {
			uint64_t end = am->chunks[t->chunks[i]].offsets[d] +
				       am->chunks[t->chunks[i]].shape[d];

			if (end < t->shape[d])
				cand[d][ncand[d]++] = end;
		}
	}
	while (!found && probes++ < GAP_PROBES) {
		for (d = 0; d < t->ndim; d++)
			point[d] = cand[d][idx[d]];
		for (i = 0; i < t->nchunks; i++)
			if (chunk_contains(&am->chunks[t->chunks[i]], t->ndim, point))
				break;
		found = i == t->nchunks;
		for (d = t->ndim - 1; d >= 0; d--) {
			if (++idx[d] < ncand[d])
				break;
			idx[d] = 0;
		}
		if (d < 0)
			break;
	}
	for (d = 0; d < t->ndim; d++)
		free(cand[d]);
	return found;
}

/* Missing shard numbers (1-based ranks + 1) below the highest, for the
 * message of a gap: "; shard-00002 is absent". */
static void missing_shards(const struct automodel *am, char *buf, size_t len)
{
	uint64_t want = 1;
	size_t i, used = 0;

	buf[0] = '\0';
	for (i = 0; i < am->nshards && used < len; i++) {
		for (; want < am->shard_index[i] && used < len; want++)
			used += (size_t)snprintf(
				buf + used, len - used, "%sshard-%05" PRIu64,
				used ? ", " : "; absent from the shard numbers: ", want);
		want = am->shard_index[i] + 1;
	}
}

static int check_tensor(const struct automodel *am, const struct automodel_tensor *t, struct err *e)
{
	uint64_t covered = 0, total = 1, point[ST_MAX_DIMS];
	char where[160], missing[160];
	uint32_t i, j;
	int d;

	for (d = 0; d < t->ndim; d++)
		total *= t->shape[d];
	for (i = 0; i < t->nchunks; i++) {
		const struct automodel_chunk *a = &am->chunks[t->chunks[i]];

		for (d = 0; d < t->ndim && chunk_elems(a) == 0; d++)
			if (a->shape[d] ? a->offsets[d] + a->shape[d] > t->shape[d] :
					  a->offsets[d] > t->shape[d]) {
				err_set(e, ERR_CHUNK_OUT_OF_BOUNDS,
					"%s: the empty chunk of '%s' in %s starts at %" PRIu64
					" in dimension %d, past the full size %" PRIu64,
					am->location, t->name,
					am->files[am->chunk_file[t->chunks[i]]], a->offsets[d], d,
					t->shape[d]);
				goto fail;
			}
		for (j = 0; j < i; j++) {
			const struct automodel_chunk *b = &am->chunks[t->chunks[j]];

			if (boxes_overlap(a, b)) {
				format_index(where, sizeof(where), t->ndim, a->offsets);
				err_set(e, ERR_CHUNK_OVERLAP,
					"%s: chunks of '%s' overlap: the one at %s in %s and the one "
					"in %s",
					am->location, t->name, where,
					am->files[am->chunk_file[t->chunks[i]]],
					am->files[am->chunk_file[t->chunks[j]]]);
				goto fail;
			}
		}
		covered += chunk_elems(a);
	}
	if (covered == total)
		return 0;
	missing_shards(am, missing, sizeof(missing));
	if (find_gap(am, t, point)) {
		format_index(where, sizeof(where), t->ndim, point);
		err_set(e, ERR_CHUNK_GAP,
			"%s: the chunks of '%s' (full shape from their offsets) cover %" PRIu64
			" of its %" PRIu64 " elements: none holds the element at %s%s",
			am->location, t->name, covered, total, where, missing);
	} else {
		err_set(e, ERR_CHUNK_GAP,
			"%s: the chunks of '%s' cover %" PRIu64 " of its %" PRIu64 " elements%s",
			am->location, t->name, covered, total, missing);
	}
fail:
	err_set_tensor(e, t->name);
	return -1;
}

/* Full sizes config.json gives for tensors every HF transformer names the
 * same way: the embedding and lm_head are [vocab_size, hidden_size], the
 * final and per-layer norms [hidden_size].  The shards store no full shape
 * (docs/consolidation.md §2.3), so when the last rank's shard is missing the
 * other chunks still tile a smaller tensor; these sizes show it. */
static const struct {
	const char *suffix;  /* the name ends with it ('.'-separated) */
	const char *dims[2]; /* config keys of dims 0 and 1, NULL: not checked */
} full_sizes[] = {
	{"embed_tokens.weight", {"vocab_size", "hidden_size"}},
	{"word_embeddings.weight", {"vocab_size", "hidden_size"}},
	{"lm_head.weight", {"vocab_size", "hidden_size"}},
	{"input_layernorm.weight", {"hidden_size", NULL}},
	{"post_attention_layernorm.weight", {"hidden_size", NULL}},
	{"model.norm.weight", {"hidden_size", NULL}},
};

static bool name_ends(const char *name, const char *suffix)
{
	size_t n = strlen(name), k = strlen(suffix);

	return n == k ? strcmp(name, suffix) == 0 :
			n > k && name[n - k - 1] == '.' && strcmp(name + n - k, suffix) == 0;
}

/* A tensor smaller than config.json says: the shards that would hold the
 * rest are named: with chunks of at most `c` elements along the short
 * dimension (torch.chunk: c = ceil(L / ranks)), ceil(L / c) shards hold it;
 * the numbers up to that one that no file has are the missing shards. */
static int check_full_size(const struct automodel *am, const struct ckpt *c,
			   const struct automodel_tensor *t, struct err *e)
{
	size_t k;
	int d;

	for (k = 0; k < sizeof(full_sizes) / sizeof(full_sizes[0]); k++) {
		if (!name_ends(t->name, full_sizes[k].suffix))
			continue;
		for (d = 0; d < 2 && d < t->ndim; d++) {
			const json_t *v =
				full_sizes[k].dims[d] && c->config ?
					json_object_get(c->config, full_sizes[k].dims[d]) :
					NULL;
			uint64_t want, step = 0, need, n, i;
			char missing[200];
			size_t used = 0;
			uint32_t j;

			if (!json_is_integer(v) || json_integer_value(v) <= 0)
				continue;
			want = (uint64_t)json_integer_value(v);
			if (t->shape[d] >= want)
				continue;
			for (j = 0; j < t->nchunks; j++)
				if (am->chunks[t->chunks[j]].shape[d] > step)
					step = am->chunks[t->chunks[j]].shape[d];
			need = step ? (want + step - 1) / step : 1;
			missing[0] = '\0';
			for (n = 1; n <= need && used < sizeof(missing); n++) {
				for (i = 0; i < am->nshards && am->shard_index[i] != n; i++)
					;
				if (i == am->nshards)
					used += (size_t)snprintf(missing + used,
								 sizeof(missing) - used,
								 "%sshard-%05" PRIu64,
								 used ? ", " : "", n);
			}
			err_set(e, ERR_SHARD_MISSING,
				"%s: '%s' has %" PRIu64 " in dimension %d in the shards but %s/"
				"config.json's %s is %" PRIu64 ": %s%s",
				am->location, t->name, t->shape[d], d, AUTOMODEL_METADATA_DIR,
				full_sizes[k].dims[d], want, missing[0] ? missing : "a shard",
				used > 0 && strchr(missing, ',') ? " are missing" : " is missing");
			err_set_tensor(e, t->name);
			return -1;
		}
	}
	return 0;
}

/* A name the mapping may hold with no shard holding it: lm_head.weight of
 * a model whose embeddings are tied (docs/consolidation.md §2.2: the tied
 * alias is popped from the state dict before saving). */
bool automodel_tied_alias(const struct ckpt *c, const char *name)
{
	return strcmp(name, "lm_head.weight") == 0 && c->config &&
	       json_is_true(json_object_get(c->config, "tie_word_embeddings"));
}

/* The shard files that should be there, for a message: the numbers below
 * the highest that no file has (the first SHOWN_SHARDS of them), or when
 * none is, the one after it (a trailing rank's file; the shards record no
 * rank count).  buf: at least 400 bytes. */
#define SHOWN_SHARDS 4
static void expected_shards(const struct automodel *am, char *buf, size_t len)
{
	uint64_t want = 1, n = 0, last = am->nshards ? am->shard_index[am->nshards - 1] : 0;
	size_t i, used = 0;

	buf[0] = '\0';
	for (i = 0; i < am->nshards; i++) {
		for (; want < am->shard_index[i]; want++, n++)
			if (n < SHOWN_SHARDS)
				used += (size_t)snprintf(buf + used, len - used,
							 "%sshard-%05" PRIu64
							 "-model-00001-of-00001" ST_SUFFIX,
							 n ? ", " : "", want);
		want = am->shard_index[i] + 1;
	}
	if (n > SHOWN_SHARDS)
		snprintf(buf + used, len - used, " and %" PRIu64 " more are missing",
			 n - SHOWN_SHARDS);
	else if (n > 0)
		snprintf(buf + used, len - used, n > 1 ? " are missing" : " is missing");
	else
		snprintf(buf, len,
			 "shard-%05" PRIu64 "-model-00001-of-00001" ST_SUFFIX
			 " (or a later one) is missing",
			 last + 1);
}

/* Every name of fqn_to_file_index_mapping.json is a tensor of the saved
 * state dict (docs/consolidation.md §3.1), so each must have chunks in some
 * shard: one held whole by a single rank (a replicated buffer, an expert
 * under expert parallelism) is in no shard when that rank's file is
 * missing, whatever the model and layout.  Refused with the tensor and the
 * shard file it needs, unless gaps are allowed (then dropped, as Automodel
 * drops it) or it is a tied alias. */
static int check_mapped(const struct automodel *am, const struct ckpt *c, const json_t *seen,
			struct err *e)
{
	const char *key;
	json_t *v;

	if (am->allow_gaps)
		return 0;
	json_object_foreach(am->mapping, key, v) {
		char shards[400];

		if (json_object_get(seen, key) || automodel_tied_alias(c, key))
			continue;
		expected_shards(am, shards, sizeof(shards));
		err_set(e, ERR_SHARD_MISSING,
			"%s: '%s' is mapped to model-%05" PRIu32 "-of-%05" PRIu32 ST_SUFFIX
			" by %s/%s but no shard holds it: %s",
			am->location, key, (uint32_t)json_integer_value(v), am->max_index,
			AUTOMODEL_METADATA_DIR, AUTOMODEL_FILE_MAPPING, shards);
		err_set_tensor(e, key);
		return -1;
	}
	return 0;
}

/* Groups the chunks into full tensors, in first-appearance order over the
 * shards in name order (the order of Automodel's index). */
static int build_tensors(struct automodel *am, struct ckpt *c, bool allow_gaps, struct err *e)
{
	json_t *seen = json_object();
	size_t f, i, total = 0, k = 0;
	int rc = -1;

	for (f = 0; f < am->nshards; f++)
		total += am->shards[f].nchunks;
	am->chunks = xcalloc(total ? total : 1, sizeof(*am->chunks));
	am->chunk_file = xcalloc(total ? total : 1, sizeof(*am->chunk_file));
	am->tensors = xcalloc(total ? total : 1, sizeof(*am->tensors));
	c->tensors = xcalloc(total ? total : 1, sizeof(*c->tensors));
	for (f = 0; f < am->nshards; f++) {
		const struct automodel_shard *s = &am->shards[f];

		for (i = 0; i < s->nchunks; i++, k++) {
			const struct automodel_chunk *ch = &s->chunks[i];
			struct automodel_tensor *t;
			json_t *at = json_object_get(seen, ch->name);
			int d;

			am->chunks[k] = *ch;
			am->chunk_file[k] = (uint32_t)f;
			c->tensors[k] = (struct ckpt_tensor){
				.name = ch->name,
				.dtype = ch->dtype,
				.ndim = ch->ndim,
				.file = (uint32_t)f,
				.offset = s->header.data_start + ch->begin,
				.nbytes = ch->end - ch->begin,
			};
			memcpy(c->tensors[k].shape, ch->shape, sizeof(ch->shape));
			c->total_bytes += ch->end - ch->begin;
			if (!at) {
				t = &am->tensors[am->ntensors];
				t->name = ch->name;
				t->dtype = ch->dtype;
				t->ndim = ch->ndim;
				t->chunks = xcalloc(am->nshards, sizeof(*t->chunks));
				json_object_set_new(seen, ch->name,
						    json_integer((json_int_t)am->ntensors++));
			} else {
				t = &am->tensors[json_integer_value(at)];
			}
			if (t->ndim != ch->ndim) {
				err_set(e, ERR_CHUNK_NDIM_MISMATCH,
					"%s: '%s' has %d dimensions in %s but %d in %s",
					am->location, ch->name, t->ndim,
					am->files[am->chunk_file[t->chunks[0]]], ch->ndim,
					am->files[f]);
				err_set_tensor(e, ch->name);
				goto out;
			}
			if (t->dtype != ch->dtype) {
				err_set(e, ERR_CHUNK_DTYPE_MISMATCH,
					"%s: '%s' is %s in %s but %s in %s", am->location, ch->name,
					dtype_name(t->dtype),
					am->files[am->chunk_file[t->chunks[0]]],
					dtype_name(ch->dtype), am->files[f]);
				err_set_tensor(e, ch->name);
				goto out;
			}
			if (t->nchunks == am->nshards) {
				err_set(e, ERR_CHUNK_OVERLAP, "%s: '%s' appears twice in %s",
					am->location, ch->name, am->files[f]);
				err_set_tensor(e, ch->name);
				goto out;
			}
			t->chunks[t->nchunks++] = (uint32_t)k;
			for (d = 0; d < ch->ndim; d++)
				if (ch->offsets[d] + ch->shape[d] > t->shape[d])
					t->shape[d] = ch->offsets[d] + ch->shape[d];
		}
	}
	c->ntensors = am->nchunks = k;
	if (check_mapped(am, c, seen, e))
		goto out;
	for (i = 0; i < am->ntensors; i++) {
		struct automodel_tensor *t = &am->tensors[i];
		const json_t *index = json_object_get(am->mapping, t->name);
		const json_t *dtype = am->dtypes ? json_object_get(am->dtypes, t->name) : NULL;
		uint64_t nonempty[ST_MAX_DIMS] = {0};
		struct err gap = {0};
		uint32_t j;
		int d;

		/* The full shape comes from the chunks that hold elements; an
		 * empty chunk only records the size of its dimension.  With
		 * gaps allowed it is Automodel's: every chunk's offset + size,
		 * so an empty chunk past the others makes zeros up to it. */
		for (j = 0; j < t->nchunks && !allow_gaps; j++) {
			const struct automodel_chunk *ch = &am->chunks[t->chunks[j]];

			for (d = 0; d < t->ndim && chunk_elems(ch); d++)
				if (ch->offsets[d] + ch->shape[d] > nonempty[d])
					nonempty[d] = ch->offsets[d] + ch->shape[d];
		}
		for (j = 0; j < t->nchunks && !allow_gaps; j++)
			if (chunk_elems(&am->chunks[t->chunks[j]]))
				memcpy(t->shape, nonempty, sizeof(nonempty));
		if (check_tensor(am, t, &gap)) {
			if (!allow_gaps || gap.code != ERR_CHUNK_GAP) {
				if (e)
					*e = gap;
				goto out;
			}
			/* Allowed: what no chunk holds is written as zeros, as
			 * Automodel's tool writes it. */
			strvec_pushf(&c->warnings, "%s (written as zeros: gaps allowed)", gap.msg);
			gap = (struct err){0};
			t->zero_fill = true;
		}
		if (check_full_size(am, c, t, e))
			goto out;
		if (!index) {
			err_set(e, ERR_TENSOR_NOT_MAPPED,
				"%s: '%s' is in the shards but not in %s/%s: no output file takes it",
				am->location, t->name, AUTOMODEL_METADATA_DIR,
				AUTOMODEL_FILE_MAPPING);
			err_set_tensor(e, t->name);
			goto out;
		}
		t->file_index = (uint32_t)json_integer_value(index);
		t->mapped_dtype = dtype ? dtype_from_name(json_string_value(dtype)) : DTYPE_INVALID;
	}
	rc = 0;
out:
	json_decref(seen);
	return rc;
}

/* ---- opening --------------------------------------------------------- */

static uint32_t shard_number(const char *name)
{
	return (uint32_t)strtoul(name + strlen(SHARD_PREFIX), NULL, 10);
}

int automodel_open(const char *location, const struct store_config *cfg, bool allow_gaps,
		   struct ckpt **ckpt, struct automodel **out, struct err *e)
{
	struct automodel *am;
	struct ckpt *c;
	struct stat st;
	size_t i;
	int rc;

	*ckpt = NULL;
	*out = NULL;
	if (!store_is_remote(location) && (stat(location, &st) != 0 || !S_ISDIR(st.st_mode)))
		return 1; /* ckpt_open says why */
	am = xcalloc(1, sizeof(*am));
	c = xcalloc(1, sizeof(*c));
	am->cfg = cfg;
	if (store_open_config(location, cfg, &c->store, e)) {
		rc = -1;
		goto fail;
	}
	am->location = xstrdup(c->store->location);
	rc = list_shards(am, c, e);
	if (rc)
		goto fail;
	rc = -1;
	am->files = xcalloc(am->nshards, sizeof(*am->files));
	am->shard_index = xcalloc(am->nshards, sizeof(*am->shard_index));
	for (i = 0; i < am->nshards; i++) {
		am->files[i] = c->files[i].name;
		am->shard_index[i] = shard_number(c->files[i].name);
	}
	if (read_shards(am, c, e))
		goto fail;
	am->allow_gaps = allow_gaps;
	if (load_metadata(am, c, e) || build_tensors(am, c, allow_gaps, e))
		goto fail;
	*ckpt = c;
	*out = am;
	return 0;
fail:
	ckpt_free(c);
	automodel_free(am);
	return rc;
}

void automodel_free(struct automodel *am)
{
	size_t i;

	if (!am)
		return;
	for (i = 0; i < am->ntensors; i++)
		free(am->tensors[i].chunks);
	free(am->tensors);
	free(am->chunks);
	free(am->chunk_file);
	for (i = 0; am->shards && i < am->nshards; i++)
		automodel_shard_fini(&am->shards[i]);
	free(am->shards);
	free(am->files);
	free(am->shard_index);
	json_decref(am->mapping);
	json_decref(am->dtypes);
	strvec_fini(&am->metadata_files);
	free(am->location);
	free(am);
}

/* ---- describing ------------------------------------------------------ */

static json_t *u64_array(int n, const uint64_t *v)
{
	json_t *a = json_array();
	int i;

	for (i = 0; i < n; i++)
		json_array_append_new(a, json_integer((json_int_t)v[i]));
	return a;
}

json_t *automodel_describe(const struct automodel *am, const struct ckpt *ckpt)
{
	json_t *root = json_object(), *ranks = json_array(), *tensors = json_array();
	json_t *files = json_array();
	bool *used = xcalloc((size_t)am->max_index + 1, sizeof(*used));
	size_t i, j;
	char name[64];

	(void)ckpt;
	for (i = 0; i < am->nshards; i++) {
		json_t *r = json_object();

		json_object_set_new(r, "file", json_string(am->files[i]));
		json_object_set_new(r, "rank", json_integer((json_int_t)am->shard_index[i] - 1));
		json_object_set_new(r, "chunks", json_integer((json_int_t)am->shards[i].nchunks));
		json_array_append_new(ranks, r);
	}
	for (i = 0; i < am->ntensors; i++) {
		const struct automodel_tensor *t = &am->tensors[i];
		json_t *o = json_object(), *chunks = json_array();

		json_object_set_new(o, "name", json_string(t->name));
		json_object_set_new(o, "dtype", json_string(dtype_name(t->dtype)));
		if (t->mapped_dtype != DTYPE_INVALID)
			json_object_set_new(o, "original_dtype",
					    json_string(dtype_name(t->mapped_dtype)));
		json_object_set_new(o, "shape", u64_array(t->ndim, t->shape));
		snprintf(name, sizeof(name), "model-%05" PRIu32 "-of-%05" PRIu32 ".safetensors",
			 t->file_index, am->max_index);
		json_object_set_new(o, "file", json_string(name));
		used[t->file_index] = true;
		for (j = 0; j < t->nchunks; j++) {
			const struct automodel_chunk *ch = &am->chunks[t->chunks[j]];
			json_t *cj = json_object();

			json_object_set_new(
				cj, "rank",
				json_integer(
					(json_int_t)am->shard_index[am->chunk_file[t->chunks[j]]] -
					1));
			json_object_set_new(cj, "offsets", u64_array(ch->ndim, ch->offsets));
			json_object_set_new(cj, "shape", u64_array(ch->ndim, ch->shape));
			json_array_append_new(chunks, cj);
		}
		json_object_set_new(o, "chunks", chunks);
		json_array_append_new(tensors, o);
	}
	json_object_set_new(root, "ranks", ranks);
	json_object_set_new(root, "tensors", tensors);
	for (i = 1; i <= am->max_index; i++)
		if (used[i]) {
			snprintf(name, sizeof(name), "model-%05zu-of-%05" PRIu32 ".safetensors", i,
				 am->max_index);
			json_array_append_new(files, json_string(name));
		}
	json_object_set_new(root, "output_files", files);
	free(used);
	return root;
}

/* SPDX-License-Identifier: MIT */
/*
 * partition: a conversion split across processes that share only the
 * destination.  Each partition writes one byte-balanced group of the plan's
 * files and the plan manifest, never the index; partitions of another plan
 * are kept out by the manifest, and a destination is prepared without
 * touching what other partitions are writing into it at the same time.
 * The groups are computed once per prepared conversion, as its scope, which
 * convert follows; finalize.c is the publish phase.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptconv/adapter.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/convert_options.h"
#include "ckptconv/err.h"
#include "ckptconv/manifest.h"
#include "ckptconv/output.h"
#include "ckptconv/partition.h"
#include "ckptconv/plan.h"
#include "ckptconv/safetensors.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

#define ST_SUFFIX ".safetensors"
#define MANIFEST_FORMAT "ckptconv-plan"
#define MANIFEST_VERSION 1
/* Header bytes are hashed in chunks this big. */
#define CHUNK (4u << 20)
/* Problems named in a partition_incomplete message. */
#define NAMED_MAX 8

/* ---- partitions and groups ---------------------------------------------- */

int partition_check(uint32_t index, uint32_t count, struct err *e)
{
	if (count == 0)
		return err_set(e, ERR_INVALID_PARTITION, "the partition count must be at least 1");
	if (index >= count)
		return err_set(e, ERR_INVALID_PARTITION,
			       "partition %" PRIu32 " is not below the count %" PRIu32
			       " (partitions count from 0)",
			       index, count);
	return 0;
}

static int parse_u32(const char *s, const char *end, uint32_t *out)
{
	uint64_t v = 0;

	if (s == end)
		return -1;
	for (; s < end; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > UINT32_MAX)
			return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

int partition_parse(const char *text, uint32_t *index, uint32_t *count, struct err *e)
{
	const char *slash = text ? strchr(text, '/') : NULL;

	if (!slash || parse_u32(text, slash, index) ||
	    parse_u32(slash + 1, slash + strlen(slash), count))
		return err_set(e, ERR_INVALID_PARTITION,
			       "--partition wants I/N with whole numbers 0 <= I < N, not '%s'",
			       text ? text : "");
	return partition_check(*index, *count, e);
}

struct by_size {
	uint64_t size;
	uint32_t file;
};

static int bigger_first(const void *a, const void *b)
{
	const struct by_size *x = a, *y = b;

	if (x->size != y->size)
		return x->size > y->size ? -1 : 1;
	return x->file < y->file ? -1 : x->file > y->file;
}

/* The greedy balance over files of these sizes (see partition.h). */
static uint32_t *assign_groups(const uint64_t *sizes, size_t n, uint32_t count)
{
	uint32_t *groups = xcalloc(n ? n : 1, sizeof(*groups));
	struct by_size *order = xcalloc(n ? n : 1, sizeof(*order));
	uint64_t *load;
	size_t i;
	uint32_t g, least;

	/* Groups past the number of files stay empty: never more to weigh. */
	if (count > n)
		count = n ? (uint32_t)n : 1;
	load = xcalloc(count ? count : 1, sizeof(*load));
	for (i = 0; i < n; i++)
		order[i] = (struct by_size){sizes[i], (uint32_t)i};
	qsort(order, n, sizeof(*order), bigger_first);
	for (i = 0; i < n; i++) {
		for (least = 0, g = 1; g < count; g++)
			if (load[g] < load[least])
				least = g;
		groups[order[i].file] = least;
		load[least] += order[i].size;
	}
	free(load);
	free(order);
	return groups;
}

uint32_t *partition_groups(const struct plan *p, uint32_t count)
{
	uint64_t *sizes = xcalloc(p->nfiles ? p->nfiles : 1, sizeof(*sizes));
	uint32_t *groups;
	size_t i;

	for (i = 0; i < p->nfiles; i++)
		sizes[i] = p->files[i].size;
	groups = assign_groups(sizes, p->nfiles, count);
	free(sizes);
	return groups;
}

bool *partition_skip_files(const struct plan *p, uint32_t index, uint32_t count)
{
	uint32_t *groups = partition_groups(p, count);
	bool *skip = xcalloc(p->nfiles ? p->nfiles : 1, sizeof(*skip));
	size_t i;

	for (i = 0; i < p->nfiles; i++)
		skip[i] = groups[i] != index;
	free(groups);
	return skip;
}

/* ---- the scope of a run ------------------------------------------------- */

void partition_scope_init(struct partition_scope *s, const struct plan *p, uint32_t index,
			  uint32_t count)
{
	memset(s, 0, sizeof(*s));
	s->index = index;
	s->count = count;
	s->publishes = count == 0;
	if (count)
		s->skip_file = partition_skip_files(p, index, count);
}

void partition_scope_fini(struct partition_scope *s)
{
	free(s->skip_file);
	memset(s, 0, sizeof(*s));
}

bool partition_scope_writes(const struct partition_scope *s, size_t file)
{
	return !s->skip_file || !s->skip_file[file];
}

int partition_scope_prepare_output(const struct partition_scope *s, struct store *dst,
				   const struct plan *p, const char *source, struct store *src,
				   const struct convert_options *o,
				   const struct store_output_options *so, struct err *e)
{
	if (s->count)
		return partition_prepare_output(dst, s, p, source, src, o, so, e);
	if (output_prepare(dst, so, e))
		return -1;
	/* An abandoned partitioned conversion's manifest goes with its files. */
	return so->overwrite ? store_remove(dst, PARTITION_MANIFEST, e) : 0;
}

/* ---- the manifest -------------------------------------------------------- */

static json_t *json_u64(uint64_t v)
{
	return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

/* The options that shape the plan, in convert_options' JSON form. */
static json_t *manifest_options(const struct plan *p, const struct convert_options *o)
{
	struct convert_options shaping = *o;

	shaping.to = p->to;
	return convert_options_to_json(&shaping, CONVERT_JSON_TO | CONVERT_JSON_PLAN);
}

/* "source_files": the weight files' names, sizes and header digests
 * (manifest.h), each with the identity planning found, then the other
 * files planning read (config.json, ...) with theirs. */
static json_t *source_files_json(const struct plan *p, const struct store_source *sources,
				 size_t nsources)
{
	json_t *files = manifest_source_files_json(p->src), *f = NULL;
	size_t i, k;

	for (i = 0; i < nsources; i++) {
		if (sources[i].id.kind == STORE_ID_NONE)
			continue;
		json_array_foreach(files, k, f)
			if (strcmp(json_string_value(json_object_get(f, "name")), sources[i].name) == 0)
				break;
		if (k == json_array_size(files)) {
			f = json_pack("{s:s}", "name", sources[i].name);
			json_array_append_new(files, f);
		}
		manifest_identity_to_json(f, &sources[i].id);
	}
	return files;
}

char *partition_manifest_build(const struct plan *p, const char *source,
			       const struct convert_options *o, uint32_t count,
			       const struct store_source *sources, size_t nsources)
{
	return partition_manifest_build_in_boot(p, source, o, count, sources, nsources, NULL);
}

char *partition_manifest_build_in_boot(const struct plan *p, const char *source,
				       const struct convert_options *o, uint32_t count,
				       const struct store_source *sources, size_t nsources,
				       const char *boot_id)
{
	char digest[65], sha[65], *canonical = store_canonical_location(source), *text;
	json_t *root, *files = json_array();
	size_t i;

	plan_digest(p, digest);
	for (i = 0; i < p->nfiles; i++) {
		sha256_hex(p->files[i].header, p->files[i].header_len, sha);
		json_array_append_new(files,
				      json_pack("{s:s, s:o, s:s}", "name", p->files[i].name, "size",
						json_u64(p->files[i].size), "header_sha256", sha));
	}
	root = json_pack("{s:s, s:i, s:s, s:o, s:I, s:o, s:s, s:b, s:o}", "format", MANIFEST_FORMAT,
			 "version", MANIFEST_VERSION, "source", canonical, "source_files",
			 source_files_json(p, sources, nsources), "partitions", (json_int_t)count,
			 "options", manifest_options(p, o), "plan_digest", digest, "index",
			 p->index_json != NULL, "files", files);
	if (boot_id && *boot_id)
		json_object_set_new(root, "boot_id", json_string(boot_id));
	text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	free(canonical);
	if (!text)
		abort();
	return text;
}

void partition_manifest_free(struct partition_manifest *m)
{
	size_t i;

	if (!m)
		return;
	for (i = 0; i < m->nfiles; i++)
		free(m->files[i].name);
	free(m->files);
	store_sources_free(m->sources, m->nsources);
	free(m->exclude);
	free(m->dtype);
	free(m->to);
	free(m->source);
	free(m);
}

static int not_a_manifest(const char *where, const char *what, struct err *e)
{
	return err_set(e, ERR_MANIFEST_MISMATCH, "%s/%s: not a plan manifest ckptconv wrote (%s)",
		       where, PARTITION_MANIFEST, what);
}

static bool is_hex_digest(const char *s)
{
	size_t i;

	for (i = 0; s && i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return s && s[64] == '\0';
}

static bool get_u64(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

static bool get_u32(const json_t *v, uint32_t *out)
{
	uint64_t x;

	if (!get_u64(v, &x) || x > UINT32_MAX)
		return false;
	*out = (uint32_t)x;
	return true;
}

/* The options in convert_options' JSON form, as this version writes them
 * and as earlier ones did (max_shard_size 0 for the default). */
static int parse_options(const json_t *o, struct partition_manifest *m, const char *where,
			 struct err *e)
{
	struct convert_options opts;
	char field[CONVERT_FIELD_MAX];
	struct err local = {0};

	convert_options_init(&opts);
	if (convert_options_from_json(o, CONVERT_JSON_TO | CONVERT_JSON_PLAN | CONVERT_JSON_STORED,
				      "options.", &opts, field, &local) < 0)
		return not_a_manifest(where, field, e);
	m->to = xstrdup(layout_name(opts.to));
	m->dtype = xstrdup(dtype_choice_name(opts.dtype));
	m->ep_size = opts.ep_size;
	m->ep_rank = opts.ep_rank;
	m->max_shard_size = opts.max_shard_size;
	m->exclude = opts.exclude ? xstrdup(opts.exclude) : NULL;
	m->allow_gaps = opts.allow_gaps;
	return 0;
}

static int parse_files(const json_t *files, struct partition_manifest *m, const char *where,
		       struct err *e)
{
	const json_t *f;
	const char *name, *sha;
	size_t i;

	if (!json_is_array(files))
		return not_a_manifest(where, "files", e);
	m->files = xcalloc(json_array_size(files) + 1, sizeof(*m->files));
	json_array_foreach(files, i, f) {
		name = json_string_value(json_object_get(f, "name"));
		sha = json_string_value(json_object_get(f, "header_sha256"));
		if (!name || !*name || strchr(name, '/') || !is_hex_digest(sha) ||
		    !get_u64(json_object_get(f, "size"), &m->files[i].size))
			return not_a_manifest(where, "files", e);
		m->files[i].name = xstrdup(name);
		memcpy(m->files[i].header_sha256, sha, 65);
		m->nfiles = i + 1;
	}
	return 0;
}

/* A source file's entry and the identity in it; *has_id false when it
 * records none (a manifest written without identities). */
static bool parse_source(const json_t *s, struct store_source *out, bool *has_id)
{
	const char *name = json_string_value(json_object_get(s, "name"));
	int rc = manifest_identity_from_json(s, &out->id);

	*has_id = rc > 0;
	if (!name || !*name || rc < 0)
		return false;
	if (*has_id)
		out->name = xstrdup(name);
	return true;
}

/* The identities in "source_files" (absent from manifests of earlier
 * versions). */
static int parse_sources(const json_t *sources, struct partition_manifest *m, const char *where,
			 struct err *e)
{
	const json_t *s;
	bool has_id;
	size_t i;

	if (!sources)
		return 0;
	if (!json_is_array(sources))
		return not_a_manifest(where, "source_files", e);
	m->sources = xcalloc(json_array_size(sources) + 1, sizeof(*m->sources));
	json_array_foreach(sources, i, s) {
		if (!json_is_object(s) || !parse_source(s, &m->sources[m->nsources], &has_id))
			return not_a_manifest(where, "source_files", e);
		if (has_id)
			m->nsources++;
	}
	return 0;
}

static int parse_root(const json_t *root, struct partition_manifest *m, const char *where,
		      struct err *e)
{
	const char *format = json_string_value(json_object_get(root, "format"));
	const char *source = json_string_value(json_object_get(root, "source"));
	const char *digest = json_string_value(json_object_get(root, "plan_digest"));
	const json_t *index = json_object_get(root, "index");

	if (!format || strcmp(format, MANIFEST_FORMAT) != 0)
		return not_a_manifest(where, "format", e);
	if (json_integer_value(json_object_get(root, "version")) != MANIFEST_VERSION)
		return not_a_manifest(where, "an unknown version", e);
	if (!source || !*source || !is_hex_digest(digest) || !json_is_boolean(index) ||
	    !get_u32(json_object_get(root, "partitions"), &m->count))
		return not_a_manifest(where, "source, plan_digest, index or partitions", e);
	m->source = xstrdup(source);
	memcpy(m->plan_digest, digest, 65);
	if (json_object_get(root, "boot_id")) {
		const char *boot = json_string_value(json_object_get(root, "boot_id"));

		if (!boot || strlen(boot) >= sizeof(m->boot_id))
			return not_a_manifest(where, "boot_id", e);
		strcpy(m->boot_id, boot);
	}
	m->has_index = json_is_true(index);
	if (!json_is_object(json_object_get(root, "options")))
		return not_a_manifest(where, "options", e);
	if (parse_options(json_object_get(root, "options"), m, where, e))
		return -1;
	if (parse_files(json_object_get(root, "files"), m, where, e))
		return -1;
	return parse_sources(json_object_get(root, "source_files"), m, where, e);
}

int partition_manifest_parse(const char *json, const char *where, struct partition_manifest **out,
			     struct err *e)
{
	struct partition_manifest *m = xcalloc(1, sizeof(*m));
	json_error_t jerr;
	json_t *root;
	int rc = -1;

	*out = NULL;
	root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root)) {
		not_a_manifest(where, root ? "not an object" : jerr.text, e);
		goto out;
	}
	if (parse_root(root, m, where, e))
		goto out;
	*out = m;
	m = NULL;
	rc = 0;
out:
	json_decref(root);
	partition_manifest_free(m);
	return rc;
}

int partition_manifest_options(const struct partition_manifest *m, struct convert_options *o,
			       struct err *e)
{
	int dtype = dtype_choice_parse(m->dtype);

	convert_options_init(o);
	if (strcmp(m->to, "native") == 0)
		o->to = LAYOUT_NATIVE;
	else if (strcmp(m->to, "hf") == 0)
		o->to = LAYOUT_HF;
	else
		return err_set(e, ERR_MANIFEST_MISMATCH, "%s: unknown target layout '%s'",
			       PARTITION_MANIFEST, m->to);
	if (dtype < 0)
		return err_set(e, ERR_MANIFEST_MISMATCH, "%s: unknown dtype '%s'", PARTITION_MANIFEST,
			       m->dtype);
	o->dtype = (enum dtype_choice)dtype;
	o->ep_size = m->ep_size;
	o->ep_rank = m->ep_rank;
	o->max_shard_size = m->max_shard_size;
	o->exclude = m->exclude;
	o->allow_gaps = m->allow_gaps;
	return 0;
}

/* The source files both manifests name are the same versions. */
static int compare_sources(const struct partition_manifest *found,
			   const struct partition_manifest *ours, const char *where, struct err *e)
{
	/* Identities taken in this boot name the same files by device and
	 * inode; taken elsewhere (partitions, another boot) only size and
	 * mtime can be compared. */
	bool same_boot = found->boot_id[0] && strcmp(found->boot_id, ours->boot_id) == 0;
	char what[256];
	size_t i, k;

	for (i = 0; i < found->nsources; i++) {
		for (k = 0; k < ours->nsources; k++)
			if (strcmp(found->sources[i].name, ours->sources[k].name) == 0)
				break;
		if (k == ours->nsources ||
		    !store_identity_differs(&found->sources[i].id, &ours->sources[k].id, !same_boot,
					    what, sizeof(what)))
			continue;
		if (found->count == 0)
			return err_set(e, ERR_SOURCE_CHANGED,
				       "%s: the source file %s of %s changed since the conversion's"
				       " plan was made (%s); nothing more is written: convert the new"
				       " version anew (--overwrite without --resume)",
				       where, found->sources[i].name, found->source, what);
		return err_set(e, ERR_SOURCE_CHANGED,
			       "%s: the source file %s of %s changed since the partitions' plan was"
			       " made (%s); nothing of this partition is written: remove the"
			       " destination and start every partition again",
			       where, found->sources[i].name, found->source, what);
	}
	return 0;
}

int partition_manifest_compare(const struct partition_manifest *found,
			       const struct partition_manifest *ours, const char *where,
			       bool overwrite_replaces, struct err *e)
{
	const char *remedy = overwrite_replaces ?
				     "remove it or pass --overwrite (without --resume) to replace it" :
				     "remove it first to start over";
	char what[64];

	if (found->count)
		snprintf(what, sizeof(what), "a conversion in %" PRIu32 " partitions",
			 found->count);
	else
		snprintf(what, sizeof(what), "a conversion");
	if (strcmp(found->source, ours->source) != 0)
		return err_set(e, ERR_MANIFEST_MISMATCH,
			       "%s: the destination holds %s of %s, not of %s; %s", where, what,
			       found->source, ours->source, remedy);
	if (strcmp(found->plan_digest, ours->plan_digest) != 0)
		return err_set(e, ERR_MANIFEST_MISMATCH,
			       "%s: the destination holds %s of another plan"
			       " (digest %.12s, this one %.12s: other options or input); %s",
			       where, what, found->plan_digest, ours->plan_digest, remedy);
	if (found->count != ours->count)
		return err_set(e, ERR_MANIFEST_MISMATCH,
			       "%s: the destination is being converted in %" PRIu32
			       " partitions, not %" PRIu32,
			       where, found->count, ours->count);
	/* Options the plan digest may not show: a --dtype that casts nothing
	 * still names the dtype finalize writes into config.json. */
	if (strcmp(found->dtype, ours->dtype) != 0 || found->allow_gaps != ours->allow_gaps)
		return err_set(e, ERR_MANIFEST_MISMATCH,
			       "%s: the destination holds a partitioned conversion with --dtype %s%s,"
			       " not --dtype %s%s; run every partition with the same options",
			       where, found->dtype, found->allow_gaps ? " --allow-gaps" : "",
			       ours->dtype, ours->allow_gaps ? " --allow-gaps" : "");
	return compare_sources(found, ours, where, e);
}

/* Hands an error caught locally on to the caller (the first error wins). */
static void keep_error(struct err *e, const struct err *local)
{
	if (e && !e->code)
		*e = *local;
}

static bool is_not_found(const struct err *e)
{
	return e->code && e->code == ERR_SOURCE_NOT_FOUND;
}

/* Like store_read_file, with a missing file reported as *out NULL. */
static int read_optional(struct store *s, const char *name, size_t max, char **out, struct err *e)
{
	struct err local = {0};

	if (store_read_file(s, name, max, out, NULL, &local) == 0)
		return 0;
	*out = NULL;
	if (is_not_found(&local))
		return 0;
	keep_error(e, &local);
	return -1;
}

/* How often an unparseable manifest is read again: a store whose PUT is not
 * atomic (some S3-compatible servers write the object in place) shows a
 * concurrent partition's manifest half-written for a moment. */
#define MANIFEST_READ_TRIES 5
#define MANIFEST_READ_PAUSE_US 200000

int partition_manifest_read(struct store *dst, struct partition_manifest **out, struct err *e)
{
	struct err local = {0};
	char *text;
	int tries, rc = -1;

	*out = NULL;
	for (tries = 1;; tries++) {
		if (read_optional(dst, PARTITION_MANIFEST, PARTITION_MANIFEST_MAX, &text, e))
			return -1;
		if (!text)
			return 0;
		err_clear(&local);
		rc = partition_manifest_parse(text, dst->location, out, &local);
		free(text);
		if (rc == 0 || tries == MANIFEST_READ_TRIES)
			break;
		usleep(MANIFEST_READ_PAUSE_US);
	}
	if (rc)
		keep_error(e, &local);
	return rc;
}

/* ---- a partition's destination ------------------------------------------ */

/* A file some partition, or finalize, of plan p writes. */
bool partition_is_planned(const struct plan *p, const char *name)
{
	size_t i;

	if (p->index_json && strcmp(name, CKPT_INDEX_NAME) == 0)
		return true;
	for (i = 0; i < p->nfiles; i++)
		if (strcmp(p->files[i].name, name) == 0)
			return true;
	for (i = 0; i < p->copy_files.len; i++)
		if (strcmp(p->copy_files.items[i], name) == 0)
			return true;
	for (i = 0; i < p->nputs; i++)
		if (strcmp(p->puts[i].name, name) == 0)
			return true;
	return false;
}

static bool belongs(const struct plan *p, bool same_plan, bool foreign_records,
		    const struct store_entry *entry)
{
	if (store_is_temporary(entry->name))
		return true;
	if (manifest_is_record(entry->name))
		return !foreign_records;
	return same_plan && entry->kind == STORE_FILE && partition_is_planned(p, entry->name);
}

static int refuse_others(const struct store *dst, const struct plan *p, bool same_plan,
			 bool foreign_records, const struct store_entry *entries, size_t n,
			 struct err *e)
{
	char names[200] = "";
	size_t i, shown = 0, others = 0, used = 0;

	for (i = 0; i < n; i++) {
		if (belongs(p, same_plan, foreign_records, &entries[i]))
			continue;
		others++;
		if (shown == 3 || used >= sizeof(names) - 1)
			continue;
		used += (size_t)snprintf(names + used, sizeof(names) - used, "%s'%s'",
					 shown ? ", " : "", entries[i].name);
		shown++;
	}
	if (!others)
		return 0;
	return err_set(e, ERR_DESTINATION_NOT_EMPTY,
		       "%s: the destination holds files of no partition of this plan (%s%s);"
		       " pass --overwrite to replace them",
		       dst->location, names, others > shown ? ", ..." : "");
}

/* Room on a local destination for this partition's files and the manifest. */
static int check_space(struct store *dst, const struct plan *p, const struct partition_scope *s,
		       size_t manifest_len, struct err *e)
{
	uint64_t needed = manifest_len;
	size_t i;

	for (i = 0; i < p->nfiles; i++)
		if (partition_scope_writes(s, i) && !u64_add(needed, p->files[i].size, &needed))
			needed = UINT64_MAX;
	return output_check_space(dst, "this partition", needed, 0, e);
}

/* Every partition puts the same bytes; a put is atomic, so concurrent
 * partitions leave one whole manifest. */
static int put_manifest(struct store *dst, const char *json, struct err *e)
{
	return store_put(dst, PARTITION_MANIFEST, json, strlen(json), e);
}

/* manifest_mismatch when the destination's manifest is another
 * partitioned plan's; *same_plan when it is this plan's; *foreign when it
 * is the manifest of a conversion that was not partitioned (its records
 * go with its checkpoint). */
static int check_manifest(struct store *dst, const char *manifest_json, bool *same_plan,
			  bool *foreign, struct err *e)
{
	struct partition_manifest *found = NULL, *ours = NULL;
	int rc = -1;

	*same_plan = *foreign = false;
	if (partition_manifest_read(dst, &found, e))
		goto out;
	if (!found || found->count == 0) {
		*foreign = found != NULL;
		rc = 0;
		goto out;
	}
	if (partition_manifest_parse(manifest_json, dst->location, &ours, e) ||
	    partition_manifest_compare(found, ours, dst->location, false, e))
		goto out;
	*same_plan = true;
	rc = 0;
out:
	partition_manifest_free(ours);
	partition_manifest_free(found);
	return rc;
}

static int check_destination(struct store *dst, const struct plan *p, const char *manifest_json,
			     const struct store_output_options *so, bool *same_plan, struct err *e)
{
	struct store_entry *entries;
	bool foreign;
	size_t n, i;
	int rc = -1;

	/* Listed before the manifest is read: a partition puts the manifest
	 * before its first file, so any file listed here is covered by it. */
	if (output_list(dst, &entries, &n, e))
		return -1;
	if (check_manifest(dst, manifest_json, same_plan, &foreign, e))
		goto out;
	if (!so->overwrite && refuse_others(dst, p, *same_plan, foreign, entries, n, e))
		goto out;
	if (so->overwrite && !*same_plan && output_remove_previous(dst, entries, n, e))
		goto out;
	for (i = 0; so->overwrite && foreign && i < n; i++)
		if (manifest_is_record(entries[i].name) && store_remove(dst, entries[i].name, e))
			goto out;
	rc = 0;
out:
	store_entries_free(entries, n);
	return rc;
}

int partition_prepare_output(struct store *dst, const struct partition_scope *s,
			     const struct plan *p, const char *source, struct store *src,
			     const struct convert_options *o, const struct store_output_options *so,
			     struct err *e)
{
	struct store_source *sources = NULL;
	size_t nsources = 0;
	char *manifest = NULL;
	bool same_plan = false;
	int rc = -1;

	if (partition_check(s->index, s->count, e))
		return -1;
	/* The store is shared with other writers: its own preparation would
	 * refuse or remove their output. */
	if (store_ensure(dst, so, e))
		return -1;
	nsources = store_identities(src, &sources);
	manifest = partition_manifest_build(p, source, o, s->count, sources, nsources);
	if (check_destination(dst, p, manifest, so, &same_plan, e) ||
	    check_space(dst, p, s, strlen(manifest), e))
		goto out;
	/* An equal manifest is not put again, so a partition starting while
	 * others run never rewrites the object they may be reading. */
	if (!same_plan && put_manifest(dst, manifest, e))
		goto out;
	rc = 0;
out:
	free(manifest);
	store_sources_free(sources, nsources);
	return rc;
}

/* ---- checking the planned files ----------------------------------------- */

/* Hex SHA-256 of the file's header bytes (prefix + JSON), read back in
 * bounded chunks.  Fails when the prefix is not a valid header size. */
static int header_sha256(struct store *s, const char *name, uint64_t size, char out[65],
			 struct err *e)
{
	unsigned char prefix[ST_PREFIX_LEN], *buf = NULL;
	struct sha256_ctx *ctx = sha256_begin();
	uint64_t json_len, off;
	int rc = -1;

	if (store_read(s, name, 0, prefix, sizeof(prefix), e) ||
	    st_prefix_parse(name, prefix, size, &json_len, e))
		goto out;
	sha256_add(ctx, prefix, sizeof(prefix));
	buf = xmalloc(CHUNK);
	for (off = 0; off < json_len; off += CHUNK) {
		size_t len = json_len - off < CHUNK ? (size_t)(json_len - off) : CHUNK;

		if (store_read(s, name, ST_PREFIX_LEN + off, buf, len, e))
			goto out;
		sha256_add(ctx, buf, len);
	}
	rc = 0;
out:
	free(buf);
	sha256_finish_hex(ctx, out); /* on failure a digest of a part, not used */
	return rc;
}

/* Why a planned file is not as planned, into `why`; "" when it is. */
static int file_problem(struct store *dst, const struct partition_file *f,
			const struct store_entry *entry, char *why, size_t len, struct err *e)
{
	struct err local = {0};
	char sha[65];

	why[0] = '\0';
	if (!entry || entry->kind != STORE_FILE) {
		snprintf(why, len, "missing");
		return 0;
	}
	if (entry->size != f->size) {
		snprintf(why, len, "%" PRIu64 " bytes, planned %" PRIu64, entry->size, f->size);
		return 0;
	}
	if (header_sha256(dst, f->name, entry->size, sha, &local)) {
		if (local.code == ERR_IO_ERROR || err_is_s3(local.code)) {
			keep_error(e, &local);
			return -1;
		}
		snprintf(why, len, "unreadable header");
	} else if (strcmp(sha, f->header_sha256) != 0) {
		snprintf(why, len, "header not as planned");
	}
	return 0;
}

/* "1, 4" for the partitions that write the files in `bad`. */
static void rerun_list(const struct partition_manifest *m, const bool *bad, char *out, size_t len)
{
	/* Only the first nfiles groups can hold files. */
	size_t groups_used = m->count < m->nfiles ? m->count : m->nfiles;
	uint64_t *sizes = xcalloc(m->nfiles ? m->nfiles : 1, sizeof(*sizes));
	bool *rerun = xcalloc(groups_used ? groups_used : 1, sizeof(*rerun));
	uint32_t *groups, g;
	size_t i, used = 0;

	for (i = 0; i < m->nfiles; i++)
		sizes[i] = m->files[i].size;
	groups = assign_groups(sizes, m->nfiles, m->count);
	for (i = 0; i < m->nfiles; i++)
		if (bad[i])
			rerun[groups[i]] = true;
	out[0] = '\0';
	for (g = 0; g < groups_used && used < len - 1; g++)
		if (rerun[g])
			used += (size_t)snprintf(out + used, len - used, "%s%" PRIu32,
						 used ? ", " : "", g);
	free(groups);
	free(rerun);
	free(sizes);
}

static int incomplete_error(const struct store *dst, const struct partition_manifest *m,
			    const bool *bad, const struct strvec *problems, struct err *e)
{
	char names[300] = "", partitions[64];
	size_t i, used = 0;

	for (i = 0; i < problems->len && i < NAMED_MAX; i++) {
		if (used + strlen(problems->items[i]) + 2 >= sizeof(names))
			break; /* only whole names */
		used += (size_t)snprintf(names + used, sizeof(names) - used, "%s%s", i ? ", " : "",
					 problems->items[i]);
	}
	rerun_list(m, bad, partitions, sizeof(partitions));
	return err_set(e, ERR_PARTITION_INCOMPLETE,
		       "%s: %zu of %zu planned files missing or incomplete (rerun partition%s %s"
		       " of %" PRIu32 "): %s%s",
		       dst->location, problems->len, m->nfiles, strchr(partitions, ',') ? "s" : "",
		       partitions, m->count, names, problems->len > i ? ", ..." : "");
}

int partition_check_files(struct store *dst, const struct partition_manifest *m, struct err *e)
{
	bool *bad = xcalloc(m->nfiles ? m->nfiles : 1, sizeof(*bad));
	struct strvec problems = {0};
	struct store_entry *entries;
	char why[96];
	size_t n, i;
	int rc = -1;

	if (output_list(dst, &entries, &n, e))
		goto out;
	for (i = 0; i < m->nfiles; i++) {
		const struct partition_file *f = &m->files[i];

		if (file_problem(dst, f, store_entries_find(entries, n, f->name), why, sizeof(why), e))
			goto out_entries;
		if (!why[0])
			continue;
		bad[i] = true;
		strvec_pushf(&problems, "%s (%s)", f->name, why);
	}
	rc = problems.len ? incomplete_error(dst, m, bad, &problems, e) : 0;
out_entries:
	strvec_fini(&problems);
	store_entries_free(entries, n);
out:
	free(bad);
	return rc;
}

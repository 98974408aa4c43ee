/* SPDX-License-Identifier: MIT */
/*
 * convert: one conversion, from the source checkpoint to a published
 * destination.  Preparing validates the options, opens the source, lets the
 * model adapter detect the layout and build the plan; nothing is written.
 * Running checks the destination before any data moves, copies the
 * non-weight files, executes the plan (each shard published as it
 * completes) and publishes the index last, so a reader that sees the index
 * (or a lone model.safetensors) sees a complete checkpoint.  A failed or
 * cancelled run removes everything it published.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckptconv/adapter.h"
#include "ckptconv/automodel.h"
#include "ckptconv/ckpt.h"
#include "ckptconv/conversion_result.h"
#include "ckptconv/convert.h"
#include "ckptconv/err.h"
#include "ckptconv/crc32c.h"
#include "ckptconv/exec.h"
#include "ckptconv/manifest.h"
#include "ckptconv/output.h"
#include "ckptconv/partition.h"
#include "ckptconv/plan.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

struct conversion {
	char *src_location, *dst_location;
	struct convert_options opts;
	char *exclude; /* opts.exclude points here */
	struct ckpt *ckpt;
	struct automodel *automodel; /* a sharded Automodel source; frees after ckpt */
	struct plan *plan;
	struct strvec warnings;
	struct store *dst;
	_Atomic(struct exec_run *) run;
	atomic_bool cancelled;
	bool ran;

	/* While suspended (ckpt->store NULL): where the source's store was
	 * and its top-level entries then. */
	char *source_store;
	struct store_entry *source_entries;
	size_t nsource_entries;
	struct store_source *source_ids; /* what planning read, as it was */
	size_t nsource_ids;

	/* What this conversion published outside exec, for the cleanup. */
	struct strvec published;
	/* What a run writes and whether it publishes (the whole plan, or a
	 * partition's group): computed once, when the plan is made. */
	struct partition_scope scope;
	/* The destination's records (manifest.h). */
	struct manifest_sums *sums; /* this run's checksum record */
	bool *kept_file;	    /* files kept from an interrupted run */
	uint64_t kept_files, kept_bytes;
	bool manifest_found;        /* the plan manifest was there before */
};

/* ---- preparing ---------------------------------------------------------- */

/* Writing into the source's own directory would replace the source. */
static int check_not_source(const char *src, const char *dst, struct err *e)
{
	if (store_same_location(src, dst))
		return err_set(e, ERR_INVALID_OPTION,
			       "%s: the destination is the source checkpoint's own location", dst);
	return 0;
}

static void collect_warnings(struct conversion *c)
{
	const struct strvec *lists[2] = {&c->ckpt->warnings, &c->plan->warnings};
	size_t l, i, k;

	for (l = 0; l < 2; l++) {
		for (i = 0; i < lists[l]->len; i++) {
			bool seen = false;

			for (k = 0; k < c->warnings.len && !seen; k++)
				seen = strcmp(c->warnings.items[k], lists[l]->items[i]) == 0;
			if (!seen)
				strvec_push(&c->warnings, lists[l]->items[i]);
		}
	}
}

static int build_plan(struct conversion *c, const struct adapter *a, enum layout from,
		      struct err *e)
{
	struct adapter_options ao = {
		.to = c->opts.to,
		.dtype = c->opts.dtype,
		.ep_size = c->opts.ep_size,
		.ep_rank = c->opts.ep_rank,
	};
	struct plan_options po = {.max_shard_size = c->opts.max_shard_size, .exclude = c->exclude};

	c->plan = plan_new(c->ckpt, from, c->opts.to);
	if (a->build_plan(c->ckpt, &ao, c->plan, e) || plan_finish(c->plan, &po, e))
		return -1;
	/* Output that could not be converted back is refused before any write. */
	return a->check_round_trip(c->ckpt, &ao, c->plan, e) ? -1 : 0;
}

/* ---- consolidation of an Automodel sharded checkpoint (automodel.h) ---- */

static int plan_consolidation(struct conversion *c, struct err *e)
{
	struct adapter_options ao = {
		.to = c->opts.to,
		.dtype = c->opts.dtype,
		.ep_size = c->opts.ep_size,
		.ep_rank = c->opts.ep_rank,
	};
	struct plan_options po = {.max_shard_size = c->opts.max_shard_size, .exclude = c->exclude};

	if (c->opts.to == LAYOUT_NATIVE) {
		if (automodel_build_native_plan(c->automodel, c->ckpt, &ao, &po, &c->plan, e))
			return -1;
		collect_warnings(c);
		return 0;
	}
	if (c->exclude)
		return err_set(e, ERR_INVALID_OPTION,
			       "a consolidation to hf writes every tensor: no exclude");
	/* (The default size is what a partition manifest records.) */
	if (c->opts.max_shard_size && c->opts.max_shard_size != PLAN_MAX_SHARD_SIZE_DEFAULT)
		return err_set(e, ERR_INVALID_OPTION,
			       "a consolidation to hf writes the files of %s/%s: no max shard size",
			       AUTOMODEL_METADATA_DIR, AUTOMODEL_FILE_MAPPING);
	c->plan = plan_new(c->ckpt, LAYOUT_HF, LAYOUT_HF);
	if (automodel_build_plan(c->automodel, c->ckpt, c->opts.dtype, c->plan, e))
		return -1;
	collect_warnings(c);
	return 0;
}

static int open_and_plan(struct conversion *c, struct err *e)
{
	const struct adapter *a;
	struct model_info info;
	int rc;

	rc = automodel_open(c->src_location, c->opts.store, c->opts.allow_gaps, &c->ckpt,
			    &c->automodel, e);
	if (rc <= 0)
		return rc < 0 ? -1 : plan_consolidation(c, e);
	if (c->opts.to == LAYOUT_HF && c->opts.dtype != DTYPE_CHOICE_AUTO)
		return err_set(
			e, ERR_INVALID_OPTION,
			"a dtype applies only to conversions to native and to consolidations of a"
			" sharded checkpoint (to hf keeps an HF or native checkpoint's dtypes)");
	if (ckpt_open_config(c->src_location, CKPT_REQUIRE_CONFIG, c->opts.store, &c->ckpt, e))
		return -1;
	a = adapter_for(c->ckpt, e);
	if (!a || a->describe(c->ckpt, &info, e))
		return -1;
	if (info.layout == c->opts.to)
		return err_set(e, ERR_ALREADY_IN_LAYOUT, "%s is already in %s layout",
			       c->src_location, layout_name(info.layout));
	if (build_plan(c, a, info.layout, e))
		return -1;
	collect_warnings(c);
	return 0;
}

int conversion_prepare(const char *src, const char *dst, const struct convert_options *o,
		       struct conversion **out, struct err *e)
{
	struct conversion *c;

	*out = NULL;
	if (convert_options_check(o, NULL, e) || check_not_source(src, dst, e))
		return -1;
	c = xcalloc(1, sizeof(*c));
	c->src_location = xstrdup(src);
	c->dst_location = xstrdup(dst);
	c->opts = *o;
	c->exclude = o->exclude && *o->exclude ? xstrdup(o->exclude) : NULL;
	c->opts.exclude = c->exclude;
	if (open_and_plan(c, e)) {
		conversion_free(c);
		return -1;
	}
	partition_scope_init(&c->scope, c->plan, o->partition_index, o->partition_count);
	*out = c;
	return 0;
}

void conversion_free(struct conversion *c)
{
	if (!c)
		return;
	exec_run_free(atomic_load(&c->run));
	store_free(c->dst);
	plan_free(c->plan);
	ckpt_free(c->ckpt);
	automodel_free(c->automodel);
	strvec_fini(&c->published);
	partition_scope_fini(&c->scope);
	free(c->kept_file);
	manifest_sums_free(c->sums);
	strvec_fini(&c->warnings);
	store_entries_free(c->source_entries, c->nsource_entries);
	store_sources_free(c->source_ids, c->nsource_ids);
	free(c->source_store);
	free(c->exclude);
	free(c->dst_location);
	free(c->src_location);
	free(c);
}

const struct plan *conversion_plan(const struct conversion *c)
{
	return c->plan;
}

const struct strvec *conversion_warnings(const struct conversion *c)
{
	return &c->warnings;
}

void conversion_describe_result(const struct conversion *c, struct conversion_result *r)
{
	const struct partition_scope *scope = &c->scope;
	const struct plan *p = c->plan;
	size_t i;

	for (i = 0; i < p->nfiles; i++) {
		if (!partition_scope_writes(scope, i))
			continue;
		strvec_push(&r->files, p->files[i].name);
		r->file_bytes += p->files[i].size;
	}
	conversion_totals(c, &r->tensors, &r->bytes);
	for (i = 0; scope->publishes && i < p->copy_files.len; i++)
		strvec_push(&r->files, p->copy_files.items[i]);
	for (i = 0; scope->publishes && i < p->nputs; i++)
		strvec_push(&r->files, p->puts[i].name);
	if (scope->publishes && p->index_json)
		strvec_push(&r->files, CKPT_INDEX_NAME);
	for (i = 0; i < c->warnings.len; i++)
		strvec_push(&r->warnings, c->warnings.items[i]);
	r->partition_index = scope->index;
	r->partition_count = scope->count;
	r->planned_files = scope->count ? p->nfiles : 0;
	r->kept_files = c->kept_files;
	r->kept_bytes = c->kept_bytes;
	for (i = 0; c->kept_file && i < p->ntensors; i++)
		if (c->kept_file[p->tensors[i].file])
			r->kept_data_bytes += p->tensors[i].nbytes;
}

void conversion_totals(const struct conversion *c, uint64_t *tensors, uint64_t *bytes)
{
	const struct plan *p = c->plan;
	size_t i;

	*tensors = *bytes = 0;
	for (i = 0; i < p->ntensors; i++) {
		if (!partition_scope_writes(&c->scope, p->tensors[i].file))
			continue;
		(*tensors)++;
		*bytes += p->tensors[i].nbytes;
	}
}

/* ---- waiting ------------------------------------------------------------ */

int conversion_suspend(struct conversion *c, struct err *e)
{
	if (!c->ckpt->store)
		return 0;
	if (store_list(c->ckpt->store, &c->source_entries, &c->nsource_entries, e))
		return -1;
	c->nsource_ids = store_identities(c->ckpt->store, &c->source_ids);
	c->source_store = xstrdup(c->ckpt->store->location);
	store_free(c->ckpt->store);
	c->ckpt->store = NULL;
	return 0;
}

static bool same_entries(const struct store_entry *a, size_t na, const struct store_entry *b,
			 size_t nb)
{
	size_t i;

	if (na != nb)
		return false;
	for (i = 0; i < na; i++)
		if (strcmp(a[i].name, b[i].name) != 0 || a[i].size != b[i].size ||
		    a[i].kind != b[i].kind)
			return false;
	return true;
}

/* Whether the files planning read are the versions it read: pinned in
 * `s` so the run reads them or fails (store_pin). */
static int same_sources(struct conversion *c, struct store *s, bool *same, struct err *e)
{
	struct err local = {0};
	size_t i;

	*same = true;
	for (i = 0; i < c->nsource_ids && *same; i++) {
		if (store_pin(s, c->source_ids[i].name, &c->source_ids[i].id, false, &local) == 0)
			continue;
		if (local.code != ERR_SOURCE_CHANGED && local.code != ERR_SOURCE_NOT_FOUND) {
			if (e && !e->code)
				*e = local;
			return -1;
		}
		*same = false;
	}
	return 0;
}

int conversion_resume(struct conversion *c, struct err *e)
{
	struct store_entry *entries = NULL;
	struct store *s = NULL;
	size_t n = 0;
	bool same;
	int rc = -1;

	if (c->ckpt->store)
		return 0;
	if (store_open_config(c->source_store, c->opts.store, &s, e) ||
	    store_list(s, &entries, &n, e))
		goto out;
	rc = 1;
	if (!same_entries(c->source_entries, c->nsource_entries, entries, n))
		goto out;
	if (same_sources(c, s, &same, e)) {
		rc = -1;
		goto out;
	}
	if (!same)
		goto out;
	c->ckpt->store = s;
	s = NULL;
	store_entries_free(c->source_entries, c->nsource_entries);
	c->source_entries = NULL;
	c->nsource_entries = 0;
	store_sources_free(c->source_ids, c->nsource_ids);
	c->source_ids = NULL;
	c->nsource_ids = 0;
	free(c->source_store);
	c->source_store = NULL;
	rc = 0;
out:
	store_entries_free(entries, n);
	store_free(s);
	return rc;
}

/* ---- running ------------------------------------------------------------ */

static bool is_cancelled(struct conversion *c)
{
	return atomic_load(&c->cancelled);
}

static int cancelled_error(struct err *e)
{
	return err_set(e, ERR_CANCELLED, "conversion cancelled");
}

/* Every byte the destination will hold: shards, index, copied files. */
static int bytes_needed(struct conversion *c, uint64_t *out, struct err *e)
{
	const struct strvec *files = &c->plan->copy_files;
	uint64_t total = c->plan->total_file_bytes;
	struct store_entry st;
	size_t i;

	if (c->plan->index_json)
		total += strlen(c->plan->index_json);
	for (i = 0; i < c->plan->nputs; i++)
		if (!u64_add(total, c->plan->puts[i].len, &total))
			total = UINT64_MAX;
	for (i = 0; i < files->len; i++) {
		if (store_stat(c->ckpt->store, files->items[i], &st, e))
			return -1;
		if (!u64_add(total, st.size, &total))
			total = UINT64_MAX;
	}
	*out = total;
	return 0;
}

/* Removes the plan manifest and every checksum record `entries` show. */
static int remove_records(struct store *dst, const struct store_entry *entries, size_t n,
			  struct err *e)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (manifest_is_record(entries[i].name) && store_remove(dst, entries[i].name, e))
			return -1;
	return 0;
}

/* A destination that is not resumed: output_prepare's rules; with
 * overwrite, an earlier conversion's records go with its files. */
static int same_plan(struct conversion *c, const struct partition_manifest *found, struct err *e);

/* destination_not_empty on a destination holding this plan's manifest (an
 * interrupted run of it): the message also says --resume keeps its
 * finished files. */
static void suggest_resume(struct conversion *c, struct err *e)
{
	struct partition_manifest *found = NULL;
	struct err local = {0};
	size_t len = strlen(e->msg);

	if (partition_manifest_read(c->dst, &found, &local) == 0 && found &&
	    same_plan(c, found, &local) == 0)
		snprintf(e->msg + len, sizeof(e->msg) - len,
			 ", or --resume to keep the files an interrupted conversion of this "
			 "plan finished");
	partition_manifest_free(found);
}

static int prepare_fresh(struct conversion *c, struct store_output_options *so, struct err *e)
{
	struct store_entry *entries = NULL;
	size_t n = 0;
	int rc;

	if (output_prepare(c->dst, so, e)) {
		if (e && e->code == ERR_DESTINATION_NOT_EMPTY && !c->opts.resume)
			suggest_resume(c, e);
		return -1;
	}
	if (!so->overwrite)
		return 0;
	if (output_list(c->dst, &entries, &n, e))
		return -1;
	rc = remove_records(c->dst, entries, n, e);
	store_entries_free(entries, n);
	return rc;
}

/* The plan manifest of this conversion (partition.h), with the identity
 * of every source file planning read. */
static char *build_manifest(struct conversion *c, uint32_t count)
{
	struct store_source *sources = NULL;
	size_t n = store_identities(c->ckpt->store, &sources);
	char boot_id[BOOT_ID_MAX] = "";
	char *text;

	/* A conversion of one machine took every identity here. */
	if (count == 0)
		boot_id_read(boot_id);
	text = partition_manifest_build_in_boot(c->plan, c->src_location, &c->opts, count, sources,
						n, boot_id);

	store_sources_free(sources, n);
	return text;
}

/* manifest_mismatch unless `found` is the manifest of this conversion. */
static int same_plan(struct conversion *c, const struct partition_manifest *found, struct err *e)
{
	struct partition_manifest *ours = NULL;
	char *text = build_manifest(c, c->opts.partition_count);
	int rc;

	if (partition_manifest_parse(text, c->dst->location, &ours, e) ||
	    partition_manifest_compare(found, ours, c->dst->location, !c->opts.partition_count,
				       e))
		rc = -1;
	else
		rc = 0;
	partition_manifest_free(ours);
	free(text);
	return rc;
}

/* Whether `name` is one of the files a conversion of the plan writes. */
static bool is_output(const struct plan *p, const char *name)
{
	return strcmp(name, CKPT_INDEX_NAME) == 0 || manifest_is_record(name) ||
	       store_is_temporary(name) || partition_is_planned(p, name);
}

/* A temporary file this run may remove: any, or for a partition, one of
 * its own files' (the other partitions may be writing theirs). */
static bool is_stale(const struct conversion *c, const char *name)
{
	size_t i;

	if (!store_is_temporary(name))
		return false;
	if (!c->scope.skip_file)
		return true;
	for (i = 0; i < c->plan->nfiles; i++)
		if (!c->scope.skip_file[i] && store_is_temporary_of(name, c->plan->files[i].name))
			return true;
	return false;
}

/* store_abort_unfinished's choice: an output file of this run. */
static bool is_unfinished_mine(const char *name, void *arg)
{
	const struct conversion *c = arg;
	size_t i;

	for (i = 0; i < c->plan->nfiles; i++)
		if (partition_scope_writes(&c->scope, i) && strcmp(c->plan->files[i].name, name) == 0)
			return true;
	return false;
}

/* The same plan's destination: others' files left in place (with a
 * warning), unfinished temporaries removed, the files that pass
 * manifest_keep_files kept; when one does not, the index goes first. */
static int keep_published(struct conversion *c, const struct store_entry *entries, size_t n,
			  unsigned threads, struct err *e)
{
	struct manifest_sums *sums = NULL;
	char *sums_name = manifest_sums_name(c->opts.partition_index, c->opts.partition_count);
	char digest[65];
	size_t i, mine = 0;
	int rc = -1;

	/* The destination holds this plan's manifest: a file no conversion of
	 * the plan writes was there when that run accepted the destination
	 * (or came since); it is left as it is, and said. */
	for (i = 0; i < n; i++) {
		if (!is_output(c->plan, entries[i].name))
			strvec_pushf(&c->warnings,
				     "%s: left '%s' in place, which no conversion of this plan writes",
				     c->dst->location, entries[i].name);
		if (is_stale(c, entries[i].name) && store_remove(c->dst, entries[i].name, e))
			goto out;
	}
	if (store_abort_unfinished(c->dst, is_unfinished_mine, c, e))
		goto out;
	if (manifest_sums_read(c->dst, sums_name, &sums, e))
		goto out;
	plan_digest(c->plan, digest);
	c->kept_file = xcalloc(c->plan->nfiles ? c->plan->nfiles : 1, sizeof(bool));
	if (sums && strcmp(sums->plan_digest, digest) == 0 &&
	    manifest_keep_files(c->dst, c->plan, c->scope.skip_file, sums, entries, n, threads,
				c->sums, c->kept_file, &c->kept_files, &c->kept_bytes, e))
		goto out; /* the new record starts with the files kept (start_records) */
	for (i = 0; i < c->plan->nfiles; i++)
		mine += !c->scope.skip_file || !c->scope.skip_file[i];
	if (c->kept_files < mine && !c->opts.partition_count &&
	    store_remove(c->dst, CKPT_INDEX_NAME, e))
		goto out;
	rc = 0;
out:
	manifest_sums_free(sums);
	free(sums_name);
	return rc;
}

/* A partition resumed: partition_prepare_output has checked the manifest
 * and put it; its own finished files are kept. */
static int resume_partition(struct conversion *c, unsigned threads, struct err *e)
{
	struct store_entry *entries = NULL;
	size_t n = 0;
	int rc;

	if (output_list(c->dst, &entries, &n, e))
		return -1;
	rc = keep_published(c, entries, n, threads, e);
	store_entries_free(entries, n);
	return rc;
}

/* --resume: a destination holding this plan's manifest keeps what it
 * holds of it; one without a manifest is prepared as for any run. */
static int prepare_resume(struct conversion *c, struct store_output_options *so,
			  unsigned threads, struct err *e)
{
	struct partition_manifest *found = NULL;
	struct store_entry *entries = NULL;
	uint64_t needed;
	size_t n = 0;
	int rc = -1;

	if (store_ensure(c->dst, so, e) || output_list(c->dst, &entries, &n, e))
		return -1;
	if (partition_manifest_read(c->dst, &found, e))
		goto out;
	if (!found) {
		rc = prepare_fresh(c, so, e);
		goto out;
	}
	if (same_plan(c, found, e) || keep_published(c, entries, n, threads, e))
		goto out;
	c->manifest_found = true;
	needed = so->bytes_needed > c->kept_bytes ? so->bytes_needed - c->kept_bytes : 0;
	rc = output_check_space(c->dst, "the output", needed, 0, e);
out:
	partition_manifest_free(found);
	store_entries_free(entries, n);
	return rc;
}

/* The plan manifest (unless there already) and this run's checksum
 * record, holding the files kept, before any other file is written. */
static int start_records(struct conversion *c, struct err *e)
{
	char *manifest;
	int rc = 0;

	if (!c->manifest_found && !c->opts.partition_count) {
		manifest = build_manifest(c, 0);
		rc = store_put(c->dst, PARTITION_MANIFEST, manifest, strlen(manifest), e);
		free(manifest);
		if (rc)
			return -1;
	}
	c->sums->dst = c->dst;
	return manifest_sums_write(c->sums, e);
}

/* threads: how many files a resumed run checks at once. */
static int prepare_destination(struct conversion *c, unsigned threads, struct err *e)
{
	struct store_output_options so = {
		.overwrite = c->opts.overwrite,
		.durable = c->opts.durable,
		.exclusive = c->scope.count == 0,
	};
	char digest[65], *name;
	int rc;

	if (store_open_config(c->dst_location, c->opts.store, &c->dst, e) ||
	    bytes_needed(c, &so.bytes_needed, e))
		return -1;
	plan_digest(c->plan, digest);
	name = manifest_sums_name(c->opts.partition_index, c->opts.partition_count);
	c->sums = manifest_sums_new(digest, NULL, name); /* written from start_records on */
	free(name);
	if (c->scope.count) {
		rc = partition_scope_prepare_output(&c->scope, c->dst, c->plan, c->src_location,
						    c->ckpt->store, &c->opts, &so, e);
		if (rc == 0 && c->opts.resume)
			rc = resume_partition(c, threads, e);
	} else if (c->opts.resume)
		rc = prepare_resume(c, &so, threads, e);
	else
		rc = prepare_fresh(c, &so, e);
	return rc ? -1 : start_records(c, e);
}

/* Records a copied file's size and CRC-32C, read back (they are small). */
static int note_copied(struct conversion *c, const char *name, struct err *e)
{
	struct store_entry st;
	uint32_t crc;

	if (store_stat(c->dst, name, &st, e) ||
	    manifest_file_crc32c(c->dst, name, st.size, &crc, e))
		return -1;
	return manifest_sums_note(c->sums, name, st.size, crc, NULL, e);
}

/* The non-weight files (config.json, tokenizer, ...), before the weights,
 * when the run publishes (a partition's come with finalize). */
static int copy_files(struct conversion *c, struct err *e)
{
	const struct plan *p = c->plan;
	size_t i;

	if (!c->scope.publishes)
		return 0;
	if (output_copy_files(c->ckpt->store, c->dst, &p->copy_files, &c->cancelled, &c->published,
			      e))
		return -1;
	for (i = 0; i < p->copy_files.len; i++)
		if (note_copied(c, p->copy_files.items[i], e))
			return -1;
	/* Files a plan writes from memory (a consolidation's metadata). */
	if (output_put_files(c->dst, p, &c->cancelled, &c->published, e))
		return -1;
	for (i = 0; i < p->nputs; i++)
		if (manifest_sums_note(c->sums, p->puts[i].name, p->puts[i].len,
				       crc32c(0, p->puts[i].data, p->puts[i].len), NULL, e))
			return -1;
	return 0;
}

/* exec_options.published: the shard's size and CRC-32C into the record. */
static int note_published(void *arg, uint32_t file, uint32_t crc,
			  const struct store_identity *id, struct err *e)
{
	struct conversion *c = arg;
	const struct plan_file *pf = &c->plan->files[file];

	return manifest_sums_note_published(c->sums, pf->name, pf->size, crc, id, c->opts.durable, e);
}

static int execute_plan(struct conversion *c, struct exec_pool *pool, struct err *e)
{
	static const enum exec_read_mode read_mode[] = {
		[CONVERT_IO_AUTO] = EXEC_READ_AUTO,
		[CONVERT_IO_MMAP] = EXEC_READ_VIEW,
		[CONVERT_IO_PREAD] = EXEC_READ_COPY,
	};
	struct exec_options eo = {.max_bytes_per_second = c->opts.max_bytes_per_second,
				  .skip_file = c->scope.skip_file,
				  .read_mode = read_mode[c->opts.io],
				  .kept_file = c->kept_file,
				  .published = note_published,
				  .published_arg = c};
	struct exec_run *run = exec_run_new(c->plan, c->ckpt->store, c->dst, &eo);

	atomic_store(&c->run, run);
	if (is_cancelled(c))
		exec_run_cancel(run);
	return exec_run_execute(run, pool, e);
}

/* The index last: its presence says the checkpoint is complete.  A run
 * that does not publish leaves it to finalize. */
static int publish_index(struct conversion *c, struct err *e)
{
	const char *json = c->plan->index_json;

	if (is_cancelled(c))
		return cancelled_error(e);
	if (!json || !c->scope.publishes)
		return 0;
	if (output_publish_index(c->dst, json, &c->published, e))
		return -1;
	return manifest_sums_note(c->sums, CKPT_INDEX_NAME, strlen(json),
				  crc32c(0, json, strlen(json)), NULL, e);
}

/* Removes what the run published besides the shards (exec removes those),
 * index first; after a successful exec the shards are ours to remove too. */
static void remove_published(struct conversion *c, bool shards)
{
	size_t i;

	output_remove_published(c->dst, &c->published);
	for (i = 0; shards && i < c->plan->nfiles; i++)
		if (partition_scope_writes(&c->scope, i) && (!c->kept_file || !c->kept_file[i]))
			output_remove_after_failure(c->dst, c->plan->files[i].name);
	if (!c->sums || !c->sums->dst)
		return; /* the records were not started */
	/* Files kept stay for the next resume, with the records naming only
	 * them; else nothing of the run remains. */
	if (c->kept_files) {
		for (i = 0; i < c->published.len; i++)
			manifest_sums_forget(c->sums, c->published.items[i]);
		for (i = 0; i < c->plan->nfiles; i++)
			if (partition_scope_writes(&c->scope, i) && !c->kept_file[i])
				manifest_sums_forget(c->sums, c->plan->files[i].name);
		manifest_sums_write(c->sums, NULL);
		return;
	}
	store_remove(c->dst, c->sums->name, NULL);
	if (!c->opts.partition_count)
		store_remove(c->dst, PARTITION_MANIFEST, NULL);
}

/* Whether the run creates its destination: a local directory that does
 * not exist yet (a partition shares its destination with the others, so
 * it never counts as the one that created it). */
static bool creates_destination(const struct conversion *c)
{
	enum store_entry_kind kind;
	struct err local = {0};

	if (c->opts.partition_count || store_location_caps(c->dst_location) & STORE_REMOTE)
		return false;
	return store_location_kind(c->dst_location, &kind, &local) < 0 &&
	       local.code == ERR_SOURCE_NOT_FOUND;
}

/* A failed run leaves no empty directory it created itself (rmdir removes
 * only an empty one; one that existed before is never touched). */
static void remove_created_destination(const struct conversion *c)
{
	if (c->dst)
		rmdir(c->dst->location);
}

int conversion_run(struct conversion *c, struct exec_pool *pool, struct err *e)
{
	bool shards_published = false, created = false;
	int rc = -1;

	if (c->ran)
		return err_set(e, ERR_INTERNAL_ERROR, "a conversion runs only once");
	if (!c->ckpt->store)
		return err_set(e, ERR_INTERNAL_ERROR, "a suspended conversion runs once resumed");
	c->ran = true;
	if (is_cancelled(c)) {
		cancelled_error(e);
		goto out;
	}
	created = creates_destination(c);
	if (prepare_destination(c, pool ? exec_pool_threads(pool) : 1, e))
		goto out_dir;
	if (copy_files(c, e) || execute_plan(c, pool, e))
		goto out_remove;
	shards_published = true;
	/* Every source was read for the last time: the index is published
	 * only over output made from one version of each. */
	if (store_check_sources(c->ckpt->store, e) || publish_index(c, e))
		goto out_remove;
	rc = 0;
	goto out;
out_remove:
	remove_published(c, shards_published);
out_dir:
	if (created)
		remove_created_destination(c);
out:
	return rc;
}

/* The names a run of c writes in its destination, index first. */
static void output_names(const struct conversion *c, struct strvec *names)
{
	const struct plan *p = c->plan;
	bool publishes = c->scope.publishes;
	char *sums;
	size_t i;

	if (publishes && p->index_json)
		strvec_push(names, CKPT_INDEX_NAME);
	for (i = 0; i < p->nfiles; i++)
		if (partition_scope_writes(&c->scope, i))
			strvec_push(names, p->files[i].name);
	for (i = 0; publishes && i < p->copy_files.len; i++)
		strvec_push(names, p->copy_files.items[i]);
	for (i = 0; publishes && i < p->nputs; i++)
		strvec_push(names, p->puts[i].name);
	sums = manifest_sums_name(c->scope.index, c->scope.count);
	strvec_push(names, sums);
	free(sums);
	if (!c->scope.count)
		strvec_push(names, PARTITION_MANIFEST);
}

int conversion_clean_destination(struct conversion *c, struct err *e)
{
	struct store_entry *entries = NULL;
	struct strvec names = {0};
	struct store *dst = NULL;
	struct err listing = {0};
	size_t n = 0, i, k;
	int rc = -1;

	output_names(c, &names);
	if (store_open_config(c->dst_location, c->opts.store, &dst, e))
		goto out;
	for (i = 0; i < names.len; i++)
		if (store_remove(dst, names.items[i], e))
			goto out;
	if (store_list(dst, &entries, &n, &listing)) {
		rc = listing.code == ERR_SOURCE_NOT_FOUND ? 0 : -1;
		if (rc)
			*e = listing;
		goto out;
	}
	for (i = 0; i < n; i++)
		for (k = 0; k < names.len; k++)
			if (store_is_temporary_of(entries[i].name, names.items[k]) &&
			    store_remove(dst, entries[i].name, e))
				goto out;
	rc = 0;
out:
	store_entries_free(entries, n);
	store_free(dst);
	strvec_fini(&names);
	return rc;
}

void conversion_kept(const struct conversion *c, uint64_t *files, uint64_t *bytes)
{
	*files = c->kept_files;
	*bytes = c->kept_bytes;
}

void conversion_cancel(struct conversion *c)
{
	struct exec_run *run;

	atomic_store(&c->cancelled, true);
	run = atomic_load(&c->run);
	if (run)
		exec_run_cancel(run);
}

void conversion_progress(const struct conversion *c, struct exec_progress *out)
{
	struct exec_run *run = atomic_load(&((struct conversion *)c)->run);

	if (run)
		exec_run_progress(run, out);
	else
		memset(out, 0, sizeof(*out));
}

enum tensor_state conversion_tensor_state(const struct conversion *c, size_t tensor)
{
	struct exec_run *run = atomic_load(&((struct conversion *)c)->run);

	return run ? exec_run_tensor_state(run, tensor) : TENSOR_PENDING;
}

size_t conversion_in_flight(const struct conversion *c, uint32_t *out, size_t max)
{
	struct exec_run *run = atomic_load(&((struct conversion *)c)->run);

	return run ? exec_run_in_flight(run, out, max) : 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * finalize: the publish phase of a partitioned conversion.  Once every
 * partition has written its group, finalize plans again from the
 * manifest's source and options (the same plan digest proves the source
 * still gives what the partitions wrote), checks that every planned file
 * is there with the planned size and header bytes, copies the non-weight
 * files, writes the plan's in-memory files, publishes the index last,
 * merges the partitions' checksum records into one and turns the manifest
 * into a finished unpartitioned conversion's (manifest.h).  A destination
 * with no manifest, or with that of a conversion that was not
 * partitioned, must be a finished checkpoint already, which is checked and
 * left as it is.
 */
#include <stdlib.h>
#include <string.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/conversion_result.h"
#include "ckptconv/crc32c.h"
#include "ckptconv/convert.h"
#include "ckptconv/err.h"
#include "ckptconv/finalize.h"
#include "ckptconv/manifest.h"
#include "ckptconv/output.h"
#include "ckptconv/partition.h"
#include "ckptconv/plan.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

/* Hands an error caught locally on to the caller (the first error wins). */
static void keep_error(struct err *e, const struct err *local)
{
	if (e && !e->code)
		*e = *local;
}

void finalize_options_init(struct finalize_options *o)
{
	memset(o, 0, sizeof(*o));
	o->durable = true;
}

/* No manifest: the destination must be a finished checkpoint already. */
static int check_finished(const char *location, const struct store_config *cfg,
			  struct conversion_result *r, struct err *e)
{
	struct err local = {0};
	struct ckpt *ck;
	size_t i;

	if (ckpt_open_config(location, 0, cfg, &ck, &local)) {
		if (local.code == ERR_SOURCE_NOT_FOUND || local.code == ERR_NOT_A_CHECKPOINT)
			return err_set(e, ERR_PARTITION_INCOMPLETE,
				       "%s: holds neither a plan manifest (%s) nor a finished"
				       " checkpoint; run the partitions first",
				       location, PARTITION_MANIFEST);
		keep_error(e, &local);
		return -1;
	}
	r->already_finished = true;
	for (i = 0; i < ck->nfiles; i++) {
		strvec_push(&r->files, ck->files[i].name);
		r->file_bytes += ck->files[i].size;
	}
	for (i = 0; i < ck->copy_files.len; i++)
		strvec_push(&r->files, ck->copy_files.items[i]);
	if (ck->has_index)
		strvec_push(&r->files, CKPT_INDEX_NAME);
	r->tensors = ck->ntensors;
	r->bytes = ck->total_bytes;
	ckpt_free(ck);
	return 0;
}

/* The location the source's relative file names resolve against (a single
 * *.safetensors file stands for its directory, as in ckpt_open). */
static char *source_dir(const char *source)
{
	const char *slash = strrchr(source, '/');
	enum store_entry_kind kind;
	bool file;
	char *dir;

	file = store_location_kind(source, &kind, NULL) == 0 && kind == STORE_FILE;
	if (!file || !slash)
		return xstrdup(file ? "." : source);
	dir = xstrdup(source);
	dir[slash == source ? 1 : slash - source] = '\0';
	return dir;
}

/* The non-weight files, then the index; on failure the copies go again. */
/* The source files the manifest records are still those versions:
 * pinned in src, so the copies below read them or fail. */
static int pin_sources(struct store *src, const struct partition_manifest *m, struct err *e)
{
	size_t i;

	for (i = 0; i < m->nsources; i++)
		if (store_pin(src, m->sources[i].name, &m->sources[i].id, true, e))
			return -1;
	return 0;
}

static int publish(struct store *dst, const struct partition_manifest *m, const struct plan *p,
		   const struct store_config *cfg, struct err *e)
{
	char *dir = source_dir(m->source);
	struct strvec published = {0};
	struct store *src;
	int rc = -1;

	if (store_open_config(dir, cfg, &src, e))
		goto out;
	if (pin_sources(src, m, e))
		goto out_free;
	if (output_copy_files(src, dst, &p->copy_files, NULL, &published, e) ||
	    output_put_files(dst, p, NULL, &published, e) || store_check_sources(src, e) ||
	    (p->index_json && output_publish_index(dst, p->index_json, &published, e)))
		output_remove_published(dst, &published);
	else
		rc = 0;
	strvec_fini(&published);
out_free:
	store_free(src);
out:
	free(dir);
	return rc;
}

/* Plans again from the manifest's source and options: the same digest
 * proves the source still gives what the partitions wrote. */
static int replan(const char *location, const struct partition_manifest *m,
		  const struct store_config *cfg, struct conversion **out, struct err *e)
{
	struct convert_options o;
	char digest[65];

	*out = NULL;
	if (partition_manifest_options(m, &o, e))
		return -1;
	o.store = cfg;
	if (conversion_prepare(m->source, location, &o, out, e))
		return -1;
	plan_digest(conversion_plan(*out), digest);
	if (strcmp(digest, m->plan_digest) == 0)
		return 0;
	conversion_free(*out);
	*out = NULL;
	return err_set(e, ERR_MANIFEST_MISMATCH,
		       "%s: the source %s no longer gives the planned output (plan digest %.12s,"
		       " the manifest's %.12s)",
		       location, m->source, digest, m->plan_digest);
}

/* One checksum record for the finished checkpoint, as a conversion that
 * is not partitioned leaves: the partitions' records merged, the copied
 * files (read back: they are small) and the index added; then the
 * partitions' records go.  A partition's record that misses one of its
 * files leaves that file out: verify --checksums checks what is recorded. */
static int merge_sums(struct store *dst, const struct partition_manifest *m, const struct plan *p,
		      struct err *e)
{
	struct manifest_sums *all = NULL, *part = NULL;
	struct store_entry st;
	char digest[65], *name;
	uint32_t g, crc;
	size_t i;
	int rc = -1;

	plan_digest(p, digest);
	all = manifest_sums_new(digest, NULL, MANIFEST_SUMS_NAME);
	for (g = 0; g < m->count; g++) {
		name = manifest_sums_name(g, m->count);
		rc = manifest_sums_read(dst, name, &part, e);
		free(name);
		if (rc)
			goto out;
		for (i = 0; part && i < part->n; i++)
			manifest_sums_note_entry(all, &part->files[i], NULL);
		manifest_sums_free(part);
		part = NULL;
	}
	rc = -1;
	for (i = 0; i < p->copy_files.len; i++) {
		if (store_stat(dst, p->copy_files.items[i], &st, e) ||
		    manifest_file_crc32c(dst, p->copy_files.items[i], st.size, &crc, e))
			goto out;
		manifest_sums_note(all, p->copy_files.items[i], st.size, crc, NULL, NULL);
	}
	for (i = 0; i < p->nputs; i++)
		manifest_sums_note(all, p->puts[i].name, p->puts[i].len,
				   crc32c(0, p->puts[i].data, p->puts[i].len), NULL, NULL);
	if (p->index_json)
		manifest_sums_note(all, CKPT_INDEX_NAME, strlen(p->index_json),
				   crc32c(0, p->index_json, strlen(p->index_json)), NULL, NULL);
	all->dst = dst;
	if (manifest_sums_write(all, e))
		goto out;
	for (g = 0; g < m->count; g++) {
		name = manifest_sums_name(g, m->count);
		rc = store_remove(dst, name, e);
		free(name);
		if (rc)
			goto out;
	}
	rc = 0;
out:
	manifest_sums_free(part);
	manifest_sums_free(all);
	return rc;
}

/* The manifest becomes the one a conversion that is not partitioned
 * leaves (0 partitions): the destination is a finished conversion of the
 * plan, which a partition of it no longer writes into. */
static int finish_manifest(struct store *dst, const struct partition_manifest *m,
			   const struct plan *p, struct err *e)
{
	struct convert_options o;
	char *text;
	int rc;

	if (partition_manifest_options(m, &o, e))
		return -1;
	text = partition_manifest_build(p, m->source, &o, 0, m->sources, m->nsources);
	rc = store_put(dst, PARTITION_MANIFEST, text, strlen(text), e);
	free(text);
	return rc;
}

static int finalize_planned(struct store *dst, const struct partition_manifest *m,
			    const struct finalize_options *o, struct conversion_result *r,
			    struct err *e)
{
	struct conversion *c = NULL;
	const struct plan *p;
	int rc = -1;

	if (o->check_source && o->check_source(m->source, o->check_source_arg, e))
		goto out;
	if (replan(dst->location, m, o->store, &c, e) || partition_check_files(dst, m, e))
		goto out;
	p = conversion_plan(c);
	if (store_ensure(dst, &(struct store_output_options){.durable = o->durable}, e))
		goto out;
	if (publish(dst, m, p, o->store, e) || merge_sums(dst, m, p, e) ||
	    finish_manifest(dst, m, p, e))
		goto out;
	/* The whole plan's files, tensors and bytes: what the checkpoint holds. */
	conversion_describe_result(c, r);
	r->source = xstrdup(m->source);
	rc = 0;
out:
	conversion_free(c);
	return rc;
}

int finalize_destination(const char *location, const struct finalize_options *o,
			 struct conversion_result *r, struct err *e)
{
	struct finalize_options defaults;
	struct partition_manifest *m = NULL;
	struct store *dst;
	int rc = -1;

	conversion_result_init(r);
	r->finalize = true;
	if (!o) {
		finalize_options_init(&defaults);
		o = &defaults;
	}
	if (store_open_config(location, o->store, &dst, e))
		return -1;
	if (partition_manifest_read(dst, &m, e))
		goto out;
	/* A manifest of a conversion that is not partitioned stays with it. */
	rc = m && m->count ? finalize_planned(dst, m, o, r, e) :
			     check_finished(location, o->store, r, e);
	if (rc) {
		conversion_result_fini(r);
		r->finalize = true;
	}
out:
	partition_manifest_free(m);
	store_free(dst);
	return rc;
}

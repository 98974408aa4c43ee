/* SPDX-License-Identifier: MIT */
/*
 * output: checkpoint file names and the destination policy (refuse or
 * replace, room, the previous checkpoint removed index first), on top of
 * the store's verbs, for every backend alike.
 */
#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/err.h"
#include "ckptconv/log.h"
#include "ckptconv/output.h"
#include "ckptconv/plan.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

/* Files up to this size are copied at once; larger ones are streamed
 * through a buffer of COPY_CHUNK bytes. */
#define COPY_WHOLE_MAX (16u << 20)
#define COPY_CHUNK (4u << 20)

bool output_is_checkpoint_file(const char *name)
{
	return strcmp(name, CKPT_INDEX_NAME) == 0 || strcmp(name, CKPT_SINGLE_NAME) == 0 ||
	       fnmatch(CKPT_SHARD_PATTERN, name, 0) == 0;
}

int output_list(struct store *dst, struct store_entry **out, size_t *n, struct err *e)
{
	struct err local = {0};

	*out = NULL;
	*n = 0;
	if (store_list(dst, out, n, &local) == 0)
		return 0;
	if (local.code && local.code == ERR_SOURCE_NOT_FOUND)
		return 0;
	if (e && !e->code)
		*e = local;
	return -1;
}

int output_remove_previous(struct store *dst, const struct store_entry *entries, size_t n,
			   struct err *e)
{
	size_t i;

	if (store_remove(dst, CKPT_INDEX_NAME, e) || store_remove(dst, CKPT_SINGLE_NAME, e))
		return -1;
	for (i = 0; i < n; i++)
		if (entries[i].kind == STORE_FILE &&
		    fnmatch(CKPT_SHARD_PATTERN, entries[i].name, 0) == 0 &&
		    store_remove(dst, entries[i].name, e))
			return -1;
	return 0;
}

static int refuse_not_empty(struct store *dst, const struct store_entry *entries, size_t n,
			    size_t others, struct err *e)
{
	const char *what = store_caps(dst) & STORE_REMOTE ? "objects" : "files";
	char names[256] = "";
	size_t i, shown = 0, used = 0;

	for (i = 0; i < n && shown < 3; i++) {
		if (store_is_temporary(entries[i].name))
			continue;
		used += (size_t)snprintf(names + used, sizeof(names) - used, "%s'%s'",
					 shown ? ", " : "", entries[i].name);
		if (used >= sizeof(names))
			used = sizeof(names) - 1;
		shown++;
	}
	return err_set(e, ERR_DESTINATION_NOT_EMPTY,
		       "%s: the destination holds %s (%s%s); pass --overwrite to replace them",
		       dst->location, what, names, others > shown ? ", ..." : "");
}

int output_check_space(struct store *dst, const char *what, uint64_t needed, uint64_t freed,
		       struct err *e)
{
	char need_text[32], avail_text[32];
	uint64_t avail;

	if (store_free_space(dst, &avail, e))
		return -1;
	if (!u64_add(avail, freed, &avail))
		avail = UINT64_MAX;
	if (avail >= needed)
		return 0;
	size_format(needed, need_text, sizeof(need_text));
	size_format(avail, avail_text, sizeof(avail_text));
	return err_set(e, ERR_INSUFFICIENT_SPACE,
		       "%s: %s needs %s (%" PRIu64 " bytes) but only %s (%" PRIu64
		       " bytes) is free",
		       dst->location, what, need_text, needed, avail_text, avail);
}

int output_prepare(struct store *dst, const struct store_output_options *o, struct err *e)
{
	bool temporaries = store_caps(dst) & STORE_ATOMIC_RENAME;
	struct store_entry *entries = NULL;
	uint64_t freed = 0;
	size_t n = 0, i, others = 0;
	int rc = -1;

	if (store_ensure(dst, o, e) || output_list(dst, &entries, &n, e))
		goto out;
	for (i = 0; i < n; i++) {
		if (temporaries && store_is_temporary(entries[i].name)) {
			if (store_remove(dst, entries[i].name, e))
				goto out;
			continue;
		}
		others++;
		if (entries[i].kind == STORE_FILE && output_is_checkpoint_file(entries[i].name) &&
		    !u64_add(freed, entries[i].size, &freed))
			freed = UINT64_MAX;
	}
	if (others && !o->overwrite) {
		refuse_not_empty(dst, entries, n, others, e);
		goto out;
	}
	if (output_check_space(dst, "the output", o->bytes_needed, o->overwrite ? freed : 0, e))
		goto out;
	rc = o->overwrite ? output_remove_previous(dst, entries, n, e) : 0;
out:
	store_entries_free(entries, n);
	return rc;
}

/* Copies a file too large to hold in memory in bounded chunks. */
static int stream_file(struct store *src, struct store *dst, const char *name, uint64_t size,
		       const atomic_bool *cancelled, struct err *e)
{
	struct store_writer *w;
	unsigned char *buf;
	uint64_t off;

	if (store_writer_open(dst, name, size, &w, e))
		return -1;
	buf = xmalloc(COPY_CHUNK);
	for (off = 0; off < size; off += COPY_CHUNK) {
		size_t len = size - off < COPY_CHUNK ? (size_t)(size - off) : COPY_CHUNK;

		if (cancelled && atomic_load(cancelled)) {
			err_set(e, ERR_CANCELLED, "conversion cancelled");
			goto out_abort;
		}
		if (store_read(src, name, off, buf, len, e) ||
		    store_writer_write(w, off, buf, len, e))
			goto out_abort;
	}
	free(buf);
	return store_writer_commit(w, e);
out_abort:
	store_writer_abort(w);
	free(buf);
	return -1;
}

int output_copy_file(struct store *src, struct store *dst, const char *name,
		     const atomic_bool *cancelled, struct err *e)
{
	struct store_entry st;
	size_t len;
	char *data;
	int rc;

	if (store_stat(src, name, &st, e))
		return -1;
	if (st.size > COPY_WHOLE_MAX)
		return stream_file(src, dst, name, st.size, cancelled, e);
	if (store_read_file(src, name, COPY_WHOLE_MAX, &data, &len, e))
		return -1;
	rc = store_put(dst, name, data, len, e);
	free(data);
	return rc;
}

int output_copy_files(struct store *src, struct store *dst, const struct strvec *files,
		      const atomic_bool *cancelled, struct strvec *published, struct err *e)
{
	size_t i;

	for (i = 0; i < files->len; i++) {
		if (cancelled && atomic_load(cancelled))
			return err_set(e, ERR_CANCELLED, "conversion cancelled");
		strvec_push(published, files->items[i]);
		if (output_copy_file(src, dst, files->items[i], cancelled, e))
			return -1;
	}
	return 0;
}

int output_put_files(struct store *dst, const struct plan *p, const atomic_bool *cancelled,
		     struct strvec *published, struct err *e)
{
	size_t i;

	for (i = 0; i < p->nputs; i++) {
		if (cancelled && atomic_load(cancelled))
			return err_set(e, ERR_CANCELLED, "conversion cancelled");
		strvec_push(published, p->puts[i].name);
		if (store_put(dst, p->puts[i].name, p->puts[i].data, p->puts[i].len, e))
			return -1;
	}
	return 0;
}

int output_publish_index(struct store *dst, const char *index_json, struct strvec *published,
			 struct err *e)
{
	strvec_push(published, CKPT_INDEX_NAME);
	return store_put(dst, CKPT_INDEX_NAME, index_json, strlen(index_json), e);
}

int output_remove_after_failure(struct store *dst, const char *name)
{
	size_t n = strlen(dst->location);
	struct err e = {0};

	if (store_remove(dst, name, &e) == 0)
		return 0;
	log_warn("%s%s%s: not removed after the failure (%s: %s); remove it by hand", dst->location,
		 n && dst->location[n - 1] == '/' ? "" : "/", name, err_name(e.code), e.msg);
	return -1;
}

void output_remove_published(struct store *dst, const struct strvec *published)
{
	size_t i;

	for (i = published->len; i > 0; i--)
		output_remove_after_failure(dst, published->items[i - 1]);
}

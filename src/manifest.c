/* SPDX-License-Identifier: MIT */
/*
 * manifest: the checksum record of a destination (every published file's
 * size and CRC-32C, rewritten whole as each file is published), the
 * source identity the plan manifest carries, the checks that let a
 * resumed conversion keep what an interrupted one finished, and the
 * re-reading behind `verify --checksums`.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/ckpt.h"
#include "ckptconv/crc32c.h"
#include "ckptconv/err.h"
#include "ckptconv/exec.h"
#include "ckptconv/log.h"
#include "ckptconv/manifest.h"
#include "ckptconv/partition.h"
#include "ckptconv/plan.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

#define SUMS_FORMAT "ckptconv-sums"
#define SUMS_VERSION 1
#define SUMS_PREFIX "ckptconv-sums"
#define SUMS_SUFFIX ".json"
/* Files are read back in chunks this big. */
#define CHUNK (4u << 20)

char *manifest_sums_name(uint32_t partition_index, uint32_t partition_count)
{
	char name[64];

	if (!partition_count)
		return xstrdup(MANIFEST_SUMS_NAME);
	snprintf(name, sizeof(name), SUMS_PREFIX ".%" PRIu32 SUMS_SUFFIX, partition_index);
	return xstrdup(name);
}

static bool is_sums_name(const char *name)
{
	size_t len = strlen(name), i;

	if (strcmp(name, MANIFEST_SUMS_NAME) == 0)
		return true;
	if (strncmp(name, SUMS_PREFIX ".", sizeof(SUMS_PREFIX)) != 0 ||
	    len <= sizeof(SUMS_PREFIX) + sizeof(SUMS_SUFFIX) - 1 ||
	    strcmp(name + len - (sizeof(SUMS_SUFFIX) - 1), SUMS_SUFFIX) != 0)
		return false;
	for (i = sizeof(SUMS_PREFIX); i < len - (sizeof(SUMS_SUFFIX) - 1); i++)
		if (name[i] < '0' || name[i] > '9')
			return false;
	return true;
}

bool manifest_is_record(const char *name)
{
	return strcmp(name, PARTITION_MANIFEST) == 0 || is_sums_name(name);
}

/* ---- the source's identity ---------------------------------------------- */

static void digest_u64(struct sha256_ctx *ctx, uint64_t v)
{
	unsigned char b[8];
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	sha256_add(ctx, b, sizeof(b));
}

static void header_digest(const struct st_header *h, char out[65])
{
	struct sha256_ctx *ctx = sha256_begin();
	size_t i;
	int d;

	digest_u64(ctx, h->header_len);
	digest_u64(ctx, h->ntensors);
	for (i = 0; i < h->ntensors; i++) {
		const struct st_tensor *t = &h->tensors[i];

		digest_u64(ctx, strlen(t->name));
		sha256_add(ctx, t->name, strlen(t->name));
		digest_u64(ctx, (uint64_t)t->dtype);
		digest_u64(ctx, (uint64_t)t->ndim);
		for (d = 0; d < t->ndim; d++)
			digest_u64(ctx, t->shape[d]);
		digest_u64(ctx, t->begin);
		digest_u64(ctx, t->end);
	}
	sha256_finish_hex(ctx, out);
}

static json_t *json_u64(uint64_t v)
{
	return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

json_t *manifest_source_files_json(const struct ckpt *ck)
{
	json_t *files = json_array();
	char sha[65];
	size_t i;

	for (i = 0; ck && i < ck->nfiles; i++) {
		header_digest(&ck->files[i].header, sha);
		json_array_append_new(files, json_pack("{s:s, s:o, s:s}", "name", ck->files[i].name,
						       "size", json_u64(ck->files[i].size),
						       "header_sha256", sha));
	}
	return files;
}

/* ---- a published or read file's identity -------------------------------- */

static json_t *json_u64_text(uint64_t v)
{
	char text[24];

	snprintf(text, sizeof(text), "%" PRIu64, v);
	return json_string(text);
}

void manifest_identity_to_json(json_t *o, const struct store_identity *id)
{
	if (id->kind == STORE_ID_FILE) {
		json_object_set_new(o, "size", json_u64(id->size));
		json_object_set_new(o, "mtime_ns", json_integer(id->mtime_ns));
		json_object_set_new(o, "ctime_ns", json_integer(id->ctime_ns));
		json_object_set_new(o, "dev", json_u64_text(id->dev));
		json_object_set_new(o, "ino", json_u64_text(id->ino));
	} else if (id->kind == STORE_ID_OBJECT) {
		json_object_set_new(o, "etag", json_string(id->etag));
		if (id->version_id[0])
			json_object_set_new(o, "version_id", json_string(id->version_id));
	}
}

static bool get_u64(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

static bool get_u64_text(const json_t *v, uint64_t *out)
{
	const char *t = json_string_value(v);
	char *end;

	if (!t || *t < '0' || *t > '9')
		return false;
	errno = 0;
	*out = strtoull(t, &end, 10);
	return errno == 0 && *end == '\0';
}

static bool get_i64(const json_t *v, int64_t *out)
{
	if (!json_is_integer(v))
		return false;
	*out = (int64_t)json_integer_value(v);
	return true;
}

static bool copy_text(const json_t *v, char *out, size_t len, bool required)
{
	const char *t = json_string_value(v);

	if (!v && !required)
		return true;
	if (!t || strlen(t) >= len || (required && !*t))
		return false;
	strcpy(out, t);
	return true;
}

int manifest_identity_from_json(const json_t *o, struct store_identity *id)
{
	static const char *const id_keys[] = {"etag", "version_id", "mtime_ns",
					      "ctime_ns", "dev", "ino"};
	bool has_id = false;
	size_t k;

	memset(id, 0, sizeof(*id));
	for (k = 0; k < sizeof(id_keys) / sizeof(id_keys[0]); k++)
		has_id = has_id || json_object_get(o, id_keys[k]) != NULL;
	if (!has_id)
		return 0;
	if (json_object_get(o, "etag")) {
		id->kind = STORE_ID_OBJECT;
		if (!copy_text(json_object_get(o, "etag"), id->etag, sizeof(id->etag), true) ||
		    !copy_text(json_object_get(o, "version_id"), id->version_id,
			       sizeof(id->version_id), false))
			return -1;
		return 1;
	}
	id->kind = STORE_ID_FILE;
	if (!get_u64(json_object_get(o, "size"), &id->size) ||
	    !get_i64(json_object_get(o, "mtime_ns"), &id->mtime_ns) ||
	    !get_i64(json_object_get(o, "ctime_ns"), &id->ctime_ns) ||
	    !get_u64_text(json_object_get(o, "dev"), &id->dev) ||
	    !get_u64_text(json_object_get(o, "ino"), &id->ino))
		return -1;
	return 1;
}

/* ---- the checksum record ------------------------------------------------ */

struct manifest_sums *manifest_sums_new(const char *plan_digest, struct store *dst,
					const char *name)
{
	struct manifest_sums *s = xcalloc(1, sizeof(*s));

	snprintf(s->plan_digest, sizeof(s->plan_digest), "%s", plan_digest ? plan_digest : "");
	s->dst = dst;
	s->name = xstrdup(name ? name : MANIFEST_SUMS_NAME);
	pthread_mutex_init(&s->lock, NULL);
	return s;
}

void manifest_sums_free(struct manifest_sums *s)
{
	size_t i;

	if (!s)
		return;
	for (i = 0; i < s->n; i++)
		free(s->files[i].name);
	free(s->files);
	free(s->name);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct manifest_sum *)a)->name,
		      ((const struct manifest_sum *)b)->name);
}

/* In name order, so the same output gives the same record however its
 * files were published. */
static char *build_locked(struct manifest_sums *s)
{
	json_t *files = json_array(), *root;
	char crc[9], *text;
	size_t i;

	if (s->n > 1)
		qsort(s->files, s->n, sizeof(*s->files), by_name);
	for (i = 0; i < s->n; i++) {
		crc32c_hex(s->files[i].crc32c, crc);
		json_t *f = json_pack("{s:s, s:o, s:s}", "name", s->files[i].name, "size",
				      json_u64(s->files[i].size), "crc32c", crc);

		/* The identity as published, when the store gave one. */
		if (s->files[i].id.kind != STORE_ID_NONE)
			manifest_identity_to_json(f, &s->files[i].id);
		if (s->files[i].boot_id[0])
			json_object_set_new(f, "boot_id", json_string(s->files[i].boot_id));
		json_array_append_new(files, f);
	}
	root = json_pack("{s:s, s:i, s:s, s:o}", "format", SUMS_FORMAT, "version", SUMS_VERSION,
			 "plan_digest", s->plan_digest, "files", files);
	text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (!text)
		abort();
	return text;
}

char *manifest_sums_build(struct manifest_sums *s)
{
	char *text;

	pthread_mutex_lock(&s->lock);
	text = build_locked(s);
	pthread_mutex_unlock(&s->lock);
	return text;
}

static int not_a_record(const char *where, const char *what, struct err *e)
{
	return err_set(e, ERR_MANIFEST_MISMATCH, "%s: not a checksum record ckptconv wrote (%s)",
		       where, what);
}

/* The index where `name` is or would go in s->files, kept in name order;
 * *found whether it is there. */
static size_t position_locked(const struct manifest_sums *s, const char *name, bool *found)
{
	size_t lo = 0, hi = s->n;
	int c;

	*found = false;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		c = strcmp(s->files[mid].name, name);
		if (c == 0) {
			*found = true;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void add_locked(struct manifest_sums *s, const char *name, uint64_t size, uint32_t crc,
		       const struct store_identity *id, const char *boot_id)
{
	struct store_identity none = {0};

	if (!id)
		id = &none;
	bool found;
	size_t at = position_locked(s, name, &found);

	if (found) {
		s->files[at].size = size;
		s->files[at].crc32c = crc;
		s->files[at].id = *id;
		snprintf(s->files[at].boot_id, sizeof(s->files[at].boot_id), "%s", boot_id);
		return;
	}
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 16;
		s->files = xrealloc(s->files, s->cap * sizeof(*s->files));
	}
	memmove(&s->files[at + 1], &s->files[at], (s->n - at) * sizeof(*s->files));
	s->files[at] = (struct manifest_sum){xstrdup(name), size, crc, *id, ""};
	snprintf(s->files[at].boot_id, sizeof(s->files[at].boot_id), "%s", boot_id);
	s->n++;
}

static int parse_files(const json_t *files, struct manifest_sums *s, const char *where,
		       struct err *e)
{
	char boot_id[BOOT_ID_MAX];
	struct store_identity id;
	const json_t *f, *size;
	const char *name;
	uint32_t crc;
	size_t i;

	if (!json_is_array(files))
		return not_a_record(where, "files", e);
	json_array_foreach(files, i, f) {
		boot_id[0] = '\0';
		name = json_string_value(json_object_get(f, "name"));
		size = json_object_get(f, "size");
		if (!name || !*name || strchr(name, '/') || !json_is_integer(size) ||
		    json_integer_value(size) < 0 ||
		    crc32c_parse_hex(json_string_value(json_object_get(f, "crc32c")), &crc) ||
		    manifest_identity_from_json(f, &id) < 0 ||
		    !copy_text(json_object_get(f, "boot_id"), boot_id, sizeof(boot_id), false))
			return not_a_record(where, "files", e);
		if (s->n == s->cap) {
			s->cap = s->cap ? s->cap * 2 : 16;
			s->files = xrealloc(s->files, s->cap * sizeof(*s->files));
		}
		s->files[s->n] = (struct manifest_sum){
			xstrdup(name), (uint64_t)json_integer_value(size), crc, id, ""};
		snprintf(s->files[s->n++].boot_id, BOOT_ID_MAX, "%s", boot_id);
	}
	/* Sorted once (a record of many entries reads in n log n), and a name
	 * twice is no record of ours. */
	if (s->n > 1)
		qsort(s->files, s->n, sizeof(*s->files), by_name);
	for (i = 1; i < s->n; i++)
		if (strcmp(s->files[i - 1].name, s->files[i].name) == 0)
			return not_a_record(where, "files (a name twice)", e);
	return 0;
}

int manifest_sums_parse(const char *json, const char *where, struct manifest_sums **out,
			struct err *e)
{
	struct manifest_sums *s = NULL;
	const char *format, *digest;
	json_error_t jerr;
	json_t *root;
	int rc = -1;

	*out = NULL;
	root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root)) {
		not_a_record(where, root ? "not an object" : jerr.text, e);
		goto out;
	}
	format = json_string_value(json_object_get(root, "format"));
	digest = json_string_value(json_object_get(root, "plan_digest"));
	if (!format || strcmp(format, SUMS_FORMAT) != 0) {
		not_a_record(where, "format", e);
		goto out;
	}
	if (json_integer_value(json_object_get(root, "version")) != SUMS_VERSION) {
		not_a_record(where, "an unknown version", e);
		goto out;
	}
	if (!digest || strlen(digest) != 64) {
		not_a_record(where, "plan_digest", e);
		goto out;
	}
	s = manifest_sums_new(digest, NULL, NULL);
	if (parse_files(json_object_get(root, "files"), s, where, e))
		goto out;
	*out = s;
	s = NULL;
	rc = 0;
out:
	manifest_sums_free(s);
	json_decref(root);
	return rc;
}

int manifest_sums_read(struct store *dst, const char *name, struct manifest_sums **out,
		       struct err *e)
{
	struct err local = {0};
	char *text, *where;
	int rc;

	*out = NULL;
	if (store_read_file(dst, name, MANIFEST_SUMS_MAX, &text, NULL, &local)) {
		if (local.code == ERR_SOURCE_NOT_FOUND)
			return 0;
		if (e && !e->code)
			*e = local;
		return -1;
	}
	where = xmalloc(strlen(dst->location) + strlen(name) + 2);
	sprintf(where, "%s/%s", dst->location, name);
	rc = manifest_sums_parse(text, where, out, e);
	free(where);
	free(text);
	return rc;
}

const struct manifest_sum *manifest_sums_find(const struct manifest_sums *s, const char *name)
{
	bool found;
	size_t at;

	if (!s)
		return NULL;
	at = position_locked(s, name, &found);
	return found ? &s->files[at] : NULL;
}

static int write_locked(struct manifest_sums *s, struct err *e)
{
	char *text;
	int rc;

	if (!s->dst)
		return 0;
	text = build_locked(s);
	rc = store_put(s->dst, s->name, text, strlen(text), e);
	free(text);
	return rc;
}

/* Notes `name` with boot id `boot_id` ("" for none). */
static int note_in_boot(struct manifest_sums *s, const char *name, uint64_t size, uint32_t crc32c,
			const struct store_identity *id, const char *boot_id, struct err *e)
{
	int rc;

	pthread_mutex_lock(&s->lock);
	add_locked(s, name, size, crc32c, id, boot_id);
	rc = write_locked(s, e);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int manifest_sums_note(struct manifest_sums *s, const char *name, uint64_t size, uint32_t crc32c,
		       const struct store_identity *id, struct err *e)
{
	return note_in_boot(s, name, size, crc32c, id, "", e);
}

int manifest_sums_note_entry(struct manifest_sums *s, const struct manifest_sum *entry,
			     struct err *e)
{
	return note_in_boot(s, entry->name, entry->size, entry->crc32c, &entry->id, entry->boot_id,
			    e);
}

int manifest_sums_note_published(struct manifest_sums *s, const char *name, uint64_t size,
				 uint32_t crc32c, const struct store_identity *id, bool durable,
				 struct err *e)
{
	char boot_id[BOOT_ID_MAX] = "";

	if (!durable && id && id->kind == STORE_ID_FILE)
		boot_id_read(boot_id);
	return note_in_boot(s, name, size, crc32c, id, boot_id, e);
}

void manifest_sums_forget(struct manifest_sums *s, const char *name)
{
	bool found;
	size_t at;

	pthread_mutex_lock(&s->lock);
	at = position_locked(s, name, &found);
	if (found) {
		free(s->files[at].name);
		memmove(&s->files[at], &s->files[at + 1], (s->n - at - 1) * sizeof(*s->files));
		s->n--;
	}
	pthread_mutex_unlock(&s->lock);
}

int manifest_sums_write(struct manifest_sums *s, struct err *e)
{
	int rc;

	pthread_mutex_lock(&s->lock);
	rc = write_locked(s, e);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int manifest_file_crc32c(struct store *s, const char *name, uint64_t size, uint32_t *out,
			 struct err *e)
{
	unsigned char *buf = xmalloc(size < CHUNK ? (size ? size : 1) : CHUNK);
	uint32_t crc = 0;
	uint64_t off;
	int rc = -1;

	for (off = 0; off < size;) {
		size_t len = size - off < CHUNK ? (size_t)(size - off) : CHUNK;

		if (store_read(s, name, off, buf, len, e))
			goto out;
		crc = crc32c(crc, buf, len);
		off += len;
	}
	*out = crc;
	rc = 0;
out:
	free(buf);
	return rc;
}

/* ---- resuming ----------------------------------------------------------- */

/* Whether the file's header bytes are the planned ones. */
static int header_as_planned(struct store *dst, const struct plan_file *pf, bool *same,
			     struct err *e)
{
	unsigned char *buf = xmalloc(pf->header_len ? pf->header_len : 1);
	int rc = 0;

	*same = false;
	if (store_read(dst, pf->name, 0, buf, pf->header_len, e) == 0)
		*same = memcmp(buf, pf->header, pf->header_len) == 0;
	else
		rc = -1;
	free(buf);
	return rc;
}

static bool is_read_failure(const struct err *e)
{
	return e->code == ERR_IO_ERROR || err_is_s3(e->code);
}

/* One published file a resumed run may keep, checked on its own thread. */
struct keep_check {
	const struct plan_file *pf;
	const struct manifest_sum *sum;
	struct store_identity now; /* before any byte of it is read */
	bool unchanged;            /* `now` equals the identity as published */
	char why[160];             /* why it is not kept; "" when it is */
};

struct keep_checks {
	struct store *dst;
	struct keep_check *v;
	char boot_id[BOOT_ID_MAX]; /* this machine's, now */
};

/* Fills c->why (and c->unchanged): a file whose identity is the one it was
 * published with has not been written to since (its CRC-32C was computed
 * as it was written), so its bytes are not read again; any other is read
 * again whole.  The header bytes are compared with the plan's wherever
 * reading them is cheap (a local file), whether or not it changed. */
static int check_kept(void *arg, size_t i, struct err *e)
{
	struct keep_checks *all = arg;
	struct keep_check *c = &all->v[i];
	const struct plan_file *pf = c->pf;
	struct err local = {0};
	struct store_entry st;
	char what[256];
	uint32_t crc;
	bool same = true;

	if (store_stat_identity(all->dst, pf->name, &st, &c->now, &local) == 0) {
		if (st.size != pf->size) {
			snprintf(c->why, sizeof(c->why), "%" PRIu64 " bytes, planned %" PRIu64,
				 st.size, pf->size);
			return 0;
		}
		/* A file published without fsync in another boot: its bytes
		 * may have been lost with the page cache of a crashed machine. */
		c->unchanged = c->sum->id.kind != STORE_ID_NONE &&
			       !store_identity_differs(&c->sum->id, &c->now, false, what,
						       sizeof(what)) &&
			       (!c->sum->boot_id[0] || strcmp(c->sum->boot_id, all->boot_id) == 0);
		if (!c->unchanged || store_caps(all->dst) & STORE_CHEAP_READ)
			header_as_planned(all->dst, pf, &same, &local);
	}
	if (local.code == 0 && !same) {
		snprintf(c->why, sizeof(c->why), "header not as planned");
		return 0;
	}
	if (local.code == 0 && c->unchanged)
		return 0;
	if (local.code == 0 && manifest_file_crc32c(all->dst, pf->name, pf->size, &crc, &local) == 0) {
		if (crc != c->sum->crc32c)
			snprintf(c->why, sizeof(c->why), "CRC-32C %08" PRIx32 ", recorded %08" PRIx32,
				 crc, c->sum->crc32c);
		return 0;
	}
	if (is_read_failure(&local)) {
		if (e && !e->code)
			*e = local;
		return -1;
	}
	snprintf(c->why, sizeof(c->why), "unreadable (%.100s)", local.msg);
	return 0;
}

/* What the record and the listing alone say against keeping file pf ("" when
 * nothing). */
static void listed_problem(const struct plan_file *pf, const struct store_entry *entry,
			   const struct manifest_sum *sum, char *why, size_t len)
{
	why[0] = '\0';
	if (!entry || entry->kind != STORE_FILE)
		snprintf(why, len, "missing");
	else if (!sum)
		snprintf(why, len, "not in %s", MANIFEST_SUMS_NAME);
	else if (entry->size != pf->size || sum->size != pf->size)
		snprintf(why, len, "%" PRIu64 " bytes, planned %" PRIu64, entry->size, pf->size);
}

/* A line about file `name` (and why, when `reason` is not NULL). */
static void log_file(enum log_level level, const char *name, const char *reason, const char *msg)
{
	json_t *f = json_pack("{s:s}", "file", name);

	if (reason)
		json_object_set_new(f, "reason", json_string(reason));

	log_msg(level, f, "%s", msg);
	json_decref(f);
}

int manifest_keep_files(struct store *dst, const struct plan *p, const bool *skip,
			const struct manifest_sums *sums, const struct store_entry *entries,
			size_t n, unsigned threads, struct manifest_sums *into, bool *kept,
			uint64_t *files, uint64_t *bytes, struct err *e)
{
	struct keep_checks all = {dst, xcalloc(p->nfiles ? p->nfiles : 1, sizeof(*all.v)), ""};
	size_t i, k, ncheck = 0;
	int rc = -1;

	*files = *bytes = 0;
	boot_id_read(all.boot_id);
	for (i = 0; i < p->nfiles; i++) {
		const struct plan_file *pf = &p->files[i];
		const struct store_entry *entry = store_entries_find(entries, n, pf->name);
		struct keep_check *c = &all.v[ncheck];

		if ((skip && skip[i]) || !entry)
			continue;
		c->pf = pf;
		c->sum = manifest_sums_find(sums, pf->name);
		listed_problem(pf, entry, c->sum, c->why, sizeof(c->why));
		if (c->why[0])
			log_file(LOG_WARN, pf->name, c->why,
				 "published file not kept: written again");
		else
			ncheck++;
	}
	if (exec_each(threads, ncheck, check_kept, &all, e))
		goto out;
	for (k = 0; k < ncheck; k++) {
		const struct keep_check *c = &all.v[k];

		if (c->why[0]) {
			log_file(LOG_WARN, c->pf->name, c->why,
				 "published file not kept: written again");
			continue;
		}
		log_file(LOG_INFO, c->pf->name, NULL,
			 c->unchanged ? "kept: unchanged since published" : "kept: checksum re-read");
		/* Recorded with its identity now, taken before it was read; a
		 * file read again may have been read from this boot's page
		 * cache, so it is noted with this boot's id. */
		if (note_in_boot(into, c->pf->name, c->pf->size, c->sum->crc32c, &c->now,
				 c->unchanged			 ? c->sum->boot_id :
				 c->now.kind == STORE_ID_FILE ? all.boot_id :
								  "",
				 e))
			goto out;
		kept[c->pf - p->files] = true;
		(*files)++;
		*bytes += c->pf->size;
	}
	rc = 0;
out:
	free(all.v);
	return rc;
}

/* ---- checking ----------------------------------------------------------- */

static int check_one(struct store *dst, const struct manifest_sum *f,
		     const struct store_entry *entry, struct err *e)
{
	uint32_t crc;

	if (!entry || entry->kind != STORE_FILE)
		return err_set(e, ERR_CHECKSUM_MISMATCH, "%s/%s: recorded but missing",
			       dst->location, f->name);
	if (entry->size != f->size)
		return err_set(e, ERR_CHECKSUM_MISMATCH,
			       "%s/%s: %" PRIu64 " bytes, recorded %" PRIu64, dst->location,
			       f->name, entry->size, f->size);
	if (manifest_file_crc32c(dst, f->name, f->size, &crc, e))
		return -1;
	if (crc != f->crc32c)
		return err_set(e, ERR_CHECKSUM_MISMATCH,
			       "%s/%s: CRC-32C %08" PRIx32 ", recorded %08" PRIx32, dst->location,
			       f->name, crc, f->crc32c);
	return 0;
}

/* Completeness: every file the plan manifest `m` lists (and the index,
 * when it has one) present and in the record `sums`.  Code
 * destination_incomplete naming the first that is not. */
static int check_complete(struct store *dst, const struct partition_manifest *m,
			  const struct manifest_sums *sums, const struct store_entry *entries,
			  size_t n, struct err *e)
{
	size_t planned = m->nfiles + (m->has_index ? 1 : 0), present = 0, i;
	const char *missing = NULL, *unrecorded = NULL;

	for (i = 0; i < planned; i++) {
		const char *name = i < m->nfiles ? m->files[i].name : CKPT_INDEX_NAME;
		const struct store_entry *entry = store_entries_find(entries, n, name);

		if (!entry || entry->kind != STORE_FILE) {
			if (!missing)
				missing = name;
			continue;
		}
		present++;
		if (!manifest_sums_find(sums, name) && !unrecorded)
			unrecorded = name;
	}
	if (missing)
		return err_set(e, ERR_DESTINATION_INCOMPLETE,
			       "%s/%s: planned but missing (%zu of %zu planned files present): "
			       "the conversion did not finish",
			       dst->location, missing, present, planned);
	if (unrecorded)
		return err_set(e, ERR_DESTINATION_INCOMPLETE,
			       "%s/%s: planned and present but not in the checksum record %s",
			       dst->location, unrecorded, MANIFEST_SUMS_NAME);
	return 0;
}

int manifest_verify(struct store *dst, uint64_t *checked, uint64_t *bytes, struct err *e)
{
	struct store_entry *entries = NULL;
	struct manifest_sums *sums = NULL, *main_sums = NULL;
	struct partition_manifest *m = NULL;
	size_t n = 0, i, k, records = 0;
	int rc = -1;

	*checked = *bytes = 0;
	if (store_list(dst, &entries, &n, e))
		return -1;
	if (partition_manifest_read(dst, &m, e))
		goto out;
	for (i = 0; i < n; i++)
		if (is_sums_name(entries[i].name))
			records++;
	if (!m && !records) {
		err_set(e, ERR_DESTINATION_INCOMPLETE,
			"%s: holds neither a plan manifest (%s) nor a checksum record (%s): "
			"no ckptconv conversion wrote there",
			dst->location, PARTITION_MANIFEST, MANIFEST_SUMS_NAME);
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (!is_sums_name(entries[i].name))
			continue;
		if (manifest_sums_read(dst, entries[i].name, &sums, e))
			goto out;
		for (k = 0; sums && k < sums->n; k++) {
			const struct manifest_sum *f = &sums->files[k];

			if (check_one(dst, f, store_entries_find(entries, n, f->name), e))
				goto out;
			(*checked)++;
			*bytes += f->size;
		}
		if (strcmp(entries[i].name, MANIFEST_SUMS_NAME) == 0 && !main_sums) {
			main_sums = sums;
			sums = NULL;
		}
		manifest_sums_free(sums);
		sums = NULL;
	}
	if (!m) {
		err_set(e, ERR_DESTINATION_INCOMPLETE,
			"%s: holds no plan manifest (%s): which files the conversion planned "
			"is unknown",
			dst->location, PARTITION_MANIFEST);
		goto out;
	}
	if (m->count > 0) {
		err_set(e, ERR_DESTINATION_INCOMPLETE,
			"%s: a conversion in %" PRIu32 " partitions, not finalized "
			"(ckptconv finalize)",
			dst->location, m->count);
		goto out;
	}
	if (!main_sums) {
		err_set(e, ERR_DESTINATION_INCOMPLETE,
			"%s: holds a plan manifest (%s) but no checksum record (%s)",
			dst->location, PARTITION_MANIFEST, MANIFEST_SUMS_NAME);
		goto out;
	}
	if (check_complete(dst, m, main_sums, entries, n, e))
		goto out;
	rc = 0;
out:
	manifest_sums_free(sums);
	manifest_sums_free(main_sums);
	partition_manifest_free(m);
	store_entries_free(entries, n);
	return rc;
}

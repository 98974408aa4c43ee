/* SPDX-License-Identifier: MIT */
/*
 * store_s3: the store backend for an "s3://bucket/prefix/" location.
 * Listing is ListObjectsV2 with delimiter '/' (common prefixes show up as
 * directories); reads and views are ranged GETs, views into a buffer of
 * their own fetched in parallel chunks.  Each output file is a multipart
 * upload whose parts go up as soon as all their bytes are written (the
 * executor writes disjoint ranges from several threads), completed with
 * the part list at commit, so the object appears whole or not at all;
 * files no larger than one part are buffered and sent by one PutObject at
 * commit.  Memory follows what is fetched but not yet converted and what is
 * written but not yet uploaded: view and part buffers are anonymous
 * mappings backed by huge pages, unmapped when done (a couple of view
 * buffers are kept for reuse).  The version (ETag, VersionId) of each
 * object read is recorded by its first read and every later GET carries
 * If-Match with it, so a job reads one version of each object or fails
 * with source_changed; the store's own writes and removals drop it.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ckptconv/err.h"
#include "ckptconv/log.h"
#include "ckptconv/s3.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

#define MAX_PARTS 10000
#define MIB ((uint64_t)1 << 20)
#define HUGE_PAGE ((size_t)2 << 20)
#define POOL_IDLE_MAX 4
#define VIEWS_KEPT 1
#define VIEW_KEPT_MAX ((size_t)4 << 20)

/* Buffers ready for reuse: at most `keep` (<= POOL_IDLE_MAX) of at most
 * max_cap bytes each. */
struct buffer_pool {
	pthread_mutex_t lock; /* protects idle, nidle */
	struct buffer *idle[POOL_IDLE_MAX];
	size_t nidle;
	size_t keep;
	size_t max_cap;
};

struct buffer {
	struct buffer_pool *pool;
	unsigned char *data;
	size_t cap;
};

/* The version an object is read under. */
struct s3_pin {
	char *name;
	struct s3_version v;
};

struct s3_store {
	struct store base;
	struct s3_client *client;
	char *bucket;
	char *prefix; /* "" or ending in '/' */
	pthread_mutex_t pins_lock; /* protects pins, npins */
	struct s3_pin *pins;
	size_t npins;
	struct buffer_pool views;
	struct buffer_pool writes; /* none kept: a reused buffer is resident whole */
};

struct s3_part {
	struct buffer *buf; /* NULL until the first write, and after upload */
	uint64_t filled;
	bool sent;
	char *etag;
	char crc32c[9]; /* base64, as sent */
};

struct s3_writer {
	struct store_writer base;
	char *key;
	uint64_t part_size;
	size_t nparts;
	bool multipart; /* else one PutObject at commit */
	char *upload_id;
	pthread_mutex_t lock; /* protects parts[].buf, filled, sent; failed */
	struct s3_part *parts;
	bool failed; /* a part upload failed: commit refuses */
};

static struct s3_store *s3s(struct store *s)
{
	return (struct s3_store *)s;
}

static char *key_of(const struct s3_store *s, const char *name)
{
	char *key;

	if (asprintf(&key, "%s%s", s->prefix, name) < 0)
		abort();
	return key;
}

static void pool_init(struct buffer_pool *bp, size_t keep, size_t max_cap)
{
	pthread_mutex_init(&bp->lock, NULL);
	bp->keep = keep < POOL_IDLE_MAX ? keep : POOL_IDLE_MAX;
	bp->max_cap = max_cap;
}

static void buffer_unmap(struct buffer *b)
{
	munmap(b->data, b->cap);
	free(b);
}

static void pool_fini(struct buffer_pool *bp)
{
	while (bp->nidle)
		buffer_unmap(bp->idle[--bp->nidle]);
	pthread_mutex_destroy(&bp->lock);
}

/* An anonymous mapping of cap bytes (a multiple of HUGE_PAGE) aligned for
 * transparent huge pages: populating 4 KiB pages one fault at a time costs
 * more than the network transfer into them on virtualised machines. */
static unsigned char *map_aligned(size_t cap)
{
	size_t head, span = cap + HUGE_PAGE;
	unsigned char *p;

	p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		abort();
	head = (HUGE_PAGE - (uintptr_t)p % HUGE_PAGE) % HUGE_PAGE;
	if (head)
		munmap(p, head);
	if (HUGE_PAGE - head)
		munmap(p + head + cap, HUGE_PAGE - head);
	madvise(p + head, cap, MADV_HUGEPAGE);
	return p + head;
}

/* A buffer of at least len bytes (len > 0): the smallest idle one that
 * fits, or a new mapping. */
static struct buffer *buffer_get(struct buffer_pool *bp, size_t len)
{
	struct buffer *b = NULL;
	size_t i, best = POOL_IDLE_MAX;

	pthread_mutex_lock(&bp->lock);
	for (i = 0; i < bp->nidle; i++)
		if (bp->idle[i]->cap >= len &&
		    (best == POOL_IDLE_MAX || bp->idle[i]->cap < bp->idle[best]->cap))
			best = i;
	if (best < POOL_IDLE_MAX) {
		b = bp->idle[best];
		bp->idle[best] = bp->idle[--bp->nidle];
	}
	pthread_mutex_unlock(&bp->lock);
	if (b)
		return b;
	b = xcalloc(1, sizeof(*b));
	b->pool = bp;
	b->cap = (len + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
	b->data = map_aligned(b->cap);
	return b;
}

static void buffer_put(struct buffer *b)
{
	struct buffer_pool *bp;

	if (!b)
		return;
	bp = b->pool;
	pthread_mutex_lock(&bp->lock);
	if (bp->nidle < bp->keep && b->cap <= bp->max_cap) {
		bp->idle[bp->nidle++] = b;
		b = NULL;
	}
	pthread_mutex_unlock(&bp->lock);
	if (b)
		buffer_unmap(b);
}

static int s3store_open(const char *location, const struct store_config *cfg, struct store **out,
			struct err *e)
{
	struct s3_store *s = xcalloc(1, sizeof(*s));
	size_t plen;

	s->base.backend = &store_s3_backend;
	pthread_mutex_init(&s->pins_lock, NULL);
	pool_init(&s->views, VIEWS_KEPT, VIEW_KEPT_MAX);
	pool_init(&s->writes, 0, 0);
	if (s3_location_parse(location, &s->bucket, &s->prefix, e) ||
	    s3_client_new(&cfg->s3, cfg->credentials, &s->client, e)) {
		store_s3_backend.free(&s->base);
		return -1;
	}
	plen = strlen(s->prefix);
	if (asprintf(&s->base.location, "s3://%s%s%.*s", s->bucket, plen ? "/" : "",
		     plen ? (int)plen - 1 : 0, s->prefix) < 0)
		abort();
	*out = &s->base;
	return 0;
}

static void s3store_free(struct store *base)
{
	struct s3_store *s = s3s(base);

	size_t i;

	s3_client_free(s->client);
	pool_fini(&s->views);
	pool_fini(&s->writes);
	for (i = 0; i < s->npins; i++)
		free(s->pins[i].name);
	free(s->pins);
	pthread_mutex_destroy(&s->pins_lock);
	free(s->bucket);
	free(s->prefix);
	free(s->base.location);
	free(s);
}

static void add_entry(struct store_entry **entries, size_t *n, const char *name, uint64_t size,
		      enum store_entry_kind kind)
{
	*entries = xrealloc(*entries, (*n + 1) * sizeof(**entries));
	(*entries)[*n].name = xstrdup(name);
	(*entries)[*n].size = size;
	(*entries)[*n].kind = kind;
	(*n)++;
}

/* The prefix's top-level entries; an empty prefix gives none. */
static int list_entries(struct s3_store *s, size_t limit, struct store_entry **out, size_t *n,
			struct err *e)
{
	size_t plen = strlen(s->prefix), i, len;
	struct s3_listing l;
	char *name;

	*out = NULL;
	*n = 0;
	if (s3_list(s->client, s->bucket, s->prefix, "/", limit, &l, e))
		return -1;
	for (i = 0; i < l.nobjects; i++) {
		if (strncmp(l.objects[i].key, s->prefix, plen) != 0 || !l.objects[i].key[plen])
			continue; /* the prefix's own marker object */
		add_entry(out, n, l.objects[i].key + plen, l.objects[i].size, STORE_FILE);
	}
	for (i = 0; i < l.nprefixes; i++) {
		if (strncmp(l.prefixes[i], s->prefix, plen) != 0)
			continue;
		name = xstrdup(l.prefixes[i] + plen);
		len = strlen(name);
		if (len && name[len - 1] == '/')
			name[--len] = '\0';
		if (len)
			add_entry(out, n, name, 0, STORE_DIR);
		free(name);
	}
	s3_listing_fini(&l);
	return 0;
}

static int s3store_list(struct store *base, struct store_entry **out, size_t *n, struct err *e)
{
	if (list_entries(s3s(base), 0, out, n, e))
		return -1;
	if (*n == 0)
		return err_set(e, ERR_SOURCE_NOT_FOUND, "%s: no objects under this prefix",
			       base->location);
	return 0;
}

static void identity_of(const struct s3_version *v, struct store_identity *id);

static int s3store_stat(struct store *base, const char *name, struct store_entry *out,
			struct store_identity *id, struct err *e)
{
	char *key = key_of(s3s(base), name);
	struct s3_version v;
	int rc;

	out->name = NULL;
	out->kind = STORE_FILE;
	rc = s3_head_version(s3s(base)->client, s3s(base)->bucket, key, &out->size, &v, e);
	if (rc == 0 && id && v.etag[0])
		identity_of(&v, id);
	free(key);
	return rc;
}

/* ---- versions read ---- */

static struct s3_pin *find_pin(struct s3_store *s, const char *name)
{
	size_t i;

	for (i = 0; i < s->npins; i++)
		if (strcmp(s->pins[i].name, name) == 0)
			return &s->pins[i];
	return NULL;
}

/* The version `name` is read under (etag "" when none yet). */
static void pinned(struct s3_store *s, const char *name, struct s3_version *out)
{
	struct s3_pin *p;

	pthread_mutex_lock(&s->pins_lock);
	p = find_pin(s, name);
	if (p)
		*out = p->v;
	else
		memset(out, 0, sizeof(*out));
	pthread_mutex_unlock(&s->pins_lock);
}

/* Records v as the version of `name`; source_changed when another read
 * recorded another one meanwhile. */
static int record_pin(struct s3_store *s, const char *name, const struct s3_version *v,
		      struct err *e)
{
	char was[S3_ETAG_MAX] = "";
	struct s3_pin *p;

	if (!v->etag[0])
		return 0;
	pthread_mutex_lock(&s->pins_lock);
	p = find_pin(s, name);
	if (!p) {
		s->pins = xrealloc(s->pins, (s->npins + 1) * sizeof(*s->pins));
		s->pins[s->npins].name = xstrdup(name);
		s->pins[s->npins].v = *v;
		s->npins++;
	} else if (strcmp(p->v.etag, v->etag) != 0) {
		snprintf(was, sizeof(was), "%s", p->v.etag);
	}
	pthread_mutex_unlock(&s->pins_lock);
	if (was[0]) {
		char what[2 * S3_ETAG_MAX + 16];

		snprintf(what, sizeof(what), "ETag %s -> %s", was, v->etag);
		return store_changed_error(&s->base, name, what, e);
	}
	return 0;
}

/* The store wrote or removed `name`: what it held before is no longer read. */
static void drop_pin(struct s3_store *s, const char *name)
{
	struct s3_pin *p;

	pthread_mutex_lock(&s->pins_lock);
	p = find_pin(s, name);
	if (p) {
		free(p->name);
		*p = s->pins[--s->npins];
	}
	pthread_mutex_unlock(&s->pins_lock);
}

static void identity_of(const struct s3_version *v, struct store_identity *id)
{
	memset(id, 0, sizeof(*id));
	id->kind = STORE_ID_OBJECT;
	memcpy(id->etag, v->etag, sizeof(id->etag));
	memcpy(id->version_id, v->version_id, sizeof(id->version_id));
}

static int s3store_identify(struct store *base, const char *name, struct store_identity *out,
			    struct err *e)
{
	struct s3_store *s = s3s(base);
	struct s3_version v;
	uint64_t size;
	char *key;
	int rc = 0;

	pinned(s, name, &v);
	if (!v.etag[0]) {
		key = key_of(s, name);
		rc = s3_head_version(s->client, s->bucket, key, &size, &v, e);
		free(key);
		if (rc == 0)
			rc = record_pin(s, name, &v, e);
	}
	if (rc == 0)
		identity_of(&v, out);
	return rc;
}

static size_t s3store_identities(struct store *base, struct store_source **out)
{
	struct s3_store *s = s3s(base);
	size_t i, n;

	pthread_mutex_lock(&s->pins_lock);
	n = s->npins;
	*out = xcalloc(n + 1, sizeof(**out));
	for (i = 0; i < n; i++) {
		(*out)[i].name = xstrdup(s->pins[i].name);
		identity_of(&s->pins[i].v, &(*out)[i].id);
	}
	pthread_mutex_unlock(&s->pins_lock);
	store_sources_sort(*out, n);
	return n;
}

static int s3store_read(struct store *base, const char *name, uint64_t off, void *buf, size_t len,
			struct err *e)
{
	struct s3_store *s = s3s(base);
	char *key = key_of(s, name);
	struct s3_version v;
	int rc;

	pinned(s, name, &v);
	rc = s3_get_range_version(s->client, s->bucket, key, off, buf, len, &v, e);
	free(key);
	return rc ? rc : record_pin(s, name, &v, e);
}

static int s3store_view(struct store *base, const char *name, uint64_t off, size_t len,
			struct store_view *v, struct err *e)
{
	static const unsigned char empty[1];
	struct buffer *b;

	v->file = name;
	v->backend = base->backend;
	if (len == 0) {
		v->data = empty;
		return 0;
	}
	b = buffer_get(&s3s(base)->views, len);
	if (s3store_read(base, name, off, b->data, len, e)) {
		buffer_put(b);
		return -1;
	}
	v->base = b;
	v->base_len = b->cap;
	v->data = b->data;
	v->len = len;
	return 0;
}

static void s3store_view_release(struct store_view *v)
{
	buffer_put(v->base);
}

/* ---- writing ---- */

static uint64_t part_size_for(const struct s3_store *s, uint64_t size)
{
	uint64_t part = s3_client_part_size(s->client);
	uint64_t needed = (size + MAX_PARTS - 1) / MAX_PARTS;

	if (needed > part)
		part = (needed + MIB - 1) / MIB * MIB;
	return part;
}

static uint64_t part_len(const struct s3_writer *w, size_t i)
{
	uint64_t start = (uint64_t)i * w->part_size;

	return w->base.size - start < w->part_size ? w->base.size - start : w->part_size;
}

static void writer_free(struct s3_writer *w)
{
	size_t i;

	for (i = 0; i < w->nparts; i++) {
		buffer_put(w->parts[i].buf);
		free(w->parts[i].etag);
	}
	free(w->parts);
	free(w->upload_id);
	free(w->key);
	free(w->base.name);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

static int s3store_writer_open(struct store *base, const char *name, uint64_t size,
			       struct store_writer **out, struct err *e)
{
	struct s3_store *s = s3s(base);
	struct s3_writer *w;

	if (strchr(name, '/') || !*name)
		return err_set(e, ERR_PLAN_INVALID, "%s: output name '%s' is not a plain file name",
			       base->location, name);
	w = xcalloc(1, sizeof(*w));
	pthread_mutex_init(&w->lock, NULL);
	w->base.store = base;
	w->base.name = xstrdup(name);
	w->base.size = size;
	w->key = key_of(s, name);
	w->part_size = part_size_for(s, size);
	w->multipart = size > w->part_size;
	w->nparts = w->multipart ? (size_t)((size + w->part_size - 1) / w->part_size) : 1;
	w->parts = xcalloc(w->nparts, sizeof(*w->parts));
	if (w->multipart && s3_multipart_create(s->client, s->bucket, w->key, &w->upload_id, e)) {
		writer_free(w);
		return -1;
	}
	*out = &w->base;
	return 0;
}

/* Uploads part i, whose bytes are all written; the caller owns its buffer. */
static int send_part(struct s3_writer *w, size_t i, struct err *e)
{
	struct s3_store *s = s3s(w->base.store);
	size_t len = (size_t)part_len(w, i);
	char *etag = NULL;
	int rc;

	rc = s3_multipart_upload_part(s->client, s->bucket, w->key, w->upload_id, (unsigned)i + 1,
				      w->parts[i].buf->data, len, &etag, w->parts[i].crc32c, e);
	pthread_mutex_lock(&w->lock);
	buffer_put(w->parts[i].buf);
	w->parts[i].buf = NULL;
	w->parts[i].etag = etag;
	if (rc)
		w->failed = true;
	pthread_mutex_unlock(&w->lock);
	return rc;
}

/* Copies the bytes of [off, off+len) that fall in part i. */
static int write_part(struct s3_writer *w, size_t i, uint64_t off, const unsigned char *buf,
		      size_t len, struct err *e)
{
	uint64_t start = (uint64_t)i * w->part_size, plen = part_len(w, i);
	bool complete;
	unsigned char *dst;

	pthread_mutex_lock(&w->lock);
	if (w->failed || w->parts[i].sent) {
		pthread_mutex_unlock(&w->lock);
		return err_set(e, ERR_IO_ERROR,
			       "%s/%s: write to a part that was already sent or failed",
			       w->base.store->location, w->base.name);
	}
	if (!w->parts[i].buf)
		w->parts[i].buf = buffer_get(&s3s(w->base.store)->writes, (size_t)plen);
	dst = w->parts[i].buf->data;
	pthread_mutex_unlock(&w->lock);

	memcpy(dst + (off - start), buf, len);

	pthread_mutex_lock(&w->lock);
	w->parts[i].filled += len;
	complete = w->multipart && w->parts[i].filled == plen && !w->parts[i].sent;
	if (complete)
		w->parts[i].sent = true;
	pthread_mutex_unlock(&w->lock);
	return complete ? send_part(w, i, e) : 0;
}

static int s3store_writer_write(struct store_writer *base, uint64_t off, const void *buf,
				size_t len, struct err *e)
{
	struct s3_writer *w = (struct s3_writer *)base;
	const unsigned char *p = buf;
	uint64_t end = off + len, part_end, n;
	size_t i;

	while (off < end) {
		i = (size_t)(off / w->part_size);
		part_end = (uint64_t)i * w->part_size + part_len(w, i);
		n = (end < part_end ? end : part_end) - off;
		if (write_part(w, i, off, p, (size_t)n, e))
			return -1;
		off += n;
		p += n;
	}
	return 0;
}

static void abort_upload(struct s3_writer *w)
{
	struct s3_store *s = s3s(w->base.store);
	struct err e = {0};
	int rc;

	if (!w->upload_id)
		return;
	rc = s3_multipart_abort(s->client, s->bucket, w->key, w->upload_id, &e);
	if (rc == 1)
		log_warn("s3://%s/%s: the server does not support AbortMultipartUpload; the parts "
			 "already uploaded stay until the bucket's lifecycle rules remove them",
			 s->bucket, w->key);
	else if (rc)
		log_warn("%s", e.msg);
}

static int commit_multipart(struct s3_writer *w, struct s3_version *v, struct err *e)
{
	struct s3_store *s = s3s(w->base.store);
	char **etags = xcalloc(w->nparts, sizeof(*etags));
	char **crcs = xcalloc(w->nparts, sizeof(*crcs));
	size_t i;
	int rc = -1;

	for (i = 0; i < w->nparts; i++) {
		if (!w->parts[i].etag) {
			err_set(e, ERR_PLAN_INVALID,
				"%s/%s: part %zu of %zu was never completed (%" PRIu64
				" of %" PRIu64 " bytes written)",
				w->base.store->location, w->base.name, i + 1, w->nparts,
				w->parts[i].filled, part_len(w, i));
			goto out;
		}
		etags[i] = w->parts[i].etag;
		crcs[i] = w->parts[i].crc32c;
	}
	rc = s3_multipart_complete(s->client, s->bucket, w->key, w->upload_id, etags, crcs,
				   w->nparts, v, e);
out:
	free(crcs);
	free(etags);
	return rc;
}

static int s3store_writer_commit(struct store_writer *base, struct store_identity *published,
				 struct err *e)
{
	struct s3_writer *w = (struct s3_writer *)base;
	struct s3_store *s = s3s(base->store);
	struct s3_version v = {.etag = ""};
	int rc = -1;

	drop_pin(s, base->name);
	if (w->failed) {
		err_set(e, ERR_IO_ERROR, "%s/%s: a part upload failed", base->store->location,
			base->name);
		goto out_abort;
	}
	if (w->multipart) {
		if (commit_multipart(w, &v, e))
			goto out_abort;
		rc = 0;
		goto out;
	}
	if (w->parts[0].filled != base->size) {
		err_set(e, ERR_PLAN_INVALID, "%s/%s: %" PRIu64 " of %" PRIu64 " bytes were written",
			base->store->location, base->name, w->parts[0].filled, base->size);
		goto out;
	}
	rc = s3_put(s->client, s->bucket, w->key, base->size ? w->parts[0].buf->data : NULL,
		    (size_t)base->size, &v, e);
	goto out;
out_abort:
	abort_upload(w);
out:
	/* The ETag the service answered (none: the identity stays unknown). */
	if (rc == 0 && published && v.etag[0])
		identity_of(&v, published);
	writer_free(w);
	return rc;
}

static void s3store_writer_abort(struct store_writer *base)
{
	struct s3_writer *w = (struct s3_writer *)base;

	abort_upload(w);
	writer_free(w);
}

static int s3store_put(struct store *base, const char *name, const void *buf, size_t len,
		       struct err *e)
{
	char *key = key_of(s3s(base), name);
	int rc;

	drop_pin(s3s(base), name);
	rc = s3_put(s3s(base)->client, s3s(base)->bucket, key, buf, len, NULL, e);
	free(key);
	return rc;
}

static int s3store_remove(struct store *base, const char *name, struct err *e)
{
	char *key = key_of(s3s(base), name);
	int rc;

	drop_pin(s3s(base), name);
	rc = s3_delete(s3s(base)->client, s3s(base)->bucket, key, e);
	free(key);
	return rc;
}

/* ---- locations before opening ---- */

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Without trailing '/', then one '/' after a prefix (none after a
 * *.safetensors object). */
static char *s3store_canonical(const char *location)
{
	size_t n = strlen(location);
	char *out;

	while (n > 0 && location[n - 1] == '/')
		n--;
	out = xmalloc(n + 2);
	memcpy(out, location, n);
	out[n] = '\0';
	if (!ends_with(out, ".safetensors"))
		strcat(out, "/");
	return out;
}

/* The prefix a location stands for (a *.safetensors object stands for
 * the prefix holding it), without trailing '/'. */
static char *prefix_of(const char *location)
{
	char *out = s3store_canonical(location), *slash;
	size_t n = strlen(out);

	if (n > 0 && out[n - 1] == '/')
		out[n - 1] = '\0';
	else if ((slash = strrchr(out, '/')))
		*slash = '\0';
	return out;
}

static bool s3store_same_location(const char *a, const char *b)
{
	char *pa = prefix_of(a), *pb = prefix_of(b);
	bool same = strcmp(pa, pb) == 0;

	free(pa);
	free(pb);
	return same;
}

/* The multipart uploads in progress under the prefix for the names `mine`
 * accepts (directly under it), aborted. */
static int s3store_abort_unfinished(struct store *base, bool (*mine)(const char *name, void *arg),
				    void *arg, struct err *e)
{
	struct s3_store *s = s3s(base);
	struct s3_uploads u;
	size_t i, plen = strlen(s->prefix);
	int rc;

	rc = s3_multipart_list(s->client, s->bucket, s->prefix, &u, e);
	if (rc == 1) {
		log_warn("%s: the server does not support ListMultipartUploads; uploads a dead run "
			 "left stay until the bucket's lifecycle rules remove them",
			 base->location);
		return 0;
	}
	for (i = 0; rc == 0 && i < u.n; i++) {
		const char *name = u.uploads[i].key + plen;

		if (strncmp(u.uploads[i].key, s->prefix, plen) != 0 || !*name ||
		    strchr(name, '/') || !mine(name, arg))
			continue;
		rc = s3_multipart_abort(s->client, s->bucket, u.uploads[i].key,
					u.uploads[i].upload_id, e);
		if (rc == 0)
			log_info("s3://%s/%s: aborted the multipart upload %s a dead run left",
				 s->bucket, u.uploads[i].key, u.uploads[i].upload_id);
		rc = rc < 0 ? -1 : 0;
	}
	s3_uploads_fini(&u);
	return rc;
}

const struct store_backend store_s3_backend = {
	.scheme = "s3",
	.caps = STORE_REMOTE,
	.open = s3store_open,
	.free = s3store_free,
	.list = s3store_list,
	.read = s3store_read,
	.view = s3store_view,
	.view_release = s3store_view_release,
	.writer_open = s3store_writer_open,
	.writer_write = s3store_writer_write,
	.writer_commit = s3store_writer_commit,
	.writer_abort = s3store_writer_abort,
	.identify = s3store_identify,
	.identities = s3store_identities,
	.put = s3store_put,
	.remove = s3store_remove,
	.stat = s3store_stat,
	.abort_unfinished = s3store_abort_unfinished,
	.canonical = s3store_canonical,
	.same_location = s3store_same_location,
};

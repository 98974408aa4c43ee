/* SPDX-License-Identifier: MIT */
/*
 * store: picks the backend for a location by its scheme (s3:// or a local
 * path) and forwards every operation to that backend's table, so the
 * modules above never know where bytes live.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckptconv/crc32c.h"
#include "ckptconv/err.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

#define S3_SCHEME "s3://"

/* The backend that serves `location`, by its scheme. */
static const struct store_backend *backend_of(const char *location)
{
	if (strncmp(location, S3_SCHEME, strlen(S3_SCHEME)) == 0)
		return &store_s3_backend;
	return &store_local_backend;
}

bool store_is_remote(const char *location)
{
	return (store_location_caps(location) & STORE_REMOTE) != 0;
}

unsigned store_caps(const struct store *s)
{
	return s->backend->caps;
}

unsigned store_location_caps(const char *location)
{
	return location && *location ? backend_of(location)->caps : 0;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

int store_location_kind(const char *location, enum store_entry_kind *out, struct err *e)
{
	const struct store_backend *b = backend_of(location);

	if (b->location_kind)
		return b->location_kind(location, out, e);
	*out = ends_with(location, ".safetensors") ? STORE_FILE : STORE_DIR;
	return 0;
}

char *store_canonical_location(const char *location)
{
	const struct store_backend *b = backend_of(location);

	return b->canonical ? b->canonical(location) : xstrdup(location);
}

bool store_same_location(const char *a, const char *b)
{
	const struct store_backend *ba = backend_of(a);

	if (ba != backend_of(b))
		return false;
	if (ba->same_location)
		return ba->same_location(a, b);
	return strcmp(a, b) == 0;
}

int store_open(const char *location, struct store **out, struct err *e)
{
	return store_open_config(location, NULL, out, e);
}

int store_open_config(const char *location, const struct store_config *cfg, struct store **out,
		      struct err *e)
{
	static const struct store_config none;

	const struct store_backend *b;

	*out = NULL;
	if (!location || !*location)
		return err_set(e, ERR_INVALID_LOCATION, "the location is empty");
	b = backend_of(location);
	if (!b->open)
		return err_set(e, ERR_INVALID_LOCATION, "%s: %s:// locations are not supported by this build",
			       location, b->scheme);
	return b->open(location, cfg ? cfg : &none, out, e);
}

void store_free(struct store *s)
{
	if (s)
		s->backend->free(s);
}

static int entry_compare(const void *pa, const void *pb)
{
	const struct store_entry *a = pa, *b = pb;

	return strcmp(a->name, b->name);
}

int store_list(struct store *s, struct store_entry **out, size_t *n, struct err *e)
{
	*out = NULL;
	*n = 0;
	if (s->backend->list(s, out, n, e))
		return -1;
	if (*n > 1)
		qsort(*out, *n, sizeof(**out), entry_compare);
	return 0;
}

const struct store_entry *store_entries_find(const struct store_entry *entries, size_t n,
					     const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(entries[i].name, name) == 0)
			return &entries[i];
	return NULL;
}

void store_entries_free(struct store_entry *entries, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(entries[i].name);
	free(entries);
}

static int stat_by_listing(struct store *s, const char *name, struct store_entry *out,
			   struct err *e)
{
	struct store_entry *entries;
	size_t n, i;
	int rc = -1;

	if (store_list(s, &entries, &n, e))
		return -1;
	for (i = 0; i < n; i++) {
		if (strcmp(entries[i].name, name) == 0) {
			out->name = NULL;
			out->size = entries[i].size;
			out->kind = entries[i].kind;
			rc = 0;
			break;
		}
	}
	store_entries_free(entries, n);
	if (rc)
		err_set(e, ERR_SOURCE_NOT_FOUND, "%s/%s: no such file", s->location, name);
	return rc;
}

int store_stat_identity(struct store *s, const char *name, struct store_entry *out,
			struct store_identity *id, struct err *e)
{
	if (id)
		memset(id, 0, sizeof(*id));
	if (s->backend->stat)
		return s->backend->stat(s, name, out, id, e);
	return stat_by_listing(s, name, out, e);
}

int store_stat(struct store *s, const char *name, struct store_entry *out, struct err *e)
{
	return store_stat_identity(s, name, out, NULL, e);
}

int store_read(struct store *s, const char *name, uint64_t off, void *buf, size_t len,
	       struct err *e)
{
	return s->backend->read(s, name, off, buf, len, e);
}

int store_read_file(struct store *s, const char *name, size_t max, char **out, size_t *len,
		    struct err *e)
{
	struct store_entry st;
	char *buf;

	*out = NULL;
	if (store_stat(s, name, &st, e))
		return -1;
	if (st.kind != STORE_FILE)
		return err_set(e, ERR_SOURCE_UNREADABLE, "%s/%s: not a regular file", s->location, name);
	if (st.size > max)
		return err_set(e, ERR_SOURCE_UNREADABLE,
			       "%s/%s: %" PRIu64 " bytes is more than the %zu this file may have",
			       s->location, name, st.size, max);
	buf = xmalloc((size_t)st.size + 1);
	if (store_read(s, name, 0, buf, (size_t)st.size, e)) {
		free(buf);
		return -1;
	}
	buf[st.size] = '\0';
	*out = buf;
	if (len)
		*len = (size_t)st.size;
	return 0;
}

int store_view(struct store *s, const char *name, uint64_t off, size_t len, struct store_view *v,
	       struct err *e)
{
	memset(v, 0, sizeof(*v));
	return s->backend->view(s, name, off, len, v, e);
}

void store_view_release(struct store_view *v)
{
	if (v && v->backend && v->backend->view_release)
		v->backend->view_release(v);
	if (v)
		memset(v, 0, sizeof(*v));
}

struct store_writer_sums {
	pthread_mutex_t lock;
	struct crc32c_ranges ranges; /* lock */
};

static void sums_free(struct store_writer *w)
{
	if (!w || !w->sums)
		return;
	pthread_mutex_destroy(&w->sums->lock);
	crc32c_ranges_fini(&w->sums->ranges);
	free(w->sums);
	w->sums = NULL;
}

int store_writer_open(struct store *s, const char *name, uint64_t size, struct store_writer **out,
		      struct err *e)
{
	*out = NULL;
	if (s->backend->writer_open(s, name, size, out, e))
		return -1;
	(*out)->sums = xcalloc(1, sizeof(*(*out)->sums));
	pthread_mutex_init(&(*out)->sums->lock, NULL);
	return 0;
}

int store_writer_write(struct store_writer *w, uint64_t off, const void *buf, size_t len,
		       struct err *e)
{
	uint64_t end;
	uint32_t crc;

	if (!u64_add(off, len, &end) || end > w->size)
		return err_set(e, ERR_PLAN_INVALID,
			       "%s: write of %zu bytes at offset %" PRIu64 " is past its size %" PRIu64,
			       w->name, len, off, w->size);
	/* Computed before the backend takes the bytes (a remote one may keep
	 * the buffer): a fault in a source mapping surfaces here, on the
	 * caller's thread, under its guard. */
	crc = crc32c(0, buf, len);
	if (w->store->backend->writer_write(w, off, buf, len, e))
		return -1;
	pthread_mutex_lock(&w->sums->lock);
	crc32c_ranges_add(&w->sums->ranges, off, len, crc);
	pthread_mutex_unlock(&w->sums->lock);
	return 0;
}

int store_writer_crc32c(struct store_writer *w, uint32_t *out, struct err *e)
{
	int rc;

	pthread_mutex_lock(&w->sums->lock);
	rc = crc32c_ranges_total(&w->sums->ranges, w->size, out);
	pthread_mutex_unlock(&w->sums->lock);
	if (rc)
		return err_set(e, ERR_INTERNAL_ERROR,
			       "%s: the bytes written do not cover the file exactly once", w->name);
	return 0;
}

int store_writer_publish(struct store_writer *w, struct store_identity *published,
			 struct err *e)
{
	if (published)
		memset(published, 0, sizeof(*published));
	sums_free(w);
	return w->store->backend->writer_commit(w, published, e);
}

int store_writer_commit(struct store_writer *w, struct err *e)
{
	return store_writer_publish(w, NULL, e);
}

void store_writer_abort(struct store_writer *w)
{
	sums_free(w);
	if (w)
		w->store->backend->writer_abort(w);
}

int store_abort_unfinished(struct store *s, bool (*mine)(const char *name, void *arg), void *arg,
			   struct err *e)
{
	if (!s->backend->abort_unfinished)
		return 0;
	return s->backend->abort_unfinished(s, mine, arg, e);
}

int store_put(struct store *s, const char *name, const void *buf, size_t len, struct err *e)
{
	return s->backend->put(s, name, buf, len, e);
}

int store_remove(struct store *s, const char *name, struct err *e)
{
	return s->backend->remove(s, name, e);
}

int store_ensure(struct store *s, const struct store_output_options *o, struct err *e)
{
	if (o)
		s->out = *o;
	return s->backend->ensure ? s->backend->ensure(s, e) : 0;
}

int store_free_space(struct store *s, uint64_t *out, struct err *e)
{
	if (s->backend->free_space)
		return s->backend->free_space(s, out, e);
	*out = UINT64_MAX;
	return 0;
}

int store_outside_error(const struct store *s, const char *name, struct err *e)
{
	return err_set(e, ERR_FORBIDDEN_PATH, "%s/%s resolves outside the allowed roots", s->location,
		       name);
}

/* ---- temporary names ---- */

char *store_temporary_name(const char *name, const char *unique)
{
	char *out;

	if (asprintf(&out, STORE_TMP_PREFIX "%s%s%s" STORE_TMP_SUFFIX, name, unique ? "." : "",
		     unique ? unique : "") < 0)
		abort();
	return out;
}

bool store_is_temporary(const char *entry)
{
	return strncmp(entry, STORE_TMP_PREFIX, strlen(STORE_TMP_PREFIX)) == 0;
}

/* Skips "." and a run of digits; NULL when `p` does not start so. */
static const char *skip_number(const char *p)
{
	const char *start;

	if (*p != '.')
		return NULL;
	start = ++p;
	while (*p >= '0' && *p <= '9')
		p++;
	return p > start ? p : NULL;
}

bool store_is_temporary_of(const char *entry, const char *name)
{
	size_t prefix = strlen(STORE_TMP_PREFIX), n = strlen(name);
	const char *rest, *after;

	if (!store_is_temporary(entry) || strncmp(entry + prefix, name, n) != 0)
		return false;
	rest = entry + prefix + n;
	/* ".<pid>.<serial>" of a put */
	after = skip_number(rest);
	if (after)
		after = skip_number(after);
	if (after)
		rest = after;
	return *rest == '\0' || strcmp(rest, STORE_TMP_SUFFIX) == 0;
}

/* ---- source identities ---- */

int store_identity(struct store *s, const char *name, struct store_identity *out, struct err *e)
{
	memset(out, 0, sizeof(*out));
	if (!s->backend->identify)
		return 0;
	return s->backend->identify(s, name, out, e);
}

int store_pin(struct store *s, const char *name, const struct store_identity *id,
	      bool across_hosts, struct err *e)
{
	struct store_identity now;
	char what[256];

	if (id->kind == STORE_ID_NONE || !s->backend->identify)
		return 0;
	if (s->backend->identify(s, name, &now, e))
		return -1;
	if (store_identity_differs(id, &now, across_hosts, what, sizeof(what)))
		return err_set(e, ERR_SOURCE_CHANGED,
			       "%s/%s is no longer the version the plan was made from (%s);"
			       " start the conversion again on the new version",
			       s->location, name, what);
	return 0;
}

int store_check_sources(struct store *s, struct err *e)
{
	if (!s->backend->check_sources)
		return 0;
	return s->backend->check_sources(s, e);
}

size_t store_identities(struct store *s, struct store_source **out)
{
	*out = NULL;
	if (!s->backend->identities)
		return 0;
	return s->backend->identities(s, out);
}

static int by_source_name(const void *a, const void *b)
{
	return strcmp(((const struct store_source *)a)->name,
		      ((const struct store_source *)b)->name);
}

void store_sources_sort(struct store_source *v, size_t n)
{
	if (n)
		qsort(v, n, sizeof(*v), by_source_name);
}

void store_sources_free(struct store_source *v, size_t n)
{
	size_t i;

	for (i = 0; v && i < n; i++)
		free(v[i].name);
	free(v);
}

static void time_text(int64_t ns, char *out, size_t len)
{
	int64_t sec = ns / 1000000000, frac = ns % 1000000000;

	if (frac < 0) {
		frac += 1000000000;
		sec--;
	}
	snprintf(out, len, "%" PRId64 ".%09" PRId64, sec, frac);
}

static bool differs_u64(const char *field, uint64_t was, uint64_t now, char *what, size_t len)
{
	if (was == now)
		return false;
	snprintf(what, len, "%s %" PRIu64 " -> %" PRIu64, field, was, now);
	return true;
}

static bool differs_time(const char *field, int64_t was, int64_t now, char *what, size_t len)
{
	char a[32], b[32];

	if (was == now)
		return false;
	time_text(was, a, sizeof(a));
	time_text(now, b, sizeof(b));
	snprintf(what, len, "%s %s -> %s", field, a, b);
	return true;
}

static bool differs_text(const char *field, const char *was, const char *now, char *what,
			 size_t len)
{
	if (strcmp(was, now) == 0)
		return false;
	snprintf(what, len, "%s %s -> %s", field, was, now);
	return true;
}

bool store_identity_differs(const struct store_identity *was, const struct store_identity *now,
			    bool across_hosts, char *what, size_t len)
{
	if (was->kind != now->kind || was->kind == STORE_ID_NONE) {
		snprintf(what, len, "%s", "recorded as another kind of source");
		return true;
	}
	if (was->kind == STORE_ID_OBJECT)
		return differs_text("ETag", was->etag, now->etag, what, len) ||
		       (was->version_id[0] && now->version_id[0] &&
			differs_text("VersionId", was->version_id, now->version_id, what, len));
	return (!across_hosts && (differs_u64("st_dev", was->dev, now->dev, what, len) ||
				  differs_u64("st_ino", was->ino, now->ino, what, len))) ||
	       differs_u64("size", was->size, now->size, what, len) ||
	       differs_time("mtime", was->mtime_ns, now->mtime_ns, what, len) ||
	       (!across_hosts && differs_time("ctime", was->ctime_ns, now->ctime_ns, what, len));
}

int store_changed_error(const struct store *s, const char *name, const char *what, struct err *e)
{
	return err_set(e, ERR_SOURCE_CHANGED,
		       "%s/%s changed while the conversion read it (%s); nothing of the conversion is published,"
		       " run it again on the new version",
		       s->location, name, what);
}

/* SPDX-License-Identifier: MIT */
/*
 * store_local: the store backend for a local directory.  Reads go through a
 * cache of one read-only descriptor per file; views are memory mappings of
 * a page-aligned window around the requested bytes, advised for sequential
 * access.  Outputs are written under a hidden temporary name in the
 * destination (space reserved with fallocate) and renamed into place on
 * commit, after fsync when the output is durable.
 */
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "ckptconv/err.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"

#define TMP_PREFIX ".ckptconv-tmp."
#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define SHARD_PATTERN "model-*-of-*.safetensors"

int (*store_local_free_bytes_hook)(const char *dir, uint64_t *free_bytes);

struct cached_fd {
	char *name;
	int fd;
};

struct local_store {
	struct store base;
	pthread_mutex_t lock;       /* protects fds, nfds, cap */
	struct cached_fd *fds;
	size_t nfds, cap;
};

struct local_writer {
	struct store_writer base;
	int fd;
	char *tmp_path;
	char *final_path;
};

static struct local_store *local(struct store *s)
{
	return (struct local_store *)s;
}

static char *join(const char *dir, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", dir, name) < 0)
		abort();
	return p;
}

static char *tmp_path_for(const char *dir, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/" TMP_PREFIX "%s", dir, name) < 0)
		abort();
	return p;
}

static int local_open(const char *location, struct store **out, struct err *e)
{
	struct local_store *s;
	size_t len = strlen(location);

	if (len == 0)
		return err_set(e, "invalid_location", "the location is empty");
	s = xcalloc(1, sizeof(*s));
	s->base.backend = &store_local_backend;
	s->base.location = xstrdup(location);
	while (len > 1 && s->base.location[len - 1] == '/')
		s->base.location[--len] = '\0';
	pthread_mutex_init(&s->lock, NULL);
	*out = &s->base;
	return 0;
}

static void local_free(struct store *base)
{
	struct local_store *s = local(base);
	size_t i;

	for (i = 0; i < s->nfds; i++) {
		close(s->fds[i].fd);
		free(s->fds[i].name);
	}
	free(s->fds);
	pthread_mutex_destroy(&s->lock);
	free(s->base.location);
	free(s);
}

static enum store_entry_kind kind_of(mode_t mode)
{
	if (S_ISREG(mode))
		return STORE_FILE;
	if (S_ISDIR(mode))
		return STORE_DIR;
	return STORE_OTHER;
}

static int open_error(const char *path, int errnum, struct err *e)
{
	if (errnum == ENOENT)
		return err_set(e, "source_not_found", "%s: no such file or directory", path);
	return err_set_errno(e, "source_unreadable", errnum, "%s", path);
}

static int local_list(struct store *base, struct store_entry **out, size_t *n, struct err *e)
{
	struct store_entry *entries = NULL;
	size_t len = 0, cap = 0;
	struct dirent *d;
	struct stat st;
	DIR *dir;

	dir = opendir(base->location);
	if (!dir)
		return open_error(base->location, errno, e);
	while ((d = readdir(dir))) {
		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		if (len == cap) {
			cap = cap ? 2 * cap : 16;
			entries = xrealloc(entries, cap * sizeof(*entries));
		}
		entries[len].name = xstrdup(d->d_name);
		if (fstatat(dirfd(dir), d->d_name, &st, 0) == 0) {
			entries[len].size = (uint64_t)st.st_size;
			entries[len].kind = kind_of(st.st_mode);
		} else {
			entries[len].size = 0;
			entries[len].kind = STORE_OTHER;
		}
		len++;
	}
	closedir(dir);
	*out = entries;
	*n = len;
	return 0;
}

static int local_stat(struct store *base, const char *name, struct store_entry *out,
		      struct err *e)
{
	char *path = join(base->location, name);
	struct stat st;
	int rc = 0;

	if (stat(path, &st) != 0)
		rc = open_error(path, errno, e);
	else {
		out->name = NULL;
		out->size = (uint64_t)st.st_size;
		out->kind = kind_of(st.st_mode);
	}
	free(path);
	return rc;
}

/* The cached descriptor of `name`, opened on first use; *cached_name stays
 * valid until the store is freed. */
static int cached_fd(struct local_store *s, const char *name, const char **cached_name,
		     struct err *e)
{
	char *path;
	size_t i;
	int fd = -1;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->nfds; i++) {
		if (strcmp(s->fds[i].name, name) == 0) {
			fd = s->fds[i].fd;
			*cached_name = s->fds[i].name;
			goto out_unlock;
		}
	}
	path = join(s->base.location, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		open_error(path, errno, e);
		free(path);
		goto out_unlock;
	}
	free(path);
	if (s->nfds == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 8;
		s->fds = xrealloc(s->fds, s->cap * sizeof(*s->fds));
	}
	s->fds[s->nfds].name = xstrdup(name);
	s->fds[s->nfds].fd = fd;
	*cached_name = s->fds[s->nfds].name;
	s->nfds++;
out_unlock:
	pthread_mutex_unlock(&s->lock);
	return fd;
}

static int local_read(struct store *base, const char *name, uint64_t off, void *buf, size_t len,
		      struct err *e)
{
	const char *cached;
	size_t done = 0;
	ssize_t got;
	int fd;

	fd = cached_fd(local(base), name, &cached, e);
	if (fd < 0)
		return -1;
	while (done < len) {
		got = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return err_set_errno(e, "io_error", errno, "%s/%s: reading %zu bytes at offset %" PRIu64,
					     base->location, name, len, off);
		if (got == 0)
			return err_set(e, "file_truncated",
				       "%s/%s: file ends at byte %" PRIu64
				       ", before the %zu bytes at offset %" PRIu64 " it should hold",
				       base->location, name, off + done, len, off);
		done += (size_t)got;
	}
	return 0;
}

static int local_view(struct store *base, const char *name, uint64_t off, size_t len,
		      struct store_view *v, struct err *e)
{
	static const unsigned char empty[1];
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t start = off & ~(page - 1);
	const char *cached;
	struct stat st;
	void *map;
	int fd;

	fd = cached_fd(local(base), name, &cached, e);
	if (fd < 0)
		return -1;
	v->file = cached;
	v->backend = base->backend;
	if (fstat(fd, &st) != 0)
		return err_set_errno(e, "io_error", errno, "%s/%s", base->location, name);
	if (off > (uint64_t)st.st_size || len > (uint64_t)st.st_size - off)
		return err_set(e, "source_truncated",
			       "%s/%s: file is %" PRIu64 " bytes, too short for %zu bytes at offset %" PRIu64
			       " (it shrank while being converted)",
			       base->location, name, (uint64_t)st.st_size, len, off);
	if (len == 0) {
		v->data = empty;
		return 0;
	}
	v->base_len = (size_t)(off - start) + len;
	map = mmap(NULL, v->base_len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, (off_t)start);
	if (map == MAP_FAILED) {
		v->base_len = 0;
		return err_set_errno(e, "io_error", errno, "%s/%s: mapping %zu bytes at offset %" PRIu64,
				     base->location, name, len, off);
	}
	madvise(map, v->base_len, MADV_SEQUENTIAL);
	v->base = map;
	v->data = (const unsigned char *)map + (off - start);
	v->len = len;
	return 0;
}

static void local_view_release(struct store_view *v)
{
	if (v->base)
		munmap(v->base, v->base_len);
}

/* ---- writing ---- */

static int write_error(const char *path, int errnum, struct err *e)
{
	if (errnum == ENOSPC || errnum == EDQUOT)
		return err_set_errno(e, "insufficient_space", errnum, "%s", path);
	if (errnum == EACCES || errnum == EROFS || errnum == EPERM || errnum == ENOTDIR)
		return err_set_errno(e, "destination_not_writable", errnum, "%s", path);
	return err_set_errno(e, "io_error", errnum, "%s", path);
}

static int reserve_space(int fd, const char *path, uint64_t size, struct err *e)
{
	if (size == 0)
		return 0;
	if (fallocate(fd, 0, 0, (off_t)size) == 0)
		return 0;
	if (errno != EOPNOTSUPP && errno != ENOSYS)
		return write_error(path, errno, e);
	if (ftruncate(fd, (off_t)size) != 0)
		return write_error(path, errno, e);
	return 0;
}

static int create_tmp(const char *tmp_path, struct err *e)
{
	int fd;

	fd = open(tmp_path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
	if (fd < 0 && errno == EEXIST) {
		/* A leftover of an interrupted run: ours to replace. */
		unlink(tmp_path);
		fd = open(tmp_path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
	}
	if (fd < 0)
		write_error(tmp_path, errno, e);
	return fd;
}

static void writer_free(struct local_writer *w)
{
	free(w->base.name);
	free(w->tmp_path);
	free(w->final_path);
	free(w);
}

/* A writer whose temporary file is tmp_path (owned by the writer). */
static int open_writer(struct store *base, const char *name, uint64_t size, char *tmp_path,
		       struct store_writer **out, struct err *e)
{
	struct local_writer *w;

	if (strchr(name, '/') || !*name) {
		free(tmp_path);
		return err_set(e, "plan_invalid", "%s: output name '%s' is not a plain file name",
			       base->location, name);
	}
	w = xcalloc(1, sizeof(*w));
	w->base.store = base;
	w->base.name = xstrdup(name);
	w->base.size = size;
	w->tmp_path = tmp_path;
	w->final_path = join(base->location, name);
	w->fd = create_tmp(w->tmp_path, e);
	if (w->fd < 0)
		goto out_free;
	if (reserve_space(w->fd, w->tmp_path, size, e))
		goto out_unlink;
	*out = &w->base;
	return 0;
out_unlink:
	close(w->fd);
	unlink(w->tmp_path);
out_free:
	writer_free(w);
	return -1;
}

static int local_writer_open(struct store *base, const char *name, uint64_t size,
			     struct store_writer **out, struct err *e)
{
	return open_writer(base, name, size, tmp_path_for(base->location, name), out, e);
}

static int local_writer_write(struct store_writer *base, uint64_t off, const void *buf,
			      size_t len, struct err *e)
{
	struct local_writer *w = (struct local_writer *)base;
	size_t done = 0;
	ssize_t put;

	while (done < len) {
		put = pwrite(w->fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (put < 0 && errno == EINTR)
			continue;
		if (put < 0)
			return write_error(w->tmp_path, errno, e);
		done += (size_t)put;
	}
	return 0;
}

static int fsync_dir(const char *dir, struct err *e)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return write_error(dir, errno, e);
	if (fsync(fd) != 0 && errno != EINVAL)
		rc = write_error(dir, errno, e);
	close(fd);
	return rc;
}

static int local_writer_commit(struct store_writer *base, struct err *e)
{
	struct local_writer *w = (struct local_writer *)base;
	bool durable = base->store->out.durable;
	int rc = -1;

	if (durable && fsync(w->fd) != 0) {
		write_error(w->tmp_path, errno, e);
		goto out_unlink;
	}
	if (close(w->fd) != 0) {
		w->fd = -1;
		write_error(w->tmp_path, errno, e);
		goto out_unlink;
	}
	w->fd = -1;
	if (rename(w->tmp_path, w->final_path) != 0) {
		write_error(w->final_path, errno, e);
		goto out_unlink;
	}
	rc = durable ? fsync_dir(base->store->location, e) : 0;
	goto out;
out_unlink:
	if (w->fd >= 0)
		close(w->fd);
	unlink(w->tmp_path);
out:
	writer_free(w);
	return rc;
}

static void local_writer_abort(struct store_writer *base)
{
	struct local_writer *w = (struct local_writer *)base;

	close(w->fd);
	unlink(w->tmp_path);
	writer_free(w);
}

static int local_put(struct store *base, const char *name, const void *buf, size_t len,
		     struct err *e)
{
	static atomic_uint serial;
	struct store_writer *w;
	char *tmp_path;

	/* A temporary name of this process and call alone: processes putting
	 * the same file at once (partitions writing one manifest) never
	 * share a temporary file, and the last rename wins whole. */
	if (asprintf(&tmp_path, "%s/" TMP_PREFIX "%s.%ld.%u", base->location, name, (long)getpid(),
		     atomic_fetch_add(&serial, 1)) < 0)
		abort();
	if (open_writer(base, name, len, tmp_path, &w, e))
		return -1;
	if (local_writer_write(w, 0, buf, len, e)) {
		local_writer_abort(w);
		return -1;
	}
	return local_writer_commit(w, e);
}

static int local_remove(struct store *base, const char *name, struct err *e)
{
	char *path = join(base->location, name);
	int rc = 0;

	if (unlink(path) != 0 && errno != ENOENT)
		rc = write_error(path, errno, e);
	free(path);
	return rc;
}

/* ---- preparing a destination ---- */

static int not_writable(const char *path, int errnum, struct err *e)
{
	return err_set_errno(e, "destination_not_writable", errnum, "%s: cannot create or write",
			     path);
}

/* mkdir -p, then the location must be a directory. */
static int make_dirs(const char *location, struct err *e)
{
	char *path = xstrdup(location);
	struct stat st;
	char saved, *p;
	int rc = 0;

	for (p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		saved = *p;
		*p = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			rc = not_writable(path, errno, e);
			break;
		}
		*p = saved;
		if (!saved)
			break;
	}
	if (rc == 0 && stat(location, &st) != 0)
		rc = not_writable(location, errno, e);
	else if (rc == 0 && !S_ISDIR(st.st_mode))
		rc = not_writable(location, ENOTDIR, e);
	free(path);
	return rc;
}

static int probe_writable(const char *location, struct err *e)
{
	char *probe;
	int fd;

	if (asprintf(&probe, "%s/" TMP_PREFIX "probe.%ld", location, (long)getpid()) < 0)
		abort();
	fd = open(probe, O_CREAT | O_WRONLY | O_CLOEXEC | O_TRUNC, 0644);
	if (fd < 0) {
		not_writable(location, errno, e);
		free(probe);
		return -1;
	}
	close(fd);
	unlink(probe);
	free(probe);
	return 0;
}

static int free_bytes(const char *location, uint64_t *out, struct err *e)
{
	struct statvfs vfs;

	if (store_local_free_bytes_hook)
		return store_local_free_bytes_hook(location, out) == 0
			       ? 0
			       : err_set(e, "io_error", "%s: cannot read the free space", location);
	if (statvfs(location, &vfs) != 0)
		return err_set_errno(e, "io_error", errno, "%s: cannot read the free space", location);
	if (!u64_mul(vfs.f_bavail, vfs.f_frsize, out))
		*out = UINT64_MAX;
	return 0;
}

/* Files an overwrite replaces: the previous checkpoint's index and weights. */
static bool is_replaced_checkpoint_file(const char *name)
{
	return strcmp(name, INDEX_NAME) == 0 || strcmp(name, SINGLE_NAME) == 0 ||
	       fnmatch(SHARD_PATTERN, name, 0) == 0;
}

static bool is_ours(const char *name)
{
	return strncmp(name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0;
}

static int refuse_not_empty(const char *location, const struct store_entry *entries, size_t n,
			    size_t others, struct err *e)
{
	char names[256] = "";
	size_t i, shown = 0, used = 0;

	for (i = 0; i < n && shown < 3; i++) {
		if (is_ours(entries[i].name))
			continue;
		used += (size_t)snprintf(names + used, sizeof(names) - used, "%s'%s'",
					 shown ? ", " : "", entries[i].name);
		if (used >= sizeof(names))
			used = sizeof(names) - 1;
		shown++;
	}
	return err_set(e, "destination_not_empty",
		       "%s: the destination holds files (%s%s); pass --overwrite to replace them",
		       location, names, others > shown ? ", ..." : "");
}

static int check_space(const char *location, uint64_t needed, uint64_t freed, struct err *e)
{
	char need_text[32], avail_text[32];
	uint64_t avail;

	if (free_bytes(location, &avail, e))
		return -1;
	if (!u64_add(avail, freed, &avail))
		avail = UINT64_MAX;
	if (avail >= needed)
		return 0;
	size_format(needed, need_text, sizeof(need_text));
	size_format(avail, avail_text, sizeof(avail_text));
	return err_set(e, "insufficient_space",
		       "%s: the output needs %s (%" PRIu64 " bytes) but only %s (%" PRIu64
		       " bytes) is free",
		       location, need_text, needed, avail_text, avail);
}

/* Removes the replaced checkpoint, index first, so that what remains never
 * looks like a finished checkpoint. */
static int remove_replaced(struct store *base, const struct store_entry *entries, size_t n,
			   struct err *e)
{
	size_t i;

	if (local_remove(base, INDEX_NAME, e) || local_remove(base, SINGLE_NAME, e))
		return -1;
	for (i = 0; i < n; i++)
		if (fnmatch(SHARD_PATTERN, entries[i].name, 0) == 0 &&
		    local_remove(base, entries[i].name, e))
			return -1;
	return 0;
}

static int local_prepare_output(struct store *base, const struct store_output_options *o,
				struct err *e)
{
	struct store_entry *entries = NULL;
	uint64_t freed = 0;
	size_t n = 0, i, others = 0;
	int rc = -1;

	base->out = *o;
	if (make_dirs(base->location, e) || probe_writable(base->location, e))
		goto out;
	if (store_list(base, &entries, &n, e))
		goto out;
	for (i = 0; i < n; i++) {
		if (is_ours(entries[i].name)) {
			if (local_remove(base, entries[i].name, e))
				goto out_entries;
			continue;
		}
		others++;
		if (entries[i].kind == STORE_FILE && is_replaced_checkpoint_file(entries[i].name) &&
		    !u64_add(freed, entries[i].size, &freed))
			freed = UINT64_MAX;
	}
	if (others && !o->overwrite) {
		refuse_not_empty(base->location, entries, n, others, e);
		goto out_entries;
	}
	if (check_space(base->location, o->bytes_needed, o->overwrite ? freed : 0, e))
		goto out_entries;
	rc = o->overwrite ? remove_replaced(base, entries, n, e) : 0;
out_entries:
	store_entries_free(entries, n);
out:
	return rc;
}

const struct store_backend store_local_backend = {
	.scheme = "file",
	.open = local_open,
	.free = local_free,
	.list = local_list,
	.read = local_read,
	.view = local_view,
	.view_release = local_view_release,
	.prepare_output = local_prepare_output,
	.writer_open = local_writer_open,
	.writer_write = local_writer_write,
	.writer_commit = local_writer_commit,
	.writer_abort = local_writer_abort,
	.put = local_put,
	.remove = local_remove,
	.stat = local_stat,
};

/* SPDX-License-Identifier: MIT */
/*
 * store_local: the store backend for a local directory.  The directory is
 * opened once (lazily: a destination may not exist yet) and every name is
 * opened, created, renamed, listed or removed relative to that descriptor.
 * In a confined process (store_local_confine) the directory is opened
 * beneath the allowed root that holds it, and a name that turns out to be a
 * symbolic link is followed beneath that root only: openat2 with
 * RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS, and where the kernel lacks it
 * (or refuses an absolute link that stays inside the root) a walk that
 * opens one component at a time with O_NOFOLLOW relative to descriptors it
 * holds, reading each link and never climbing above the root.  Either way
 * the check is the open itself, so a rename cannot race it.
 *
 * Reads go through a cache of one read-only descriptor per file, whose
 * identity (device, inode, size, mtime, ctime) is recorded when it is
 * opened and compared on every view and in store_check_sources; views
 * are memory mappings of a page-aligned window around the requested bytes,
 * advised for sequential access.  Outputs are written under a temporary
 * name (store.h) in the destination (space reserved with fallocate) and
 * renamed into place on commit, after fsync when the output is durable.
 */
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ckptconv/err.h"
#include "ckptconv/paths.h"
#include "ckptconv/store.h"
#include "ckptconv/util.h"
#include "store_local_internal.h"

/* Symbolic links followed in one resolution, as the kernel's MAXSYMLINKS. */
#define MAX_LINKS 40
/* openat2 answers EAGAIN when a rename races its ".." handling. */
#define OPENAT2_TRIES 8

int (*store_local_free_bytes_hook)(const char *dir, uint64_t *free_bytes);
int (*store_local_sync_file_range_hook)(int fd, int64_t offset, int64_t nbytes,
					unsigned int flags);
bool store_local_force_walk;

/* ---- the allowed roots ---- */

struct root {
	char *path; /* resolved, absolute */
	int fd;	    /* O_PATH descriptor of the directory */
};

/* Set by store_local_confine on the main thread before stores exist. */
static struct root *roots;
static size_t nroots;
static bool confined;
static atomic_bool no_openat2; /* openat2 answered ENOSYS or EPERM */

static void roots_free(void)
{
	size_t i;

	for (i = 0; i < nroots; i++) {
		close(roots[i].fd);
		free(roots[i].path);
	}
	free(roots);
	roots = NULL;
	nroots = 0;
	confined = false;
}

int store_local_confine(const struct strvec *dirs, struct err *e)
{
	size_t i;

	roots_free();
	if (!dirs)
		return 0;
	confined = true;
	roots = xcalloc(dirs->len ? dirs->len : 1, sizeof(*roots));
	for (i = 0; i < dirs->len; i++) {
		int fd = open(dirs->items[i], O_PATH | O_DIRECTORY | O_CLOEXEC);

		if (fd < 0) {
			err_set_errno(e, ERR_USAGE_ERROR, errno, "allowed root %s", dirs->items[i]);
			roots_free();
			return -1;
		}
		roots[nroots].path = xstrdup(dirs->items[i]);
		roots[nroots].fd = fd;
		nroots++;
	}
	return 0;
}

/* The widest root holding `path` lexically, or NULL. */
static const struct root *root_of(const char *path)
{
	const struct root *best = NULL;
	size_t i;

	for (i = 0; path[0] == '/' && i < nroots; i++)
		if (paths_inside(path, roots[i].path) &&
		    (!best || strlen(roots[i].path) < strlen(best->path)))
			best = &roots[i];
	return best;
}

/* `path` (inside r) relative to r; "." for r itself. */
static const char *relative_to(const struct root *r, const char *path)
{
	size_t n = strlen(r->path);

	path += n == 1 ? 0 : n;
	while (*path == '/')
		path++;
	return *path ? path : ".";
}

/* ---- resolving beneath a root ---- */

struct walk {
	const struct root *root;
	int *fds; /* fds[0] is the root's (not owned); the rest are O_PATH */
	size_t depth, cap;
	char *todo; /* the path still to resolve */
};

static void walk_pop_to(struct walk *w, size_t depth)
{
	while (w->depth > depth)
		close(w->fds[w->depth--]);
}

static void walk_push(struct walk *w, int fd)
{
	if (w->depth + 1 == w->cap) {
		w->cap *= 2;
		w->fds = xrealloc(w->fds, w->cap * sizeof(*w->fds));
	}
	w->fds[++w->depth] = fd;
}

/* Replaces the resolved component by the link's `target` in front of
 * `rest`; an absolute target restarts from the root.  0, or -1 with errno
 * EXDEV when an absolute target lies outside the root. */
static int walk_splice(struct walk *w, const char *target, const char *rest)
{
	char *todo;

	if (target[0] == '/') {
		if (!paths_inside(target, w->root->path)) {
			errno = EXDEV;
			return -1;
		}
		walk_pop_to(w, 0);
		target = relative_to(w->root, target);
	}
	if (asprintf(&todo, "%s/%s", target, rest) < 0)
		abort();
	free(w->todo);
	w->todo = todo;
	return 0;
}

/* Drops the first `len` bytes of the path still to resolve. */
static void walk_advance(struct walk *w, size_t len)
{
	memmove(w->todo, w->todo + len, strlen(w->todo + len) + 1);
}

/* Opens `path` beneath the root as openat2(RESOLVE_BENEATH) does, one
 * component at a time: each opened with O_NOFOLLOW relative to the
 * descriptor of its parent, a symbolic link read and its target resolved
 * in its place, ".." going back to a descriptor already held.  -1 with
 * errno, EXDEV when the path leads outside the root. */
static int walk_beneath(const struct root *root, const char *path, int flags)
{
	struct walk w = {.root = root, .cap = 16};
	char name[NAME_MAX + 1], target[PATH_MAX];
	unsigned links = 0;
	int fd = -1, saved;

	w.fds = xmalloc(w.cap * sizeof(*w.fds));
	w.fds[0] = root->fd;
	w.todo = xstrdup(path);
	for (;;) {
		size_t skip = strspn(w.todo, "/"), len = strcspn(w.todo + skip, "/");
		const char *rest = w.todo + skip + len;
		bool last = rest[strspn(rest, "/")] == '\0';
		int dir = w.fds[w.depth];
		ssize_t n;

		if (len == 0) {
			fd = openat(dir, ".", flags | O_CLOEXEC);
			break;
		}
		if (len > NAME_MAX) {
			errno = ENAMETOOLONG;
			break;
		}
		memcpy(name, w.todo + skip, len);
		name[len] = '\0';
		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
			if (name[1] == '.' && w.depth == 0) {
				errno = EXDEV;
				break;
			}
			if (name[1] == '.')
				walk_pop_to(&w, w.depth - 1);
			walk_advance(&w, skip + len);
			continue;
		}
		n = readlinkat(dir, name, target, sizeof(target) - 1);
		if (n >= 0) {
			if (++links > MAX_LINKS) {
				errno = ELOOP;
				break;
			}
			target[n] = '\0';
			if (walk_splice(&w, target, rest) < 0)
				break;
			continue;
		}
		if (errno != EINVAL)
			break;
		if (last) {
			fd = openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC);
			/* ELOOP: it became a link since readlinkat; look again. */
			if (fd < 0 && errno == ELOOP && ++links <= MAX_LINKS)
				continue;
			break;
		}
		fd = openat(dir, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			break;
		walk_push(&w, fd);
		fd = -1;
		walk_advance(&w, skip + len);
	}
	saved = errno;
	walk_pop_to(&w, 0);
	free(w.fds);
	free(w.todo);
	errno = saved;
	return fd;
}

/* Opens `path` (relative) beneath the root: openat2 where the kernel has
 * it; the walk where it does not (ENOSYS, or EPERM from a seccomp filter
 * that does not know openat2, as older systemd and container runtimes
 * answer; a genuine EPERM is answered again by the walk, as strict), and
 * to tell an absolute link that stays inside the root (which
 * RESOLVE_BENEATH refuses) from an escape.  -1 with errno, EXDEV when the
 * path leads outside the root. */
static int open_beneath(const struct root *root, const char *path, int flags)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	int fd = -1, tries;

	if (!store_local_force_walk && !atomic_load(&no_openat2)) {
		for (tries = 0; tries < OPENAT2_TRIES; tries++) {
			fd = (int)syscall(SYS_openat2, root->fd, path, &how, sizeof(how));
			if (fd >= 0 || errno != EAGAIN)
				break;
		}
		if (fd >= 0 || (errno != ENOSYS && errno != EPERM && errno != EXDEV))
			return fd;
		if (errno == ENOSYS || errno == EPERM)
			atomic_store(&no_openat2, true);
	}
	return walk_beneath(root, path, flags);
}

/* ---- the store ---- */

struct cached_fd {
	char *name;
	int fd;
	struct store_identity id; /* at open */
};

struct local_store {
	struct store base;
	const struct root *root; /* confined: the root holding the location */
	pthread_mutex_t lock;	 /* protects dirfd, fds, nfds, cap */
	int dirfd;		 /* the location, once opened; -1 before */
	struct cached_fd *fds;
	size_t nfds, cap;
	/* Bytes written to outputs not to be fsynced (--no-fsync), and how
	 * many of them are left to the page cache before write-behind starts
	 * for them too (see write_behind). */
	atomic_uint_least64_t unsynced;
	uint64_t unsynced_cached;
};

struct local_writer {
	struct store_writer base;
	int fd;
	int dirfd; /* the store's */
	char *tmp_name;
	char *path; /* the final file's path, which messages name */
	/* Write-behind: the WRITE_BEHIND_CHUNK-sized chunks whose writeback
	 * has been started, as a bit per chunk (NULL: not done, a small
	 * file), and whether the filesystem refused sync_file_range. */
	atomic_uchar *started;
	size_t nchunks;
	atomic_bool unsupported;
};

/* Bytes per pwrite(2).  The page cache gives a write folios as large as
 * the write (ext4 and XFS since Linux 6.x); on virtual machines whose
 * memory is fragmented or handed back to the host, the higher-order
 * allocations cost far more than the copy: 12 GB written in 1 MiB calls
 * took 31 s of system time where 128 KiB calls took 5 s (Linux 6.18, ext4,
 * 2-CPU VM; bench/write_size.c).  128 KiB is also what cp(1) writes
 * (coreutils io_blksize). */
#define LOCAL_WRITE_MAX (128u << 10)

/* Write-behind, as `dd oflag=direct` and rsync bound the dirty pages of a
 * big copy: once a write reaches past the end of a chunk of the output,
 * the chunk before it (all of whose pieces are handed out by then, in plan
 * order) is sent to the disk (sync_file_range WRITE, which does not wait
 * for it); the chunk WRITE_BEHIND_LAG chunks behind that one, whose
 * writeback started as many chunks ago, is waited for and dropped from the
 * page cache (fadvise DONTNEED, which drops only pages already written;
 * when some are not, the kernel drains every CPU's page lists and tries
 * again).  The page cache then holds a few chunks of each output rather
 * than gigabytes of dirty pages for the kernel's throttling to catch up
 * with, and the fsync before publishing has little left to do.
 *
 * An output not to be fsynced (--no-fsync) is left to the page cache as cp
 * leaves it until the store has written a tenth of the machine's memory
 * without fsync (about where the kernel's own writeback starts: the
 * default vm.dirty_background_ratio is 10 % of available memory; a memory
 * cgroup's smaller limit is not looked at): an output that fits in
 * memory is then not slowed by writing it back (1.8 GB converted in 0.6 s
 * where write-behind took 1.4 s), and one that does not writes into page
 * cache it recycles rather than memory the kernel must find.  Measured on
 * a 2-CPU VM (Linux 6.18, ext4), 34 GB converted to native with
 * --no-fsync from a dropped page cache: 37 s with write-behind against
 * 92 s without (system time 33 s against 145 s); beside a competing cp of
 * another 34 GB, 65 s with the wait before DONTNEED, 73 s without it, cp
 * 65 s. */
#define WRITE_BEHIND_CHUNK (32u << 20)
#define WRITE_BEHIND_LAG 4

/* sync_file_range(2) of a chunk, or the test seam standing for it.  -1
 * with errno on failure. */
static int sync_chunk(int fd, size_t chunk, unsigned int flags)
{
	off64_t off = (off64_t)chunk * WRITE_BEHIND_CHUNK;

	if (store_local_sync_file_range_hook)
		return store_local_sync_file_range_hook(fd, off, WRITE_BEHIND_CHUNK, flags);
	return sync_file_range(fd, off, WRITE_BEHIND_CHUNK, flags);
}

/* A failed sync_file_range in write_behind: a filesystem that does not
 * support it (EINVAL, ESPIPE, ENOSYS, EOPNOTSUPP) ends write-behind for
 * the file and is no error; any other errno is an error in writing the
 * file back (EIO, ENOSPC: an unwritten extent the disk had no room to
 * convert), returned as the write's failure.  The kernel reports a
 * writeback error once per descriptor: to the sync_file_range that waited
 * (WAIT_AFTER), after which fsync finds none, so it must not be dropped
 * here.  Returns 0 or the errno. */
static int write_behind_failed(struct local_writer *w, int errnum)
{
	if (errnum == EINVAL || errnum == ESPIPE || errnum == ENOSYS || errnum == EOPNOTSUPP) {
		atomic_store(&w->unsupported, true);
		return 0;
	}
	return errnum;
}

static struct local_store *local(struct store *s)
{
	return (struct local_store *)s;
}

/* Returns 0, or the errno of a failure to write the file back (see
 * write_behind_failed). */
static int write_behind(struct local_writer *w, uint64_t end)
{
	struct local_store *s = local(w->base.store);
	size_t reached = (size_t)(end / WRITE_BEHIND_CHUNK), chunk;

	if (!w->started || reached < 2 || atomic_load(&w->unsupported))
		return 0;
	if (!w->base.store->out.durable &&
	    atomic_load(&s->unsynced) < s->unsynced_cached)
		return 0;
	chunk = reached - 2; /* the chunk before the one the write is in */
	if (chunk >= w->nchunks || atomic_exchange(&w->started[chunk], 1))
		return 0;
	if (sync_chunk(w->fd, chunk, SYNC_FILE_RANGE_WRITE) != 0)
		return write_behind_failed(w, errno);
	if (chunk < WRITE_BEHIND_LAG)
		return 0;
	chunk -= WRITE_BEHIND_LAG;
	if (sync_chunk(w->fd, chunk,
		       SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
			       SYNC_FILE_RANGE_WAIT_AFTER) != 0)
		return write_behind_failed(w, errno);
	posix_fadvise(w->fd, (off_t)chunk * WRITE_BEHIND_CHUNK, WRITE_BEHIND_CHUNK,
		      POSIX_FADV_DONTNEED);
	return 0;
}

static char *join(const char *dir, const char *name)
{
	char *p;

	if (asprintf(&p, "%s/%s", dir, name) < 0)
		abort();
	return p;
}

/* Bytes of the machine's memory (0 if unknown). */
static uint64_t memory_size(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);

	return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 0;
}

static int local_open(const char *location, const struct store_config *cfg, struct store **out,
		      struct err *e)
{
	struct local_store *s;
	size_t len = strlen(location);

	(void)cfg; /* nothing of it applies to local files */
	if (len == 0)
		return err_set(e, ERR_INVALID_LOCATION, "the location is empty");
	s = xcalloc(1, sizeof(*s));
	s->base.backend = &store_local_backend;
	s->base.location = xstrdup(location);
	while (len > 1 && s->base.location[len - 1] == '/')
		s->base.location[--len] = '\0';
	s->dirfd = -1;
	s->unsynced_cached = memory_size() / 10;
	if (confined) {
		s->root = root_of(s->base.location);
		if (!s->root) {
			err_set(e, ERR_FORBIDDEN_PATH, "%s is outside the allowed roots", location);
			free(s->base.location);
			free(s);
			return -1;
		}
	}
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
	if (s->dirfd >= 0)
		close(s->dirfd);
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
		return err_set(e, ERR_SOURCE_NOT_FOUND, "%s: no such file or directory", path);
	if (errnum == EXDEV)
		return err_set(e, ERR_FORBIDDEN_PATH, "%s resolves outside the allowed roots",
			       path);
	return err_set_errno(e, ERR_SOURCE_UNREADABLE, errnum, "%s", path);
}

static int write_error(const char *path, int errnum, struct err *e)
{
	if (errnum == ENOSPC || errnum == EDQUOT)
		return err_set_errno(e, ERR_INSUFFICIENT_SPACE, errnum, "%s", path);
	if (errnum == EXDEV)
		return err_set(e, ERR_FORBIDDEN_PATH, "%s resolves outside the allowed roots",
			       path);
	if (errnum == EACCES || errnum == EROFS || errnum == EPERM || errnum == ENOTDIR)
		return err_set_errno(e, ERR_DESTINATION_NOT_WRITABLE, errnum, "%s", path);
	return err_set_errno(e, ERR_IO_ERROR, errnum, "%s", path);
}

static int not_writable(const char *path, int errnum, struct err *e)
{
	if (errnum == EXDEV)
		return err_set(e, ERR_FORBIDDEN_PATH, "%s resolves outside the allowed roots",
			       path);
	return err_set_errno(e, ERR_DESTINATION_NOT_WRITABLE, errnum, "%s: cannot create or write",
			     path);
}

/* The directory at `path`: the location or one of its ancestors, beneath
 * the root when confined.  -1 with errno. */
static int open_dir(const struct local_store *s, const char *path)
{
	if (!s->root)
		return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return open_beneath(s->root, relative_to(s->root, path), O_RDONLY | O_DIRECTORY);
}

/* mkdir -p of the location, each directory created relative to its
 * opened parent; the location's descriptor, or -1 with e set. */
static int create_dirs(const struct local_store *s, struct err *e)
{
	const char *location = s->base.location;
	char *path = xstrdup(location), *p, saved;
	size_t start = s->root ? strlen(s->root->path) : (location[0] == '/' ? 1 : 0);
	int parent, child;

	saved = path[start];
	path[start] = '\0';
	parent = open_dir(s, start ? path : ".");
	path[start] = saved;
	if (parent < 0) {
		not_writable(start ? location : ".", errno, e);
		goto out;
	}
	for (p = path + start; *p;) {
		char *comp, *end;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		comp = p;
		end = strchr(p, '/');
		p = end ? end : p + strlen(p);
		saved = *p;
		*p = '\0';
		child = open_dir(s, path);
		if (child < 0 && errno == ENOENT) {
			if (mkdirat(parent, comp, 0755) != 0 && errno != EEXIST) {
				not_writable(path, errno, e);
				close(parent);
				parent = -1;
				goto out;
			}
			child = open_dir(s, path);
		}
		if (child < 0) {
			not_writable(path, errno, e);
			close(parent);
			parent = -1;
			goto out;
		}
		*p = saved;
		close(parent);
		parent = child;
	}
out:
	free(path);
	return parent;
}

enum location_use { FOR_READING, FOR_WRITING, FOR_CREATING };

/* The descriptor of the location, opened on first use (created with its
 * parents FOR_CREATING); -1 with e set in the terms of the use. */
static int location_fd(struct local_store *s, enum location_use use, struct err *e)
{
	int fd;

	pthread_mutex_lock(&s->lock);
	fd = s->dirfd;
	if (fd >= 0)
		goto out_unlock;
	if (use == FOR_CREATING) {
		fd = create_dirs(s, e);
	} else {
		fd = open_dir(s, s->base.location);
		if (fd < 0 && use == FOR_READING)
			open_error(s->base.location, errno, e);
		else if (fd < 0)
			write_error(s->base.location, errno, e);
	}
	s->dirfd = fd;
out_unlock:
	pthread_mutex_unlock(&s->lock);
	return fd;
}

/* Opens `name` in the location (dirfd).  Confined, a symbolic link is
 * followed beneath the root only.  -1 with errno, EXDEV when it leads
 * outside the root. */
static int open_name(const struct local_store *s, int dirfd, const char *name, int flags)
{
	struct stat st;
	char *path;
	int fd;

	if (!s->root)
		return openat(dirfd, name, flags | O_CLOEXEC);
	if (!strchr(name, '/')) {
		fd = openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC);
		/* O_PATH | O_NOFOLLOW opens a link itself. */
		if (fd >= 0 && (flags & O_PATH) && fstat(fd, &st) == 0 && S_ISLNK(st.st_mode))
			close(fd);
		else if (fd >= 0 || errno != ELOOP)
			return fd;
	}
	path = join(s->base.location, name);
	fd = open_beneath(s->root, relative_to(s->root, path), flags);
	free(path);
	return fd;
}

/* Kind and size of entry `name` of the listing: a confined store follows
 * a link beneath the root only (STORE_OUTSIDE when it leads outside). */
static void entry_kind(const struct local_store *s, int dirfd, const char *name,
		       struct store_entry *out)
{
	struct stat st;
	int fd, rc;

	out->size = 0;
	out->kind = STORE_OTHER;
	rc = fstatat(dirfd, name, &st, s->root ? AT_SYMLINK_NOFOLLOW : 0);
	if (rc == 0 && S_ISLNK(st.st_mode)) {
		fd = open_name(s, dirfd, name, O_PATH);
		if (fd < 0) {
			if (errno == EXDEV)
				out->kind = STORE_OUTSIDE;
			return;
		}
		rc = fstat(fd, &st);
		close(fd);
	}
	if (rc == 0) {
		out->size = (uint64_t)st.st_size;
		out->kind = kind_of(st.st_mode);
	}
}

static int local_list(struct store *base, struct store_entry **out, size_t *n, struct err *e)
{
	struct local_store *s = local(base);
	struct store_entry *entries = NULL;
	size_t len = 0, cap = 0;
	struct dirent *d;
	DIR *dir;
	int dirfd, fd;

	dirfd = location_fd(s, FOR_READING, e);
	if (dirfd < 0)
		return -1;
	/* A description of its own: readdir's position is not shared. */
	fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		open_error(base->location, errno, e);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	while ((d = readdir(dir))) {
		if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0)
			continue;
		if (len == cap) {
			cap = cap ? 2 * cap : 16;
			entries = xrealloc(entries, cap * sizeof(*entries));
		}
		entries[len].name = xstrdup(d->d_name);
		entry_kind(s, dirfd, d->d_name, &entries[len]);
		len++;
	}
	closedir(dir);
	*out = entries;
	*n = len;
	return 0;
}

static void identity_of(const struct stat *st, struct store_identity *id)
{
	memset(id, 0, sizeof(*id));
	id->kind = STORE_ID_FILE;
	id->dev = (uint64_t)st->st_dev;
	id->ino = (uint64_t)st->st_ino;
	id->size = (uint64_t)st->st_size;
	id->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	id->ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

static int local_stat(struct store *base, const char *name, struct store_entry *out,
		      struct store_identity *id, struct err *e)
{
	struct local_store *s = local(base);
	struct stat st;
	char *path;
	int dirfd, fd, rc = 0;

	dirfd = location_fd(s, FOR_READING, e);
	if (dirfd < 0)
		return -1;
	fd = open_name(s, dirfd, name, O_PATH);
	if (fd < 0 || fstat(fd, &st) != 0) {
		path = join(base->location, name);
		rc = open_error(path, errno, e);
		free(path);
	} else {
		out->name = NULL;
		out->size = (uint64_t)st.st_size;
		out->kind = kind_of(st.st_mode);
		if (id)
			identity_of(&st, id);
	}
	if (fd >= 0)
		close(fd);
	return rc;
}


/* source_changed when the open file `fd` is no longer `was`. */
static int check_identity(const struct local_store *s, const char *name, int fd,
			  const struct store_identity *was, struct err *e)
{
	struct store_identity now;
	struct stat st;
	char what[256];

	if (fstat(fd, &st) != 0)
		return err_set_errno(e, ERR_IO_ERROR, errno, "%s/%s", s->base.location, name);
	identity_of(&st, &now);
	if (now.size < was->size)
		return err_set(e, ERR_SOURCE_TRUNCATED,
			       "%s/%s: file is %" PRIu64 " bytes, %" PRIu64
			       " when the conversion opened it (it shrank while being converted)",
			       s->base.location, name, now.size, was->size);
	if (store_identity_differs(was, &now, false, what, sizeof(what)))
		return store_changed_error(&s->base, name, what, e);
	return 0;
}

/* The cached descriptor of `name`, opened on first use (its identity
 * recorded then, into *id when not NULL); *cached_name stays valid until
 * the store is freed. */
static int cached_fd_id(struct local_store *s, const char *name, const char **cached_name,
			struct store_identity *id, struct err *e)
{
	struct stat st;
	char *path;
	size_t i;
	int dirfd, fd = -1;

	dirfd = location_fd(s, FOR_READING, e);
	if (dirfd < 0)
		return -1;
	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->nfds; i++) {
		if (strcmp(s->fds[i].name, name) == 0) {
			fd = s->fds[i].fd;
			*cached_name = s->fds[i].name;
			if (id)
				*id = s->fds[i].id;
			goto out_unlock;
		}
	}
	fd = open_name(s, dirfd, name, O_RDONLY);
	if (fd >= 0 && fstat(fd, &st) != 0) {
		close(fd);
		fd = -1;
	}
	if (fd < 0) {
		path = join(s->base.location, name);
		open_error(path, errno, e);
		free(path);
		goto out_unlock;
	}
	if (s->nfds == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 8;
		s->fds = xrealloc(s->fds, s->cap * sizeof(*s->fds));
	}
	s->fds[s->nfds].name = xstrdup(name);
	s->fds[s->nfds].fd = fd;
	identity_of(&st, &s->fds[s->nfds].id);
	if (id)
		*id = s->fds[s->nfds].id;
	*cached_name = s->fds[s->nfds].name;
	s->nfds++;
out_unlock:
	pthread_mutex_unlock(&s->lock);
	return fd;
}

static int cached_fd(struct local_store *s, const char *name, const char **cached_name,
		     struct err *e)
{
	return cached_fd_id(s, name, cached_name, NULL, e);
}

static int local_identify(struct store *base, const char *name, struct store_identity *out,
			  struct err *e)
{
	const char *cached;

	return cached_fd_id(local(base), name, &cached, out, e) < 0 ? -1 : 0;
}

static int local_check_sources(struct store *base, struct err *e)
{
	struct local_store *s = local(base);
	size_t i;
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->nfds && rc == 0; i++)
		rc = check_identity(s, s->fds[i].name, s->fds[i].fd, &s->fds[i].id, e);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

static size_t local_identities(struct store *base, struct store_source **out)
{
	struct local_store *s = local(base);
	size_t i, n;

	pthread_mutex_lock(&s->lock);
	n = s->nfds;
	*out = xcalloc(n + 1, sizeof(**out));
	for (i = 0; i < n; i++) {
		(*out)[i].name = xstrdup(s->fds[i].name);
		(*out)[i].id = s->fds[i].id;
	}
	pthread_mutex_unlock(&s->lock);
	store_sources_sort(*out, n);
	return n;
}

/* Reads [off, off+len) of fd into buf whole, looping over short reads. */
static int read_fully(struct store *base, const char *name, int fd, uint64_t off, void *buf,
		      size_t len, struct err *e)
{
	size_t done = 0;
	ssize_t got;

	while (done < len) {
		got = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return err_set_errno(e, ERR_IO_ERROR, errno,
					     "%s/%s: reading %zu bytes at offset %" PRIu64,
					     base->location, name, len, off);
		if (got == 0)
			return err_set(e, ERR_FILE_TRUNCATED,
				       "%s/%s: file ends at byte %" PRIu64
				       ", before the %zu bytes at offset %" PRIu64
				       " it should hold",
				       base->location, name, off + done, len, off);
		done += (size_t)got;
	}
	return 0;
}

/* The end of the hole (or data, with SEEK_HOLE) holding `pos`, at most
 * `end`; -1 when the filesystem cannot tell (lseek(2): EINVAL, ENXIO past
 * the last data). */
static int64_t extent_end(int fd, uint64_t pos, uint64_t end, int whence)
{
	off_t next = lseek(fd, (off_t)pos, whence);

	if (next < 0)
		return -1;
	return (uint64_t)next < end ? (int64_t)next : (int64_t)end;
}

/* A read of a file with holes (fewer blocks than its size, as
 * `fixture --sparse` writes) zeroes the parts of buf that are holes
 * instead of reading them: the kernel would allocate and zero a page of
 * page cache for every page of a hole read, as much work as writing it.
 * cp(1) finds holes the same way (SEEK_DATA, SEEK_HOLE).  Returns 1 when
 * the range is not within the file as it is now or the filesystem does
 * not report holes: the caller reads it as a whole. */
static int read_sparse(struct store *base, const char *name, int fd, uint64_t off, void *buf,
		       size_t len, struct err *e)
{
	uint64_t pos = off, end = off + len;
	struct stat st;

	if (fstat(fd, &st) != 0 || (uint64_t)st.st_blocks * 512 >= (uint64_t)st.st_size ||
	    end > (uint64_t)st.st_size)
		return 1;
	while (pos < end) {
		int64_t data = extent_end(fd, pos, end, SEEK_DATA), stop;

		if (data < 0 && errno != ENXIO)
			return pos == off ? 1 : read_fully(base, name, fd, pos,
							   (char *)buf + (pos - off), end - pos, e);
		stop = data < 0 ? (int64_t)end : data;
		if ((uint64_t)stop > pos) {
			memset((char *)buf + (pos - off), 0, (size_t)((uint64_t)stop - pos));
			pos = (uint64_t)stop;
			continue;
		}
		stop = extent_end(fd, pos, end, SEEK_HOLE);
		if (stop < 0 || (uint64_t)stop <= pos)
			stop = (int64_t)end;
		if (read_fully(base, name, fd, pos, (char *)buf + (pos - off),
			       (size_t)((uint64_t)stop - pos), e) != 0)
			return -1;
		pos = (uint64_t)stop;
	}
	return 0;
}

static int local_read(struct store *base, const char *name, uint64_t off, void *buf, size_t len,
		      struct err *e)
{
	const char *cached;
	int fd, rc;

	fd = cached_fd(local(base), name, &cached, e);
	if (fd < 0)
		return -1;
	rc = read_sparse(base, name, fd, off, buf, len, e);
	if (rc <= 0)
		return rc;
	return read_fully(base, name, fd, off, buf, len, e);
}

static int local_view(struct store *base, const char *name, uint64_t off, size_t len,
		      struct store_view *v, struct err *e)
{
	static const unsigned char empty[1];
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t start = off & ~(page - 1);
	struct store_identity id, now;
	const char *cached;
	struct stat st;
	char what[256];
	void *map;
	int fd;

	fd = cached_fd_id(local(base), name, &cached, &id, e);
	if (fd < 0)
		return -1;
	v->file = cached;
	v->backend = base->backend;
	if (fstat(fd, &st) != 0)
		return err_set_errno(e, ERR_IO_ERROR, errno, "%s/%s", base->location, name);
	identity_of(&st, &now);
	if (now.size >= id.size && store_identity_differs(&id, &now, false, what, sizeof(what)))
		return store_changed_error(base, name, what, e);
	if (off > (uint64_t)st.st_size || len > (uint64_t)st.st_size - off)
		return err_set(e, ERR_SOURCE_TRUNCATED,
			       "%s/%s: file is %" PRIu64
			       " bytes, too short for %zu bytes at offset %" PRIu64
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
		return err_set_errno(e, ERR_IO_ERROR, errno,
				     "%s/%s: mapping %zu bytes at offset %" PRIu64, base->location,
				     name, len, off);
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

/* A new file `name` in the directory; never follows a link there. */
static int create_tmp(int dirfd, const char *name, const char *path, struct err *e)
{
	int flags = O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC;
	int fd;

	fd = openat(dirfd, name, flags, 0644);
	if (fd < 0 && errno == EEXIST) {
		/* A leftover of an interrupted run: ours to replace. */
		unlinkat(dirfd, name, 0);
		fd = openat(dirfd, name, flags, 0644);
	}
	if (fd < 0)
		write_error(path, errno, e);
	return fd;
}

static void writer_free(struct local_writer *w)
{
	free(w->started);
	free(w->base.name);
	free(w->tmp_name);
	free(w->path);
	free(w);
}

/* A writer whose temporary file is tmp_name (owned by the writer). */
static int open_writer(struct store *base, const char *name, uint64_t size, char *tmp_name,
		       struct store_writer **out, struct err *e)
{
	struct local_writer *w;
	int dirfd;

	if (strchr(name, '/') || !*name) {
		free(tmp_name);
		return err_set(e, ERR_PLAN_INVALID, "%s: output name '%s' is not a plain file name",
			       base->location, name);
	}
	dirfd = location_fd(local(base), FOR_WRITING, e);
	if (dirfd < 0) {
		free(tmp_name);
		return -1;
	}
	w = xcalloc(1, sizeof(*w));
	w->base.store = base;
	w->base.name = xstrdup(name);
	w->base.size = size;
	w->dirfd = dirfd;
	w->tmp_name = tmp_name;
	w->path = join(base->location, name);
	w->fd = create_tmp(dirfd, w->tmp_name, w->path, e);
	if (w->fd < 0)
		goto out_free;
	if (reserve_space(w->fd, w->path, size, e))
		goto out_unlink;
	w->nchunks = (size_t)(size / WRITE_BEHIND_CHUNK);
	if (w->nchunks >= 2)
		w->started = xcalloc(w->nchunks, sizeof(*w->started));
	*out = &w->base;
	return 0;
out_unlink:
	close(w->fd);
	unlinkat(dirfd, w->tmp_name, 0);
out_free:
	writer_free(w);
	return -1;
}

static int local_writer_open(struct store *base, const char *name, uint64_t size,
			     struct store_writer **out, struct err *e)
{
	return open_writer(base, name, size, store_temporary_name(name, NULL), out, e);
}

static int local_writer_write(struct store_writer *base, uint64_t off, const void *buf, size_t len,
			      struct err *e)
{
	struct local_writer *w = (struct local_writer *)base;
	size_t done = 0;
	ssize_t put;
	int errnum;

	while (done < len) {
		size_t n = len - done < LOCAL_WRITE_MAX ? len - done : LOCAL_WRITE_MAX;

		put = pwrite(w->fd, (const char *)buf + done, n, (off_t)(off + done));
		if (put < 0 && errno == EINTR)
			continue;
		if (put < 0)
			return write_error(w->path, errno, e);
		done += (size_t)put;
	}
	if (!base->store->out.durable)
		atomic_fetch_add(&local(base->store)->unsynced, len);
	errnum = write_behind(w, off + len);
	if (errnum)
		return write_error(w->path, errnum, e);
	return 0;
}

static int local_writer_commit(struct store_writer *base, struct store_identity *published,
			       struct err *e)
{
	struct local_writer *w = (struct local_writer *)base;
	bool durable = base->store->out.durable;
	/* A second descriptor of the file, for its identity after the rename
	 * (without one the identity stays unknown). */
	int rc = -1, held = published ? dup(w->fd) : -1;
	struct stat st;

	if (durable && fsync(w->fd) != 0) {
		write_error(w->path, errno, e);
		goto out_unlink;
	}
	if (close(w->fd) != 0) {
		w->fd = -1;
		write_error(w->path, errno, e);
		goto out_unlink;
	}
	w->fd = -1;
	if (renameat(w->dirfd, w->tmp_name, w->dirfd, base->name) != 0) {
		char *final = join(base->store->location, base->name);

		write_error(final, errno, e);
		free(final);
		goto out_unlink;
	}
	rc = 0;
	if (held >= 0 && fstat(held, &st) == 0)
		identity_of(&st, published);
	if (durable && fsync(w->dirfd) != 0 && errno != EINVAL)
		rc = write_error(base->store->location, errno, e);
	goto out;
out_unlink:
	if (w->fd >= 0)
		close(w->fd);
	unlinkat(w->dirfd, w->tmp_name, 0);
out:
	if (held >= 0)
		close(held);
	writer_free(w);
	return rc;
}

static void local_writer_abort(struct store_writer *base)
{
	struct local_writer *w = (struct local_writer *)base;

	close(w->fd);
	unlinkat(w->dirfd, w->tmp_name, 0);
	writer_free(w);
}

static int local_put(struct store *base, const char *name, const void *buf, size_t len,
		     struct err *e)
{
	static atomic_uint serial;
	struct store_writer *w;
	char unique[48];

	/* A temporary name of this process and call alone: processes putting
	 * the same file at once (partitions writing one manifest) never
	 * share a temporary file, and the last rename wins whole. */
	snprintf(unique, sizeof(unique), "%ld.%u", (long)getpid(), atomic_fetch_add(&serial, 1));
	if (open_writer(base, name, len, store_temporary_name(name, unique), &w, e))
		return -1;
	if (local_writer_write(w, 0, buf, len, e)) {
		local_writer_abort(w);
		return -1;
	}
	return local_writer_commit(w, NULL, e);
}

static int local_remove(struct store *base, const char *name, struct err *e)
{
	struct err local_err = {0};
	char *path;
	int dirfd, rc = 0;

	dirfd = location_fd(local(base), FOR_WRITING, &local_err);
	if (dirfd < 0) {
		/* No location, nothing to remove. */
		if (local_err.errnum == ENOENT)
			return 0;
		*e = local_err;
		return -1;
	}
	if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) {
		path = join(base->location, name);
		rc = write_error(path, errno, e);
		free(path);
	}
	return rc;
}

/* ---- preparing a destination ---- */

static int probe_writable(struct store *base, int dirfd, struct err *e)
{
	char unique[32], *probe;
	int fd;

	snprintf(unique, sizeof(unique), "%ld", (long)getpid());
	probe = store_temporary_name("probe", unique);
	fd = openat(dirfd, probe, O_CREAT | O_WRONLY | O_CLOEXEC | O_TRUNC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		not_writable(base->location, errno, e);
		free(probe);
		return -1;
	}
	close(fd);
	unlinkat(dirfd, probe, 0);
	free(probe);
	return 0;
}

static int local_free_space(struct store *base, uint64_t *out, struct err *e)
{
	struct statvfs vfs;
	int dirfd;

	if (store_local_free_bytes_hook)
		return store_local_free_bytes_hook(base->location, out) == 0 ?
			       0 :
			       err_set(e, ERR_IO_ERROR, "%s: cannot read the free space",
				       base->location);
	dirfd = location_fd(local(base), FOR_WRITING, e);
	if (dirfd < 0)
		return -1;
	if (fstatvfs(dirfd, &vfs) != 0)
		return err_set_errno(e, ERR_IO_ERROR, errno, "%s: cannot read the free space",
				     base->location);
	if (!u64_mul(vfs.f_bavail, vfs.f_frsize, out))
		*out = UINT64_MAX;
	return 0;
}

/* Holds the destination for this run (store_output_options.exclusive).
 * A filesystem without flock(2) (some network mounts) holds nothing. */
static int lock_destination(struct store *base, int dirfd, struct err *e)
{
	int how = base->out.exclusive ? LOCK_EX : LOCK_SH;

	if (flock(dirfd, how | LOCK_NB) == 0 || (errno != EWOULDBLOCK && errno != EINTR))
		return 0;
	return err_set(e, ERR_DESTINATION_IN_USE,
		       "%s: another ckptconv run is writing into this destination (%s); wait for"
		       " it to end or stop it, then run again",
		       base->location,
		       base->out.exclusive ? "a conversion or partition" : "a conversion that is not"
									    " partitioned");
}

static int local_ensure(struct store *base, struct err *e)
{
	int dirfd = location_fd(local(base), FOR_CREATING, e);

	return dirfd < 0 || lock_destination(base, dirfd, e) || probe_writable(base, dirfd, e) ?
		       -1 :
		       0;
}

const struct store_backend store_local_backend = {
	.scheme = "file",
	.caps = STORE_CHEAP_READ | STORE_MAPS_VIEWS | STORE_WRITES_IN_CALL | STORE_ATOMIC_RENAME |
		STORE_DIRECTORIES | STORE_FILE_WRITE_LOCK,
	.open = local_open,
	.free = local_free,
	.list = local_list,
	.read = local_read,
	.view = local_view,
	.view_release = local_view_release,
	.writer_open = local_writer_open,
	.writer_write = local_writer_write,
	.writer_commit = local_writer_commit,
	.writer_abort = local_writer_abort,
	.put = local_put,
	.remove = local_remove,
	.stat = local_stat,
	.ensure = local_ensure,
	.free_space = local_free_space,
	.location_kind = store_local_location_kind,
	.canonical = store_local_canonical,
	.same_location = store_local_same_location,
	.identify = local_identify,
	.check_sources = local_check_sources,
	.identities = local_identities,
};

/* SPDX-License-Identifier: MIT */
/*
 * store: where checkpoints live, behind one interface: a local directory
 * (store_local.c) or an object-store prefix (store_s3.c), chosen by the
 * location's scheme.  Reading hands out views of byte ranges (a local store
 * maps a bounded window; a remote store fetches into memory).  Writing goes
 * through writers that keep the output under a temporary name until
 * store_writer_commit() publishes it under its final name.
 *
 * A local store holds a descriptor of its directory, opened once, and does
 * every open, create, rename, fsync, unlink, list and stat relative to it:
 * a directory replaced by a symbolic link after that still means the one
 * opened.  In a process confined to allowed roots (store_local_confine,
 * the daemon's --allow-root), the location must lie inside a root and is
 * opened beneath it, and a name that is a symbolic link is followed only
 * beneath that root (openat2 RESOLVE_BENEATH, else a walk of O_NOFOLLOW
 * opens), checked on the descriptor it yields: a link leading outside
 * fails with forbidden_path naming the file.
 *
 * Threads: a store may be shared by worker threads for store_view,
 * store_read and writes to distinct writers or disjoint ranges of one writer;
 * open/list/prepare/put/remove are called by one thread at a time.
 */
#ifndef CKPTCONV_STORE_H
#define CKPTCONV_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptconv/s3.h"

struct aws_credentials;
struct err;
struct store;
struct store_writer;
struct strvec;

/* STORE_OUTSIDE: a symbolic link that leads outside the allowed roots
 * (confined local stores only); its size is 0. */
enum store_entry_kind { STORE_FILE, STORE_DIR, STORE_OTHER, STORE_OUTSIDE };

struct store_entry {
	char *name;               /* relative to the store's location, owned */
	uint64_t size;
	enum store_entry_kind kind;
};

/* A read-only view of bytes [off, off+len) of one file.  `data` stays valid
 * until store_view_release.  For a local store it is a memory mapping: a
 * file truncated under us raises SIGBUS on access (exec.c turns that into
 * an error naming `file`). */
struct store_view {
	const unsigned char *data;
	size_t len;
	const char *file;         /* the file's name, for errors */
	void *base;               /* backend's: mapping or buffer start */
	size_t base_len;
	const struct store_backend *backend;
};

/* Output options fixed when a destination is prepared (output.h's
 * output_prepare, or store_ensure for a shared one). */
struct store_output_options {
	bool overwrite;           /* allow a destination that holds files */
	bool durable;             /* fsync files and directory before publishing */
	uint64_t bytes_needed;    /* total size of everything to be written */
	/* No other ckptconv run may write into the destination meanwhile (a
	 * conversion that is not partitioned); else it is shared with other
	 * writers (partitions, finalize).  Local: flock(2) of the directory,
	 * exclusive or shared, for the store's life; store_ensure refuses with
	 * destination_in_use while another run holds it the other way. */
	bool exclusive;
};

/* What a backend can do, as bits of store_backend.caps: callers ask these
 * (store_caps, store_location_caps) rather than compare schemes, the way
 * curl's TLS backends announce what they support. */
enum store_cap {
	/* store_read at any offset is as cheap as a view (pread): readers may
	 * fill their own bands rather than hold views. */
	STORE_CHEAP_READ = 1u << 0,
	/* store_view maps the file itself: a file truncated under a view
	 * raises SIGBUS on access. */
	STORE_MAPS_VIEWS = 1u << 1,
	/* writer_write is done with the caller's buffer when it returns, on
	 * the caller's thread: a source view may be written directly, under
	 * the caller's SIGBUS guard. */
	STORE_WRITES_IN_CALL = 1u << 2,
	/* A writer publishes by renaming a temporary file in the location
	 * (store_is_temporary names may be seen in listings). */
	STORE_ATOMIC_RENAME = 1u << 3,
	/* Bytes move over the network: endpoint settings and credentials
	 * (struct store_config) apply. */
	STORE_REMOTE = 1u << 4,
	/* A location exists apart from what it holds (a directory); without
	 * this bit (an object-store prefix) an empty listing means there is
	 * nothing at the location. */
	STORE_DIRECTORIES = 1u << 5,
	/* Writes into one file queue on a lock of that file (a local
	 * filesystem's inode lock): the executor gives its workers output
	 * files of their own.  Without it (an object store, which buffers
	 * each file's unfinished parts) workers take pieces in plan order,
	 * so that few files are unfinished at once. */
	STORE_FILE_WRITE_LOCK = 1u << 6,
};

/* What stores talk to, handed explicitly to store_open_config by whoever
 * opens them (a command from its flags, the daemon per job): no setting
 * lives in the process or a thread.  All zero: the environment's settings
 * and a credentials provider of each store's own. */
struct store_config {
	/* Object store endpoint, region and addressing style; a field not set
	 * falls to the environment (s3.h).  Borrowed strings. */
	struct s3_settings s3;
	/* Object store credentials provider shared by every store opened with
	 * this config (borrowed: each store takes a reference); NULL: each
	 * store makes one from the environment (aws_credentials.h). */
	struct aws_credentials *credentials;
};

/* What one version of a source file is, recorded when the job first opens
 * it (a local file: fstat of its descriptor) or first fetches its bytes
 * (an object: the ETag, and VersionId where the bucket keeps versions, of
 * the answer); a job reads one version of each source file or fails with
 * source_changed (issue of the field: checkpoints are re-uploaded to the
 * same place while jobs read them). */
enum store_identity_kind { STORE_ID_NONE, STORE_ID_FILE, STORE_ID_OBJECT };

#define STORE_ETAG_MAX S3_ETAG_MAX

struct store_identity {
	enum store_identity_kind kind;
	/* STORE_ID_FILE: st_dev and st_ino name the file on this host only;
	 * st_size, st_mtim and st_ctim (nanoseconds since the epoch) change
	 * with any write (ctime also with a touch that sets mtime back). */
	uint64_t dev, ino, size;
	int64_t mtime_ns, ctime_ns;
	/* STORE_ID_OBJECT: as the service sends them ("" when absent). */
	char etag[STORE_ETAG_MAX];
	char version_id[STORE_ETAG_MAX];
};

/* One source and its identity (store_identities). */
struct store_source {
	char *name; /* owned */
	struct store_identity id;
};

struct store_backend {
	const char *scheme;       /* "file" (no scheme) or "s3": for messages */
	unsigned caps;            /* enum store_cap bits */
	int (*open)(const char *location, const struct store_config *cfg, struct store **out,
		    struct err *e);
	void (*free)(struct store *s);
	int (*list)(struct store *s, struct store_entry **out, size_t *n, struct err *e);
	int (*read)(struct store *s, const char *name, uint64_t off, void *buf, size_t len, struct err *e);
	int (*view)(struct store *s, const char *name, uint64_t off, size_t len, struct store_view *v, struct err *e);
	void (*view_release)(struct store_view *v);
	int (*writer_open)(struct store *s, const char *name, uint64_t size, struct store_writer **out, struct err *e);
	int (*writer_write)(struct store_writer *w, uint64_t off, const void *buf, size_t len, struct err *e);
	/* published (may be NULL): the identity of the file as published,
	 * kind STORE_ID_NONE when the backend cannot tell. */
	int (*writer_commit)(struct store_writer *w, struct store_identity *published,
			     struct err *e);
	void (*writer_abort)(struct store_writer *w);
	int (*put)(struct store *s, const char *name, const void *buf, size_t len, struct err *e);
	int (*remove)(struct store *s, const char *name, struct err *e);
	/* Optional (NULL: store_stat falls back to list): size and kind of one
	 * top-level entry, and its identity now into id when not NULL (not
	 * recorded: see identify); source_not_found when absent. */
	int (*stat)(struct store *s, const char *name, struct store_entry *out,
		    struct store_identity *id, struct err *e);
	/* Optional (NULL: nothing to create, room unknown). */
	int (*ensure)(struct store *s, struct err *e);
	int (*free_space)(struct store *s, uint64_t *out, struct err *e);
	/* Optional (NULL: the kind follows from the name, see
	 * store_location_kind): what a location names, before opening it. */
	int (*location_kind)(const char *location, enum store_entry_kind *out, struct err *e);
	/* Optional (NULL: none can be left, as with temporary files that
	 * listings show): discards the unfinished outputs a dead process
	 * left of the files `mine` accepts. */
	int (*abort_unfinished)(struct store *s, bool (*mine)(const char *name, void *arg),
				void *arg, struct err *e);
	/* The location's canonical spelling, malloc'd. */
	char *(*canonical)(const char *location);
	/* Whether two locations of this backend name the same place. */
	bool (*same_location)(const char *a, const char *b);
	/* Optional (NULL: nothing is pinned): the identity of `name` the
	 * store reads under, recorded on first sight. */
	int (*identify)(struct store *s, const char *name, struct store_identity *out,
			struct err *e);
	/* Optional: every file read so far compared with its identity. */
	int (*check_sources)(struct store *s, struct err *e);
	/* Optional: the identities recorded so far, sorted by name. */
	size_t (*identities)(struct store *s, struct store_source **out);
};

/* Common head of every backend's struct store_writer: the generic calls
 * reach the backend through `store`. */
struct store_writer {
	struct store *store;
	char *name;               /* final name, owned by the backend */
	uint64_t size;
	/* The CRC-32C of every range written (crc32c.h), kept by store.c's
	 * generic calls; backends leave it alone. */
	struct store_writer_sums *sums;
};

/* Common head of every backend's struct store. */
struct store {
	const struct store_backend *backend;
	char *location;           /* as given, normalised without trailing '/' */
	struct store_output_options out;
};

/* Opens `location` ("/path", "relative/path" or "s3://bucket/prefix/")
 * with `cfg` (NULL: all zero), which must outlive the call only.
 * Does not require it to exist (a destination may not yet).  Codes:
 * invalid_location (empty, or a scheme this build cannot serve),
 * forbidden_path (a local location outside the roots of a confined
 * process), and the backend's. */
int store_open_config(const char *location, const struct store_config *cfg, struct store **out,
		      struct err *e);
/* store_open_config with a NULL config: the environment's settings. */
int store_open(const char *location, struct store **out, struct err *e);
void store_free(struct store *s);
/* Whether `location` is an object-store location (s3://): true exactly
 * when store_location_caps(location) has STORE_REMOTE.  For request
 * policy (which allow-list applies); store behaviour is asked through
 * the capabilities.  Any thread. */
bool store_is_remote(const char *location);

/* The enum store_cap bits of the store, or of the backend that would
 * serve `location` (NULL or empty: 0).  Any thread. */
unsigned store_caps(const struct store *s);
unsigned store_location_caps(const char *location);

/* What `location` names before it is opened: STORE_FILE (a file, e.g. a
 * single *.safetensors), STORE_DIR, or STORE_OTHER.  A local location is
 * looked at (stat, symbolic links followed: source_not_found,
 * source_unreadable with the errno); an object-store location is judged
 * by its name (a *.safetensors name is a file, anything else a prefix)
 * and never fails. */
int store_location_kind(const char *location, enum store_entry_kind *out, struct err *e);

/* The canonical spelling of `location`, malloc'd: a local location as an
 * absolute, resolved path (as given when it does not resolve); an s3://
 * location with exactly one trailing '/' (none after a *.safetensors
 * name).  Any thread. */
char *store_canonical_location(const char *location);

/* Whether `a` and `b` name the same place of the same backend: local
 * locations that both resolve to one directory or file, s3:// locations
 * equal but for trailing '/'.  Any thread. */
bool store_same_location(const char *a, const char *b);

/* Top-level entries (no recursion), sorted by name.  Codes:
 * source_not_found, source_unreadable, forbidden_path (the location leads
 * outside the allowed roots). */
int store_list(struct store *s, struct store_entry **out, size_t *n, struct err *e);
void store_entries_free(struct store_entry *entries, size_t n);
/* The entry named `name` among the n `entries` (a listing), NULL if none. */
const struct store_entry *store_entries_find(const struct store_entry *entries, size_t n,
					     const char *name);

/* Size and kind of one top-level entry (entry.name is NULL: the caller
 * passes the name), symbolic links followed.  Codes: source_not_found,
 * forbidden_path (it leads outside the allowed roots). */
int store_stat(struct store *s, const char *name, struct store_entry *out, struct err *e);
/* store_stat that also gives the entry's identity as it is now into *id
 * (a local file: fstat; an object: HeadObject's ETag and VersionId; kind
 * STORE_ID_NONE when the backend has none), without recording or holding
 * reads to it (store_identity does that for sources).  For comparing a
 * published output with the identity store_writer_publish gave. */
int store_stat_identity(struct store *s, const char *name, struct store_entry *out,
			struct store_identity *id, struct err *e);

/* Exactly len bytes at off, or an error (file_truncated, io_error,
 * source_not_found, forbidden_path). */
int store_read(struct store *s, const char *name, uint64_t off, void *buf, size_t len, struct err *e);
/* A whole small file (at most max bytes), NUL-terminated; *out malloc'd. */
int store_read_file(struct store *s, const char *name, size_t max, char **out, size_t *len, struct err *e);
int store_view(struct store *s, const char *name, uint64_t off, size_t len, struct store_view *v, struct err *e);
void store_view_release(struct store_view *v);

/* Creates a temporary output of exactly `size` bytes (space reserved). */
int store_writer_open(struct store *s, const char *name, uint64_t size, struct store_writer **out, struct err *e);
int store_writer_write(struct store_writer *w, uint64_t off, const void *buf, size_t len, struct err *e);
/* Makes the output durable (if o.durable) and publishes it under its final
 * name; frees the writer, even on error. */
int store_writer_commit(struct store_writer *w, struct err *e);
/* store_writer_commit that also gives the identity of the file as
 * published into *published (NULL: not wanted): a local file's fstat taken
 * after the rename that published it (rename changes its ctime), so a
 * later store_stat_identity equal to it means nothing wrote to the file,
 * renamed it or changed its metadata since (userspace cannot set ctime);
 * an object's ETag (and VersionId) from the PutObject or
 * CompleteMultipartUpload answer, which S3 changes with every write.
 * Kind STORE_ID_NONE when the backend could not tell. */
int store_writer_publish(struct store_writer *w, struct store_identity *published,
			 struct err *e);
/* The CRC-32C of the whole output, combined from the CRCs computed as each
 * range was written (store_writer_write computes them on the caller's
 * thread before the backend sees the bytes).  Once every byte is written,
 * before commit.  Code internal_error when a range is missing or written
 * twice. */
int store_writer_crc32c(struct store_writer *w, uint32_t *out, struct err *e);
/* Discards the temporary output; frees the writer. NULL is a no-op. */
void store_writer_abort(struct store_writer *w);
/* Discards what writers of a process that died left unfinished under
 * the location for the names `mine` accepts, where listings do not show
 * it: an object store's multipart uploads in progress (listed with
 * ListMultipartUploads under the prefix, each aborted; a server without
 * the call is logged and left alone).  A local store's temporary files
 * are in its listing instead: nothing to do here.  Codes: the store's. */
int store_abort_unfinished(struct store *s, bool (*mine)(const char *name, void *arg), void *arg,
			   struct err *e);
/* Publishes a small file atomically under `name`. */
int store_put(struct store *s, const char *name, const void *buf, size_t len, struct err *e);
/* Removes a published file; a missing file (or location) is not an
 * error. */
int store_remove(struct store *s, const char *name, struct err *e);

/* Takes over the output options `o` (NULL: keep the present ones) and
 * makes sure the location exists and can be written, leaving what it
 * holds alone (output_prepare decides about that; the partitions of one
 * conversion share a destination and call this alone).  A local location
 * is created with its missing parents (beneath its root when confined),
 * kept open and probed with a temporary file; nothing to create for an
 * object store.  Codes: destination_not_writable, forbidden_path. */
int store_ensure(struct store *s, const struct store_output_options *o, struct err *e);
/* Bytes free for output: a local location's filesystem (statvfs, or
 * store_local_free_bytes_hook), UINT64_MAX for an object store.  Code
 * io_error. */
int store_free_space(struct store *s, uint64_t *out, struct err *e);

/* ---- source identities ----
 *
 * A store records the identity (struct store_identity) of each file it
 * reads the first time it opens or fetches it, and holds every later read
 * of that file to it: a local store compares its descriptor's fstat on
 * every view and in store_check_sources; an object store sends If-Match
 * with the recorded ETag on every ranged GET, and a 412 (or an answer with
 * another ETag) fails the read.  Either way the code is source_changed,
 * naming the file and what differs.  Threads: any thread, like
 * store_read. */

/* The identity `name` is read under, recorded now if it was not yet (a
 * local file is opened, an object asked with HEAD).  Codes: the store's
 * (source_not_found, source_unreadable, forbidden_path, s3_*).  A backend
 * that records nothing gives kind STORE_ID_NONE. */
int store_identity(struct store *s, const char *name, struct store_identity *out,
		   struct err *e);
/* Holds `name` to `id`, an identity recorded before the store was opened
 * (a job suspended and resumed on this host; a partition manifest,
 * across_hosts, written by a pod that may run on another node):
 * source_changed when the file's identity (recorded, else taken now)
 * differs, compared with store_identity_differs.  An id of kind
 * STORE_ID_NONE holds to nothing. */
int store_pin(struct store *s, const char *name, const struct store_identity *id,
	      bool across_hosts, struct err *e);
/* Compares every file read so far with its recorded identity (a local
 * store: one fstat per file; an object store: nothing left to do, its
 * GETs were conditional); source_changed naming the first that differs.
 * Called after the last read of the files an output holds and before
 * publishing it (exec before each commit, convert before the index). */
int store_check_sources(struct store *s, struct err *e);
/* The identities recorded so far, sorted by name (*out malloc'd, free
 * with store_sources_free); the count. */
size_t store_identities(struct store *s, struct store_source **out);
void store_sources_free(struct store_source *v, size_t n);
/* Sorts v (n entries) by name; for backends filling store_identities. */
void store_sources_sort(struct store_source *v, size_t n);

/* Whether `now` differs from `was`; if so, a phrase naming what differs
 * ("mtime 1700000000.000000001 -> 1700000000.500000000") in what[len].
 * Identities of different kinds differ; STORE_ID_NONE on either side
 * differs from nothing.  ETag, and VersionId when both have one, are
 * compared for objects.  For local files across_hosts compares what holds
 * for the same file seen from another node (size and mtime), not st_dev
 * and st_ino, which name a file on one host's mount only, nor ctime,
 * which differs between copies of one file made with their mtimes kept
 * (rsync -a to each node's disk).  Pure, any thread. */
bool store_identity_differs(const struct store_identity *was, const struct store_identity *now,
			    bool across_hosts, char *what, size_t len);
/* Sets source_changed naming location/name and `what`; returns -1. */
int store_changed_error(const struct store *s, const char *name, const char *what,
			struct err *e);

/* Sets forbidden_path naming location/name as a file that leads outside
 * the allowed roots (for an entry of kind STORE_OUTSIDE); returns -1. */
int store_outside_error(const struct store *s, const char *name, struct err *e);

/* ---- temporary names ----
 *
 * An output of the local store is written as STORE_TMP_PREFIX <name>
 * [.<pid>.<serial> for a put] STORE_TMP_SUFFIX and renamed to <name> once
 * complete.  The name is hidden and does not end in ".safetensors", so no
 * reader takes an unfinished file for weights; ckpt ignores every name
 * with the prefix, which also marks the ".ckptconv-tmp.<name>" files of
 * earlier versions as unfinished output.  Pure functions, any thread. */
#define STORE_TMP_PREFIX ".ckptconv-tmp."
#define STORE_TMP_SUFFIX ".tmp"

/* The temporary name of `name`; `unique` (NULL: none) is inserted before
 * the suffix.  malloc'd. */
char *store_temporary_name(const char *name, const char *unique);
/* Whether `entry` is a temporary name (this version's or an earlier one's). */
bool store_is_temporary(const char *entry);
/* Whether `entry` is a temporary name of final name `name`: with or
 * without the suffix, with or without a ".<pid>.<serial>" part. */
bool store_is_temporary_of(const char *entry, const char *name);

extern const struct store_backend store_local_backend;
extern const struct store_backend store_s3_backend;

/* Confines every local store opened from now on to the directories in
 * `roots` (absolute and resolved, as paths_root gives them; an empty list
 * allows no local location), or lifts the confinement (roots NULL, the
 * CLI's default).  A location must lie inside a root (forbidden_path
 * otherwise) and the files of a store resolve beneath the root that holds
 * its location: a symbolic link into another root is refused too.  Main
 * thread, while no local store is open.  Code usage_error when a root
 * cannot be opened. */
int store_local_confine(const struct strvec *roots, struct err *e);

/* Test seam: when set, the local store reads free space through it. */
extern int (*store_local_free_bytes_hook)(const char *dir, uint64_t *free_bytes);
/* Test seam: when set, the local store's write-behind calls it instead of
 * sync_file_range(2) (same arguments and result: 0, or -1 with errno), to
 * stand for a disk whose writeback fails. */
extern int (*store_local_sync_file_range_hook)(int fd, int64_t offset, int64_t nbytes,
					       unsigned int flags);
/* Test seam: when true, confined names are resolved by the O_NOFOLLOW walk
 * even where the kernel has openat2. */
extern bool store_local_force_walk;

#endif

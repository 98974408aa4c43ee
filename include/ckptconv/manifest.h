/* SPDX-License-Identifier: MIT */
/*
 * manifest: what a conversion records in its destination so that an
 * interrupted run can be resumed and a finished one checked
 * (docs/manifest.md).  Two kinds of small JSON files, neither of them a
 * checkpoint file:
 *
 *  - the plan manifest (PARTITION_MANIFEST, "ckptconv-plan.json", built
 *    by partition.h's partition_manifest_build): the source's identity
 *    (its file names, sizes and header digests), the options that shape
 *    the plan, the plan digest and the planned files with the SHA-256 of
 *    their header bytes.  Written before any other file, never rewritten.
 *  - the checksum record ("ckptconv-sums.json", or "ckptconv-sums.I.json"
 *    for partition I): for every file published so far, its size and the
 *    CRC-32C of its bytes (crc32c.h: computed while the bytes are
 *    written, in any order).  Rewritten whole (store_put, atomic) after
 *    every file published, so at any moment it names only files that are
 *    complete under their final names.
 *
 * The record also keeps each file's identity as published (a local file's
 * device, inode, size, mtime and ctime after the rename that published it;
 * an object's ETag and VersionId), so a resumed conversion keeps a file
 * whose identity has not changed since without reading it again, and
 * reads again (CRC-32C of all its bytes) only the others; `ckptconv
 * verify --checksums` reads every recorded file again whatever its
 * identity.
 *
 * Threads: manifest_sums_note from any thread (it holds the record's
 * lock); everything else from one thread at a time per destination.
 *
 * Codes: manifest_mismatch (a record ckptconv did not write, or of
 * another plan), checksum_mismatch, and the store's.
 */
#ifndef CKPTCONV_MANIFEST_H
#define CKPTCONV_MANIFEST_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckptconv/store.h"
#include "ckptconv/util.h"

struct ckpt;
struct err;
struct plan;

#define MANIFEST_SUMS_NAME "ckptconv-sums.json"
/* Largest checksum record accepted when reading one back. */
#define MANIFEST_SUMS_MAX (64u << 20)

/* The checksum record's name: MANIFEST_SUMS_NAME for a conversion that is
 * not partitioned (partition_count 0), "ckptconv-sums.I.json" for
 * partition I.  malloc'd. */
char *manifest_sums_name(uint32_t partition_index, uint32_t partition_count);
/* Whether `name` is one of the files this module describes (the plan
 * manifest or a checksum record): never a checkpoint's own file, so a
 * conversion reading the destination as a source does not copy it. */
bool manifest_is_record(const char *name);

/* The source's identity for the plan manifest: [{"name", "size",
 * "header_sha256"}] per weight file of `ck`, the digest taken over the
 * parsed header (each tensor's name, dtype, shape and data_offsets in data
 * order, and the header length), so it needs no read. */
json_t *manifest_source_files_json(const struct ckpt *ck);

/* ---- identities ---- */

/* Adds a file's identity (store.h) to the JSON object `o` describing it:
 * a local file's "size", "mtime_ns" and "ctime_ns" (nanoseconds since the
 * epoch), "dev" and "ino" (st_dev and st_ino as decimal strings: they may
 * exceed JSON's exact integers); an object's "etag" and, when the bucket
 * keeps versions, "version_id".  Nothing for STORE_ID_NONE.  Used for the
 * plan manifest's source files and the checksum record's files. */
void manifest_identity_to_json(json_t *o, const struct store_identity *id);
/* The identity in `o` (the members above): 1 and *id filled, 0 when `o`
 * records none (*id of kind STORE_ID_NONE), -1 when the members are there
 * but malformed. */
int manifest_identity_from_json(const json_t *o, struct store_identity *id);

/* ---- the checksum record ---- */

struct manifest_sum {
	char *name;
	uint64_t size;
	uint32_t crc32c;
	/* The file as published (store_writer_publish: a local file's inode,
	 * size, mtime and ctime taken after the rename that published it; an
	 * object's ETag and VersionId from the PUT's or the multipart
	 * completion's answer); kind STORE_ID_NONE when the store gave none or
	 * the record was written without identities. */
	struct store_identity id;
	/* A local file published without fsync (--no-fsync): the boot
	 * (/proc/sys/kernel/random/boot_id) whose page cache may be all that
	 * holds its bytes; "" when it was fsynced or is not a local file.  A
	 * killed process leaves the page cache to the next run of the same
	 * boot; a machine that crashed boots anew, and the file's unchanged
	 * identity then proves nothing about its bytes. */
	char boot_id[BOOT_ID_MAX];
};

struct manifest_sums {
	char plan_digest[65];
	size_t n, cap;
	struct manifest_sum *files; /* lock */
	/* Where manifest_sums_note writes it (NULL: nowhere), borrowed. */
	struct store *dst;
	char *name;
	pthread_mutex_t lock;
};

/* An empty record of the plan with digest `plan_digest`, to be written as
 * `name` (copied) into `dst` (borrowed, may be NULL). */
struct manifest_sums *manifest_sums_new(const char *plan_digest, struct store *dst,
					const char *name);
void manifest_sums_free(struct manifest_sums *s);
/* The record's JSON text, malloc'd. */
char *manifest_sums_build(struct manifest_sums *s);
/* Code manifest_mismatch when `json` is not a record ckptconv wrote
 * (`where` names the file in the message). */
int manifest_sums_parse(const char *json, const char *where, struct manifest_sums **out,
			struct err *e);
/* Reads the record `name` of `dst`; *out NULL (and 0) when there is none. */
int manifest_sums_read(struct store *dst, const char *name, struct manifest_sums **out,
		       struct err *e);
/* The entry for `name`, or NULL.  Not while another thread notes. */
const struct manifest_sum *manifest_sums_find(const struct manifest_sums *s, const char *name);
/* Records (or replaces) `name`'s size, CRC-32C and identity as published
 * (`id`, copied; NULL: none), then writes the whole record to s->dst
 * (store_put) when it has one.  Any thread.  Codes: the store's. */
int manifest_sums_note(struct manifest_sums *s, const char *name, uint64_t size, uint32_t crc32c,
		       const struct store_identity *id, struct err *e);
/* manifest_sums_note of a file just published, `durable` when it was
 * fsynced before its rename: a local file published without fsync is
 * noted with this boot's id (manifest_sum.boot_id).  Any thread. */
int manifest_sums_note_published(struct manifest_sums *s, const char *name, uint64_t size,
				 uint32_t crc32c, const struct store_identity *id, bool durable,
				 struct err *e);
/* manifest_sums_note of an entry of another record (all its members: a
 * partition's record merged by finalize).  Any thread. */
int manifest_sums_note_entry(struct manifest_sums *s, const struct manifest_sum *entry,
			     struct err *e);
/* Drops `name`'s entry, if any (a file removed after a failure); the
 * record is not written.  Any thread. */
void manifest_sums_forget(struct manifest_sums *s, const char *name);
/* Writes the record as it is now (an empty one, or the files kept). */
int manifest_sums_write(struct manifest_sums *s, struct err *e);

/* The CRC-32C of file `name` of `s`, `size` bytes, read again in 4 MiB
 * chunks.  Codes: the store's (file_truncated when it is shorter). */
int manifest_file_crc32c(struct store *s, const char *name, uint64_t size, uint32_t *out,
			 struct err *e);

/* ---- resuming ---- */

/* Which of plan p's output files (those with skip[i] false; skip NULL:
 * all) the destination already holds complete: listed in `entries` with
 * the planned size and recorded in `sums` with that size, and then either
 *  - unchanged since published: its identity now (store_stat_identity:
 *    local inode, size, mtime and ctime; an object's ETag from HeadObject)
 *    equals the one `sums` recorded when it was published, so its bytes are
 *    those whose CRC-32C was computed as they were written and are not
 *    read again (a local file's header bytes are still compared with the
 *    plan's, an object's are not fetched); or
 *  - of another identity (copied, touched, restored, its mode changed) or
 *    recorded without one: header bytes equal to the plan's and a CRC-32C,
 *    read again whole, equal to the record's.
 * The files are checked on up to `threads` threads at once (exec_each).
 * kept[i] is set for those kept (p->nfiles entries, zeroed by the caller),
 * each is noted in `into` (the new record; manifest_sums_note) with its
 * recorded size and CRC-32C and its identity now, and logged at info level
 * as "kept: unchanged since published" or "kept: checksum re-read";
 * *files and *bytes count them.  A file that fails a check is named in a
 * warning log line and left to be written again.  Codes: the store's
 * (io_error, s3_*) when a file cannot be read or asked about. */
int manifest_keep_files(struct store *dst, const struct plan *p, const bool *skip,
			const struct manifest_sums *sums, const struct store_entry *entries,
			size_t n, unsigned threads, struct manifest_sums *into, bool *kept,
			uint64_t *files, uint64_t *bytes, struct err *e);

/* ---- checking ---- */

/* Reads again every file each checksum record of `location` names and
 * compares its size and CRC-32C with the record; *checked counts the files
 * and *bytes their bytes; then checks that the conversion finished: every
 * file the plan manifest lists (its "files", and the index when "index" is
 * true) present and in MANIFEST_SUMS_NAME.  Codes: checksum_mismatch naming
 * the first recorded file that differs (or is missing);
 * destination_incomplete naming the first planned file missing or not
 * recorded, or when the manifest is partitioned (not finalized), or there
 * is no manifest or no record; manifest_mismatch for a record or manifest
 * ckptconv did not write; and the store's. */
int manifest_verify(struct store *dst, uint64_t *checked, uint64_t *bytes, struct err *e);

#endif

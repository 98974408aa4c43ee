/* SPDX-License-Identifier: MIT */
/*
 * partition: the scope of a conversion run, and one conversion split across
 * N processes (Kubernetes Indexed Job pods, daemon jobs) that share nothing
 * but the destination.  Every partition computes the same plan; the plan's
 * output files are split into N groups, balanced by bytes and chosen
 * deterministically, and partition I writes only group I.  The split is
 * made once per prepared conversion (partition_scope_init) and handed to
 * convert, which writes the files the scope names and publishes only when
 * the scope says so.  Every partition also writes the same plan manifest
 * (PARTITION_MANIFEST: source, options, plan digest, planned files with
 * the SHA-256 of their header bytes, and the identity of every source file
 * the plan was made from) into the destination, so partitions of
 * different plans cannot mix, a partition (or finalize) that finds a
 * source file changed since the manifest was written refuses it
 * (source_changed), and finalize (finalize.h, the publish phase) knows
 * what must be there.
 *
 * Threads: every function from one thread at a time per destination;
 * nothing here keeps global state.
 *
 * Codes: invalid_partition, manifest_mismatch, partition_incomplete,
 * destination_not_empty, insufficient_space, source_changed, plus the store's and
 * output_prepare's.
 */
#ifndef CKPTCONV_PARTITION_H
#define CKPTCONV_PARTITION_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ckptconv/util.h"

struct err;
struct store_config;
struct store_source;
struct plan;
struct store;
struct store_output_options;
struct convert_options;

/* The manifest's name in the destination (not a *.safetensors name, so no
 * reader takes it for weights). */
#define PARTITION_MANIFEST "ckptconv-plan.json"
/* Largest manifest accepted when reading one back. */
#define PARTITION_MANIFEST_MAX (64u << 20)

/* "I/N" with 0 <= I < N (I counts from 0, like JOB_COMPLETION_INDEX).
 * Code invalid_partition. */
int partition_parse(const char *text, uint32_t *index, uint32_t *count, struct err *e);
/* 0 when 0 <= index < count (count >= 1); else invalid_partition. */
int partition_check(uint32_t index, uint32_t count, struct err *e);

/* The group of each of the plan's files (p->nfiles entries, malloc'd):
 * files by size descending (ties by plan order) each go to the group with
 * the fewest bytes so far (ties to the lowest group).  count >= 1. */
uint32_t *partition_groups(const struct plan *p, uint32_t count);
/* For exec_options.skip_file: true for every file not in group `index`
 * (p->nfiles entries, malloc'd). */
bool *partition_skip_files(const struct plan *p, uint32_t index, uint32_t count);

/* ---- the scope of a run ---- */

/* What one run of a plan writes.  count 0: the whole plan, and the run
 * publishes it (copies the non-weight files, publishes the index last);
 * else partition `index` of `count`: only its group's files, published
 * later by finalize. */
struct partition_scope {
	uint32_t index, count;
	bool *skip_file; /* p->nfiles entries (exec_options.skip_file); NULL: every file */
	bool publishes;	 /* the run copies the non-weight files and publishes the index */
};
/* Computes the scope of partition `index` of `count` of plan p (count 0:
 * the whole plan); the byte-balanced groups are computed here, once.
 * Release with partition_scope_fini. */
void partition_scope_init(struct partition_scope *s, const struct plan *p, uint32_t index,
			  uint32_t count);
void partition_scope_fini(struct partition_scope *s);
/* Whether the run of scope s writes the plan's file `file`. */
bool partition_scope_writes(const struct partition_scope *s, size_t file);

/* Prepares `dst` for the run of scope s over plan p (built from `source`,
 * read through `src`, with options o), before any data moves.  The whole plan: output_prepare
 * with `so`, and with so->overwrite the manifest an abandoned partitioned
 * conversion left goes too.  A partition: partition_prepare_output.
 * Codes: theirs. */
int partition_scope_prepare_output(const struct partition_scope *s, struct store *dst,
				   const struct plan *p, const char *source, struct store *src,
				   const struct convert_options *o,
				   const struct store_output_options *so, struct err *e);

/* ---- the plan manifest ---- */

struct partition_file {
	char *name;
	uint64_t size;
	char header_sha256[65]; /* hex SHA-256 of the header bytes (prefix + JSON) */
};

struct partition_manifest {
	char *source;	/* where the partitions read (absolute path or s3://) */
	uint32_t count; /* partitions */
	char plan_digest[65];
	/* Options that shape the plan (what finalize plans again with). */
	char *to;    /* "native" or "hf" */
	char *dtype; /* dtype_choice_name */
	uint32_t ep_size, ep_rank;
	uint64_t max_shard_size;
	char *exclude;	/* NULL = none */
	bool allow_gaps; /* a consolidation's gaps are zeros (convert_options) */
	bool has_index; /* the output has an index (CKPT_INDEX_NAME) */
	size_t nfiles;
	struct partition_file *files;
	/* The source files the plan was made from, as they were then (names
	 * relative to the source's directory; none in a manifest of an
	 * earlier version). */
	size_t nsources;
	struct store_source *sources;
	/* The boot the identities were taken in ("" when not recorded:
	 * partitions, earlier versions). */
	char boot_id[BOOT_ID_MAX];
};

/* The manifest's JSON text (malloc'd, NUL-terminated): the same bytes for
 * the same source, options, count, plan and source identities.  `source`
 * as given to the conversion; recorded resolved and absolute (local) or
 * with exactly one trailing '/' (an s3:// prefix), so every partition
 * records it alike.  `sources` (n entries, may be NULL when 0): the
 * identities the source's store recorded while planning
 * (store_identities). */
char *partition_manifest_build(const struct plan *p, const char *source,
			       const struct convert_options *o, uint32_t count,
			       const struct store_source *sources, size_t nsources);
/* partition_manifest_build of a conversion whose source identities were all
 * taken on this machine in boot `boot_id` (boot_id_read; NULL or "":
 * not said, as partitions, which run anywhere): recorded as "boot_id", so
 * that a resume in the same boot compares device, inode and ctime too, not
 * only size and mtime. */
char *partition_manifest_build_in_boot(const struct plan *p, const char *source,
				       const struct convert_options *o, uint32_t count,
				       const struct store_source *sources, size_t nsources,
				       const char *boot_id);
/* Code manifest_mismatch when the text is not a manifest ckptconv wrote. */
int partition_manifest_parse(const char *json, const char *where, struct partition_manifest **out,
			     struct err *e);
void partition_manifest_free(struct partition_manifest *m);
/* Options that rebuild the manifest's plan (exclude points into m). */
int partition_manifest_options(const struct partition_manifest *m, struct convert_options *o,
			       struct err *e);
/* manifest_mismatch unless `found` (in the destination `where`) describes
 * the same plan as `ours`: same digest, source and partition count;
 * source_changed when a source file both name has another identity in
 * `ours` (store_identity_differs across hosts: pods of one job may run on
 * different nodes).  The message names what `found` holds by its
 * partition count ("a conversion" when 0, "a conversion in N partitions")
 * and, when `overwrite_replaces` (the caller would replace the destination
 * with --overwrite instead of --resume), says so; else to remove it. */
int partition_manifest_compare(const struct partition_manifest *found,
			       const struct partition_manifest *ours, const char *where,
			       bool overwrite_replaces, struct err *e);
/* Reads and parses the destination's manifest; *out NULL (and 0) when
 * there is none. */
int partition_manifest_read(struct store *dst, struct partition_manifest **out, struct err *e);

/* ---- a partition's destination ---- */

/* Whether plan p writes a file named `name`: an output file, a copied
 * non-weight file, a file put from memory, or the index when it has one. */
bool partition_is_planned(const struct plan *p, const char *name);

/* Prepares `dst` for the partition of scope s (s->count > 0) of plan `p`
 * (built from `source`, read through `src`, with options `o`), before any data moves and
 * without touching other partitions' output: a manifest of another plan is
 * refused (manifest_mismatch, even with overwrite); files that belong to
 * no partition of this plan are refused (destination_not_empty) unless
 * so->overwrite, which removes a previous checkpoint's index and weights
 * when no manifest is there yet; a local destination needs room for this
 * partition's files (insufficient_space).  Then the manifest is written
 * (atomically, harmless when other partitions write it at the same
 * time). */
int partition_prepare_output(struct store *dst, const struct partition_scope *s,
			     const struct plan *p, const char *source, struct store *src,
			     const struct convert_options *o, const struct store_output_options *so,
			     struct err *e);

/* partition_incomplete naming (some of) the planned files that are missing
 * or incomplete: absent, another size, or header bytes whose SHA-256 is not
 * the planned one. */
int partition_check_files(struct store *dst, const struct partition_manifest *m, struct err *e);

#endif

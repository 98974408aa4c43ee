/* SPDX-License-Identifier: MIT */
/*
 * finalize: the publish phase of a partitioned conversion (partition.h),
 * run once every partition has written its group.  It plans again from the
 * manifest's source and options, checks that every planned file is present
 * and complete, copies the non-weight files, writes the plan's in-memory
 * files, publishes the index last, merges the partitions' checksum records
 * and makes the manifest a finished unpartitioned conversion's (manifest.h); on a
 * destination it already finished it validates the checkpoint and succeeds
 * again.  Everything it published goes again when a step fails.
 *
 * Threads: one caller per destination at a time; nothing here keeps
 * global state.
 */
#ifndef CKPTCONV_FINALIZE_H
#define CKPTCONV_FINALIZE_H

#include <stdbool.h>

struct err;
struct conversion_result;
struct store_config;

struct finalize_options {
	bool durable; /* fsync what finalize writes (default true) */
	/* Optional: vets the manifest's source before it is read (the daemon
	 * applies its allowed roots and prefixes); nonzero with e set refuses. */
	int (*check_source)(const char *source, void *arg, struct err *e);
	void *check_source_arg;
	/* What the stores talk to (store.h); NULL: the environment's
	 * settings.  Borrowed for the call. */
	const struct store_config *store;
};
/* Defaults: durable, no source check, the environment's store settings. */
void finalize_options_init(struct finalize_options *o);

/* Finishes the partitioned conversion in `dst` (local path or s3://),
 * see the top of this file; o NULL takes the defaults.  Codes:
 * partition_incomplete (files missing, or neither a manifest nor a
 * checkpoint), manifest_mismatch (a manifest that is not ckptconv's, or a
 * source that no longer gives the planned output), source_changed (a
 * source file is not the version the manifest records, before anything is
 * published or while finalize copies it), and those of the store,
 * ckpt_open, conversion_prepare and o->check_source.  r
 * (conversion_result.h) is initialised in any case and filled on success:
 * the checkpoint's files (index last), tensors, bytes and file_bytes of
 * the whole checkpoint, finalize set, the manifest's source (NULL, and
 * already_finished set, when the destination was a finished checkpoint
 * already) and warnings (source files not copied).  Not timed; the caller
 * frees r with conversion_result_fini. */
int finalize_destination(const char *dst, const struct finalize_options *o,
			 struct conversion_result *r, struct err *e);

#endif

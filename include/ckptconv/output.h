/* SPDX-License-Identifier: MIT */
/*
 * output: what a checkpoint destination holds and the rules for writing
 * one, above the store (which knows bytes and names, not checkpoints).
 * The file names of a HuggingFace checkpoint (its index, a single file,
 * the shards), and the destination policy: a destination that holds files
 * is refused unless replacing was asked for; replacing removes the
 * previous checkpoint index first, so that what remains never looks like
 * a finished checkpoint; everything to be written must fit before any
 * data moves.
 *
 * Threads: one caller per destination store at a time.
 */
#ifndef CKPTCONV_OUTPUT_H
#define CKPTCONV_OUTPUT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct err;
struct plan;
struct store;
struct store_entry;
struct store_output_options;
struct strvec;

/* The checkpoint's file names are ckpt.h's (CKPT_INDEX_NAME,
 * CKPT_SINGLE_NAME, CKPT_SHARD_PATTERN). */

/* Whether `name` is a file a checkpoint consists of: the index, the
 * single file or a shard.  Pure; any thread. */
bool output_is_checkpoint_file(const char *name);

/* The destination's top-level entries (store_list), none when there is
 * nothing at the location yet (an absent directory, an empty object
 * prefix).  *out is freed with store_entries_free.  Codes: the store's
 * but source_not_found. */
int output_list(struct store *dst, struct store_entry **out, size_t *n, struct err *e);

/* Removes the checkpoint `entries` (the destination's listing) show: the
 * index first, then the single file and every shard, so that an
 * interrupted removal never leaves what looks like a finished checkpoint.
 * Other files stay.  A file already gone is not an error.  Codes: the
 * store's (destination_not_writable, io_error, s3_*). */
int output_remove_previous(struct store *dst, const struct store_entry *entries, size_t n,
			   struct err *e);

/* Checks and readies the destination before any data moves, taking over
 * the options `o` (store_ensure): it is created and writable; unfinished
 * output of an earlier run (store_is_temporary names) goes; it holds no
 * other file unless o->overwrite (destination_not_empty, naming up to
 * three); it has room for o->bytes_needed, counting the previous
 * checkpoint's files an overwrite replaces as free (insufficient_space,
 * naming needed and free bytes); with o->overwrite the previous checkpoint
 * is removed (output_remove_previous).  Codes: also
 * destination_not_writable, forbidden_path, io_error and the object
 * store's. */
int output_prepare(struct store *dst, const struct store_output_options *o, struct err *e);

/* Whether `dst` has room for `needed` bytes, `freed` bytes (files the
 * output replaces) counted as free: insufficient_space naming `what`
 * ("the output", "this partition"), the bytes needed and the bytes free
 * otherwise.  An object store always has room.  Code: also io_error. */
int output_check_space(struct store *dst, const char *what, uint64_t needed, uint64_t freed,
		       struct err *e);

/* Copies the non-weight file `name` (config.json, tokenizer files, ...)
 * from `src` to `dst` under the same name, published whole or not at all:
 * a small one (at most 16 MiB) read at once and put, a larger one streamed
 * through a writer in 4 MiB chunks, `cancelled` (NULL: never) checked
 * between chunks.  Codes: the stores', cancelled. */
int output_copy_file(struct store *src, struct store *dst, const char *name,
		     const atomic_bool *cancelled, struct err *e);

/* Copies each of `files` in order (output_copy_file), `cancelled` (NULL:
 * never) checked before each, noting each name in `published` before it
 * is copied, so that output_remove_published after a failure covers it.
 * Codes: output_copy_file's. */
int output_copy_files(struct store *src, struct store *dst, const struct strvec *files,
		      const atomic_bool *cancelled, struct strvec *published, struct err *e);

/* Writes the files plan `p` holds in memory (plan_put: a consolidation's
 * config.json and metadata) with store_put, `cancelled` (NULL: never)
 * checked before each, each name noted in `published` first.  Codes: the
 * store's, cancelled. */
int output_put_files(struct store *dst, const struct plan *p, const atomic_bool *cancelled,
		     struct strvec *published, struct err *e);

/* Publishes the index (`index_json`, a plan's) last of all: its presence
 * says the checkpoint is complete.  Noted in `published` first.  Codes:
 * the store's. */
int output_publish_index(struct store *dst, const char *index_json, struct strvec *published,
			 struct err *e);

/* Removes `name` from `dst` after a failed run.  A file that cannot be
 * removed is named in a warning (location, name and why), so that what a
 * failure leaves is said; the run's own error stays the one reported.
 * Returns 0, or -1 when the file is still there. */
int output_remove_after_failure(struct store *dst, const char *name);

/* Removes what `published` names, the last published first (so the index,
 * published last, goes first), each by output_remove_after_failure: for a
 * failed run. */
void output_remove_published(struct store *dst, const struct strvec *published);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * convert: one conversion from start to finish, shared by the CLI and the
 * daemon.  conversion_prepare() opens and validates the source, picks the
 * adapter, detects the layout and builds the plan (no writes);
 * conversion_run() checks the destination (writable, empty unless
 * overwrite, room for the output), executes the plan on a pool, copies the
 * non-weight files and publishes the index last.  On failure or
 * cancellation everything it published is removed, so nothing that looks
 * finished is left.
 *
 * Threads: prepare/run/free from one thread; cancel, progress and the
 * tensor-state accessors from any thread while run goes on.
 */
#ifndef CKPTCONV_CONVERT_H
#define CKPTCONV_CONVERT_H

#include <stdbool.h>
#include <stdint.h>

#include "ckptconv/adapter.h"
#include "ckptconv/convert_options.h"
#include "ckptconv/exec.h"
#include "ckptconv/plan.h"

struct err;
struct store_config;
struct conversion;
struct conversion_result;


/* Codes: everything ckpt_open and the adapter return, plus
 * already_in_layout and convert_options_check's (invalid_option,
 * invalid_partition). */
int conversion_prepare(const char *src, const char *dst, const struct convert_options *o,
		       struct conversion **out, struct err *e);
void conversion_free(struct conversion *c);

const struct plan *conversion_plan(const struct conversion *c);

/* A prepared conversion that waits before it runs (a queued job) need not
 * hold its source open.  conversion_suspend notes the top-level entries of
 * the source's location (name, size, kind), listed just after planning,
 * and closes the source's store, its descriptors and connections with it.
 * conversion_resume, on the thread that will run it, opens the store again
 * and lists it: 0 when the entries are as noted, so the plan still
 * describes the source and conversion_run may follow; 1 when they differ
 * (a file added, removed, resized, or now a link leading outside the
 * allowed roots, or a file planning read that is no longer the version it
 * read: another inode, mtime or ctime, another ETag): the source changed
 * and must be prepared again.  The versions are then pinned in the store
 * (store_pin): a change made while the conversion runs fails it with
 * source_changed.  Resuming a conversion that is not
 * suspended returns 0 at once.  Codes: store_open's and store_list's
 * (source_not_found, source_unreadable, forbidden_path). */
int conversion_suspend(struct conversion *c, struct err *e);
int conversion_resume(struct conversion *c, struct err *e);

/* Writes the output; returns 0 when the destination holds the finished
 * checkpoint.  Warnings (skipped files) are in conversion_warnings().  On
 * failure (cancelled included) what the run published is removed, and a
 * local destination directory the run itself created (not a partition's)
 * is removed when left empty; one that existed before is never removed. */
int conversion_run(struct conversion *c, struct exec_pool *pool, struct err *e);
void conversion_cancel(struct conversion *c);
/* Removes from the destination what a run of c may have left when its
 * process died: the index first, then its output files (a partition's own
 * group only), the copied non-weight files (only for a run that
 * publishes), and the temporary files of all these; nothing else.  For a run that can no
 * longer be finished (the daemon's "interrupted" jobs).  Not together with
 * conversion_run.  Codes: the store's. */
int conversion_clean_destination(struct conversion *c, struct err *e);
const struct strvec *conversion_warnings(const struct conversion *c);
/* The output files a resumed run kept from an interrupted one (convert
 * options' resume, manifest.h) and their bytes; 0 for a run that kept
 * none, or before run.  Thread: the runner's, after conversion_run. */
void conversion_kept(const struct conversion *c, uint64_t *files, uint64_t *bytes);

/* What a successful run of c writes, into r (conversion_result.h; r
 * initialised by the caller, its seconds and optional members left as
 * they are): the files in publish order, tensors, bytes and file_bytes of
 * what this run writes (a partition's own group), the warnings, and for a
 * partition which one it is.  Also for a prepared conversion that is not
 * run (a dry run).  Any thread once prepared. */
void conversion_describe_result(const struct conversion *c, struct conversion_result *r);
/* Tensors and tensor data bytes a run of c writes (a partition's own
 * group): what its progress will count to.  Any thread once prepared. */
void conversion_totals(const struct conversion *c, uint64_t *tensors, uint64_t *bytes);

/* Progress of a run in progress (all zero before run starts). */
void conversion_progress(const struct conversion *c, struct exec_progress *out);
enum tensor_state conversion_tensor_state(const struct conversion *c, size_t tensor);
size_t conversion_in_flight(const struct conversion *c, uint32_t *out, size_t max);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * convert_options: what a conversion is asked to do, one struct for the
 * CLI, the HTTP API, the daemon's job records and the partition manifest;
 * the rules between its members checked in one place; one JSON form.
 *
 * The JSON form is the API's JobOptions (docs/openapi.yaml) plus "to":
 *   "to":                   "native" | "hf"
 *   "dtype":                "auto" | "keep" | "bf16" | "f16" | "f32"
 *   "max_shard_size":       bytes (integer)
 *   "exclude":              POSIX ERE string | null
 *   "expert_parallel":      {"size": n, "rank": r} | null
 *   "max_bytes_per_second": bytes per second (integer) | null (no cap)
 *   "overwrite":            true | false
 *   "resume":               true | false (written only when true)
 *   "partition":            {"index": i, "count": n} | null
 *   "io":                   "auto" | "mmap" | "pread" (written only when not auto)
 * Written with sizes as integers; read with sizes as integers or in the
 * size syntax ("5GB", util.h size_parse), which requests, and the job
 * records of earlier versions, spell them in.
 *
 * Threads: any; pure over its arguments.
 */
#ifndef CKPTCONV_CONVERT_OPTIONS_H
#define CKPTCONV_CONVERT_OPTIONS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "ckptconv/adapter.h"
#include "ckptconv/plan.h"

struct err;
struct store_config;

/* Longest option path a JSON error names ("expert_parallel.size"), with
 * the caller's prefix. */
#define CONVERT_FIELD_MAX 128

/* How a local source is read (exec.h, exec_read_mode): mapped views of each
 * op's window, bands copied with pread, or auto (pread bands: on the VMs we
 * measured, touching freshly mapped pages cost more than copying them;
 * docs/architecture.md).  A remote source is always read into fetched
 * views, whatever this says. */
enum convert_io { CONVERT_IO_AUTO = 0, CONVERT_IO_MMAP, CONVERT_IO_PREAD };

/* "auto", "mmap", "pread"; parse returns -1 for anything else. */
const char *convert_io_name(enum convert_io io);
int convert_io_parse(const char *text);

struct convert_options {
	enum layout to;
	enum dtype_choice dtype;
	uint32_t ep_size, ep_rank;     /* 0 = off */
	uint64_t max_shard_size;       /* 0 = PLAN_MAX_SHARD_SIZE_DEFAULT */
	const char *exclude;	       /* NULL = none; not owned */
	uint64_t max_bytes_per_second; /* 0 = unlimited */
	bool overwrite;
	/* Keep what an interrupted run of the same plan published and write
	 * only the rest (manifest.h); on a destination without a plan
	 * manifest, a normal run. */
	bool resume;
	bool durable; /* false = --no-fsync */
	/* A consolidation writes zeros where no chunk holds an element, as
	 * Automodel's tool does, instead of refusing (chunk_gap). */
	bool allow_gaps;
	/* Partitioned conversion (partition.h): write only group
	 * partition_index of partition_count, no index; count 0 = whole. */
	uint32_t partition_index, partition_count;
	enum convert_io io; /* how a local source is read */
	/* What the source's and destination's stores talk to (store.h);
	 * NULL: the environment's settings.  Borrowed: it must outlive every
	 * conversion prepared with these options.  Not part of the JSON form. */
	const struct store_config *store;
};

/* Defaults: no target (to be set), dtype auto, durable, everything else
 * off. */
void convert_options_init(struct convert_options *o);

/* The rules between the members: adapter_options_check's (target, dtype
 * and expert parallelism; a dtype with to hf excepted, which only the
 * source decides: a consolidation takes it, convert refuses it for any
 * other source), partition_check's (index below count), and resume
 * excluding overwrite (one keeps an interrupted run's files, the other
 * removes them; *field "resume").
 * Codes: invalid_option, invalid_partition.  *field (may be NULL) names
 * the member at fault as in the JSON form ("expert_parallel.rank",
 * "partition"); a static string. */
int convert_options_check(const struct convert_options *o, const char **field, struct err *e);

/* Which members the JSON form carries: to_json writes them, from_json
 * reads them (and leaves the others as they are). */
enum {
	CONVERT_JSON_TO = 1 << 0,   /* to */
	CONVERT_JSON_PLAN = 1 << 1, /* dtype, max_shard_size, exclude,
				     * expert_parallel: what shapes the plan */
	CONVERT_JSON_RUN = 1 << 2,  /* max_bytes_per_second, overwrite,
				     * resume, partition, io: how it is run */
	/* Reading only: a form written earlier (a record, a manifest), where
	 * a max_shard_size of 0 stands for the default. */
	CONVERT_JSON_STORED = 1 << 3,
};

/* The JSON form of o's `members` (a new object, in the order above;
 * max_shard_size 0 written as the default it stands for). */
json_t *convert_options_to_json(const struct convert_options *o, unsigned members);

/* Reads `members` of the JSON form from obj (an object, or NULL for none:
 * members absent or
 * null keep their defaults) into o, which convert_options_init set up.
 * Each member is checked alone (type, range, size syntax, the exclude
 * pattern's bounds); the rules between them are convert_options_check's.
 * Members obj has beyond these are the caller's business, except inside
 * expert_parallel and partition.  o->exclude points into obj.  On error
 * `field` (CONVERT_FIELD_MAX bytes, may be NULL) holds the member's path
 * after `prefix` ("options." gives "options.expert_parallel.size").
 * Codes: missing_field, unknown_field, invalid_field (io not one of auto,
 * mmap, pread among them), invalid_size, invalid_exclude, invalid_partition. */
int convert_options_from_json(const json_t *obj, unsigned members, const char *prefix,
			      struct convert_options *o, char *field, struct err *e);

#endif

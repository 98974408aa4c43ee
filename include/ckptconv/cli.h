/* SPDX-License-Identifier: MIT */
/*
 * cli: the subcommands of the ckptconv binary.  Each takes its own argv
 * (argv[0] is the subcommand's name) and returns the process exit code:
 * 0 success, 1 conversion or validation error, 2 usage error.
 */
#ifndef CKPTCONV_CLI_H
#define CKPTCONV_CLI_H

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "ckptconv/convert.h"

struct store_config;
struct err;

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

int cli_convert(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_verify(int argc, char **argv);
int cli_serve(int argc, char **argv);
int cli_healthcheck(int argc, char **argv);
int cli_finalize(int argc, char **argv);
int cli_jobs(int argc, char **argv);

/* Prints e to stderr as one line, its message escaped as by
 * buf_append_printable(), or as {"error":{...}} on stdout if json. */
void cli_print_error(const struct err *e, int json);
/* Prints doc as one line of JSON on `out` (json_dumps flags), then flushes:
 * DEL and the C1 controls U+0080-U+009F, which JSON allows raw in a string
 * and jansson writes so, are written as \u escapes as well, so that the
 * line is safe on a terminal. */
void cli_print_json(FILE *out, const json_t *doc, size_t flags);

/* Helpers shared by the subcommands (cli.c). */
/* EXIT_USAGE for codes that mean a bad command line, else EXIT_FAILED. */
int cli_exit_code(const struct err *e);
/* Prints a usage_error naming `command` (as cli_print_error) and returns
 * EXIT_USAGE. */
int cli_usage_error(const char *command, int json, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Whether --json is among the arguments (before any "--"), so errors met
 * while parsing them are printed the way the caller asked. */
bool cli_wants_json(int argc, char **argv);
/* The usage error for getopt_long's ':' (a missing value) or any other
 * unknown option `arg`; returns EXIT_USAGE. */
int cli_option_error(const char *command, int json, int opt, const char *arg);
/* A whole decimal number in [min, max]; -1 otherwise. */
int cli_parse_uint(const char *text, unsigned long long min, unsigned long long max,
		   unsigned long long *out);
/* Reads a bearer token from `path` (the daemon's --token-file and the
 * jobs client's): at most 4096 bytes, trailing white space dropped, no NUL.
 * *out is the caller's (wipe it with explicit_bzero before freeing).
 * Code: usage_error naming the file. */
int cli_read_token(const char *path, char **out, struct err *e);
/* The daemon's URL for a listen address "HOST:PORT", "[V6]:PORT" or
 * ":PORT" read from the environment variable named `variable`
 * (CKPTCONV_LISTEN, CKPTCONV_HEALTH_LISTEN), followed by `path`
 * ("/healthz", or "" for the base): a wildcard host (0.0.0.0, ::, * or
 * none) becomes loopback.  Code: invalid_option naming the variable. */
int cli_listen_url(const char *variable, const char *listen, const char *path, char *url,
		   size_t size, struct err *e);

/* The --s3-* flags of the subcommands that open checkpoints, which override
 * the AWS environment for s3:// locations: put CLI_S3_LONG_OPTIONS in the
 * getopt_long table, hand each option to cli_s3_flag, and open every
 * store with the config cli_store_config builds. */
enum { CLI_OPT_S3_ENDPOINT_URL = 0x1000, CLI_OPT_S3_REGION, CLI_OPT_S3_ADDRESSING_STYLE };
/* clang-format off */
#define CLI_S3_LONG_OPTIONS                                                              \
	{"s3-endpoint-url", required_argument, NULL, CLI_OPT_S3_ENDPOINT_URL},           \
	{"s3-region", required_argument, NULL, CLI_OPT_S3_REGION},                       \
	{"s3-addressing-style", required_argument, NULL, CLI_OPT_S3_ADDRESSING_STYLE}
#define CLI_S3_USAGE                                                                     \
	"  --s3-endpoint-url URL  S3 endpoint (default: AWS_ENDPOINT_URL_S3, AWS)\n"        \
	"  --s3-region REGION     S3 region (default: AWS_REGION, us-east-1)\n"            \
	"  --s3-addressing-style path|virtual|auto\n"                                       \
	"                         S3 URL style (default: auto, path with an endpoint)\n"
/* clang-format on */
struct cli_s3_flags {
	const char *endpoint_url, *region, *addressing_style;
};
/* Records opt if it is an --s3-* flag; returns whether it was. */
int cli_s3_flag(struct cli_s3_flags *f, int opt, const char *value);
/* The store configuration of one command run: the flags' S3 settings
 * (borrowed from argv) over the environment's, and one credentials
 * provider for every store the command opens, configured from the
 * environment now and asked for credentials only when an s3:// store
 * opens.  EXIT_USAGE after printing the error (s3_config) when a value is
 * not valid (*out is then empty).  Release with cli_store_config_fini. */
int cli_store_config(const struct cli_s3_flags *f, struct store_config *out, int json);
void cli_store_config_fini(struct store_config *c);

/* The options of `convert`, which `jobs submit` takes too (one parser, so
 * both read a command line the same way).  Option ids: convert's from
 * CLI_OPT_CONVERT, the --s3-* flags from CLI_OPT_S3_ENDPOINT_URL, a
 * command's own extra options from CLI_OPT_EXTRA. */
enum { CLI_OPT_CONVERT = 0x100, CLI_OPT_EXTRA = 0x2000 };
/* clang-format off */
#define CLI_CONVERT_OPTIONS_USAGE                                                        \
	"  --to native|hf         target layout (required)\n"                              \
	"  --ep-size N            expert-parallel size: write only one rank's experts\n"   \
	"  --ep-rank R            expert-parallel rank, 0 <= R < N (with --ep-size)\n"     \
	"  --dtype D              grouped expert tensors' dtype (to native): auto (the\n"  \
	"                         model's dtype in config.json, default), bf16, f16,\n"   \
	"                         f32, keep; consolidating a NeMo Automodel sharded\n"   \
	"                         checkpoint to hf: auto restores the original dtypes,\n" \
	"                         bf16, f16, f32, f64 cast, keep keeps the saved ones\n" \
	"  --max-shard-size SIZE  largest shard's tensor data (default 5GB; KB/MB/GB are\n" \
	"                         powers of 1000, KiB/MiB/GiB of 1024)\n"                 \
	"  --exclude REGEX        leave out output tensors whose names match (POSIX ERE)\n" \
	"  --max-rate RATE        cap the source read rate, bytes per second (200MB)\n"    \
	"  --overwrite            replace a checkpoint or files already in DST\n"          \
	"  --io auto|mmap|pread   how a local source is read: mapped views or bands\n"     \
	"                         copied with pread (auto, default: pread)\n"            \
	"  --resume               keep the files an interrupted run of the same plan\n"   \
	"                         published in DST (unchanged since published, or\n" \
	"                         their CRC-32C read again), write the rest\n" \
	"  --partition I/N        write only partition I (0 <= I < N) of the output files,\n" \
	"                         no index; `ckptconv finalize DST` finishes once all N\n" \
	"                         partitions have succeeded\n"                         \
	"  --allow-gaps           NeMo Automodel sharded source: write zeros where no\n"  \
	"                         chunk holds an element, as Automodel does (else chunk_gap)\n"
/* clang-format on */
struct cli_convert_args {
	const char *command; /* as named in usage errors: "convert", "jobs submit" */
	struct convert_options options;
	unsigned threads; /* 0: not given */
	bool have_ep_size, have_ep_rank, have_dtype, have_to, have_threads;
	bool dry_run, json, help;
	struct cli_s3_flags s3;
	const char *src, *dst; /* argv's */
};
/* A command's options beyond convert's: a getopt_long table ending with a
 * zero entry, ids from CLI_OPT_EXTRA, and the function that takes each
 * (returns 0, or EXIT_USAGE after printing a usage error). */
struct cli_extra_options {
	const struct option *options;
	int (*apply)(void *ctx, int opt, const char *value, bool json);
	void *ctx;
};
/* Parses convert's command line (argv[0] is the command's name) plus
 * `extra` (may be NULL) into *a: exactly SRC and DST, and the combinations
 * convert allows.  Returns 0 (also for --help: a->help), or EXIT_USAGE
 * after printing the usage error, --json respected. */
int cli_convert_parse(const char *command, int argc, char **argv,
		      const struct cli_extra_options *extra, struct cli_convert_args *a);

#endif

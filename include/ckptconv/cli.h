/* SPDX-License-Identifier: MIT */
/*
 * cli: the subcommands of the ckptconv binary.  Each takes its own argv
 * (argv[0] is the subcommand's name) and returns the process exit code:
 * 0 success, 1 conversion or validation error, 2 usage error.
 */
#ifndef CKPTCONV_CLI_H
#define CKPTCONV_CLI_H

#include <stdbool.h>
#include <stdio.h>

struct err;

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

int cli_convert(int argc, char **argv);
int cli_inspect(int argc, char **argv);
int cli_verify(int argc, char **argv);
int cli_fixture(int argc, char **argv);
int cli_serve(int argc, char **argv);
int cli_healthcheck(int argc, char **argv);
int cli_finalize(int argc, char **argv);

/* Prints e to stderr as one line, or as {"error":{...}} on stdout if json. */
void cli_print_error(const struct err *e, int json);

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

/* The --s3-* flags of the subcommands that open checkpoints, which override
 * the AWS environment for s3:// locations: put CLI_S3_LONG_OPTIONS in the
 * getopt_long table, hand each option to cli_s3_flag, and call
 * cli_s3_apply before opening anything. */
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
/* Makes the flags given the process's S3 settings; EXIT_USAGE after
 * printing the error (s3_config) when a value is not valid. */
int cli_s3_apply(const struct cli_s3_flags *f, int json);

#endif

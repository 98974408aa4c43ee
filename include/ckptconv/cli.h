/* SPDX-License-Identifier: MIT */
/*
 * cli: the subcommands of the ckptconv binary.  Each takes its own argv
 * (argv[0] is the subcommand's name) and returns the process exit code:
 * 0 success, 1 conversion or validation error, 2 usage error.
 */
#ifndef CKPTCONV_CLI_H
#define CKPTCONV_CLI_H

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
/* A whole decimal number in [min, max]; -1 otherwise. */
int cli_parse_uint(const char *text, unsigned long long min, unsigned long long max,
		   unsigned long long *out);

#endif

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

/* Prints e to stderr as one line, or as {"error":{...}} on stdout if json. */
void cli_print_error(const struct err *e, int json);

#endif

/* SPDX-License-Identifier: MIT */
/*
 * main: the ckptconv binary.  Answers --version and --help and hands the
 * rest of the command line to the subcommand it names, with the process's
 * object store credentials provider in place; unknown commands are usage
 * errors (exit 2).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "ckptconv/cli.h"
#include "ckptconv/log.h"
#include "fixture/fixture.h"

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
	{"convert", cli_convert, "convert a checkpoint between the HF and the native layout"},
	{"finalize", cli_finalize, "finish a conversion that ran in partitions"},
	{"inspect", cli_inspect, "describe a checkpoint and validate its headers"},
	{"verify", cli_verify, "compare two checkpoints tensor by tensor"},
	{"fixture", cli_fixture, "write a synthetic Ling 2.0 checkpoint"},
	{"serve", cli_serve, "run the HTTP conversion service"},
	{"healthcheck", cli_healthcheck, "check that a running service answers"},
	{"jobs", cli_jobs, "submit, list, follow and cancel the service's jobs"},
};

static void print_usage(FILE *out)
{
	size_t i;

	fprintf(out, "Usage: ckptconv COMMAND [OPTIONS] ...\n"
		     "       ckptconv --version | --help | COMMAND --help\n\n"
		     "Converts Ling 2.0 (BailingMoeV2) checkpoints between the HuggingFace layout\n"
		     "and NeMo Automodel's native layout.\n\nCommands:\n");
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
	fprintf(out,
		"\nExit status: 0 success, 1 conversion or validation error, 2 usage error.\n");
}

static const struct command *find_command(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

int main(int argc, char **argv)
{
	const struct command *cmd;

	/* A closed pipe or socket must be an error to handle, not a death;
	 * so must a write past the file size limit (RLIMIT_FSIZE, ulimit -f):
	 * it then fails with EFBIG, reported and cleaned up like any error. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
	log_init(LOG_INFO, -1);
	if (argc < 2) {
		print_usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("ckptconv %s\n", PACKAGE_VERSION);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		if (argc > 2 && find_command(argv[2])) {
			char *help_argv[] = {argv[2], (char *)"--help", NULL};

			return find_command(argv[2])->run(2, help_argv);
		}
		print_usage(stdout);
		return EXIT_OK;
	}
	cmd = find_command(argv[1]);
	if (!cmd) {
		fprintf(stderr,
			"ckptconv: usage_error: unknown command '%s' (see 'ckptconv --help')\n",
			argv[1]);
		return EXIT_USAGE;
	}
	return cmd->run(argc - 1, argv + 1);
}

/* SPDX-License-Identifier: MIT */
/* cli_healthcheck: not written yet. */
#include "ckptconv/cli.h"

int cli_healthcheck(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return EXIT_USAGE;
}

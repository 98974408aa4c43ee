/* SPDX-License-Identifier: MIT */
/* cli_serve: not written yet. */
#include "ckptconv/cli.h"

int cli_serve(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	return EXIT_USAGE;
}

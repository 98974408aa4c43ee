/* SPDX-License-Identifier: MIT */
/* main: dispatches to the subcommands. (placeholder) */
#include <stdio.h>
int main(void)
{
	return 2;
}

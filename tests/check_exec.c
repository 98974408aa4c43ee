/* SPDX-License-Identifier: MIT */
/* check_exec: not written yet. */
#include <check.h>
#include "testutil.h"
int main(void)
{
	return 1;
}

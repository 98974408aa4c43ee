/* SPDX-License-Identifier: MIT */
/* check_plan: not written yet. */
#include <check.h>
#include "testutil.h"
int main(void)
{
	return 1;
}

/* SPDX-License-Identifier: MIT */
/* check_util: not written yet. */
#include <check.h>
#include "testutil.h"
int main(void)
{
	return 1;
}

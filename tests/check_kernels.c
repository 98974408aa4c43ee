/* SPDX-License-Identifier: MIT */
/* check_kernels: not written yet. */
#include <check.h>
#include "testutil.h"
int main(void)
{
	return 1;
}

/* SPDX-License-Identifier: MIT */
/* check_convert: not written yet. */
#include <check.h>
#include "testutil.h"
int main(void)
{
	return 1;
}

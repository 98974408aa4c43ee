/* SPDX-License-Identifier: MIT */
/* check_safetensors: not written yet. */
#include <check.h>
#include "testutil.h"
int main(void)
{
	return 1;
}

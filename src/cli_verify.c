/* SPDX-License-Identifier: MIT */
/* cli_verify: not written yet. */
#include "ckptconv/err.h"

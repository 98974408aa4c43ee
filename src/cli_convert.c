/* SPDX-License-Identifier: MIT */
/* cli_convert: not written yet. */
#include "ckptconv/err.h"

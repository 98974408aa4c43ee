/* SPDX-License-Identifier: MIT */
/* cli_inspect: not written yet. */
#include "ckptconv/err.h"

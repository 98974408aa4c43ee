/* SPDX-License-Identifier: MIT */
/* verify: not written yet. */
#include "ckptconv/err.h"

/* SPDX-License-Identifier: MIT */
/* plan: not written yet. */
#include "ckptconv/err.h"

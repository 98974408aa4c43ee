/* SPDX-License-Identifier: MIT */
/* progress: not written yet. */
#include "ckptconv/err.h"

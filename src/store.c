/* SPDX-License-Identifier: MIT */
/* store: not written yet. */
#include "ckptconv/err.h"

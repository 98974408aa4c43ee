/* SPDX-License-Identifier: MIT */
/* store_local: not written yet. */
#include "ckptconv/err.h"

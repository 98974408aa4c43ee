/* SPDX-License-Identifier: MIT */
/* store_s3: not written yet. */
#include "ckptconv/err.h"

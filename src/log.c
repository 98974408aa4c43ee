/* SPDX-License-Identifier: MIT */
/* log: not written yet. */
#include "ckptconv/err.h"

/* SPDX-License-Identifier: MIT */
/* convert: not written yet. */
#include "ckptconv/err.h"

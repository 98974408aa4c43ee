/* SPDX-License-Identifier: MIT */
/* exec: not written yet. */
#include "ckptconv/err.h"

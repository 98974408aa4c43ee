/* SPDX-License-Identifier: MIT */
/* fixture: not written yet. */
#include "ckptconv/err.h"

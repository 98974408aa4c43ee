/* SPDX-License-Identifier: MIT */
/* adapter: not written yet. */
#include "ckptconv/err.h"

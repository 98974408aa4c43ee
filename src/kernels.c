/* SPDX-License-Identifier: MIT */
/* kernels: not written yet. */
#include "ckptconv/err.h"

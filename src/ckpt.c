/* SPDX-License-Identifier: MIT */
/* ckpt: not written yet. */
#include "ckptconv/err.h"

/* SPDX-License-Identifier: MIT */
/* safetensors: not written yet. */
#include "ckptconv/err.h"

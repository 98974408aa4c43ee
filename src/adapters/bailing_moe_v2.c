/* SPDX-License-Identifier: MIT */
/* bailing_moe_v2: not written yet. */
#include "ckptconv/err.h"

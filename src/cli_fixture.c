/* SPDX-License-Identifier: MIT */
/* cli_fixture: not written yet. */
#include "ckptconv/err.h"

// SPDX-License-Identifier: MIT
//
// npm: where the test suite's npm packages live ($CKPTCONV_NPM_DIR, default
// /var/cache/ckptconv-test-npm, filled from tests/package.json by
// scripts/install-deps.sh test), and a require() that loads from there.
'use strict';

const path = require('path');
const { createRequire } = require('module');

const npmDir = process.env.CKPTCONV_NPM_DIR || '/var/cache/ckptconv-test-npm';

module.exports = {
  npmDir,
  npmRequire: createRequire(path.join(path.resolve(npmDir), 'package.json')),
};

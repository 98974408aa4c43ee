// SPDX-License-Identifier: MIT
//
// checklib: what the Node.js checkers of the test suite share: where its
// npm packages live ($CKPTCONV_NPM_DIR, default /var/cache/ckptconv-test-npm,
// filled from tests/package.json by scripts/install-deps.sh test) with a
// require() that loads from there, and a collector of findings.
'use strict';

const path = require('path');
const { createRequire } = require('module');

const npmDir = process.env.CKPTCONV_NPM_DIR || '/var/cache/ckptconv-test-npm';

// Counts checks and keeps "WHERE: MESSAGE" for each that failed.
class Findings {
  constructor() {
    this.list = [];
    this.checks = 0;
    this.check = this.check.bind(this);
  }

  check(ok, where, message) {
    this.checks++;
    if (!ok) this.list.push(`${where}: ${message}`);
    return ok;
  }
}

module.exports = {
  npmDir,
  npmRequire: createRequire(path.join(path.resolve(npmDir), 'package.json')),
  Findings,
};

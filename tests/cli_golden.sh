#!/bin/bash
# cli_golden: not written yet.
exit 1

#!/bin/bash
# cli_bad_input: not written yet.
exit 1

#!/bin/bash
# cli_roundtrip: not written yet.
exit 1

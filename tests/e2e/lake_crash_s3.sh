#!/usr/bin/env bash
# The exactly-once crash loop of lake_crash.sh against an S3 lake (moto on 127.0.0.1):
# SIGKILLs of the backend, the worker or the server land anywhere in a batch's upload too.
LAKE_CRASH_TARGET=s3 exec bash "$(dirname "$0")/lake_crash.sh"

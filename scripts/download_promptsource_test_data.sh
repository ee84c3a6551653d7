#!/usr/bin/env bash
# The authors' PromptSource zero-shot test file, saved as ./promptsource_test.jsonl
# (the default --data_file of cappy_promptsource.py). Run from the repository root.
set -euo pipefail
source "$(dirname "$0")/_gdrive.sh"
gdrive_fetch 1OjmNOavE6hd4eOAEbW45Clp7Kz3N947T promptsource_test.jsonl "PromptSource test file"
echo "Test file: ./promptsource_test.jsonl"

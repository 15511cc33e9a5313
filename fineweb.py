"""FineWeb-Edu → token shards, with the defaults of build-nanogpt's ``fineweb.py``.

    python fineweb.py                       # sample-10BT, 100M-token shards, shard 0 = val, ./edu_fineweb10B
    python fineweb.py --max-tokens 1e9      # any `gpt2 prepare` option may be added

This is ``gpt2 prepare fineweb-edu`` (see ``gpt2 prepare --help`` and docs/data.md); unlike the seed it
writes llm.c ``.bin`` shards plus a ``manifest.json``, resumes after an interruption, and keeps
document order whatever the number of workers.
"""

import os
import sys

from gpt2.cli import main

SEED_DEFAULTS = ["--subset", "sample-10BT", "--shard-tokens", "100M", "--val-shards", "1"]
LOCAL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "edu_fineweb10B")  # as the seed

if __name__ == "__main__":
    user_args = sys.argv[1:]
    defaults = list(SEED_DEFAULTS)
    if any(arg.startswith("--val-tokens") for arg in user_args):  # --val-tokens replaces the seed's val shard
        defaults = defaults[:4]
    out = [] if any(arg.startswith("--out") for arg in user_args) else ["--out", LOCAL_DIR]
    # later options win in argparse, so the user's own flags override the seed defaults
    sys.exit(main(["prepare", "fineweb-edu", *defaults, *out, *user_args]))

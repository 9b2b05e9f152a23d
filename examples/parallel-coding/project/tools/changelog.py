"""Stand-in coding agent: appends one line to the changelog (two tasks do, so they must not run
at the same time, and the second starts from the first's commit)."""

import sys
from pathlib import Path

with Path("CHANGELOG.md").open("a") as changelog:
    changelog.write(f"- {' '.join(sys.argv[1:])}\n")
print("changelog updated")

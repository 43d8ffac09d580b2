"""Names a command line lists and checks before anything is built: the seven policies and what --profiles takes.

Standard library only, so that a command's parser (and its --help) imports nothing heavy.
"""

from __future__ import annotations

PROFILES_OPTION_HELP = ("profile file, or the name of one in scheduler/profiles/: provisional (literature estimates), "
                        "measured-local (what `run_testbed.py profile` wrote) (default: the committed measured "
                        "scheduler/profiles/default.yaml)")
"""The help of every command's --profiles option: what `scheduler.profiles.resolve_profile_path` accepts."""

POLICY_NAMES: tuple[str, ...] = (
    "closest",
    "load-balancing",
    "farthest",
    "cheaper",
    "random-proportional-latency",
    "random-proportional-load",
    "least-impedance",
)
"""The static policies, in the order ASET's actions index them."""
ASET = "aset"
"""The policy name that stands for an ASET agent (`--policy aset --agent FILE`)."""
ALL = "all"
"""The policy name that asks a command for every static policy in turn (`simulate --policy all`)."""

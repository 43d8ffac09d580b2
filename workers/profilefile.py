"""The profile file's records and reader/writer, kept importable here for callers not yet moved: the format
is owned by scheduler.profiles (one schema, one reader, one writer). Import from there."""

from scheduler.profiles import (
    PROFILE_VERSION,
    ModelProfile,
    ProfileFile,
    RuntimeProfile,
    read_profile,
    write_profile,
)

__all__ = ["PROFILE_VERSION", "ModelProfile", "ProfileFile", "RuntimeProfile", "read_profile", "write_profile"]

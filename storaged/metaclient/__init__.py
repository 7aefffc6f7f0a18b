"""A typed client of the meta role (see client.py); what every other package uses to talk
to it."""

from .client import (
    INDEPENDENT_OF_BATCHES,
    LEAVES_DIRECTORIES_ALONE,
    REPEATABLE,
    MetaClient,
    MetaFeatures,
)
from .results import (
    ATTR_KEYS,
    Applied,
    Attr,
    BackupInfo,
    ClusterInfo,
    ClusterStatus,
    DirGrant,
    FsckRepair,
    FsckReport,
    Invalidations,
    Numbers,
    RepairStatus,
    Server,
    Volume,
    VolumeHealth,
    VolumeUsage,
)

__all__ = [
    "ATTR_KEYS",
    "INDEPENDENT_OF_BATCHES",
    "LEAVES_DIRECTORIES_ALONE",
    "REPEATABLE",
    "Applied",
    "Attr",
    "BackupInfo",
    "ClusterInfo",
    "ClusterStatus",
    "DirGrant",
    "FsckRepair",
    "FsckReport",
    "Invalidations",
    "MetaClient",
    "MetaFeatures",
    "Numbers",
    "RepairStatus",
    "Server",
    "Volume",
    "VolumeHealth",
    "VolumeUsage",
]

"""A typed client of the meta role (see client.py); what every other package uses to talk
to it."""

from .client import LEAVES_DIRECTORIES_ALONE, REPEATABLE, MetaClient, MetaFeatures
from .results import (
    ATTR_KEYS,
    Attr,
    BackupInfo,
    ClusterInfo,
    ClusterStatus,
    FsckRepair,
    FsckReport,
    Invalidations,
    RepairStatus,
    Server,
    Volume,
    VolumeHealth,
    VolumeUsage,
)

__all__ = [
    "ATTR_KEYS",
    "LEAVES_DIRECTORIES_ALONE",
    "REPEATABLE",
    "Attr",
    "BackupInfo",
    "ClusterInfo",
    "ClusterStatus",
    "FsckRepair",
    "FsckReport",
    "Invalidations",
    "MetaClient",
    "MetaFeatures",
    "RepairStatus",
    "Server",
    "Volume",
    "VolumeHealth",
    "VolumeUsage",
]

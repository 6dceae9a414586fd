"""Data layer: manifests, dataset discovery, fetching, the feature cache."""

from tympan.data.manifest import BadFile, Clip, Manifest

__all__ = ["BadFile", "Clip", "Manifest"]

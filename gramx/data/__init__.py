"""Data: manifests, loading each modality's values into batches with presence masks, tar shards."""

from gramx.data.loading import Collator, ErrorLog, ManifestDataset, RowLoader
from gramx.data.manifest import DataError, Manifest, Row, read_manifest

__all__ = ["Collator", "DataError", "ErrorLog", "Manifest", "ManifestDataset", "Row", "RowLoader", "read_manifest"]

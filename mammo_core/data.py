"""Loading a collection: the reader its `data.layout` names (mammo_core/registry.py
LAYOUTS; the readers live in mammo_core/readers/) returns a `Dataset`."""
from __future__ import annotations

from pathlib import Path

from mammo_core.config import DataConfig
from mammo_core.dataset import Dataset
from mammo_core.errors import DataError
from mammo_core.registry import LAYOUTS


def load_dataset(root: str | Path, config: DataConfig) -> Dataset:
    """Returns the collection at `root`, read as `config.layout` says (folders, cbis_npy, mias).

    Raises DataError naming the folder or file at fault (see each layout's reader).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder does not exist: {root}")
    return LAYOUTS.load(config.layout)(root, config)

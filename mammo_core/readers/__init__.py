"""One module per collection layout, each with a reader `(root, DataConfig) -> Dataset`
registered in mammo_core/registry.py LAYOUTS: class folders, CBIS-DDSM NumPy pairs,
mini-MIAS."""

"""Layer 1, foundation: the presets (``config``), atomic file writes and YAML files (``files``), and the package
versions a run records (``versions``). Imports nothing from the other layers of :mod:`xaiutils`."""

"""CUDA C kernel sources (read as text through importlib.resources; nothing to import here)."""

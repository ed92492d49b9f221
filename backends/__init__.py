"""Backends: render an optimised IR graph into an artifact directory.

Each backend package exposes `build(graph, opts, out_dir) -> dict` (extra manifest entries,
including "runtime", the executor that runs the artifact). Backends never import each other.
"""

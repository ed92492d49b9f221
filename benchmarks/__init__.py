"""Benchmarks: scripts that measure etch side by side with its peers and write JSON
(`etch bench`, see `benchmarks.run`)."""

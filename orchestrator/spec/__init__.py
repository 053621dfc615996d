"""Stack files: read, interpolate, merge, normalize, validate, graph.

Pure code: nothing here touches the kernel, and nothing needs root.
"""

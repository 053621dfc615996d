"""The container runtime: the only layer of stack that touches the kernel."""

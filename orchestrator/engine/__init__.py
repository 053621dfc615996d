"""The stackd engine: the API, the reconciler and the supervision of running stacks."""

"""stack: a declarative multi-container orchestrator with its own runtime."""

__version__ = "0.1.0"

"""sbrjax: LLM-enhanced session-based recommendation in JAX/Flax."""

__version__ = "0.1.0"

"""openai-exporter: scheduled OpenAI API probes exported as Prometheus metrics."""

__version__ = "0.1.0"

"""gradus: from labeled text to a fine-tuned model in production, step by step."""

__version__ = "0.1.0"

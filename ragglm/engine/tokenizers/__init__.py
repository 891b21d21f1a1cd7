"""Tokenizers, chat formats and stop strings."""

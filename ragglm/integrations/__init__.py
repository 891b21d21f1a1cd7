"""Adapters that plug ragglm into other frameworks."""

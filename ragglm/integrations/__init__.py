"""Adapters that let other ecosystems (LangChain) use ragglm natively."""

__all__: list[str] = []

"""Loading: model names to files, checkpoint files to tensors in our naming, tensors to a model."""

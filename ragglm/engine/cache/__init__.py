"""KV kept across prompts: the in-memory prefix cache and its on-disk block store."""

"""Model-making: corpus, token shards, training, evaluation and benchmarks.

Never imported at run time by the engine or the language server."""

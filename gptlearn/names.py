"""The bundled models' names, in one place (a module without torch, so the CLI starts fast)."""

OFFLINE_MODEL = "gptlearn-mini"  # the bundled language model: load_model()'s offline choice and the commands' default
OFFLINE_EMBEDDER = "gptlearn-embed"  # the bundled sentence embedder (docs/gptlearn-embed.md)

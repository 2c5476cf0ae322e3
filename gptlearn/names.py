"""The bundled models' names, in one place (a module without torch, so the CLI starts fast)."""

# the bundled language model (docs/gptlearn-english.md): load_model()'s offline choice and the commands' default
OFFLINE_MODEL = "gptlearn-english"
OFFLINE_EMBEDDER = "gptlearn-embed"  # the bundled sentence embedder (docs/gptlearn-embed.md)

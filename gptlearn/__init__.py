"""gptlearn: a small, fast, readable GPT-2 in PyTorch, and the course that teaches it.

>>> import gptlearn
>>> model = gptlearn.load_model()                 # GPT-2 if reachable, else the bundled gptlearn-english
>>> logits, cache = model.run_with_cache("The big red car drove quickly")
>>> cache["pattern", 0].shape                     # (B, H, T, T)

Importing gptlearn never imports matplotlib, plotly or transformers.
"""
from .config import GPTConfig, PRESETS
from .devices import autocast, device, resolve_device
from .hooks import ActivationCache, HookPoint
from .attention import CausalSelfAttention
from .kv_cache import KVCache
from .model import GPT, MLP, Block, from_pretrained, load_model
from . import fast  # noqa: F401 (imported to register the "fast" implementation GPT(config) runs)
from .generate import sample_next  # model.generate() / model.generate_stream() are the entry points
from .pretrained import PretrainedNotAvailableError, save_pretrained
from .tokenizers import BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer
from .errors import GptlearnError
from .embeddings import Embedder
from . import similarity
from .data import TokenDataset, load_text
from .lora import LoRALinear  # fine-tuning (chapters 11-12)
from .finetune import Classifier

__version__ = "0.1.0"

__all__ = [
    "GPTConfig", "PRESETS", "GPT", "MLP", "Block", "CausalSelfAttention",
    "HookPoint", "ActivationCache", "KVCache", "sample_next",
    "from_pretrained", "save_pretrained", "load_model", "PretrainedNotAvailableError",
    "Tokenizer", "BPETokenizer", "CharTokenizer", "load_tokenizer",
    "device", "resolve_device", "autocast",
    "Embedder", "similarity", "GptlearnError",
    "TokenDataset", "load_text",
    "LoRALinear", "Classifier",
]

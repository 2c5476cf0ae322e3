"""Measurements that find what a trained model does "by measurement, not by story" (book chapters on
attention heads and on training), 2-D maps of embeddings, PCA and UMAP (chapters 9 and 10;
:func:`gptlearn.plotting.embedding_scatter` draws them), and whether sentence embeddings group by topic.

>>> scores = previous_token_scores(model, model.to_tokens(text))   # (L, H)     # doctest: +SKIP
>>> induction_scores(model).max()                                   # (L, H)     # doctest: +SKIP
>>> bits_per_byte(model, held_out), unigram_bits_per_byte(train, held_out, model.tokenizer)  # doctest: +SKIP
>>> neighbour_accuracy(embedder.encode(texts), topics)     # share of same-topic nearest neighbours  # doctest: +SKIP

Legend: B batch, T tokens, C n_embd, H n_head, hs head size, V vocab, L layers.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from .checks import check_int
from .errors import InvalidTypeError, InvalidValueError, NoTokenizerError
from .model import GPT, sinusoidal_positions
from .tokenizers.base import encode_document
from .config import GPTConfig

if TYPE_CHECKING:
    from .tokenizers import TokenizerLike

__all__ = [
    # what attention heads do
    "previous_token_scores", "induction_scores", "repeated_random_tokens", "repeated_passage_loss", "top_heads",
    # how well a model compresses text
    "bits_per_byte", "unigram_bits_per_byte",
    # 2-D maps of embeddings
    "pca_2d", "umap_2d",
    # whether sentence embeddings group by topic
    "TOPIC_SENTENCES", "neighbour_accuracy", "topic_gap",
    # how heads compose, and a toy that learns to copy
    "head_qk_ov", "composition_scores", "toy_config", "toy_batch", "toy_loss", "load_induction_toy",
]


def _patterns(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """Attention patterns of every layer, (L, B, H, T, T)."""
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    _, cache = model.run_with_cache(tokens.to(model.device), names_filter=lambda n: n.endswith("hook_pattern"))
    return cache.stack("pattern").float()  # (L, B, H, T, T)


@torch.no_grad()
def previous_token_scores(model: GPT, tokens: torch.Tensor | str) -> torch.Tensor:
    """Mean attention each head pays to the token just before the query, (L, H).

    The average of ``pattern[q, q - 1]`` over queries ``q >= 1`` (and the batch); 1.0 is a perfect
    previous-token head. A head that spreads its attention evenly over what it can see puts
    ``1 / (q + 1)`` on the previous token, so it scores ``uniform_attention_score(T)``, about
    ``ln T / T`` (not ``1 / T``).
    """
    if isinstance(tokens, str):
        tokens = model.to_tokens(tokens)
    pattern = _patterns(model, tokens)  # (L, B, H, T, T)
    stripe = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)  # (L, B, H, T - 1): pattern[q, q - 1]
    return stripe.mean(dim=(1, 3)).cpu()  # (L, H)


def uniform_attention_score(T: int) -> float:
    """The score of a head that spreads its attention evenly over the ``T`` tokens it may see, (float).

    Query ``q`` sees ``q + 1`` tokens and so puts ``1 / (q + 1)`` on any one of them, such as the previous
    token or the first. Averaged over the queries ``q = 1 .. T - 1`` that ``previous_token_scores`` (and
    the first-token score of chapter 4) average over, that is ``(H_T - 1) / (T - 1)`` with ``H_T`` the
    ``T``-th harmonic number: about ``(ln T + 0.58 - 1) / T`` for long texts.

    >>> round(uniform_attention_score(2), 3), round(uniform_attention_score(100), 3)
    (0.5, 0.042)
    """
    if isinstance(T, bool) or not isinstance(T, int):
        raise InvalidTypeError(f"T must be an int (a number of tokens), got {type(T).__name__}")
    if T < 2:
        raise InvalidValueError(f"T must be at least 2 (a previous token needs two tokens), got {T}")
    return sum(1.0 / n for n in range(2, T + 1)) / (T - 1)


def uniform_induction_score(seq_len: int) -> float:
    """The induction score (:func:`induction_scores`) of a head that spreads its attention evenly: the
    second copy's query ``q`` (``q = seq_len .. 2 seq_len - 1``) sees ``q + 1`` tokens, so it puts
    ``1 / (q + 1)`` on the induction target; this is the mean over those queries.

    >>> round(uniform_induction_score(50), 4)
    0.0138
    """
    check_int(seq_len, "seq_len", low=1)
    return sum(1.0 / (q + 1) for q in range(seq_len, 2 * seq_len)) / seq_len


def repeated_random_tokens(vocab_size: int, seq_len: int = 50, batch: int = 8, *, seed: int = 0,
                           exclude: Sequence[int] = ()) -> torch.Tensor:
    """``batch`` rows of ``seq_len`` random tokens written twice, (B, 2 * seq_len)."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor(sorted(set(range(vocab_size)) - set(exclude)))
    first = allowed[torch.randint(len(allowed), (batch, seq_len), generator=g)]  # (B, seq_len)
    return torch.cat([first, first], dim=1)  # (B, 2 * seq_len)


@torch.no_grad()
def induction_scores(model: GPT, seq_len: int = 50, batch: int = 8, seed: int = 0) -> torch.Tensor:
    """TransformerLens' induction score of every head, (L, H).

    On random tokens repeated twice, an induction head at a token of the second copy attends to the
    token *after* that token's first occurrence, i.e. ``seq_len - 1`` positions back. The score is
    the mean of that attention over the second copy; 1.0 is a perfect induction head.
    """
    if 2 * seq_len > model.config.n_positions:
        raise InvalidValueError(f"2 * seq_len = {2 * seq_len} does not fit the context ({model.config.n_positions})")
    try:
        tok = model.tokenizer  # the one attached, else GPT-2's for its vocabulary
    except NoTokenizerError:  # another vocabulary with no tokenizer attached: no special tokens known
        tok = None
    exclude = list(getattr(tok, "special_tokens", {}).values())  # e.g. <|endoftext|>, never in the text
    tokens = repeated_random_tokens(model.config.vocab_size, seq_len, batch, seed=seed, exclude=exclude)
    pattern = _patterns(model, tokens)  # (L, B, H, 2S, 2S)
    stripe = pattern.diagonal(offset=1 - seq_len, dim1=-2, dim2=-1)  # (L, B, H, S + 1): pattern[q, q - S + 1]
    return stripe[..., 1:].mean(dim=(1, 3)).cpu()  # queries q = S .. 2S - 1 (the second copy) -> (L, H)


@torch.no_grad()
def repeated_passage_loss(model: GPT, text: str, n: int = 32, length: int = 100) -> tuple[float, float]:
    """Induction on real text: ``n`` passages of ``length`` tokens, spread evenly over ``text``, each read
    twice; returns the mean loss (nats per token) of the first and of the second reading.

    A model that copies from context predicts the second reading better; the first token of each
    reading is left out (nothing predicts it).
    """
    ids = encode_document(model.tokenizer, text)
    if len(ids) < n * length:
        raise InvalidValueError(f"the text has {len(ids)} tokens, fewer than {n} passages of {length}")
    if 2 * length > model.config.n_positions:
        raise InvalidValueError(f"two readings of {length} tokens do not fit the context ({model.config.n_positions})")
    stride = len(ids) // n
    rows = torch.tensor([ids[i * stride: i * stride + length] for i in range(n)])  # (n, length)
    x = torch.cat([rows, rows], dim=1).to(model.device)  # (n, 2 * length)
    logits = model(x[:, :-1])  # (n, 2 * length - 1, V)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), x[:, 1:], reduction="none")
    return nll[:, : length - 1].mean().item(), nll[:, length:].mean().item()


def top_heads(scores: torch.Tensor, k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` best heads of an (L, H) score table as ``("layer.head", score)``."""
    flat = scores.flatten()
    idx = flat.argsort(descending=True)[:k]
    H = scores.shape[1]
    return [(f"{int(i) // H}.{int(i) % H}", float(flat[i])) for i in idx]


@torch.no_grad()
def bits_per_byte(model: GPT, text: str, *, tokenizer: TokenizerLike | None = None, block_size: int | None = None,
                  batch_size: int = 8) -> float:
    """Cross-entropy of ``text`` under the model, in bits per UTF-8 byte (tokenizer-independent).

    The tokens are cut into windows of ``block_size`` + 1 that overlap by one token, so every token
    but the first is predicted exactly once (the first tokens of a window see little context).
    """
    tok = tokenizer if tokenizer is not None else model.tokenizer
    ids = torch.tensor(encode_document(tok, text), dtype=torch.long)
    T = min(block_size or model.config.n_positions, model.config.n_positions)
    if len(ids) < 2:
        raise InvalidValueError("the text is too short to measure: it needs at least two tokens")
    was_training = model.training
    model.eval()
    total_nats = 0.0
    windows = [ids[s: s + T + 1] for s in range(0, len(ids) - 1, T)]
    for i in range(0, len(windows), batch_size):
        chunk = windows[i: i + batch_size]
        full = [w for w in chunk if len(w) == T + 1]
        rest = [w for w in chunk if len(w) != T + 1]  # the ragged last window, on its own
        if full:
            x = torch.stack(full).to(model.device)  # (B, T + 1)
            logits = model(x[:, :-1])  # (B, T, V)
            total_nats += torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), x[:, 1:].flatten(), reduction="sum").item()
        for w in rest:
            x = w.unsqueeze(0).to(model.device)  # (1, t + 1)
            logits = model(x[:, :-1])  # (1, t, V)
            total_nats += torch.nn.functional.cross_entropy(
                logits.flatten(0, 1).float(), x[:, 1:].flatten(), reduction="sum").item()
    model.train(was_training)
    first_bytes = len(tok.decode(ids[:1].tolist()).encode("utf-8"))
    return total_nats / math.log(2) / (len(text.encode("utf-8")) - first_bytes)


def unigram_bits_per_byte(train_text: str, eval_text: str, tokenizer: TokenizerLike | None = None) -> float:
    """Bits per byte of ``eval_text`` under a unigram model of ``train_text``: token frequencies (or
    byte frequencies when ``tokenizer`` is None), add-one smoothed, no context at all. The baseline a
    language model must beat."""
    if tokenizer is None:
        train_ids, eval_ids, V = list(train_text.encode("utf-8")), list(eval_text.encode("utf-8")), 256
    else:
        train_ids, eval_ids = encode_document(tokenizer, train_text), encode_document(tokenizer, eval_text)
        V = tokenizer.vocab_size
    counts = Counter(train_ids)
    total = len(train_ids) + V
    bits = -sum(math.log2((counts[i] + 1) / total) for i in eval_ids)
    return bits / len(eval_text.encode("utf-8"))


# ---- 2-D maps of embeddings ------------------------------------------------------------------------------
def _to_numpy(x: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    """A tensor or array as a float64 numpy array on the CPU."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def pca_2d(x: torch.Tensor | np.ndarray, *, center: bool = True) -> np.ndarray:
    """Project rows (N, C) onto their two main directions of variation -> (N, 2) (chapter 9).

    Plain SVD, no scikit-learn. The sign of each axis is fixed (largest coordinate positive), so the
    same data always gives the same picture.
    """
    a = _to_numpy(x)
    if a.ndim != 2 or a.shape[0] < 2:
        raise InvalidValueError(f"pca_2d needs at least two rows of shape (N, C), got {tuple(a.shape)}")
    if center:
        a = a - a.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(a, full_matrices=False)  # vt (min(N, C), C)
    out = a @ vt[:2].T  # (N, C) -> (N, 2)
    if out.shape[1] < 2:  # one-dimensional data: pad the second axis with zeros
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    for j in range(2):
        if out[np.abs(out[:, j]).argmax(), j] < 0:
            out[:, j] = -out[:, j]
    return out


def umap_2d(x: torch.Tensor | np.ndarray, *, metric: str = "cosine", n_neighbors: int = 15, min_dist: float = 0.3,
            seed: int = 0) -> np.ndarray:
    """UMAP of rows (N, C) -> (N, 2), repeatable with ``seed`` (chapter 9). Needs ``umap-learn``.

    Works for tiny inputs (``init="random"``, ``n_neighbors`` capped at N - 1). numba compiles UMAP's
    code on first use, which takes a while; ``NUMBA_CACHE_DIR`` (set here to ``~/.cache/gptlearn/numba``
    unless already set) keeps the compiled code for the next kernel.
    """
    a = _to_numpy(x).astype(np.float32)
    if a.ndim != 2 or a.shape[0] < 3:
        raise InvalidValueError(f"umap_2d needs at least three rows of shape (N, C), got {tuple(a.shape)}")
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "gptlearn", "numba"))
    try:
        import umap
    except ImportError:
        raise ImportError("umap_2d needs umap-learn: pip install umap-learn (or use pca_2d)") from None
    reducer = umap.UMAP(n_components=2, metric=metric, n_neighbors=min(n_neighbors, a.shape[0] - 1),
                        min_dist=min_dist, init="random", random_state=seed, n_jobs=1)
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba/umap chatter about threads and spectral init
            return np.asarray(reducer.fit_transform(a), dtype=np.float64)
    finally:  # numba's start-up can change PyTorch's thread count, slowing every later matmul: put it back
        torch.set_num_threads(threads)


# ---- do sentence embeddings group by topic? (book chapters 9 and 10) --------------------------------
TOPIC_SENTENCES: dict[str, list[str]] = {
    "animals": [
        "The cat is sleeping on the sofa.", "A dog barked at the mailman.", "The horse galloped across the field.",
        "Birds build their nests in spring.", "The kitten chased a ball of yarn.", "Elephants live in large herds.",
        "My puppy loves long walks.", "A fox crept into the henhouse.",
    ],
    "food": [
        "I baked fresh bread this morning.", "The soup needs more salt.", "We ordered pizza for dinner.",
        "She made a chocolate cake for the party.", "Fresh strawberries taste sweet in summer.",
        "He grilled vegetables on the barbecue.", "The pasta was cooked perfectly.",
        "Coffee with milk, no sugar, please.",
    ],
    "sports": [
        "The team won the championship.", "She scored a goal in the last minute.", "The marathon starts at dawn.",
        "He hit a home run in the ninth inning.", "The tennis match lasted five hours.",
        "Our coach runs practice every day.",
        "The swimmer broke the world record.", "Fans cheered as the players took the field.",
    ],
    "technology": [
        "My laptop battery died again.", "The new phone has a better camera.",
        "Install the update and restart the computer.",
        "The website crashed under heavy traffic.", "She writes software for a startup.", "The printer is out of ink.",
        "Cloud storage keeps my files safe.", "The app asks for my password every time.",
    ],
    "weather": [
        "It is raining heavily outside.", "Tomorrow will be sunny and warm.", "A storm is coming from the west.",
        "Snow covered the whole town overnight.", "The wind knocked down a tree.", "Fog made the morning drive slow.",
        "It was the hottest day of the year.", "Thunder woke me up last night.",
    ],
}
"""Forty everyday sentences in five topics, eight each: chapters 9 and 10's own set. It is small and was
watched while gptlearn-embed was made; the held-out topic benchmark is :func:`gptlearn.data.load_topics`."""


def _cosines(X: Any) -> torch.Tensor:
    E = torch.nn.functional.normalize(torch.as_tensor(X, dtype=torch.float64), dim=-1)  # (N, C)
    return E @ E.T  # (N, N)


def neighbour_accuracy(X: Any, groups: Sequence[Any]) -> float:
    """Share of the rows of ``X`` (N, C) whose nearest other row by cosine has the same group.

    >>> neighbour_accuracy([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], ["a", "a", "b", "b"])
    1.0
    """
    S = _cosines(X)
    S.fill_diagonal_(-math.inf)  # a row is not its own neighbour
    nearest = S.argmax(dim=1).tolist()
    return float(sum(groups[i] == groups[j] for i, j in enumerate(nearest)) / len(nearest))


def word_groups() -> dict[str, list[str]]:
    """The common English words the book measures tokenizers and token vectors on: 12 groups of 12
    (animals, colours, numbers, days, family, body, food, countries, jobs, vehicles, weather, feelings)."""
    from importlib import resources

    return json.loads(resources.files("gptlearn").joinpath("assets", "data", "english_words.json").read_text("utf-8"))


def one_token_share(tokenizer: TokenizerLike, words: Sequence[str]) -> float:
    """Share of ``words`` that are a single token when they follow a space, as inside a sentence.

    >>> from gptlearn.tokenizers import load_tokenizer
    >>> one_token_share(load_tokenizer("gpt2"), ["cat", "car", "tokenization"])
    0.6666666666666666
    """
    return sum(len(tokenizer.encode(" " + w)) == 1 for w in words) / len(words)


def word_vectors(model: GPT, words: Sequence[str]) -> torch.Tensor:
    """(N, C): each word's token-embedding row (after a space), the mean of its pieces' rows when the
    tokenizer cuts it. ``neighbour_accuracy(word_vectors(model, words), groups)`` asks whether a word's
    nearest word shares its group."""
    wte = model.wte.weight.detach().float().cpu()  # (V, C)
    return torch.stack([wte[model.tokenizer.encode(" " + w)].mean(0) for w in words])  # (N, C)

def neighbour_chance(groups: Sequence[Any]) -> float:
    """The ``neighbour_accuracy`` of an embedding whose nearest neighbours are random, (float).

    A row's nearest other row is then any of the other ``N - 1`` rows alike, and shares the row's group
    with probability ``(n_g - 1) / (N - 1)``, ``n_g`` being the size of its group; this is that
    probability averaged over the rows. Five topics of eight: ``7 / 39``, not ``1 / 5``.

    >>> round(neighbour_chance(["a"] * 8 + ["b"] * 8 + ["c"] * 8 + ["d"] * 8 + ["e"] * 8), 4)
    0.1795
    """
    n = len(groups)
    if n < 2:
        raise InvalidValueError(f"need at least two rows to have a nearest neighbour, got {n}")
    size = Counter(groups)
    return float(sum((size[g] - 1) / (n - 1) for g in groups) / n)


def topic_gap(X: Any, groups: Sequence[Any]) -> float:
    """Mean cosine of two different rows with the same group minus mean cosine across groups.

    >>> round(topic_gap([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], ["a", "a", "b", "b"]), 3)
    1.0
    """
    S = _cosines(X)
    g = list(groups)
    same = torch.tensor([[a == b for b in g] for a in g])  # (N, N)
    off = ~torch.eye(len(g), dtype=torch.bool)
    return float(S[same & off].mean() - S[~same].mean())


# ---- how heads compose (book chapter "The induction circuit, tested") ---------------------------------------
def head_qk_ov(model: GPT, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each head's W_QK = W_Q W_K^T and W_OV = W_V W_O of ``layer``, (H, C, C) each, with ``ln_1``'s weight
    folded into the reading side (rows: the stream the head reads; columns: what it writes or is compared with).

    A query x_q and key x_k (after ``ln_1``'s centring and scaling) give the score x_q W_QK x_k^T; a key
    token's stream x adds x W_OV to the output.
    """
    block = model.blocks[layer]
    C, H = model.config.n_embd, model.config.n_head
    hs = C // H
    gamma = block.ln_1.weight.detach()  # (C,)
    W = block.attn.c_attn.weight.detach()  # (3C, C): out x in
    W_Q, W_K, W_V = (gamma[:, None] * W[i * C:(i + 1) * C].T for i in range(3))  # (C_in, C) each
    W_Q, W_K, W_V = (w.reshape(C, H, hs).transpose(0, 1) for w in (W_Q, W_K, W_V))  # (C, C) -> (H, C, hs)
    W_O = block.attn.c_proj.weight.detach().T.reshape(H, hs, C)  # (C, C) -> (H, hs, C)
    return W_Q @ W_K.transpose(1, 2), W_V @ W_O  # (H, C, C), (H, C, C)


@torch.no_grad()
def composition_scores(model: GPT, kind: str = "k") -> torch.Tensor:
    """Elhage et al.'s composition score of every earlier head into every later one, (L, H, L, H).

    ``score[l1, h1, l2, h2] = |A B|_F / (|A|_F |B|_F)`` with A = W_OV of the writer (l1, h1) and B how the
    reader (l2, h2) uses it: ``"k"``: W_QK^T (its keys read what the writer wrote), ``"q"``: W_QK (its queries),
    ``"v"``: W_OV (its values). Pairs with l1 >= l2 are 0. Random matrices of this size score about
    1/sqrt(C); a head built on another's output scores well above the rest.
    """
    if kind not in ("q", "k", "v"):
        raise InvalidValueError(f"kind must be 'q', 'k' or 'v', got {kind!r}")
    L, H = model.config.n_layer, model.config.n_head
    qk, ov = zip(*(head_qk_ov(model, layer) for layer in range(L)))
    scores = torch.zeros(L, H, L, H)
    for l1 in range(L):
        A = ov[l1]  # (H, C, C)
        for l2 in range(l1 + 1, L):
            B = {"k": qk[l2].transpose(1, 2), "q": qk[l2], "v": ov[l2]}[kind]  # (H, C, C)
            AB = torch.einsum("aij,bjk->abik", A, B)  # (H, H, C, C)
            norm = A.flatten(1).norm(dim=1)[:, None] * B.flatten(1).norm(dim=1)[None, :]  # (H, H)
            scores[l1, :, l2, :] = AB.flatten(2).norm(dim=2) / norm
    return scores


# ---- a toy that learns to copy (book chapter "The induction circuit, tested") --------------------------------
TOY_STEP = 600  # the shipped checkpoint: the toy after this many steps, before its induction heads form
TOY_T, TOY_V = 32, 64


def toy_config():
    """The toy's architecture: GPT-2 with 2 layers x 4 heads x 64 wide, 64 tokens, context 32, no dropout."""
    return GPTConfig(n_layer=2, n_head=4, n_embd=64, n_positions=TOY_T, vocab_size=TOY_V,
                     embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)


def new_induction_toy(seed: int = 0) -> GPT:
    """The toy at step 0, as ``scripts/make_induction_toy.py`` starts it: weights drawn after
    ``torch.manual_seed(seed)``, and position vectors started from sine/cosine codes (x 0.3, as gptlearn-mini's),
    which make "attend one back" easy to find."""
    torch.manual_seed(seed)
    model = GPT(toy_config())
    with torch.no_grad():
        model.wpe.weight.copy_(sinusoidal_positions(TOY_T, model.config.n_embd) * 0.3)
    return model


def toy_batch(generator: torch.Generator, batch: int = 32) -> tuple[torch.Tensor, int]:
    """``batch`` rows of one random block of p tokens (p in 4..T/2, new each call) written over and over,
    (B, T), and p. Only copying predicts a token after the first block; the period changes every batch,
    so attending a fixed distance back does not work."""
    p = int(torch.randint(4, TOY_T // 2 + 1, (1,), generator=generator))
    block = torch.randint(TOY_V, (batch, p), generator=generator)  # (B, p)
    return block.repeat(1, TOY_T // p + 1)[:, :TOY_T], p  # (B, p) -> (B, T)


def toy_loss(model: GPT, x: torch.Tensor, p: int) -> torch.Tensor:
    """Mean next-token loss on the tokens that copying can predict (after the first block)."""
    logits = model(x[:, :-1])  # (B, T - 1, V)
    return torch.nn.functional.cross_entropy(logits[:, p - 1:].reshape(-1, TOY_V), x[:, p:].reshape(-1))


@torch.no_grad()
def toy_scores(model: GPT) -> tuple[float, float]:
    """(best induction score in layer 1, best previous-token score in layer 0) of the toy: the two halves of
    the circuit, measured on random tokens."""
    was_training = model.training
    model.eval()
    ind = induction_scores(model, seq_len=TOY_T // 2)[1].max().item()
    prev = previous_token_scores(model, repeated_random_tokens(TOY_V, TOY_T // 2, 8, seed=5))[0].max().item()
    model.train(was_training)
    return ind, prev


def _toy_file() -> str:
    from importlib.resources import files

    return str(files("gptlearn") / "assets" / "induction-toy" / f"step{TOY_STEP}.safetensors")


def induction_toy_history() -> list[tuple[int, float, float, float]]:
    """What was measured while the shipped toy trained: (step, induction score, previous-token score, mean
    training loss over the steps since the last entry) every 25 steps from 0 to :data:`TOY_STEP`."""
    from safetensors import safe_open

    with safe_open(_toy_file(), framework="pt") as f:
        rows = json.loads((f.metadata() or {}).get("history", "[]"))
    return [(int(s), float(i), float(p), float(loss)) for s, i, p, loss in rows]


def load_induction_toy(lr: float = 1e-3) -> tuple[GPT, torch.optim.Optimizer, int]:
    """The toy and its AdamW state after :data:`TOY_STEP` steps of :func:`toy_batch` (``scripts/make_induction_toy.py``
    made them), ready to train on: (model, optimizer, step). The moments are stored in bfloat16."""
    from safetensors.torch import load_file

    saved = load_file(_toy_file())
    model = GPT(toy_config())
    weights = {k[len("model."):]: v for k, v in saved.items() if k.startswith("model.")}
    model.load_state_dict({**weights, "lm_head.weight": weights["wte.weight"]})
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    names = [name for name, _ in model.named_parameters()]
    state = {i: {"step": saved["adam.step"].clone(), "exp_avg": saved[f"adam.exp_avg.{n}"].float(),
                 "exp_avg_sq": saved[f"adam.exp_avg_sq.{n}"].float()} for i, n in enumerate(names)}
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    return model, opt, TOY_STEP

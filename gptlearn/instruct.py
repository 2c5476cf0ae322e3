"""Instruction tuning with a masked loss (book chapter "Following instructions").

An instruction example is a prompt (the instruction and its input, in a fixed template) followed by the
response and an end-of-text token. Training on it is next-token training with one change: the loss
counts only the response's tokens. The prompt's targets are set to ``ignore_index`` (-100, which
``F.cross_entropy`` and :meth:`gptlearn.GPT.loss` skip), so the model learns to *answer*, not to
reproduce prompts. Padding is masked the same way.

>>> prompt = format_prompt("reverse", "red green blue")
>>> prompt
'reverse: red green blue\\nAnswer:'

Legend: B batch, T tokens.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .errors import InvalidValueError
from .train import make_optimizer

__all__ = ["IGNORE_INDEX", "TEMPLATE", "TASKS", "Example", "format_prompt", "single_token_words",
           "synthetic_instructions", "encode_example", "collate", "respond", "exact_match", "instruction_tune"]

IGNORE_INDEX = -100  # targets with this value add nothing to the loss
TEMPLATE = "{instruction}: {input}\nAnswer:"

# instruction -> how the response follows from the input's words
TASKS: dict[str, Callable[[list[str]], list[str]]] = {
    "repeat": lambda w: w,
    "reverse": lambda w: w[::-1],
    "first word": lambda w: w[:1],
    "last word": lambda w: w[-1:],
}


@dataclass(frozen=True)
class Example:
    """One instruction, its input and the response wanted."""

    instruction: str
    input: str
    response: str

    @property
    def prompt(self) -> str:
        return format_prompt(self.instruction, self.input)


def format_prompt(instruction: str, input: str) -> str:
    """The prompt the model reads: :data:`TEMPLATE` filled in; the response follows it after a space."""
    return TEMPLATE.format(instruction=instruction, input=input)


def single_token_words(tokenizer, candidates: Sequence[str]) -> list[str]:
    """The ``candidates`` that the tokenizer writes as one token after a space (so a copied word is one
    prediction, whatever the vocabulary)."""
    return [w for w in candidates if len(tokenizer.encode(" " + w)) == 1]


def synthetic_instructions(words: Sequence[str], n: int, *, tasks: Sequence[str] = tuple(TASKS), min_words: int = 2,
                           max_words: int = 4, seed: int = 0) -> list[Example]:
    """``n`` examples, each a task of :data:`TASKS` applied to ``min_words``..``max_words`` distinct words
    drawn from ``words`` with ``seed``."""
    if len(words) < max_words:
        raise InvalidValueError(f"need at least {max_words} words to draw from, got {len(words)}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise InvalidValueError(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        task = rng.choice(list(tasks))
        chosen = rng.sample(list(words), rng.randint(min_words, max_words))
        out.append(Example(task, " ".join(chosen), " ".join(TASKS[task](chosen))))
    return out


def encode_example(tokenizer, example: Example, *, eot: int | None = None) -> tuple[list[int], int]:
    """Token ids of prompt + " " + response + end-of-text, and how many of them are the prompt's."""
    eot = tokenizer.eot_token if eot is None else eot
    if eot is None:
        raise InvalidValueError("the tokenizer has no end-of-text token; pass eot= (the id that ends a response)")
    prompt = tokenizer.encode(example.prompt)
    return prompt + tokenizer.encode(" " + example.response) + [eot], len(prompt)


def collate(rows: Sequence[tuple[list[int], int]], *, pad_id: int, mask_prompt: bool = True,
            ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad encoded examples into inputs and next-token targets, both (B, T) with T the longest row minus one.

    ``targets[b, t]`` is the token after ``inputs[b, t]``; it is ``ignore_index`` on padding and, with
    ``mask_prompt``, wherever the next token is still the prompt's. Padding goes on the right, where a
    causal model's real tokens never look.

    >>> x, y = collate([([5, 6, 7, 8], 2), ([5, 9, 8], 2)], pad_id=0)
    >>> x.tolist(), y.tolist()
    ([[5, 6, 7], [5, 9, 0]], [[-100, 7, 8], [-100, 8, -100]])
    """
    T = max(len(ids) for ids, _ in rows) - 1
    inputs = torch.full((len(rows), T), pad_id, dtype=torch.long)  # (B, T)
    targets = torch.full((len(rows), T), ignore_index, dtype=torch.long)  # (B, T)
    for b, (ids, n_prompt) in enumerate(rows):
        ids_t = torch.tensor(ids)
        inputs[b, :len(ids) - 1] = ids_t[:-1]
        targets[b, :len(ids) - 1] = ids_t[1:]
        if mask_prompt:
            targets[b, :n_prompt - 1] = ignore_index  # predicting the prompt's own tokens: not the task
    return inputs, targets


@torch.no_grad()
def respond(model, tokenizer, example: Example, *, max_new_tokens: int = 12) -> str:
    """The model's greedy response to ``example``'s prompt, up to its end-of-text token."""
    ids = tokenizer.encode(example.prompt)
    out = model.generate(torch.tensor([ids], device=model.device), max_new_tokens, do_sample=False,
                         eos_token_id=tokenizer.eot_token)[0, len(ids):].tolist()  # (new,)
    if tokenizer.eot_token in out:
        out = out[:out.index(tokenizer.eot_token)]
    return tokenizer.decode(out).strip()


def exact_match(model, tokenizer, examples: Sequence[Example], **kwargs) -> float:
    """The share of ``examples`` whose greedy response is exactly the wanted one (spaces at the ends aside)."""
    was_training = model.training
    model.eval()
    try:
        return sum(respond(model, tokenizer, e, **kwargs) == e.response for e in examples) / len(examples)
    finally:
        model.train(was_training)


def instruction_tune(model, tokenizer, examples: Sequence[Example], *, steps: int = 200, batch_size: int = 16,
                     lr: float = 1e-3, mask_prompt: bool = True, seed: int = 0) -> list[float]:
    """Fine-tune ``model`` in place on ``examples`` (batches drawn with ``seed``) and return each step's loss:
    the mean cross-entropy of the response's tokens (every token's, without ``mask_prompt``)."""
    encoded = [encode_example(tokenizer, e) for e in examples]
    optimizer = make_optimizer(model, lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.train()
    losses = []
    for _ in range(steps):
        batch = rng.sample(encoded, min(batch_size, len(encoded)))
        x, y = collate(batch, pad_id=tokenizer.eot_token, mask_prompt=mask_prompt)  # (B, T), (B, T)
        loss = model.loss(x.to(model.device), y.to(model.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses

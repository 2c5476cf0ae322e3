"""Checkpoints of a training run, shared by both trainers (``gptlearn train`` and ``train-embeddings``).

A checkpoint is a model folder that also holds the trainer state: ``trainer_state.json`` (the step, the
settings, the history, the random generators' scalars, and the sha256 of both files) and
``trainer_state.safetensors`` (AdamW's moments and the generators' state arrays). Nothing is pickled; a
``trainer_state.pt`` of older versions is refused, never loaded. A trainer writes a checkpoint only when
its weights, AdamW's state and the loss they give are finite, so the last checkpoint is a good one.

A checkpoint is untrusted input: the sha256 catches accidents, not edits, so every field is checked
before it is used. The files must be regular files of bounded size; every number has a type and a
range; the history has one entry a step; every AdamW tensor has its parameter's shape and dtype and
every parameter index is the optimizer's own (:func:`load_optimizer`); every random generator's state
has the size and range its library takes (:func:`set_rng_state`). A state that fails a check is a
:class:`GptlearnError` in one line, never a crash in native code, a hang or a silent fresh start.

The run folder is locked while a run writes it (:func:`run_lock`), and Ctrl-C never lands between a
step's update and its bookkeeping (:class:`Interrupts`). docs/training.md has the rules of a run folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import stat
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .checks import is_int, is_number, sha256, shown
from .errors import GptlearnError, InvalidFileError, MissingFileError
from .safeio import read_regular
from .devices import free_bytes

try:
    import fcntl
except ImportError:  # Windows: runs into one folder are not locked
    fcntl = None

__all__ = ["STATE_FILE", "STATE_TENSORS", "LEGACY_STATE_FILE", "STATE_FILES", "write_state", "read_state",
           "read_state_json", "load_optimizer", "rng_state", "set_rng_state", "run_lock", "check_writable",
           "Interrupts", "json_value"]

STATE_FILE = "trainer_state.json"  # the step, the settings, the history, scalars of the RNG states
STATE_TENSORS = "trainer_state.safetensors"  # AdamW's moments and the RNG states' arrays
LEGACY_STATE_FILE = "trainer_state.pt"  # older versions' pickle: refused, never loaded
STATE_FILES = (STATE_FILE, STATE_TENSORS, LEGACY_STATE_FILE)
STATE_FORMAT, STATE_VERSION = "gptlearn trainer state", 1
MAX_JSON_BYTES = 512 * 2**20  # a history of millions of steps fits; /dev/zero does not
MAX_STEP = 10**9
MAX_PROCESSES = 65_536
ADAMW_STATE = ("step", "exp_avg", "exp_avg_sq")  # + max_exp_avg_sq with amsgrad
ADAMW_CHECKED = ("betas", "eps", "weight_decay", "amsgrad", "maximize")  # options that change the update


# ---- the random generators: saved with the step, restored only when each state is one its library takes ----
def rng_state(data_gen: torch.Generator) -> dict[str, Any]:
    """Every random stream of this process: torch's, NumPy's, Python's, the batches' and CUDA's."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "data": data_gen.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _check_rng(state: dict[str, Any]) -> None:
    """Raise ValueError where ``state`` is not one :func:`rng_state` could have made in this Python: NumPy
    crashes in native code on a position past its key, torch on a state of the wrong size."""
    size = torch.get_rng_state().numel()
    for name in ("torch", "data"):
        t = state[name]
        if not torch.is_tensor(t) or t.dtype != torch.uint8 or tuple(t.shape) != (size,):
            raise ValueError(f"the {name} random state is not {size} bytes")
    version, mt, gauss = state["python"]
    if version != random.getstate()[0] or len(mt) != 625 or not all(is_int(w, 0, 2**32 - 1) for w in mt[:624]) \
            or not is_int(mt[624], 1, 624) or not (gauss is None or is_number(gauss)):
        raise ValueError("the Python random state is not one this Python makes")
    kind, key, pos, has_gauss, cached = state["numpy"]
    if kind != "MT19937" or key.shape != (624,) or not is_int(pos, 0, 624) or has_gauss not in (0, 1) \
            or not is_number(cached):
        raise ValueError("the NumPy random state is not an MT19937 state")
    for t in state["cuda"] or []:
        if not torch.is_tensor(t) or t.dtype != torch.uint8 or t.dim() != 1 or t.numel() > 2**20:
            raise ValueError("a CUDA random state is not a byte array")


def set_rng_state(state: dict[str, Any], data_gen: torch.Generator) -> None:
    """Restore what :func:`rng_state` saved, after checking it (a ValueError names what is wrong)."""
    _check_rng(state)
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    data_gen.set_state(state["data"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][:torch.cuda.device_count()])


# ---- writing ---------------------------------------------------------------------------------------
def json_value(v: Any) -> Any:
    """A setting or an optimizer option as JSON: a path or device as text, a tuple as a list, a one-number
    tensor as its number, anything else (a tokenizer object) as None."""
    if isinstance(v, (os.PathLike, torch.device)):
        return str(os.fspath(v) if isinstance(v, os.PathLike) else v)
    if isinstance(v, (tuple, list)):
        return [json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if torch.is_tensor(v) and v.numel() == 1:
        return v.item()
    return v if v is None or isinstance(v, (bool, int, float, str)) else None


def _checksum(meta: dict[str, Any]) -> str:
    """The sha256 of ``meta`` (but its own ``sha256`` field) as canonical JSON: any change to the file shows."""
    body = json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True, separators=(",", ":"),
                      allow_nan=False)
    return sha256(body.encode())


def write_state(folder: str | os.PathLike, *, step: int, settings: dict[str, Any], history: dict[str, Any],
                optimizer: dict[str, Any], rngs: list[dict[str, Any]], data_sha256: str | None = None,
                trainer: str = "train") -> None:
    """Write the trainer state into ``folder`` (a checkpoint's temporary folder): every tensor (AdamW's
    moments, the RNG states' arrays) in ``trainer_state.safetensors``, the rest in ``trainer_state.json``
    with both files' sha256. ``optimizer``: a torch optimizer's ``state_dict()``; ``rngs``: one
    :func:`rng_state` a process; ``trainer``: which trainer wrote it."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    opt_state: dict[str, dict[str, Any]] = {}
    for i, entry in optimizer["state"].items():
        opt_state[str(i)] = {}
        for name, v in entry.items():
            if torch.is_tensor(v):
                tensors[f"optimizer.{i}.{name}"] = v.detach().cpu().contiguous()
            else:
                opt_state[str(i)][name] = json_value(v)
    rng_scalars = []
    for r, rng in enumerate(rngs):
        version, mt, gauss_next = rng["python"]
        kind, key, pos, has_gauss, cached_gaussian = rng["numpy"]
        tensors[f"rng.{r}.torch"], tensors[f"rng.{r}.data"] = rng["torch"].cpu(), rng["data"].cpu()
        tensors[f"rng.{r}.python"] = torch.tensor(mt, dtype=torch.int64)  # 624 words + the position
        tensors[f"rng.{r}.numpy"] = torch.from_numpy(np.asarray(key, dtype=np.int64))  # 624 uint32 words
        for d, s in enumerate(rng["cuda"] or []):
            tensors[f"rng.{r}.cuda.{d}"] = s.cpu()
        rng_scalars.append({"python": {"version": version, "gauss_next": gauss_next},
                            "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),
                                      "cached_gaussian": float(cached_gaussian)},
                            "cuda_devices": len(rng["cuda"] or [])})
    save_file(tensors, str(folder / STATE_TENSORS), metadata={"format": STATE_FORMAT})
    meta = {"format": STATE_FORMAT, "version": STATE_VERSION, "step": step, "settings": settings,
            "data_sha256": data_sha256, "tensors_sha256": sha256(folder / STATE_TENSORS),
            "optimizer": {"param_groups": json_value(optimizer["param_groups"]), "state": opt_state},
            "rng": rng_scalars, "history": history}
    if trainer != "train":  # a state without this field is the language-model trainer's
        meta["trainer"] = trainer
    meta["sha256"] = _checksum(meta)
    (folder / STATE_FILE).write_text(json.dumps(meta, indent=1, allow_nan=False) + "\n", encoding="utf-8")


# ---- reading: every field checked -------------------------------------------------------------------
def damaged(folder: Path, why: str) -> GptlearnError:
    return GptlearnError(f"the trainer state in {folder} is damaged: {why}; resume from a copy of the run, or "
                         "start it again with --overwrite")


def _read(folder: Path, name: str, limit: int) -> bytes:
    """The bytes of the state file ``name`` in ``folder``, which must be a regular file of at most ``limit``
    bytes (:func:`gptlearn.safeio.read_regular`); anything else is a damaged state, in one line."""
    path = folder / name
    try:
        return read_regular(path, max_bytes=limit)
    except MissingFileError:
        raise damaged(folder, f"{name} is missing") from None
    except InvalidFileError as e:  # a FIFO, a device, a folder, unreadable, or far too large
        why = str(e).removeprefix(f"{path} ").split("; pass ")[0]  # "is not a regular file but a FIFO ..."
        raise damaged(folder, f"{name} {why}") from None


def read_state_json(folder: Path, *, trainer: str = "train") -> dict[str, Any]:
    """``trainer_state.json`` of the run in ``folder``, checked to be one of ``trainer`` whose sha256 holds
    (its tensors are not read)."""
    path = folder / STATE_FILE
    if not path.exists():
        if (folder / LEGACY_STATE_FILE).exists():
            raise GptlearnError(
                f"{folder / LEGACY_STATE_FILE} is the trainer state of an older gptlearn, a pickle, which gptlearn "
                f"never loads (unpickling can run any code); start the run again with --overwrite, or fine-tune "
                f"its weights with --init {folder} --out NEW_FOLDER")
        raise GptlearnError(f"nothing to resume: {folder} holds no {STATE_FILE}; drop --resume to start a new run")
    raw = _read(folder, STATE_FILE, MAX_JSON_BYTES)
    try:
        meta = json.loads(raw.decode("utf-8"))  # never UTF-16
    except (ValueError, RecursionError) as e:  # not JSON (JSONDecodeError), not text, or nested too deep
        raise damaged(folder, f"{STATE_FILE} is not valid JSON ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise damaged(folder, f"{STATE_FILE} is not a gptlearn trainer state")
    if meta.get("version") != STATE_VERSION:
        raise GptlearnError(f"{path} is version {shown(meta.get('version'))} of the trainer state, which this "
                            f"gptlearn (version {STATE_VERSION}) does not read; resume it with the gptlearn that "
                            "wrote it")
    try:
        same = meta.get("sha256") == _checksum(meta)
    except ValueError:  # NaN or infinity, which the JSON of a trainer state never holds
        same = False
    if not same:
        raise damaged(folder, f"{STATE_FILE} is not as it was saved (its sha256 differs)")
    if meta.get("trainer", "train") != trainer:
        raise GptlearnError(f"{folder} holds a run of gptlearn {shown(meta.get('trainer'))}, not of gptlearn "
                            f"{trainer}; choose another --out")
    if not isinstance(meta.get("settings"), dict):
        raise damaged(folder, f"{STATE_FILE} has no settings")
    return meta


def _tensor_limit() -> int:
    """The most bytes a state's tensors may take: half the memory free now (64 GiB where unknown)."""
    free = free_bytes(torch.device("cpu"))
    return free // 2 if free else 64 * 2**30


def read_state(folder: str | os.PathLike, history: Callable[[Any, int], Any], *, trainer: str = "train"
               ) -> dict[str, Any]:
    """The trainer state saved in the run folder ``folder``, every field checked: ``step``, ``settings``,
    ``data_sha256``, ``history`` (``history(saved, step)`` checks and builds it, raising ValueError),
    ``optimizer`` (a torch ``state_dict`` whose tensors :func:`load_optimizer` checks against a model) and
    ``rng`` (one dict a process). A missing, legacy, damaged or non-finite state is a :class:`GptlearnError`
    in one line."""
    from safetensors.torch import load

    folder = Path(folder).expanduser()
    meta = read_state_json(folder, trainer=trainer)
    blob = _read(folder, STATE_TENSORS, _tensor_limit())
    if sha256(blob) != meta.get("tensors_sha256"):
        raise damaged(folder, f"{STATE_TENSORS} is not the file saved with {STATE_FILE} (its sha256 differs)")
    try:
        tensors = load(blob)
        state = _state_from(meta, tensors, history)
    except Exception as e:  # whatever the parsers say of bytes that hold no trainer state: damaged
        raise damaged(folder, f"{type(e).__name__}: {shown(str(e))}") from None
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise GptlearnError(f"the trainer state in {folder} holds non-finite values ({bad[0]}), so it is no good "
                            "checkpoint; start the run again with --overwrite")
    return state


def _need(ok: bool, what: str, error: type[Exception] = ValueError) -> None:
    if not ok:
        raise error(what)


def _state_from(meta: dict[str, Any], tensors: dict[str, torch.Tensor], history: Callable[[Any, int], Any]
                ) -> dict[str, Any]:
    """The pieces of ``trainer_state.json`` and its tensors, checked, in the shapes torch, NumPy and random
    take (ValueError or TypeError names the first that is wrong)."""
    step = meta["step"]
    _need(is_int(step, 0, MAX_STEP), f"step is {shown(step)}, not an integer from 0 to {MAX_STEP:,}")
    sha = meta.get("data_sha256")
    _need(sha is None or (isinstance(sha, str) and len(sha) == 64), "data_sha256 is not a sha256")
    opt, rng = meta["optimizer"], meta["rng"]
    _need(isinstance(opt, dict) and isinstance(opt.get("param_groups"), list) and isinstance(opt.get("state"), dict)
          and all(isinstance(g, dict) for g in opt["param_groups"]), "the optimizer is not a state dict", TypeError)
    _need(isinstance(rng, list) and 1 <= len(rng) <= MAX_PROCESSES and all(isinstance(r, dict) for r in rng),
          "the random states are not a list, one a process", TypeError)
    built = history(meta["history"], step)
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in opt["param_groups"]]
    opt_state: dict[int, dict[str, Any]] = {}
    for i, entry in opt["state"].items():
        _need(i.isascii() and i.isdigit() and isinstance(entry, dict) and not entry,
              f"the optimizer state {shown(i)} is not a parameter index")
        opt_state[int(i)] = {}
    for key, t in tensors.items():
        kind, *rest = key.split(".")
        if kind == "optimizer":
            _need(len(rest) == 2 and rest[0].isdigit() and int(rest[0]) in opt_state, f"unexpected tensor {key!r}")
            opt_state[int(rest[0])][rest[1]] = t
        else:
            _need(kind == "rng" and len(rest) >= 2 and rest[0].isdigit() and int(rest[0]) < len(rng),
                  f"unexpected tensor {key!r}")
    rngs = []
    for r, s in enumerate(rng):
        py, npy, devices = s["python"], s["numpy"], s["cuda_devices"]
        _need(isinstance(py, dict) and isinstance(npy, dict) and is_int(devices, 0, 1024),
              f"random state {r} is not one gptlearn wrote")
        state = {
            "torch": tensors[f"rng.{r}.torch"], "data": tensors[f"rng.{r}.data"],
            "python": (py["version"], tuple(tensors[f"rng.{r}.python"].tolist()), py["gauss_next"]),
            "numpy": (npy["kind"], tensors[f"rng.{r}.numpy"].numpy(), npy["pos"], npy["has_gauss"],
                      npy["cached_gaussian"]),
            "cuda": [tensors[f"rng.{r}.cuda.{d}"] for d in range(devices)] or None}
        key = state["numpy"][1]
        _need(key.shape == (624,) and bool(((key >= 0) & (key < 2**32)).all()), "a NumPy random key is not 624 words")
        state["numpy"] = (*state["numpy"][:1], key.astype(np.uint32), *state["numpy"][2:])
        _check_rng(state)
        rngs.append(state)
    return {"step": step, "settings": meta["settings"], "data_sha256": sha, "history": built,
            "optimizer": {"state": opt_state, "param_groups": groups}, "rng": rngs}


def load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], step: int) -> None:
    """Load the AdamW state ``saved`` (from :func:`read_state`) into ``optimizer`` once every piece is checked
    against the optimizer's own parameters: the same groups listing the same parameter indices, the options
    that change the update equal, and for each parameter exactly AdamW's tensors, with its shape and dtype and a
    step from 1 to ``step``. The options are the optimizer's own (the learning rate is set at every step).
    Raises ValueError naming the first mismatch: a state that does not fit never reaches torch's kernels."""
    live = optimizer.state_dict()
    groups = saved["param_groups"]
    _need(len(groups) == len(live["param_groups"]), f"{len(groups)} parameter groups, not "
          f"{len(live['param_groups'])}")
    params = {}
    for g, (mine, theirs) in enumerate(zip(live["param_groups"], groups)):
        _need(theirs.get("params") == mine["params"], f"parameter group {g} lists other parameters")
        for name in ADAMW_CHECKED:
            a, b = mine.get(name), theirs.get(name)
            _need(type(a) is type(b) and a == b, f"the optimizer's {name} is {shown(b)}, not {shown(a)}")
        params.update(zip(mine["params"], optimizer.param_groups[g]["params"]))
    wanted = set(ADAMW_STATE) | ({"max_exp_avg_sq"} if live["param_groups"][0].get("amsgrad") else set())
    for i, entry in saved["state"].items():
        _need(i in params, f"the optimizer state names parameter {i}, which the model does not have")
        _need(set(entry) == wanted, f"the optimizer state of parameter {i} holds {sorted(entry)}, not {sorted(wanted)}")
        p = params[i]
        for name, t in entry.items():
            if name == "step":
                _need(t.dtype == torch.float32 and t.shape == () and is_int(round(float(t)), 1, step)
                      and float(t) == round(float(t)), f"the step of parameter {i} is not a count from 1 to {step}")
            else:
                _need(t.dtype == p.dtype and t.shape == p.shape, f"{name} of parameter {i} is {t.dtype} "
                      f"{tuple(t.shape)}, not {p.dtype} {tuple(p.shape)}")
                _need(name == "exp_avg" or bool((t >= 0).all()), f"{name} of parameter {i} is negative")
    optimizer.load_state_dict({"state": saved["state"], "param_groups": live["param_groups"]})


# ---- the run folder: one run at a time, and never over another's work -------------------------------------
def check_writable(out_dir: Path, *, parent_only: bool = False) -> None:
    """Refuse an output folder that is a file, or that (or, with ``parent_only``, whose parent) cannot be
    created and written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GptlearnError(f"the output folder {out_dir} is a file; choose a folder for --out")
    folder = out_dir.parent if parent_only else out_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise GptlearnError(f"cannot write to the output folder {out_dir} ({e.strerror or e}); "
                            "choose another --out") from None


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold an OS lock on the run folder ``out`` while a command writes it: a second one (either trainer) is
    refused.

    The lock file, ``.NAME.lock``, sits beside the folder (the folder itself is swapped at every checkpoint;
    where its parent cannot be written, checkpoints are written in place and the lock is ``.gptlearn.lock``
    inside it) and is removed at the end. It is opened with ``O_NOFOLLOW``: a lock file that is a symlink is
    refused, never followed to clobber what it names. The kernel drops the lock however the process ends,
    so the file a killed run leaves behind locks nothing.
    """
    if fcntl is None:
        yield
        return
    real = Path(os.path.realpath(out))  # one lock however the folder is spelled (a symlink, "..")
    lock = real.parent / f".{real.name}.lock" if os.access(real.parent, os.W_OK) else real / ".gptlearn.lock"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0),
                         0o644)
        except OSError as e:
            why = "it is a symlink" if os.path.islink(lock) else e.strerror or str(e)
            raise GptlearnError(f"cannot lock the output folder {out} with {lock} ({why}); remove that file or "
                                "choose another --out") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise GptlearnError(f"cannot lock the output folder {out}: {lock} is not a regular file; remove it or "
                                "choose another --out")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 20, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise GptlearnError(f"another training run{f' (process {holder})' if holder.isdigit() else ''} is "
                                f"writing to {out}; wait for it to end, or choose another --out") from None
        except OSError:  # a file system without locks: run unlocked, as before
            os.close(fd)
            yield
            return
        try:
            if os.path.samestat(os.fstat(fd), os.lstat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its last holder removed the file between our open and our lock: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still locked: a run waiting on this file sees it gone and retries
        os.close(fd)


# ---- Ctrl-C: never between a step's update and its bookkeeping -----------------------------------------
class Interrupts:
    """While a run trains, Ctrl-C (SIGINT) raises KeyboardInterrupt at once, as usual, except inside
    ``held()``: there it waits until the block ends, so that the update of a step and its bookkeeping (the
    step count, the RNG states, the history) happen together or not at all, and a checkpoint written on
    Ctrl-C is always one the run could have written. Signal handlers live in the main thread: elsewhere
    this changes nothing."""

    def __init__(self) -> None:
        self.holding = self.pending = False
        self.previous: Any = None
        self.installed = False

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
            self.installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.holding:
            self.pending = True
        else:
            self._deliver(signum, frame)

    def _deliver(self, signum: int, frame: Any) -> None:
        if callable(self.previous):
            self.previous(signum, frame)  # Python's default handler raises KeyboardInterrupt; Jupyter's too
        elif self.previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            self.pending = False
            self._deliver(signal.SIGINT, None)


def say(message: str) -> None:
    """One line on stderr (what an interrupted run leaves, and where)."""
    print(message, file=sys.stderr)

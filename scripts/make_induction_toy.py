"""Write gptlearn/assets/induction-toy/step600.safetensors: the toy 2-layer model of the chapter "The induction
circuit, tested" after 600 AdamW steps on repeated random blocks (gptlearn.analysis.toy_batch), before its
induction heads form, with its AdamW moments (bfloat16) and what was measured on the way (both scores every
25 steps, and the training loss; metadata "history"), so the chapter can train on from there and plot the
whole run.

    python scripts/make_induction_toy.py            # about 20 s on one idle core
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gptlearn.analysis import TOY_STEP, new_induction_toy, toy_batch, toy_loss, toy_scores  # noqa: E402
from gptlearn.atomic import write_file  # noqa: E402


def main() -> None:
    from safetensors.torch import save

    model = new_induction_toy()  # step 0: seeded, positions from sine/cosine codes
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    data = torch.Generator().manual_seed(1)
    history, losses = [[0, *toy_scores(model), float("nan")]], []
    for step in range(1, TOY_STEP + 1):
        x, p = toy_batch(data)
        loss = toy_loss(model, x, p)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 25 == 0:
            history.append([step, *toy_scores(model), sum(losses) / len(losses)])
            losses = []
    names = [name for name, _ in model.named_parameters()]
    out = {f"model.{k}": v.detach().clone().contiguous() for k,
           v in model.state_dict().items() if k != "lm_head.weight"}
    for i, name in enumerate(names):
        state = opt.state[opt.param_groups[0]["params"][i]]
        out[f"adam.exp_avg.{name}"] = state["exp_avg"].to(torch.bfloat16).contiguous()
        out[f"adam.exp_avg_sq.{name}"] = state["exp_avg_sq"].to(torch.bfloat16).contiguous()
        out["adam.step"] = state["step"].clone()
    path = REPO / "gptlearn" / "assets" / "induction-toy" / f"step{TOY_STEP}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, save(out, metadata={"history": json.dumps(history)}))
    for row in history[::4]:
        print("step {:4d}: induction {:.3f}, previous token {:.3f}, loss {:.3f}".format(*row))
    print(f"wrote {path} ({path.stat().st_size:,} bytes); last loss {loss.item():.3f}")


if __name__ == "__main__":
    main()

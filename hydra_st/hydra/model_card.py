"""Model card (README.md) for a saved Hydra model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_TEMPLATE = """---
library_name: sentence-transformers
pipeline_tag: sentence-similarity
tags:
- sentence-transformers
- hydra-st
- hypernetwork
- task-conditioned
base_model: {base_model}
license: apache-2.0
---

# {model_name}

A **Hydra** model: the frozen base encoder `{base_model}` plus a small hypernetwork that turns a *task card*
(a structured description of a retrieval task) into a task-specific projection head
({in_dim}→{out_dim}, LayerNorm scale/shift; {generated} generated parameters per head from a hypernet of
{trainable} trainable parameters). No per-task fine-tuning: describe a task, get an embedding space for it.{gate}

## Usage

```python
from hydra_st import Hydra, TaskCard

model = Hydra("{path_hint}")
card = TaskCard.load("cards/scifact.yaml")   # or TaskCard(name=..., description=..., ...)
q = model.encode_query(["Aspirin lowers the risk of heart attacks."], task_card=card)
d = model.encode_document(["Aspirin and cardiovascular events: a randomized trial ..."], task_card=card)
print(model.similarity(q, d))
```

Without `hydra_st` installed:

```python
from sentence_transformers import SentenceTransformer
model = SentenceTransformer("{path_hint}", trust_remote_code=True)
q = model.encode_query(["..."], task_card={{"name": "mytask", "description": "..."}})
```

Without a card the generic head (the shared base projection) is used.

With MTEB, wrap the model so that each task's card reaches its encode calls (the bundled card of the task's
dataset where there is one, else a card written from the task's metadata, or your own with `cards=`):

```python
import mteb
from hydra_st.hydra.mteb import HydraMTEBWrapper

results = mteb.evaluate(HydraMTEBWrapper(model), mteb.get_tasks(tasks=["SciFact"]))
```

## Training

{training}

## Evaluation

{evaluation}

## Limitations

The hypernetwork was trained on a handful of tasks, so a card for a very different task gets a head close to
the generic one. Scores were measured on small BEIR-format collections on CPU; see the table above for the
exact numbers, including where Hydra does not beat its base model or teacher.
"""


_GATE_NOTE = """

The head also generates a *gate* that mixes its output with the base embedding. It was calibrated after training
on each training task's dev queries: a task whose dev score did not improve over the base model gets the base
model's embeddings exactly (gate 0), and a new card gets a gate in between, by its closeness to those tasks."""


def base_model_id(model: Any, path: str | os.PathLike[str] | None = None) -> str:
    """The Hub id of the frozen base, for the card's ``base_model`` metadata.

    A model built on a Hub id knows it (its transformer's ``_name_or_path``). Once saved and loaded again, that
    field holds the local folder instead, so the id is read back from the card already in ``path`` (written at
    the first save); failing both, the package's default base model.
    """
    from hydra_st.settings import DEFAULT_BASE_MODEL

    transformer = list(model._modules.values())[0]
    name_or_path = str(getattr(getattr(getattr(transformer, "auto_model", None), "config", None), "_name_or_path", ""))
    if "/" in name_or_path and not os.path.isabs(name_or_path) and not os.path.isdir(name_or_path):
        return name_or_path
    readme = Path(path) / "README.md" if path is not None else None
    if readme is not None and readme.is_file():
        for line in readme.read_text(encoding="utf-8").splitlines()[:30]:
            if line.startswith("base_model:"):
                value = line.split(":", 1)[1].strip()
                if value and not os.path.isdir(value):
                    return value
    return DEFAULT_BASE_MODEL


def write_model_card(
    model: Any,
    path: str | os.PathLike[str],
    model_name: str | None = None,
    training: str | None = None,
    evaluation: str | None = None,
) -> str:
    """Render the README for ``model`` into ``path``/README.md and return its text.

    ``training`` and ``evaluation`` default to the contents of ``hydra_training.json`` and ``hydra_results.md``
    in ``path`` when those exist (the trainer and the quickstart write them).
    """
    from hydra_st.utils.io import atomic_write_text

    path = Path(path)
    head = model.head
    base_model = base_model_id(model, path)
    if training is None:
        info = path / "hydra_training.json"
        training = (
            "```json\n" + json.dumps(json.loads(info.read_text()), indent=2)[:3000] + "\n```"
            if info.is_file()
            else "Untrained (fresh hypernet: the generic head is a PCA/identity projection of the base embeddings)."
        )
    if evaluation is None:
        res = path / "hydra_results.md"
        evaluation = res.read_text(encoding="utf-8") if res.is_file() else "Not evaluated yet."
    text = _TEMPLATE.format(
        base_model=base_model,
        model_name=model_name or path.name,
        in_dim=head.in_dim,
        out_dim=head.out_dim,
        generated=f"{head.generator.generated_parameter_count():,}",
        trainable=f"{head.trainable_parameter_count():,}",
        path_hint=model_name or str(path),
        gate=_GATE_NOTE if getattr(head, "gated", False) else "",
        training=training,
        evaluation=evaluation,
    )
    atomic_write_text(path / "README.md", text)
    return text

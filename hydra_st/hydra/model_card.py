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
{base_model_line}license: apache-2.0
---

# {model_name}

A **Hydra** model: the frozen base encoder {base_model} plus a small hypernetwork that turns a *task card*
(a structured description of a retrieval task) into a task-specific projection head
({in_dim}→{out_dim}, LayerNorm scale/shift; {generated} generated parameters per head from a hypernet of
{trainable} trainable parameters). No per-task fine-tuning: describe a task, get an embedding space for it.{gate}

## Usage

```python
from hydra_st import Hydra
from hydra_st.hydra import load_card

model = Hydra("{path_hint}")
card = load_card("scifact")   # bundled with hydra_st; or TaskCard.load("my_card.yaml"), TaskCard(name=..., ...)
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

Without a card the generic head (the shared base projection) is used.{no_card}

With MTEB, wrap the model so that each task's card reaches its encode calls (the bundled card of the task's
dataset where there is one, else a card written from the task's metadata, or your own with `cards=`):

```python
import mteb
from hydra_st.hydra.mteb import HydraMTEBWrapper

# mteb.get_tasks downloads the task's data from the Hub; offline, hydra_st.evaluation.mteb_tasks.beir_retrieval_task
# turns a local BEIR folder into the same task
results = mteb.evaluate(HydraMTEBWrapper(model), mteb.get_tasks(tasks=["SciFact"]), cache=None)
```

## Training

{training}

## Evaluation

{evaluation}

## Limitations

{limitations}
"""

_GENERIC_LIMITATIONS = (
    "The hypernetwork was trained on a handful of tasks, so a card for a very different task gets a head close to\n"
    "the generic one. Gains of a few thousandths are within the spread between training seeds, and Hydra does not\n"
    "beat its base model on every task: compare against the base model on your own task (`hydra-st hydra-evaluate`)\n"
    "before relying on the head."
)


_GATE_NOTE = """

The head also generates a *gate* that mixes its output with the base embedding. It was calibrated after training
on each training task's dev queries: a task whose dev queries did not show a gain over the base model (by the
training's `gate_rule`) gets the base model's embeddings exactly (gate 0), and a new card gets a gate in between,
by its closeness to those tasks.{rule}"""

_GATE_RULE_NOTE = """

**Gate rule.** This model's gates were calibrated with the rule `{rule}`: {opened} of its {tasks} training tasks
are open.{default}"""

_DEFAULT_RULE_NOTE = """ hydra_st's default rule is `confident` (open only when the one-sided 95% lower bound of
the mean per-query dev gain is above 0), chosen on held-out halves of the dev queries without test data: see
`evaluation/results/hydra_gate_rule.md` in the hydra_st repository (re-run without repeated test queries, that study
no longer separates the two rules: `hydra_gate_rule_decontaminated.md`)."""


def gate_rule_note(training_info: dict[str, Any]) -> str:
    """The model card's sentence on which rule opened the gates, from ``hydra_training.json`` (``""`` if unknown).

    Example:
        >>> info = {"config": {"gate_rule": "confident"}, "gates": {"a": 1.0, "b": 1e-9}}
        >>> "the rule `confident`: 1 of its 2 training tasks" in gate_rule_note(info)
        True
    """
    config = training_info.get("config")
    gates = training_info.get("gates")
    rule = config.get("gate_rule") if isinstance(config, dict) else None
    if not isinstance(rule, str) or not isinstance(gates, dict) or not gates:
        return ""
    # a gate is a sigmoid calibrated to 1 (open) or to ~0 (closed); 0.5 tells the two apart
    opened = sum(1 for g in gates.values() if isinstance(g, (int, float)) and g > 0.5)
    default = "" if rule == "confident" else _DEFAULT_RULE_NOTE
    return _GATE_RULE_NOTE.format(rule=rule, opened=opened, tasks=len(gates), default=default)


_NO_CARD_IS_BASE = (
    "\nFor this model that is the base model's embeddings (to float rounding), so an evaluator that cannot pass\n"
    "a card (MTEB without the wrapper below, sentence-transformers' InformationRetrievalEvaluator) measures\n"
    "{base_model}."
)


def generic_head_is_base(head: Any) -> bool:
    """Whether the card-free head returns the base embeddings (as a closed gate or an identity head does)."""
    import torch

    from .generator import apply_head

    if head.in_dim != head.out_dim:
        return False
    with torch.no_grad():
        weight = head.generator.base_weight
        params = head.generator(torch.zeros(head.cond_dim, device=weight.device, dtype=weight.dtype))
        params = {k: v.float().cpu() for k, v in params.items()}
        x = torch.nn.functional.normalize(torch.randn(16, head.in_dim, generator=torch.Generator().manual_seed(0)))
        return bool(torch.allclose(apply_head(params, x, layer_norm=head.layer_norm), x, atol=1e-5))


def base_model_id(model: Any, path: str | os.PathLike[str] | None = None) -> str | None:
    """The Hub id of the frozen base, for the card's ``base_model`` metadata; ``None`` when no id is known.

    A model built on a Hub id knows it (its transformer's ``_name_or_path``), unless that is the id the whole
    Hydra was loaded by. Otherwise the id comes from the front matter of the card the model was loaded with, or of
    the card already in ``path`` (written at an earlier save). A base known only as a local folder has no id, and
    the card then claims none.

    Example:
        >>> from sentence_transformers import SentenceTransformer
        >>> from sentence_transformers.sentence_transformer.modules import Pooling
        >>> base_model_id(SentenceTransformer(modules=[Pooling(8)])) is None
        True
    """
    from hydra_st.hub.model_cards import card_base_model, transformer_base_id

    if found := transformer_base_id(model):
        return found
    existing = Path(path) / "README.md" if path is not None else None
    for card in (
        getattr(model, "_model_card_text", None),
        existing.read_text(encoding="utf-8") if existing is not None and existing.is_file() else None,
    ):
        if base := card_base_model(card):
            return base
    return None


def measured_limitations(
    results: dict[str, dict[str, dict[str, float]]],
    metric: str = "ndcg@10",
    paired: dict[str, dict[str, dict[str, float]]] | None = None,
) -> str:
    """The card's limitations, stated from an evaluation (``{task: {system: {metric: value}}}``, as the pipeline's
    :func:`~hydra_st.hydra.evaluate.evaluate_task` returns per task), and, when given, the per-task paired
    comparisons against the base model (``{task: {"hydra": {...}}}``, from
    :func:`~hydra_st.hydra.evaluate.paired_against_base`).

    Example:
        >>> r = {"a": {"base": {"ndcg@10": 0.5}, "hydra": {"ndcg@10": 0.52}, "rrf_teacher": {"ndcg@10": 0.6}}}
        >>> measured_limitations(r).splitlines()[1]
        '- No task is below the base model.'
    """
    tasks = list(results)
    name = metric.replace("ndcg", "nDCG")

    def mean(system: str) -> float:
        return sum(results[t][system][metric] for t in tasks) / len(tasks)

    base, hydra = mean("base"), mean("hydra")
    parts = [
        f"Measured on the {len(tasks)} task{'s' if len(tasks) != 1 else ''} above (test split, {name}, one training "
        f"run): Hydra's mean is {hydra:.4f} against the base model's {base:.4f} ({hydra - base:+.4f})"
    ]
    if all("rrf_teacher" in results[t] for t in tasks):
        parts[0] += f"; the RRF teacher it was distilled from reaches {mean('rrf_teacher'):.4f}"
    below = [t for t in tasks if results[t]["hydra"][metric] < results[t]["base"][metric]]
    parts.append(f"Below the base model on: {', '.join(below)}" if below else "No task is below the base model")
    if paired and all("hydra" in paired.get(t, {}) for t in tasks):
        clear = [t for t in tasks if paired[t]["hydra"]["p_value"] < 0.05]
        parts.append(
            f"The difference to the base model is larger than query-to-query noise (paired randomization test, "
            f"p < 0.05) on {len(clear)} of {len(tasks)} tasks" + (f" ({', '.join(clear)})" if clear else "")
        )
    if all("hydra_loto" in results[t] for t in tasks):
        loto = mean("hydra_loto")
        expect = "about" if abs(loto - base) < 0.005 else "more than" if loto > base else "less than"
        parts.append(
            f"Given the card of a task it was not trained on (leave-one-task-out), the mean is {loto:.4f} "
            f"({loto - base:+.4f}): on a new task, expect {expect} the base model's score"
        )
    parts.append(
        "The hypernetwork was trained on a handful of small BEIR-format collections, and gains of a few thousandths "
        "are within the spread between training seeds (the hydra_st repository measures it in "
        "`evaluation/results/hydra_findings.md`), so compare against the base model on your own task before "
        "relying on the head"
    )
    return "\n".join(f"- {part}." for part in parts)


def write_model_card(
    model: Any,
    path: str | os.PathLike[str],
    model_name: str | None = None,
    training: str | None = None,
    evaluation: str | None = None,
    limitations: str | None = None,
) -> str:
    """Render the README for ``model`` into ``path``/README.md and return its text.

    ``training`` and ``evaluation`` default to the contents of ``hydra_training.json`` and ``hydra_results.md``
    in ``path`` when those exist (the trainer and the quickstart write them); ``limitations`` to a generic
    paragraph (the pipeline passes :func:`measured_limitations` of its evaluation).
    """
    from hydra_st.hub.model_cards import base_model_fields
    from hydra_st.utils.io import atomic_write_text

    path = Path(path)
    head = model.head
    base_model = base_model_id(model, path)
    info = path / "hydra_training.json"
    training_info = json.loads(info.read_text(encoding="utf-8")) if info.is_file() else {}
    if not isinstance(training_info, dict):
        raise ValueError(f"{info} must hold a JSON object (the trainer writes one); delete it or re-run the training")
    if training is None:
        training = (
            "```json\n" + json.dumps(training_info, indent=2)[:6000] + "\n```"
            if info.is_file()
            else "Untrained (fresh hypernet: the generic head is a PCA/identity projection of the base embeddings)."
        )
    if evaluation is None:
        res = path / "hydra_results.md"
        evaluation = res.read_text(encoding="utf-8") if res.is_file() else "Not evaluated yet."
    base = base_model_fields(base_model)
    text = _TEMPLATE.format(
        **base,
        model_name=(model_name or path.name).rstrip("/").split("/")[-1],
        in_dim=head.in_dim,
        out_dim=head.out_dim,
        generated=f"{head.generator.generated_parameter_count():,}",
        trainable=f"{head.trainable_parameter_count():,}",
        path_hint=model_name or str(path),
        gate=_GATE_NOTE.format(rule=gate_rule_note(training_info)) if getattr(head, "gated", False) else "",
        no_card=_NO_CARD_IS_BASE.format(base_model=base["base_model"]) if generic_head_is_base(head) else "",
        training=training,
        evaluation=evaluation,
        limitations=limitations or _GENERIC_LIMITATIONS,
    )
    atomic_write_text(path / "README.md", text)
    return text

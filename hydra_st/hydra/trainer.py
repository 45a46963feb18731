"""Train Hydra's hypernet on cached frozen embeddings (accelerate: CPU, GPU or several processes).

The base model never runs during training: documents and queries are the base model's cached embeddings, and
only the card encoder's projection and the head generator are trained. Each step takes one task, a batch of its
training queries and their teacher candidates, generates that task's head from its card (with view dropout, so
the hypernet learns to work from partial cards), and applies :class:`~hydra_st.hydra.losses.HydraLoss`.
Batches are dealt round-robin to processes (``torchrun --nproc_per_node N``); gradients are averaged by
accelerate's DDP wrapper. Checkpoints are safetensors (head weights and flattened AdamW state) plus JSON.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from hydra_st.utils.io import atomic_save_safetensors, atomic_write_json, atomic_write_text

from .generator import apply_head, calibrate_gate
from .losses import HydraLoss, ScoreBatch
from .preferences import Preferences

logger = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    """Hyper-parameters of a Hydra training run.

    Args:
        epochs: Passes over all tasks' training queries.
        batch_size: Queries per step (one task per step).
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        loss_weights: Weights of the loss terms (see :class:`HydraLoss`).
        view_dropout: Probability of zeroing each card view during training.
        init: ``"pca"`` (W0 = principal directions of the training corpora, centred) or ``"identity"``.
        eval_every: Steps between dev evaluations (0: once per epoch).
        patience: Dev evaluations without improvement before stopping (0: never stop early).
        seed: Seed of batch order and dropout.
        checkpoint_every: Steps between checkpoints (0: only at the end).
        max_queries_per_task: Training queries drawn per task per epoch (0: all); balances tasks and time.
        show_progress_bar: Show a tqdm bar.

    Example:
        >>> config = TrainingConfig(epochs=2, init="identity")
        >>> config.batch_size, config.learning_rate, config.loss_weights
        (32, 0.001, {'pairwise': 1.0, 'anchor': 2.0})
        >>> TrainingConfig(init="random")
        Traceback (most recent call last):
        ...
        ValueError: TrainingConfig.init must be 'pca' or 'identity', got 'random'
    """

    epochs: int = 4
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    loss_weights: dict[str, float] = field(default_factory=lambda: {"pairwise": 1.0, "anchor": 2.0})
    view_dropout: float = 0.25
    init: str = "pca"
    eval_every: int = 0
    patience: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    max_queries_per_task: int = 400
    show_progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.init not in ("pca", "identity"):
            raise ValueError(f"TrainingConfig.init must be 'pca' or 'identity', got {self.init!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")
        if not 0 <= self.view_dropout < 1:
            raise ValueError(f"view_dropout must be in [0, 1), got {self.view_dropout}")
        HydraLoss(self.loss_weights)  # validates the names and weights


class _HeadFn(nn.Module):
    """The trainable part as one module (so DDP can wrap it): card features → head → projected embeddings."""

    def __init__(self, head: Any) -> None:  # a HydraHead (not imported: the trainer only needs its parts)
        super().__init__()
        self.card_encoder = head.card_encoder
        self.generator = head.generator
        self.layer_norm = head.layer_norm

    def forward(
        self, card_features: torch.Tensor, view_mask: torch.Tensor, queries: torch.Tensor, *docs: torch.Tensor
    ) -> list[torch.Tensor]:
        params = self.generator(self.card_encoder.condition(card_features, view_mask))
        head = [apply_head(params, queries, layer_norm=self.layer_norm, is_query=True)]
        return head + [apply_head(params, d, layer_norm=self.layer_norm) for d in docs]


@dataclass
class _TaskTensors:
    name: str
    card_features: torch.Tensor
    doc_emb: torch.Tensor
    query_emb: torch.Tensor
    candidates: torch.Tensor
    teacher_scores: torch.Tensor
    pairs: torch.Tensor
    confidence: torch.Tensor


class HydraTrainer:
    """Train the hypernet of a :class:`~hydra_st.hydra.model.Hydra` model on several tasks.

    Args:
        model: The Hydra model (its base is only used to embed the card texts once).
        tasks: :class:`~hydra_st.hydra.tasks.TaskData` per task.
        preferences: Train-query preferences per task name.
        config: Training hyper-parameters.
        output_dir: Where checkpoints, ``loss_log.jsonl`` and ``trainer_state.json`` go (None: nowhere).
        dev_evaluator: ``fn(model) -> float`` (or ``-> {task: score}``) called on the dev queries; the best
            state is kept.
        dev_aggregate: Turns a dict returned by ``dev_evaluator`` into the selection score (default: mean).

    Example:
        >>> trainer = HydraTrainer(model, tasks, prefs, TrainingConfig(epochs=1))  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        tasks: list[Any],
        preferences: dict[str, Preferences],
        config: TrainingConfig | None = None,
        output_dir: str | Path | None = None,
        dev_evaluator: Any = None,
        dev_aggregate: Any = None,
    ) -> None:
        self.model = model
        self.head = model.head
        self.config = config or TrainingConfig()
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.dev_evaluator = dev_evaluator
        self.dev_aggregate = dev_aggregate or (lambda scores: float(np.mean(list(scores.values()))))
        missing = [t.name for t in tasks if t.name not in preferences]
        if missing:
            raise ValueError(f"no preferences for task(s) {missing}")
        if not tasks:
            raise ValueError("HydraTrainer needs at least one task")
        self.tasks = [self._tensors(t, preferences[t.name]) for t in tasks]
        self.task_meta = [{"name": t.name, "train_queries": len(t.train), "source": t.train_source} for t in tasks]
        self.loss_fn = HydraLoss(self.config.loss_weights)
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        self.best_dev_per_task: dict[str, float] | None = None  # the per-task dev result of the kept state

    def _tensors(self, task: Any, prefs: Preferences) -> _TaskTensors:
        if list(prefs.query_ids) != list(task.train.ids):
            raise ValueError(f"{task.name}: preferences were built for other queries; rebuild them")
        dim = task.doc_embeddings.shape[1]
        if dim != self.head.in_dim:
            raise ValueError(f"{task.name}: {dim}-d embeddings but the head expects {self.head.in_dim}-d")
        feats = self.head.card_encoder.card_features(task.card.to_dict(), self.head.embed_texts)
        return _TaskTensors(
            name=task.name,
            card_features=feats,
            doc_emb=torch.from_numpy(np.asarray(task.doc_embeddings, dtype=np.float32)),
            query_emb=torch.from_numpy(np.asarray(task.train.embeddings, dtype=np.float32)),
            candidates=torch.from_numpy(prefs.candidates),
            teacher_scores=torch.from_numpy(prefs.teacher_scores),
            pairs=torch.from_numpy(prefs.pairs),
            confidence=torch.from_numpy(prefs.confidence),
        )

    # ------------------------------------------------------------------ batches
    def _epoch_batches(self, epoch: int) -> list[tuple[int, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
        batches: list[tuple[int, torch.Tensor]] = []
        for ti, t in enumerate(self.tasks):
            perm = torch.randperm(t.query_emb.shape[0], generator=gen)
            if self.config.max_queries_per_task:
                perm = perm[: self.config.max_queries_per_task]
            bs = self.config.batch_size
            batches.extend((ti, perm[i : i + bs]) for i in range(0, len(perm), bs) if len(perm[i : i + bs]) >= 2)
        order = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in order]

    def _score_batch(
        self, fn: nn.Module, t: _TaskTensors, rows: torch.Tensor, gen: torch.Generator, device
    ) -> ScoreBatch:
        cand = t.candidates[rows]
        mask = cand >= 0
        q = t.query_emb[rows].to(device)
        d = t.doc_emb[cand.clamp_min(0)].to(device)  # [B, K, in]
        pos = d[:, 0]
        keep = (torch.rand(4, generator=gen) >= self.config.view_dropout).float()
        qh, dh, ph = fn(t.card_features.to(device), keep.to(device), q, d, pos)
        scores = torch.einsum("bd,bkd->bk", qh, dh)
        base = torch.einsum("bd,bkd->bk", q, d)
        return ScoreBatch(
            scores=scores,
            mask=mask.to(device),
            teacher_scores=t.teacher_scores[rows].to(device),
            base_scores=base,
            pairs=t.pairs[rows].to(device),
            confidence=t.confidence[rows].to(device),
            query_emb=qh,
            positive_emb=ph,
        )

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_base_projection(self) -> None:
        """Initialise ``W0`` (PCA of the training corpora's embeddings, or the identity slice)."""
        if self.config.init == "identity":
            n = self.head.generator.out_dim
            self.head.generator.base_weight.copy_(torch.eye(self.head.in_dim)[:, :n])
            self.head.generator.base_bias.zero_()
            return
        gen = torch.Generator().manual_seed(self.config.seed)
        parts = []
        for t in self.tasks:
            take = torch.randperm(t.doc_emb.shape[0], generator=gen)[:2000]
            parts.append(t.doc_emb[take])
        self.head.generator.init_base_from_embeddings(torch.cat(parts), center=True)

    # ------------------------------------------------------------------ training
    def train(self, resume_from: str | Path | None = None) -> dict[str, Any]:
        """Run training; returns a summary (steps, final losses, best dev score)."""
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
        device = accelerator.device
        torch.manual_seed(self.config.seed)
        if resume_from is None:
            self.init_base_projection()
        fn = _HeadFn(self.head)
        # the fallback gate and the query shift are not trained with the head: they are calibrated afterwards. They
        # are left out of the optimizer, and requires_grad is off too so that autograd (and DDP under torchrun) does
        # not expect a gradient for them.
        trainable = [*self.head.card_encoder.parameters(), *self.head.generator.head_parameters()]
        for p in self.head.generator.calibrated_parameters():
            p.requires_grad_(False)
        optimizer = torch.optim.AdamW(trainable, lr=self.config.learning_rate, weight_decay=self.config.weight_decay)
        if resume_from is not None:
            self._load_checkpoint(Path(resume_from), optimizer)
        fn, optimizer = accelerator.prepare(fn, optimizer)
        self.head.train()
        world, rank = accelerator.num_processes, accelerator.process_index
        per_epoch = len(self._epoch_batches(0)) // world
        total = per_epoch * self.config.epochs
        start_epoch = self.global_step // max(1, per_epoch)
        bar = tqdm(
            total=total,
            initial=self.global_step,
            desc="hydra train",
            disable=not (self.config.show_progress_bar and accelerator.is_main_process),
        )
        gen = torch.Generator().manual_seed(self.config.seed + 17 * rank)
        eval_every = self.config.eval_every or per_epoch
        stale = self._stale_dev_evaluations()
        if self.dev_evaluator is not None and self.global_step == 0:
            self._dev_step()  # the starting point competes too: training never ends below it on dev
        stop = False
        for epoch in range(start_epoch, self.config.epochs):
            batches = self._epoch_batches(epoch)[rank::world][:per_epoch]
            skip = self.global_step - epoch * per_epoch
            for bi, (ti, rows) in enumerate(batches):
                if bi < skip:
                    continue
                sb = self._score_batch(fn, self.tasks[ti], rows, gen, device)
                loss, parts = self.loss_fn(sb)
                optimizer.zero_grad()
                accelerator.backward(loss)
                optimizer.step()
                self.global_step += 1
                record = {
                    "step": self.global_step,
                    "epoch": epoch,
                    "task": self.tasks[ti].name,
                    "loss": float(loss.detach()),
                    **parts,
                }
                self.history.append(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", task=record["task"])
                if self.config.checkpoint_every and self.global_step % self.config.checkpoint_every == 0:
                    self._save_checkpoint(accelerator, optimizer, epoch)
                if self.dev_evaluator is not None and self.global_step % eval_every == 0:
                    if self._dev_step():
                        stale = 0
                    else:
                        stale += 1
                        if self.config.patience and stale >= self.config.patience:
                            stop = True
                            break
            if stop:
                break
        bar.close()
        if self.output_dir is not None and accelerator.is_main_process:
            self._save_checkpoint(accelerator, optimizer, self.config.epochs, final=True)
        if self.best is not None:
            self.head.load_state_dict(self.best[2])
        self.head.eval()
        self.head.clear_cache()
        return self.summary()

    def _dev_step(self) -> bool:
        self.head.eval()
        result = self.dev_evaluator(self.model)
        per_task = dict(result) if isinstance(result, dict) else None
        score = float(self.dev_aggregate(per_task)) if per_task is not None else float(result)
        self.head.train()
        self.history.append(
            {"step": self.global_step, "dev": score, **({"dev_per_task": per_task} if per_task else {})}
        )
        if self.best is None or score > self.best[0]:
            self.best = (score, self.global_step, copy.deepcopy(self.head.state_dict()))
            self.best_dev_per_task = per_task
            return True
        return False

    @torch.no_grad()
    def calibrate_gate(self, dev_gains: dict[str, float], min_gain: float = 0.0) -> dict[str, float]:
        """Open the fallback gate for tasks whose dev gain over the base exceeds ``min_gain``, close it for the rest.

        Tasks missing from ``dev_gains`` (no dev queries) are closed: without evidence, the base model is kept.
        Returns the calibrated gate value per task.
        """
        if not self.head.generator.gated:
            raise ValueError("calibrate_gate needs a gated head: build it with Hydra.from_base(..., gated=True)")
        encoder = self.head.card_encoder
        device = self.head.generator.base_weight.device
        conds = torch.stack([encoder.condition(t.card_features.to(device)) for t in self.tasks])
        open_ = torch.tensor([dev_gains.get(t.name, float("-inf")) > min_gain for t in self.tasks])
        calibrate_gate(self.head.generator, conds.cpu().float(), open_)
        self.head.clear_cache()
        gates = {t.name: float(self.head.generator(c)["gate"]) for t, c in zip(self.tasks, conds, strict=True)}
        self.history.append({"step": self.global_step, "gates": gates, "gate_dev_gains": dict(dev_gains)})
        return gates

    def summary(self) -> dict[str, Any]:
        losses = [h for h in self.history if "loss" in h]
        last = losses[-50:]
        return {
            "steps": self.global_step,
            "config": asdict(self.config),
            "tasks": self.task_meta,
            "final_loss": float(np.mean([h["loss"] for h in last])) if last else math.nan,
            "best_dev": None if self.best is None else {"score": self.best[0], "step": self.best[1]},
            "dev_history": [h for h in self.history if "dev" in h],
            "trainable_parameters": self.head.trainable_parameter_count(),
            "generated_parameters_per_head": self.head.generator.generated_parameter_count(),
            "gates": next((h["gates"] for h in reversed(self.history) if "gates" in h), None),
            # the per-task dev gains the gates were calibrated on (why each gate is open or closed)
            "gated_dev_gains": next((h["gate_dev_gains"] for h in reversed(self.history) if "gates" in h), None),
        }

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, accelerator: Any, optimizer: Any, epoch: int, final: bool = False) -> None:
        if self.output_dir is None or not accelerator.is_main_process:
            return
        ckpt = self.output_dir / ("checkpoint-final" if final else f"checkpoint-{self.global_step}")
        state = {f"head.{k}": v.detach().cpu() for k, v in self.head.state_dict().items()}
        if self.best is not None:  # the kept state, so a resumed run ends on the same model selection
            state.update({f"best.{k}": v.detach().cpu() for k, v in self.best[2].items()})
        opt_state = optimizer.state_dict()
        for pid, pstate in opt_state["state"].items():
            for key, value in pstate.items():
                state[f"optim.{pid}.{key}"] = (
                    torch.as_tensor(value).detach().cpu().reshape(-1) if key == "step" else value.detach().cpu()
                )
        atomic_save_safetensors(ckpt / "training_state.safetensors", state)
        atomic_write_json(
            ckpt / "trainer_state.json",
            {
                "global_step": self.global_step,
                "epoch": epoch,
                "config": asdict(self.config),
                "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]],
                "best": None if self.best is None else {"score": self.best[0], "step": self.best[1]},
                "best_dev_per_task": self.best_dev_per_task,
                "history": self.history,
            },
        )
        log = "\n".join(json.dumps(h) for h in self.history) + "\n"
        atomic_write_text(self.output_dir / "loss_log.jsonl", log)

    def _load_checkpoint(self, path: Path, optimizer: torch.optim.Optimizer) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        st_path, js_path = path / "training_state.safetensors", path / "trainer_state.json"
        if not st_path.is_file() or not js_path.is_file():
            raise FileNotFoundError(
                f"{path} is not a Hydra checkpoint (needs training_state.safetensors and trainer_state.json)"
            )
        try:
            state = load_file(str(st_path))
            meta = json.loads(js_path.read_text(encoding="utf-8"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(
                f"checkpoint {path} is corrupt ({exc}); resume from an earlier checkpoint or start over"
            ) from exc
        head_state = {k[5:]: v for k, v in state.items() if k.startswith("head.")}
        try:
            self.head.load_state_dict(head_state)
        except RuntimeError as exc:
            raise ValueError(f"checkpoint {path} does not match this model's head ({exc})") from exc
        opt_state = optimizer.state_dict()
        for pid in range(len(opt_state["param_groups"][0]["params"])):
            keys = {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"optim.{pid}.")}
            if keys:
                if "step" in keys:
                    keys["step"] = keys["step"].reshape(())
                opt_state["state"][pid] = keys
        optimizer.load_state_dict(opt_state)
        self.global_step = int(meta["global_step"])
        # checkpoints from before the best state was stored resume without it (the dev history starts afresh)
        self.history = list(meta.get("history", []))
        best_state = {k[5:]: v for k, v in state.items() if k.startswith("best.")}
        if meta.get("best") is not None and best_state:
            self.best = (float(meta["best"]["score"]), int(meta["best"]["step"]), best_state)
            self.best_dev_per_task = meta.get("best_dev_per_task")

    def _stale_dev_evaluations(self) -> int:
        """Dev evaluations since the best one (early stopping's count; non-zero only after a resume)."""
        if self.best is None:
            return 0
        return sum(1 for h in self.history if "dev" in h and h["step"] > self.best[1])

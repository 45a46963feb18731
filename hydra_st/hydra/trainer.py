"""Train Hydra's hypernet on cached frozen embeddings (accelerate: CPU, GPU or several processes).

The base model never runs during training: documents and queries are the base model's cached embeddings, and
only the card encoder's projection and the head generator are trained. Each step takes one task, a batch of its
training queries and their teacher candidates, generates that task's head from its card (with view dropout, so
the hypernet learns to work from partial cards), and applies :class:`~hydra_st.hydra.losses.HydraLoss`.
Batches are dealt round-robin to processes (``torchrun --nproc_per_node N``); gradients are averaged by
accelerate's DDP wrapper. Checkpoints (:mod:`hydra_st.hydra.checkpoints`) are safetensors plus JSON, so a resumed
run ends with the uninterrupted run's weights.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hydra_st.utils.io import atomic_write_text

from .checkpoints import load_checkpoint, restore_step_state, save_checkpoint
from .generator import calibrate_gate
from .losses import HydraLoss
from .preferences import Preferences
from .training_batches import HeadFn, epoch_batches, score_batch, task_tensors
from .training_config import TrainingConfig

logger = logging.getLogger(__name__)


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
        run_config: JSON-ready settings outside ``config`` that the run depends on (``train_model`` passes the
            pipeline config: head shape, preferences, dev aggregate). Saved with each checkpoint; a resume from a
            checkpoint saved with other settings (or another ``config``, other tasks or cards, another number of
            processes) is refused.

    Example:
        A tiny base model (16-d static word embeddings, nothing downloaded) and one synthetic task whose 16 training
        queries each lie on their own document; the preferences come from the dense ranking alone:

        >>> import numpy as np
        >>> from sentence_transformers import SentenceTransformer
        >>> from sentence_transformers.sentence_transformer.modules import StaticEmbedding
        >>> from tokenizers import Tokenizer, models, pre_tokenizers
        >>> from hydra_st.hydra import Hydra, PreferenceConfig, TaskCard, build_preferences
        >>> from hydra_st.hydra.tasks import QuerySet, TaskData
        >>> tok = Tokenizer(models.WordLevel({"[UNK]": 0, "cats": 1, "dogs": 2}, unk_token="[UNK]"))
        >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> base = SentenceTransformer(modules=[StaticEmbedding(tok, embedding_dim=16)], device="cpu")
        >>> model = Hydra.from_base(base, out_dim=8, cond_dim=4, rank=2, hidden_dim=8)
        >>> docs = np.random.default_rng(0).normal(size=(40, 16)).astype("float32")
        >>> docs /= np.linalg.norm(docs, axis=1, keepdims=True)
        >>> doc_ids, qids, queries = [f"d{i}" for i in range(40)], [f"q{i}" for i in range(16)], docs[:16]
        >>> card = TaskCard(name="toy", description="Find documents about cats and dogs.")
        >>> train = QuerySet(qids, ["cats"] * 16, queries)
        >>> task = TaskData("toy", card, doc_ids, ["dogs"] * 40, docs, train, QuerySet([], []), QuerySet([], []))
        >>> dense = {q: dict(zip(doc_ids, map(float, row))) for q, row in zip(qids, queries @ docs.T)}
        >>> pairs = PreferenceConfig(candidates=20, pairs_per_query=4)
        >>> prefs = {"toy": build_preferences(qids, [dense], doc_ids, pairs)}
        >>> config = TrainingConfig(epochs=1, batch_size=8, init="identity", show_progress_bar=False)
        >>> HydraTrainer(model, [task], prefs, config).train()["steps"]  # 16 queries in batches of 8
        2
        >>> model.encode_query(["cats"], task_card=card).shape
        (1, 8)
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
        run_config: dict[str, Any] | None = None,
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
        self.tasks = [task_tensors(t, preferences[t.name], self.head) for t in tasks]
        self.task_meta = [{"name": t.name, "train_queries": len(t.train), "source": t.train_source} for t in tasks]
        self._card_fingerprints = [t.card.fingerprint for t in tasks]
        self.run_config = run_config
        self.loss_fn = HydraLoss(self.config.loss_weights)
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        self.best_dev_per_task: dict[str, float] | None = None  # the per-task dev result of the kept state
        self._resumed_step_state: tuple[torch.Tensor | None, dict[str, Any] | None] = (None, None)
        self._eval_every = 0  # the dev evaluation interval of the last train() (config.eval_every, or one epoch)
        self._log_path: Path | None = None  # loss_log.jsonl while training (main process, with an output dir)

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
        """Run training; returns a summary (steps, final losses, best dev score).

        Args:
            resume_from: A checkpoint folder (``checkpoint-<step>`` or ``checkpoint-final``) written by this run's
                recipe: the same :class:`TrainingConfig` (up to
                :data:`~hydra_st.hydra.checkpoints.RUN_INDEPENDENT_FIELDS`), tasks, cards and number of processes.
                The resumed run computes what the uninterrupted run computes from that step on: the same losses,
                dev history, model selection and weights.

        Raises:
            ~hydra_st.hydra.checkpoints.CheckpointError: (a ``ValueError``) ``resume_from`` was written by another
                run (the message names what differs), does not match the head, or is corrupt.
            FileNotFoundError: ``resume_from`` is not a checkpoint folder.
        """
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
        device = accelerator.device
        torch.manual_seed(self.config.seed)
        if resume_from is None:
            self.init_base_projection()
        fn = HeadFn(self.head)
        # the fallback gate and the query shift are not trained with the head: they are calibrated afterwards. They
        # are left out of the optimizer, and requires_grad is off too so that autograd (and DDP under torchrun) does
        # not expect a gradient for them.
        trainable = [*self.head.card_encoder.parameters(), *self.head.generator.head_parameters()]
        for p in self.head.generator.calibrated_parameters():
            p.requires_grad_(False)
        optimizer = torch.optim.AdamW(trainable, lr=self.config.learning_rate, weight_decay=self.config.weight_decay)
        if resume_from is not None:
            load_checkpoint(self, Path(resume_from), optimizer, accelerator.num_processes)
        fn, optimizer = accelerator.prepare(fn, optimizer)
        self.head.train()
        world, rank = accelerator.num_processes, accelerator.process_index
        batches_per_epoch = len(epoch_batches(self.tasks, self.config, 0))
        # every process takes the same number of steps (DDP averages one gradient from each): each takes every
        # world-th batch, and the last batches_per_epoch % world of an epoch are left out
        per_epoch = batches_per_epoch // world
        if per_epoch == 0:
            raise ValueError(
                f"an epoch has {batches_per_epoch} batch(es), fewer than the {world} processes that would share it: "
                "lower training.batch_size or run fewer processes"
            )
        if batches_per_epoch % world and accelerator.is_main_process:
            logger.info(
                "%d of the %d batches of each epoch are left out, so that each of the %d processes takes %d steps",
                batches_per_epoch % world,
                batches_per_epoch,
                world,
                per_epoch,
            )
        total = per_epoch * self.config.epochs
        start_epoch = self.global_step // max(1, per_epoch)
        bar = tqdm(
            total=total,
            initial=self.global_step,
            desc="hydra train",
            disable=not (self.config.show_progress_bar and accelerator.is_main_process),
        )
        gen = torch.Generator().manual_seed(self.config.seed + 17 * rank)  # the view-dropout masks
        if resume_from is not None:  # carry on with the masks the uninterrupted run would draw (and its fp16 scale)
            restore_step_state(self, Path(resume_from), gen, accelerator)
        eval_every = self.config.eval_every or max(1, per_epoch)
        self._eval_every = eval_every
        self._start_log(accelerator.is_main_process)
        stale = self._stale_dev_evaluations()
        # the starting point competes too (training never ends below it on dev). On a resume, a checkpoint written
        # on an eval step before its dev evaluation (by hydra_st before the checkpoint moved after it) gets it now.
        if self._dev_due(eval_every):
            if self._dev_step():
                stale = 0
            elif self.global_step > 0:
                stale += 1
        stop = self._patience_spent(stale)  # a run resumed from where early stopping ended it trains no further
        for epoch in range(start_epoch, self.config.epochs):
            if stop:
                break
            batches = epoch_batches(self.tasks, self.config, epoch)[rank::world][:per_epoch]
            skip = self.global_step - epoch * per_epoch
            for bi, (ti, rows) in enumerate(batches):
                if bi < skip:
                    continue
                sb = score_batch(fn, self.tasks[ti], rows, gen, device, self.config.view_dropout)
                loss, parts = self.loss_fn(sb)
                optimizer.zero_grad()
                accelerator.backward(loss)
                optimizer.step()
                self.global_step += 1
                if world > 1:  # every process logs the mean over all processes' batches (a collective: all call it)
                    values = torch.tensor([float(loss.detach()), *parts.values()], device=device)
                    loss_mean, *part_means = accelerator.reduce(values, reduction="mean").tolist()
                    parts = dict(zip(parts, part_means, strict=True))
                else:
                    loss_mean = float(loss.detach())
                record = {
                    "step": self.global_step,
                    "epoch": epoch,
                    "task": self.tasks[ti].name,  # with several processes: the main process's batch
                    "loss": loss_mean,
                    **parts,
                }
                self._record(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", task=record["task"])
                if self.dev_evaluator is not None and self.global_step % eval_every == 0:
                    if self._dev_step():
                        stale = 0
                    else:
                        stale += 1
                        stop = self._patience_spent(stale)
                # after the dev step: a run resumed from this checkpoint starts with this step's dev result
                if self.config.checkpoint_every and self.global_step % self.config.checkpoint_every == 0:
                    save_checkpoint(self, accelerator, optimizer, epoch, gen)
                if stop:
                    break
        bar.close()
        if self.config.eval_final and self.dev_evaluator is not None and not self._evaluated(self.global_step):
            self._dev_step()  # the last step's state competes too
        if accelerator.is_main_process:
            for warning in self.selection_warnings():
                # steps after the last of several dev evaluations are an eval interval's usual remainder (info); a
                # run that evaluated nothing after step 0, or kept step 0, is worth a warning
                routine = "never evaluated" in warning and self._eval_every <= self.global_step
                logger.log(logging.INFO if routine else logging.WARNING, "%s", warning)
        if self.output_dir is not None:  # every process takes part (their generator states are gathered)
            save_checkpoint(self, accelerator, optimizer, self.config.epochs, gen, final=True)
        self._log_path = None
        if self.best is not None:
            self.head.load_state_dict(self.best[2])
        self.head.eval()
        self.head.clear_cache()
        return self.summary()

    def _evaluated(self, step: int) -> bool:
        """Whether the dev history holds an evaluation of step ``step``."""
        return any("dev" in h and h["step"] == step for h in self.history)

    def _dev_due(self, eval_every: int) -> bool:
        """Whether the current step is an eval step (step 0 included) that has no dev evaluation yet."""
        if self.dev_evaluator is None or self.global_step % eval_every:
            return False
        return not self._evaluated(self.global_step)

    def _patience_spent(self, stale: int) -> bool:
        return bool(self.config.patience) and stale >= self.config.patience

    def _start_log(self, main_process: bool) -> None:
        """Start ``loss_log.jsonl`` (main process, with an output dir): the history so far (a resumed run's
        restored one), then one line per step and per dev evaluation as they happen."""
        self._log_path = self.output_dir / "loss_log.jsonl" if self.output_dir is not None and main_process else None
        if self._log_path is not None:
            atomic_write_text(self._log_path, "".join(json.dumps(h) + "\n" for h in self.history))

    def _record(self, entry: dict[str, Any]) -> None:
        """Add ``entry`` to the history and append it to ``loss_log.jsonl``."""
        self.history.append(entry)
        if self._log_path is not None:
            with self._log_path.open("a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")

    def _dev_step(self) -> bool:
        self.head.eval()
        result = self.dev_evaluator(self.model)
        per_task = dict(result) if isinstance(result, dict) else None
        score = float(self.dev_aggregate(per_task)) if per_task is not None else float(result)
        self.head.train()
        self._record({"step": self.global_step, "dev": score, **({"dev_per_task": per_task} if per_task else {})})
        if self.best is None or score > self.best[0]:
            self.best = (score, self.global_step, copy.deepcopy(self.head.state_dict()))
            self.best_dev_per_task = per_task
            return True
        return False

    def selection_warnings(self) -> list[str]:
        """What model selection left out, in words (empty when nothing): the steps trained after the last dev
        evaluation, which never competed, and a kept state that is the untrained one (step 0)."""
        if self.best is None:  # no dev evaluation: the last step's state is kept
            return []
        warnings = []
        every = self._eval_every or self.config.eval_every
        last = max(h["step"] for h in self.history if "dev" in h)
        if self.global_step > last:
            why = (
                f"eval_every ({every}) is more than the {self.global_step} steps trained"
                if every > self.global_step
                else f"{self.global_step} is not a multiple of eval_every ({every})"
            )
            span = (
                f"step {self.global_step} was"
                if last + 1 == self.global_step
                else f"steps {last + 1}-{self.global_step} were"
            )
            warnings.append(
                f"{span} trained but never evaluated on dev ({why}), so model selection did not consider "
                f"{'it' if last + 1 == self.global_step else 'them'} and discarded "
                f"{'it' if last + 1 == self.global_step else 'them'}: the kept state is step {self.best[1]}'s. Set "
                f"training.eval_every to a divisor of {self.global_step}, or training.eval_final: true to evaluate "
                "the last step's state too"
            )
        if self.best[1] == 0 and self.global_step > 0:
            base = self.config.init == "identity" and self.head.generator.out_dim == self.head.in_dim
            warnings.append(
                f"training kept step 0 (no improvement on dev over the untrained state in {self.global_step} steps): "
                "the saved head is the untrained one"
                + (" (init: identity, so the model equals the base model)" if base else "")
                + f". Evaluate more often (training.eval_every, now {every}) or change the training (epochs, "
                "learning_rate)"
            )
        return warnings

    @torch.no_grad()
    def calibrate_gate(
        self, dev_gains: dict[str, float], lower_bounds: dict[str, float] | None = None
    ) -> dict[str, float]:
        """Open the fallback gate for tasks whose dev gain over the base is positive (with ``lower_bounds``: whose
        gain's lower confidence bound is), close it for the rest.

        Tasks missing from the evidence (no dev queries) are closed: without evidence, the base model is kept.

        Args:
            dev_gains: Dev nDCG@10 gain over the base model per task name (``hydra_st.hydra.evaluate.dev_gains``).
            lower_bounds: If given, a task opens only when its lower confidence bound of that gain is above 0
                (``hydra_st.hydra.evaluate.dev_gain_lower_bounds``: the ``"confident"`` gate rule).

        Returns:
            The calibrated gate value per task (about 1: the trained head; about 0: the base model).
        """
        if not self.head.generator.gated:
            raise ValueError("calibrate_gate needs a gated head: build it with Hydra.from_base(..., gated=True)")
        evidence = dev_gains if lower_bounds is None else lower_bounds
        encoder = self.head.card_encoder
        device = self.head.generator.base_weight.device
        conds = torch.stack([encoder.condition(t.card_features.to(device)) for t in self.tasks])
        open_ = torch.tensor([evidence.get(t.name, float("-inf")) > 0.0 for t in self.tasks])
        calibrate_gate(self.head.generator, conds.cpu().float(), open_)
        self.head.clear_cache()
        gates = {t.name: float(self.head.generator(c)["gate"]) for t, c in zip(self.tasks, conds, strict=True)}
        entry: dict[str, Any] = {"step": self.global_step, "gates": gates, "gate_dev_gains": dict(dev_gains)}
        if lower_bounds is not None:
            entry["gate_dev_lower_bounds"] = dict(lower_bounds)
        self.history.append(entry)
        return gates

    def summary(self) -> dict[str, Any]:
        """What the run did, JSON-ready: steps, config, tasks, the mean loss of the last 50 steps, the kept dev state
        (``best_dev``: score and step) with the dev history and what selection left out (``selection_warnings``,
        see :meth:`selection_warnings`), parameter counts, and the calibrated gates with the dev gains (and, with the
        ``"confident"`` rule, their lower bounds) they were calibrated on (None before :meth:`calibrate_gate`)."""
        losses = [h for h in self.history if "loss" in h]
        last = losses[-50:]
        gated: dict[str, Any] = next((h for h in reversed(self.history) if "gates" in h), {})  # last calibration
        return {
            "steps": self.global_step,
            "config": asdict(self.config),
            "tasks": self.task_meta,
            "final_loss": float(np.mean([h["loss"] for h in last])) if last else math.nan,
            "best_dev": None if self.best is None else {"score": self.best[0], "step": self.best[1]},
            "dev_history": [h for h in self.history if "dev" in h],
            "selection_warnings": self.selection_warnings(),
            "trainable_parameters": self.head.trainable_parameter_count(),
            "generated_parameters_per_head": self.head.generator.generated_parameter_count(),
            "gates": gated.get("gates"),
            # the per-task dev gains the gates were calibrated on (why each gate is open or closed)
            "gated_dev_gains": gated.get("gate_dev_gains"),
            # with the "confident" rule: the lower bounds of those gains, which decided each gate (> 0: open)
            "gated_dev_lower_bounds": gated.get("gate_dev_lower_bounds"),
        }

    def _stale_dev_evaluations(self) -> int:
        """Dev evaluations since the best one (early stopping's count; non-zero only after a resume)."""
        if self.best is None:
            return 0
        return sum(1 for h in self.history if "dev" in h and h["step"] > self.best[1])

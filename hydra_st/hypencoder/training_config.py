"""The settings of a Hypencoder training run (:class:`HypencoderTrainingConfig`), checked field by field."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra_st.hypencoder.config_checks import check_fields
from hydra_st.hypencoder.qnet import QNetConverter
from hydra_st.settings import DEFAULT_BASE_MODEL


@dataclass
class HypencoderTrainingConfig:
    """Settings of one training run (saved beside the model as ``training_config.json``).

    Attributes:
        datasets: datasets whose ``split`` queries are trained on.
        split: the split of ``datasets`` to train on (never ``"test"``).
        pseudo_query_datasets: datasets trained on pseudo-queries made from their corpus.
        num_pseudo_queries: pseudo-queries per dataset in ``pseudo_query_datasets``.
        base_model: Hub id or path of the base sentence-transformer (also the dense teacher).
        bi_encoder: train the matched bi-encoder (a ``[hidden, 1]`` q-net) instead of the Hypencoder.
        qnet_hidden_layers: hidden blocks of the Hypencoder's q-net.
        qnet_width: width of the q-net's hidden blocks (default: the transformer width).
        linear_skip: give the q-net a linear skip term (starts as the base's query embedding).
        learned_skip: let the hyper-head correct the skip vector (see :attr:`uses_learned_skip`).
        freeze_base: freeze the transformer(s): only the hyper-head trains.
        shared_transformer: one transformer for queries and documents.
        query_side_only: train the query route's own transformer, keep the document route frozen (needs
            ``freeze_base=False`` and ``shared_transformer=False``).
        document_pooling: ``"mean"`` or ``"cls"`` pooling of the document route.
        steps: optimizer steps.
        batch_size: queries per step.
        num_negatives: teacher negatives per query and step.
        learning_rate: learning rate of the hyper-head.
        qnet_lr_scale: learning-rate multiplier of the q-net layers' generators (with a learned skip).
        base_learning_rate: learning rate of a trained transformer.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up steps.
        margin_weight: weight of the MarginMSE term.
        in_batch_weight: weight of the in-batch cross-entropy term.
        depth: teacher candidates per query (fused top ``depth``).
        rrf_k: the RRF constant of the teacher fusion.
        label_scale: teacher score scale (``label_scale * RRF``, plus ``label_scale / (rrf_k + 1)`` for a relevant
            document).
        use_qrels: mark the train qrels' relevant documents as positives (else the teacher's top document).
        balance_datasets: pick each query's dataset uniformly first.
        max_queries_per_dataset: cap on training queries per dataset.
        seed: seed of the torch and batch-sampling random generators.
        device: torch device.
        mixed_precision: accelerate's ``"no"``, ``"bf16"`` or ``"fp16"`` (fp16 with loss scaling; GPU only).
        data_dir: BEIR data folder (default: ``$HYDRA_ST_DATA_DIR``).
        cache_dir: cache root (default: ``$HYDRA_ST_CACHE_DIR`` or ``~/.cache/hydra_st``).
        checkpoint_every: steps between two checkpoints ``<output>/checkpoints/checkpoint-<step>`` (0: none; see
            :mod:`hydra_st.hypencoder.checkpoints`).
        resume_from: a checkpoint folder (or an output folder: its latest checkpoint) to continue from; the resumed
            run ends with the uninterrupted run's weights, bit for bit.

    Example:
        >>> config = HypencoderTrainingConfig(datasets=["scifact"], qnet_hidden_layers=1, qnet_width=64)
        >>> config.check()
        >>> config.converter(hidden=384).vector_dimensions, config.uses_learned_skip
        ([384, 64, 1], True)
        >>> HypencoderTrainingConfig(bi_encoder=True).converter(384).vector_dimensions  # the matched bi-encoder
        [384, 1]
    """

    datasets: list[str] = field(default_factory=lambda: ["scifact", "nfcorpus"])
    split: str = "train"
    # Collections trained on pseudo-queries from their corpus (titles / first sentences), e.g. those without a train
    # split: ["cranfield", "med"]. Their relevant document is the one the pseudo-query came from.
    pseudo_query_datasets: list[str] = field(default_factory=list)
    num_pseudo_queries: int = 400
    base_model: str = DEFAULT_BASE_MODEL
    bi_encoder: bool = False
    qnet_hidden_layers: int = 2
    qnet_width: int | None = None
    linear_skip: bool = True
    learned_skip: bool = True
    freeze_base: bool = True
    shared_transformer: bool = True
    # With freeze_base=False and shared_transformer=False: train the query transformer only (documents stay cached).
    query_side_only: bool = False
    document_pooling: str = "mean"
    steps: int = 1500
    batch_size: int = 32
    num_negatives: int = 7
    learning_rate: float = 1e-3
    # Learning-rate multiplier of the parameters that generate the q-net's layers, when the head has a learned skip
    # (whose generator keeps ``learning_rate``). No effect on the matched bi-encoder: its one layer is its linear term.
    qnet_lr_scale: float = 1.0
    base_learning_rate: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 100
    margin_weight: float = 1.0
    in_batch_weight: float = 1.0
    depth: int = 100
    rrf_k: float = 60.0
    label_scale: float = 20.0
    use_qrels: bool = True
    balance_datasets: bool = True
    max_queries_per_dataset: int | None = None
    seed: int = 42
    device: str = "cpu"
    mixed_precision: str = "no"
    data_dir: str | None = None
    cache_dir: str | None = None
    checkpoint_every: int = 0
    resume_from: str | None = None

    @property
    def uses_learned_skip(self) -> bool:
        """Whether the hyper-head learns a skip correction: never for the bi-encoder, whose ``[h, 1]`` q-net weight
        already is that learned linear term (a second one would make it the larger model of the pair)."""
        return self.learned_skip and self.linear_skip and not self.bi_encoder

    def check(self) -> None:
        """Check every field's type and range, converting what YAML 1.1 reads as strings (``"1e-4"``, a bare
        ``"adi"`` for a list), and the settings that contradict each other; see
        :func:`~hydra_st.hypencoder.config_checks.check_fields`.

        Raises:
            TrainingSetupError: a ``ValueError`` naming the field (also in its ``field`` attribute) and the fix.
        """
        check_fields(self)

    def converter(self, hidden: int) -> QNetConverter:
        """The q-net converter these settings describe, for a transformer of width ``hidden``.

        The Hypencoder's q-net is ``[hidden, width × qnet_hidden_layers, 1]`` (``width`` = ``qnet_width``, or
        ``hidden`` when unset); the matched bi-encoder's is ``[hidden, 1]``, an inner product. Both get a linear skip
        term when ``linear_skip``.

        Args:
            hidden: width of the transformer's token states (384 for MiniLM).

        Returns:
            A new :class:`~hydra_st.hypencoder.QNetConverter`.
        """
        if self.bi_encoder:
            return QNetConverter([hidden, 1], linear_skip=self.linear_skip)
        width = self.qnet_width or hidden
        return QNetConverter([hidden] + [width] * self.qnet_hidden_layers + [1], linear_skip=self.linear_skip)

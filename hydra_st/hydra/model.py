"""Hydra: a SentenceTransformer whose last module is a task-card-conditioned projection head."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize

from .modules import REMOTE_CLASS_REF, HydraHead

_OWN_CLASS_REFS = {REMOTE_CLASS_REF, f"{HydraHead.__module__}.HydraHead", "hydra_st.hydra.modules.HydraHead"}
# what the pipeline writes beside a trained model; carried along when an unchanged loaded model is saved elsewhere
COMPANION_FILES = ("hydra_training.json", "hydra_results.md", "cards")


class Hydra(SentenceTransformer):
    """A frozen base encoder plus a :class:`HydraHead` whose projection is generated from a task card.

    Load a saved model with ``Hydra(path)`` (no ``trust_remote_code`` needed: this class resolves its own
    module) or build a fresh one with :meth:`from_base`. Pass the card at encode time. A saved model also loads
    with ``SentenceTransformer(path, trust_remote_code=True)`` through the ``hydra_head.py`` at its root.

    Args:
        model_name_or_path: A saved Hydra model (a folder, or a Hub id); None builds one from ``modules=[...]``,
            as :meth:`from_base` does. A model whose last module is not a :class:`HydraHead` is refused.
        *args: Passed on to ``SentenceTransformer``.
        **kwargs: Passed on to ``SentenceTransformer`` (``device``, ``modules``, ``cache_folder``, ...); weights are
            read from safetensors only unless ``model_kwargs={"use_safetensors": False}`` says otherwise.

    Example:
        >>> from hydra_st import Hydra
        >>> from hydra_st.hydra import load_card
        >>> card = load_card("scifact")  # a bundled card; or TaskCard.load("my_card.yaml"), TaskCard(name=..., ...)
        >>> model = Hydra.from_base()  # doctest: +SKIP
        >>> model.encode_query(["Aspirin prevents heart attacks."], task_card=card).shape  # doctest: +SKIP
        (1, 256)
    """

    def __init__(self, model_name_or_path: str | None = None, *args: Any, **kwargs: Any) -> None:
        from hydra_st.hub import check_tokenizers, explained_load_errors, name_local_model, safetensors_only

        with explained_load_errors(model_name_or_path):
            super().__init__(model_name_or_path, *args, **safetensors_only(kwargs))
        if model_name_or_path is not None:
            check_tokenizers(self, model_name_or_path)
            try:
                self.head  # noqa: B018  # the property raises unless the last module is a HydraHead
            except (TypeError, IndexError):
                raise ValueError(
                    f"{model_name_or_path}: its modules.json lists no HydraHead as the last module, so this is not a "
                    "Hydra model (load it with SentenceTransformer, or re-save the Hydra model)"
                ) from None
        modules = list(self._modules.values())
        if modules and isinstance(modules[-1], HydraHead):
            self._check_unit_input(model_name_or_path)
        name_local_model(self, model_name_or_path)
        # remembered so that saving an unchanged loaded model keeps its card and records (see save), and so that
        # the transformer of a model loaded whole from the Hub is not taken for its base (see base_model_id)
        self._loaded_name = os.fspath(model_name_or_path) if model_name_or_path is not None else None
        source = Path(model_name_or_path) if isinstance(model_name_or_path, str | os.PathLike) else None
        self._loaded_from = source if source is not None and source.is_dir() else None
        self._loaded_head_digest = self._head_digest() if model_name_or_path is not None else None

    def _check_unit_input(self, where: str | None) -> None:
        """Refuse a head whose input is not L2-normalised by a ``Normalize`` module just before it.

        Training, the preference teachers and ``hydra_run`` feed the head unit-length base embeddings
        (``normalize_embeddings=True``); ``encode_query``/``encode_document`` feed it what the base modules return.
        Only a final ``Normalize`` makes the two the same, so without one the saved model scores otherwise than
        it was trained and evaluated.
        """
        base = self.base_modules()
        if base and isinstance(base[-1], Normalize):
            return
        last = type(base[-1]).__name__ if base else "nothing"
        raise ValueError(
            f"{where or 'this Hydra model'}: the module before the HydraHead is {last}, not Normalize, so encode "
            "would feed the head unnormalised embeddings while training and hydra_run feed it unit vectors. Insert "
            "sentence_transformers.sentence_transformer.modules.Normalize() before the head (Hydra.from_base adds "
            "it), e.g. Hydra(modules=[*base_modules, Normalize(), head]), and re-save the model"
        )

    def _head_digest(self) -> str:
        from hydra_st.utils.hashing import fingerprint_model

        return fingerprint_model(self.head)

    def _load_module_class_from_ref(self, class_ref: str, *args: Any, **kwargs: Any) -> type:
        if class_ref in _OWN_CLASS_REFS:
            return HydraHead
        return super()._load_module_class_from_ref(class_ref, *args, **kwargs)

    @classmethod
    def from_base(
        cls,
        base: SentenceTransformer | str | None = None,
        out_dim: int = 256,
        cond_dim: int = 64,
        rank: int = 4,
        hidden_dim: int = 128,
        layer_norm: bool = True,
        device: str = "cpu",
        gated: bool = False,
        query_shift: bool = False,
    ) -> Hydra:
        """Build an (untrained) Hydra on a frozen base model.

        The head works on unit-length base embeddings (as training and ``hydra_run`` give it), so a base whose last
        module is not ``Normalize`` gets one appended; cosine scores of the base model itself are unchanged by it.

        Args:
            base: A SentenceTransformer, a model id/path, or None for the offline all-MiniLM-L6-v2.
            out_dim: Head output dimension.
            cond_dim: Conditioning vector dimension.
            rank: Rank of the card-dependent update of the head's weight.
            hidden_dim: Hidden size of the card encoder.
            layer_norm: Use LayerNorm with generated scale/shift in the head.
            device: Device to put the model on.
            gated: Give the head a fallback gate to the base embedding, calibrated after training
                (needs ``out_dim`` equal to the base dimension).
            query_shift: Give the head a query-only shift toward the documents, calibrated after training.
        """
        if base is None or isinstance(base, str):
            from hydra_st.hub.offline import load_base_model

            base = load_base_model(base, device=device) if base else load_base_model(device=device)
        modules = [m for m in base._modules.values() if not isinstance(m, HydraHead)]
        in_dim = None
        for module in reversed(modules):
            method = getattr(module, "get_embedding_dimension", None) or getattr(
                module, "get_word_embedding_dimension", None
            )
            if callable(method) and (in_dim := method()) is not None:
                break
        if in_dim is None:
            raise ValueError("the base model does not report its embedding dimension; add a Pooling module")
        if not isinstance(modules[-1], Normalize):
            # the head is trained on unit-length base embeddings; encode must give it the same (_check_unit_input)
            modules.append(Normalize())
        head = HydraHead(
            in_dim=in_dim,
            out_dim=out_dim,
            cond_dim=cond_dim,
            rank=rank,
            hidden_dim=hidden_dim,
            layer_norm=layer_norm,
            gated=gated,
            query_shift=query_shift,
        )
        model = cls(modules=[*modules, head], device=device, similarity_fn_name="cosine")
        for p in model.parameters():
            p.requires_grad_(False)
        for p in head.parameters():
            p.requires_grad_(True)
        return model

    @property
    def head(self) -> HydraHead:
        """The model's :class:`HydraHead` (its last module)."""
        last = list(self._modules.values())[-1]
        if not isinstance(last, HydraHead):
            raise TypeError(f"the last module of this Hydra model is {type(last).__name__}, not HydraHead")
        return last

    def similarity(self, embeddings1: Any, embeddings2: Any) -> Any:
        """Cosine similarity of two sets of this model's embeddings (``[N1, d] x [N2, d] -> [N1, N2]``).

        Raises:
            ValueError: the two sides differ in width, or are wider than this model's: typically documents encoded
                with the base model (or another Hydra) beside queries encoded with this one. Encode both sides with
                this model and the same task card.
        """
        self._check_widths(embeddings1, embeddings2)
        return super().similarity(embeddings1, embeddings2)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> Any:
        """Cosine similarity of row ``i`` with row ``i`` (``[N, d] x [N, d] -> [N]``); widths checked as in
        :meth:`similarity`."""
        self._check_widths(embeddings1, embeddings2)
        return super().similarity_pairwise(embeddings1, embeddings2)

    def _check_widths(self, embeddings1: Any, embeddings2: Any) -> None:
        width = self.head.generator.out_dim  # or less, with truncate_dim
        widths = [_last_dim(e) for e in (embeddings1, embeddings2)]
        known = [w for w in widths if w is not None]
        if len(set(known)) > 1 or any(w > width for w in known):
            raise ValueError(
                f"similarity got {widths[0]}-d and {widths[1]}-d embeddings, but this Hydra model's embeddings are "
                f"{width}-d: encode queries and documents with this model (encode_query / encode_document, the same "
                "task_card) before comparing them; the base model's embeddings are not in the head's space"
            )

    def base_modules(self) -> list[Any]:
        """The frozen modules before the head."""
        return list(self._modules.values())[:-1]

    def save(
        self,
        path: str,
        model_name: str | None = None,
        create_model_card: bool = True,
        train_datasets: list[str] | None = None,
        safe_serialization: bool = True,
    ) -> None:
        """Save with safetensors; the head's class is recorded as ``hydra_head.HydraHead`` (root remote code).

        A model loaded from a folder and saved with its head unchanged keeps that folder's model card and its training
        and evaluation records (``hydra_training.json``, ``hydra_results.md``, ``cards/``), as sentence-transformers
        keeps a loaded card (with a ``model_name``, as ``push_to_hub`` passes, the card names that repository
        instead); a changed head gets a new card. Records already in ``path`` that are not this model's (another model
        saved there before, or this model before it changed) are removed, so the folder and its card never report a
        run the saved weights did not come from.
        """
        if not safe_serialization:
            raise ValueError("Hydra saves safetensors only; drop safe_serialization=False")
        unchanged = self._loaded_head_digest is not None and self._head_digest() == self._loaded_head_digest
        target = Path(path)
        source = self._loaded_from
        # only an unchanged model saved back where it was loaded from already has its own records in place
        saving_back = source is not None and target.is_dir() and source.resolve() == target.resolve()
        super().save(path, model_name=model_name, create_model_card=False, train_datasets=train_datasets)
        rewrite_module_types(path)
        if not (unchanged and saving_back):
            # removed once the new weights are in place: from then on the old records describe no model here
            _remove_companions(target)
            if unchanged and source is not None:
                _copy_companions(source, target)
        if not create_model_card:
            return
        from hydra_st.hub.model_cards import retarget_card
        from hydra_st.utils.io import atomic_write_text

        from .model_card import write_model_card

        if unchanged and self._model_card_text:
            # the loaded card, its measured results included; pushed elsewhere (push_to_hub passes model_name), it
            # names the new repository
            text = self._model_card_text
            atomic_write_text(target / "README.md", retarget_card(text, "Hydra", model_name) if model_name else text)
        elif self._loaded_head_digest is not None and not unchanged:
            origin = f"`{source}`" if source is not None else "a saved model"
            training = f"Trained further after loading {origin}; this folder records no training run of its own."
            write_model_card(self, path, model_name=model_name, training=training)
        else:
            write_model_card(self, path, model_name=model_name)

    def save_pretrained(self, path: str, *args: Any, **kwargs: Any) -> None:
        """Alias of :meth:`save` (the transformers-style name), with the same arguments."""
        self.save(path, *args, **kwargs)


def rewrite_module_types(root: str | os.PathLike[str]) -> None:
    """Point ``modules.json`` at the root remote-code class (``hydra_head.HydraHead``), atomically.

    Written as sentence-transformers writes it (``indent=2``, no final newline), so a saved model's
    ``modules.json`` is byte-for-byte what it always was.
    """
    from hydra_st.utils.io import atomic_write_text

    path = Path(root) / "modules.json"
    entries = json.loads(path.read_text(encoding="utf-8"))
    for entry in entries:
        if entry.get("type", "").endswith(".HydraHead"):
            entry["type"] = REMOTE_CLASS_REF
    atomic_write_text(path, json.dumps(entries, indent=2))


def _remove_companions(target: Path) -> None:
    """Delete the pipeline's records (:data:`COMPANION_FILES`) from ``target``; a folder is renamed aside first,
    so an interrupted removal leaves no half-deleted ``cards/`` (the next save removes the aside copy)."""
    from hydra_st.utils.io import staging_folder

    for name in COMPANION_FILES:
        dst = target / name
        if dst.is_dir() and not dst.is_symlink():
            aside = staging_folder(dst)  # a sibling named for this process, so a killed save's leftover is removed
            os.replace(dst, aside / name)
            shutil.rmtree(aside, ignore_errors=True)
        elif dst.exists() or dst.is_symlink():
            dst.unlink()


def _copy_companions(source: Path, target: Path) -> None:
    """Copy the pipeline's records beside a model (files atomically; a folder only where the target has none)."""
    from hydra_st.utils.io import atomic_write_bytes, staging_folder

    for name in COMPANION_FILES:
        src, dst = source / name, target / name
        if src.is_file():
            atomic_write_bytes(dst, src.read_bytes())
        elif src.is_dir() and not dst.exists():
            tmp = staging_folder(dst)  # unique per save: saves may overlap
            try:
                shutil.copytree(src, tmp, dirs_exist_ok=True)  # also gives tmp the source folder's permissions
                os.replace(tmp, dst)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise


def _last_dim(embeddings: Any) -> int | None:
    """The width of ``[N, d]`` / ``[d]`` embeddings (a tensor, an array or a list of them); None when unknown."""
    if isinstance(embeddings, list | tuple):
        return _last_dim(embeddings[0]) if embeddings else None
    shape = getattr(embeddings, "shape", None)
    return int(shape[-1]) if shape is not None and len(shape) else None

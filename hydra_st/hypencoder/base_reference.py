"""A frozen base transformer saved as a reference to its Hub id, not a copy of its weights.

Saved models name this class ``hydra_st.hypencoder.modules.BaseModelReference`` (their ``modules.json`` ``type``),
and :mod:`hydra_st.hypencoder.modules` re-exports it; the class keeps that module name, so models saved now carry the
same ``type`` as every model saved before the class had a file of its own.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from sentence_transformers.sentence_transformer.modules import Transformer

logger = logging.getLogger(__name__)


class BaseModelReference(Transformer):
    """A frozen transformer that is saved as a reference to its Hub id instead of a copy of its weights.

    A Hypencoder trained on a frozen base only adds hyper-head weights; saving it with this module keeps the model
    folder small (the base is re-loaded by id, offline through :mod:`hydra_st.hub.offline` where possible). A
    fingerprint of the base's weights is stored and checked on load, so a fine-tuned transformer is never silently
    replaced by the original.

    Example:
        >>> from hydra_st.hub.offline import load_base_model
        >>> model_id = "sentence-transformers/all-MiniLM-L6-v2"
        >>> base = load_base_model(model_id)  # doctest: +SKIP
        >>> ref = BaseModelReference.from_transformer(base[0], model_id)  # doctest: +SKIP
        >>> ref.base_model_id, ref.auto_model is base[0].auto_model  # doctest: +SKIP
        ('sentence-transformers/all-MiniLM-L6-v2', True)

        :meth:`Hypencoder.reference_base <hydra_st.hypencoder.Hypencoder.reference_base>` does this for a model's
        frozen shared transformer.
    """

    reference_file = "base_model_reference.json"
    # It encodes exactly as the Transformer it refers to, so embedding caches keyed by model fingerprint are shared.
    fingerprint_name = "Transformer"
    base_model_id: str

    @classmethod
    def from_transformer(cls, transformer: Transformer, model_id: str) -> BaseModelReference:
        """A reference module that shares ``transformer``'s submodules, weights and tokenizer (no copy).

        Args:
            transformer: the frozen base transformer.
            model_id: the Hub id or path the base is re-loaded from when the model is loaded.

        Returns:
            The reference module; it encodes exactly as ``transformer``.
        """
        ref = cls.__new__(cls)
        ref.__dict__ = transformer.__dict__  # shares the submodules, parameters and tokenizer
        ref.base_model_id = model_id
        return ref

    def save(self, output_path: str, *args: Any, safe_serialization: bool = True, **kwargs: Any) -> None:
        """Write ``base_model_reference.json`` (the base's id, max sequence length and weight fingerprint), and no
        weights.

        Args:
            output_path: the module's folder.
            *args: ignored (sentence-transformers' module ``save`` signature).
            safe_serialization: ignored: no weights are written.
            **kwargs: ignored.
        """
        from hydra_st.utils.hashing import fingerprint_model
        from hydra_st.utils.io import atomic_write_json

        atomic_write_json(
            os.path.join(output_path, self.reference_file),
            {
                "base_model_id": self.base_model_id,
                "max_seq_length": self.max_seq_length,
                "fingerprint": fingerprint_model(self.auto_model),
            },
        )

    # Transformer.load's signature (trust_remote_code, model_kwargs, ...) is itself incompatible with Module.load's,
    # so a Transformer subclass cannot satisfy both for mypy; this one matches Transformer.load.
    @classmethod
    def load(  # type: ignore[override]
             cls, model_name_or_path: str, subfolder: str = "", token: bool | str | None = None,
             cache_folder: str | None = None, revision: str | None = None, local_files_only: bool = False,
             trust_remote_code: bool = False, model_kwargs: dict[str, Any] | None = None,
             processor_kwargs: dict[str, Any] | None = None, config_kwargs: dict[str, Any] | None = None,
             backend: str = "torch", init_defaults: dict[str, Any] | None = None,
             **kwargs: Any) -> BaseModelReference:  # fmt: skip
        """Re-load the referenced base transformer (offline where possible) and check its weight fingerprint.

        The referenced base is loaded with ``trust_remote_code=False`` and safetensors weights only, whatever the
        caller passed for this model.

        Args:
            model_name_or_path: the model's folder or Hub id.
            subfolder: the module's folder inside it.
            token: Hub token.
            cache_folder: Hub cache folder.
            revision: Hub revision of this model (not of the base).
            local_files_only: do not download this model's files.
            trust_remote_code: ignored for the base (see above).
            model_kwargs: passed to the base transformer (``use_safetensors`` is forced on).
            processor_kwargs: passed to the base transformer's tokenizer.
            config_kwargs: passed to the base transformer's config.
            backend: the transformer backend.
            init_defaults: ignored.
            **kwargs: ignored.

        Returns:
            The reference module, holding the base's weights.

        Raises:
            FileNotFoundError: ``base_model_reference.json`` is missing.
            ValueError: the reference file is damaged, or the base's weights differ from those the model was
                trained on.
        """
        from hydra_st.hub.offline import ensure_base_model
        from hydra_st.utils.hashing import fingerprint_model

        path = cls.load_file_path(
            model_name_or_path,
            cls.reference_file,
            subfolder=subfolder,
            token=token,
            cache_folder=cache_folder,
            revision=revision,
            local_files_only=local_files_only,
        )
        if path is None:
            raise FileNotFoundError(f"{model_name_or_path}: {cls.reference_file} is missing")
        try:
            info = json.loads(Path(path).read_text(encoding="utf8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} does not parse ({exc}); re-save or re-download the model") from exc
        if not isinstance(info, dict) or not isinstance(info.get("base_model_id"), str) or not info["base_model_id"]:
            raise ValueError(
                f"{path} must be a JSON object with a 'base_model_id' string (the Hub id or path of the frozen base); "
                "re-save or re-download the model"
            )
        if not info.get("fingerprint"):
            logger.warning("%s has no fingerprint: the base model's weights cannot be checked", path)
        model_id = info["base_model_id"]
        source = ensure_base_model(model_id) or model_id
        transformer = Transformer.load(
            str(source),
            token=token,
            cache_folder=cache_folder,
            # the user trusted this model's code, not that of whatever base it references: a plain transformer
            # needs none, so the referenced repo never runs code (and its weights are read as safetensors only)
            trust_remote_code=False,
            model_kwargs={"use_safetensors": True, **(model_kwargs or {})},
            processor_kwargs=processor_kwargs,
            config_kwargs=config_kwargs,
            backend=backend,
        )
        ref = cls.from_transformer(transformer, model_id)
        ref.max_seq_length = info.get("max_seq_length", ref.max_seq_length)
        if info.get("fingerprint") and fingerprint_model(ref.auto_model) != info["fingerprint"]:
            raise ValueError(
                f"{model_name_or_path}: the weights of {model_id} differ from those the model was trained on "
                "(fingerprint mismatch); load the matching base revision or save the model with its transformer"
            )
        return ref


# sentence-transformers records type(module).__module__ in modules.json: keep the path saved models already name
BaseModelReference.__module__ = "hydra_st.hypencoder.modules"

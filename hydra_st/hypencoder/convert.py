"""Convert released Hypencoder checkpoints (``HypencoderDualEncoder`` state dicts) into this package's format.

The released checkpoints (BERT-base, 2/4/6/8 q-net layers) hold one tied BERT under
``query_encoder.transformer.*`` (and again under ``passage_encoder.transformer.*``) and the hyper-head under
``query_encoder.{hyper_base_matrices,hyper_base_vectors,weight_query_embeddings,bias_query_embeddings}.{i}`` and
``query_encoder.{weight_hyper_projection,bias_hyper_projection,key_projections,value_projections}.{i}.{weight,bias}``.
The hyper-head parameter names of :class:`~hydra_st.hypencoder.HyperHead` are the same without the prefix; the
q-net shape is read from the base matrices. The document side is CLS pooling without normalisation.

Only safetensors files (or an in-memory state dict) are read, never an unpickled file. A released
``pytorch_model.bin`` converts to safetensors without the passage copy of its tied BERT (safetensors refuses two
names for one tensor; the query copy is kept)::

    import torch
    from safetensors.torch import save_file

    state = torch.load("pytorch_model.bin", weights_only=True)
    save_file({k: v for k, v in state.items() if not k.startswith("passage_encoder.")}, "model.safetensors")

The released models were evaluated with queries cut at 64 tokens in-domain (MS MARCO, TREC DL) and 512 out of
domain; the converted model has one ``max_seq_length`` for both sides (512 by default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from hydra_st.hypencoder.modules import HyperHead
from hydra_st.hypencoder.qnet import QNetConverter

PREFIX = "query_encoder."
TRANSFORMER_PREFIX = "query_encoder.transformer."
PASSAGE_PREFIX = "passage_encoder.transformer."
HEAD_KEYS = (
    "hyper_base_matrices",
    "hyper_base_vectors",
    "weight_query_embeddings",
    "bias_query_embeddings",
    "weight_hyper_projection",
    "bias_hyper_projection",
    "key_projections",
    "value_projections",
)


def released_converter(state_dict: Mapping[str, Tensor]) -> QNetConverter:
    """The q-net converter of a released checkpoint, from the shapes of its base matrices.

    Raises:
        ValueError: when the state dict is not a Hypencoder checkpoint or its matrices do not chain.
    """
    pattern = re.compile(r"^query_encoder\.hyper_base_matrices\.(\d+)$")
    shapes = {int(m.group(1)): tuple(v.shape) for k, v in state_dict.items() if (m := pattern.match(k))}
    if not shapes:
        raise ValueError("no 'query_encoder.hyper_base_matrices.*' in the state dict: not a Hypencoder checkpoint")
    if sorted(shapes) != list(range(len(shapes))):
        raise ValueError(f"hyper_base_matrices indices are not contiguous: {sorted(shapes)}")
    dims = []
    for i in range(len(shapes)):
        shape = shapes[i]
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"hyper_base_matrices.{i} has shape {shape}, expected (1, out, in)")
        _, out, inn = shape
        if i == 0:
            dims.append(inn)
        elif dims[-1] != inn:
            raise ValueError(f"q-net matrix {i} reads {inn} features but matrix {i - 1} writes {dims[-1]}")
        dims.append(out)
    if dims[-1] != 1:
        last = len(shapes) - 1
        raise ValueError(
            f"hyper_base_matrices.{last} writes {dims[-1]} features, but a q-net's last matrix writes 1 (the score): "
            f"is 'query_encoder.hyper_base_matrices.{last + 1}' missing?"
        )
    return QNetConverter(
        dims, activation="relu", layer_norm=True, residual=True, residual_on_last=False, linear_skip=False
    )


def split_state_dict(
    state_dict: Mapping[str, Tensor], require_transformer: bool = True
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split a released state dict into (BERT weights without prefix, hyper-head weights without prefix).

    Raises:
        ValueError: a key that no Hypencoder checkpoint has (named), a passage BERT that differs from the query
            BERT (the released checkpoints tie them, and the converted model shares one), or no BERT at all when
            ``require_transformer``.
    """
    bert: dict[str, Tensor] = {}
    passage: dict[str, Tensor] = {}
    head: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(TRANSFORMER_PREFIX):
            bert[key[len(TRANSFORMER_PREFIX) :]] = value
        elif key.startswith(PASSAGE_PREFIX):
            passage[key[len(PASSAGE_PREFIX) :]] = value
        elif key.startswith(PREFIX) and key[len(PREFIX) :].split(".")[0] in HEAD_KEYS:
            head[key[len(PREFIX) :]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{len(unknown)} key(s) that no released Hypencoder checkpoint has, e.g. {sorted(unknown)[:5]}: a renamed "
            "key, or another model's checkpoint (its weights would be dropped, so nothing is converted)"
        )
    if passage and not bert:
        bert = passage  # a de-duplicated file may keep only one name of the tied BERT
    elif passage:
        differ = sorted(
            k
            for k in bert.keys() | passage.keys()
            if k not in bert or k not in passage or not torch.equal(bert[k], passage[k])
        )
        if differ:
            raise ValueError(
                f"the passage encoder's BERT differs from the query encoder's ({differ[:3]}): the released "
                "checkpoints tie the two, and the converted model shares one transformer, so an untied checkpoint "
                "cannot convert"
            )
    if require_transformer and not bert:
        raise ValueError("no 'query_encoder.transformer.*' weights in the state dict: not a Hypencoder checkpoint")
    return bert, head


def convert_hyper_head(state_dict: Mapping[str, Tensor]) -> HyperHead:
    """Build a :class:`HyperHead` holding the released hyper-head weights (strict name/shape check)."""
    converter = released_converter(state_dict)
    _, head_state = split_state_dict(state_dict, require_transformer=False)
    head = HyperHead(converter.input_dim, converter=converter, skip_from_pooling=False)
    expected = head.state_dict()
    missing = sorted(set(expected) - set(head_state))
    unexpected = sorted(set(head_state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"hyper-head names differ from a {len(converter.weight_shapes) - 1}-layer Hypencoder: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, value in head_state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"{key}: shape {tuple(value.shape)} but the config needs {tuple(expected[key].shape)}")
    _check_finite(head_state, PREFIX)
    head.load_state_dict({k: v.float() for k, v in head_state.items()})
    return head


def _check_finite(state: Mapping[str, Tensor], prefix: str) -> None:
    """Refuse NaN or infinite weights (a damaged checkpoint), naming the first such tensor."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{prefix}{key} holds NaN or infinite values: the checkpoint is damaged")


def load_released_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a released checkpoint from a safetensors file (the only format accepted)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path}: only .safetensors checkpoints are read; convert pytorch_model.bin to safetensors first "
            "(hydra_st.hypencoder.convert's docstring shows how: drop the passage copy of the tied BERT)"
        )
    try:
        return load_file(str(path))
    except Exception as exc:
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc


def convert_checkpoint(
    state_dict: Mapping[str, Tensor] | str | Path,
    transformer_config: Mapping[str, Any] | Any,
    tokenizer_path: str | Path,
    output_path: str | Path | None = None,
    max_seq_length: int = 512,
) -> Any:
    """Convert a released checkpoint into a :class:`~hydra_st.hypencoder.Hypencoder` (and save it).

    Args:
        state_dict: the checkpoint's state dict, or a path to its safetensors file/folder.
        transformer_config: the BERT config (``transformers.BertConfig`` or dict; bert-base-uncased for releases).
        tokenizer_path: folder or id of the tokenizer (bert-base-uncased for releases).
        output_path: where to save the converted model (optional).
        max_seq_length: transformer max sequence length.

    Returns:
        The converted Hypencoder.

    Example:
        >>> from transformers import BertConfig
        >>> from hydra_st.hypencoder import convert_checkpoint
        >>> model = convert_checkpoint("hypencoder.6_layer/model.safetensors", BertConfig().to_dict(),
        ...                            "bert-base-uncased", output_path="models/hypencoder-6-layer")  # doctest: +SKIP
        >>> model.converter.vector_dimensions  # doctest: +SKIP
        [768, 768, 768, 768, 768, 768, 768, 1]
    """
    from sentence_transformers.sentence_transformer.modules import Pooling, Router, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from hydra_st.hypencoder.model import Hypencoder

    if not isinstance(state_dict, Mapping):
        state_dict = load_released_state_dict(state_dict)
    bert_state, _ = split_state_dict(state_dict)
    head = convert_hyper_head(state_dict)
    config = transformer_config if isinstance(transformer_config, BertConfig) else BertConfig(**transformer_config)
    if config.hidden_size != head.hidden_size:
        raise ValueError(f"BERT hidden size {config.hidden_size} != q-net input width {head.hidden_size}")
    bert = BertModel(config, add_pooling_layer=any(k.startswith("pooler.") for k in bert_state))
    _check_finite(bert_state, TRANSFORMER_PREFIX)
    missing, unexpected = bert.load_state_dict(bert_state, strict=False)
    # position_ids is a buffer that some transformers versions save and others do not
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"BERT weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        bert.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(tokenizer_path)).save_pretrained(tmp)
        transformer = Transformer(tmp, max_seq_length=max_seq_length)
    router = Router.for_query_document(query_modules=[head], document_modules=[Pooling(head.hidden_size, "cls")])
    model = Hypencoder(modules=[transformer, router], device="cpu")
    model.prompts = {"query": "", "document": ""}
    if output_path is not None:
        model.save(str(output_path))
    return model

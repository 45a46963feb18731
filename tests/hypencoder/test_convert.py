"""Checkpoint conversion, checked against a reference forward written here from the published equations."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from hydra_st.hypencoder.convert import (
    convert_checkpoint,
    convert_hyper_head,
    load_released_state_dict,
    released_converter,
)
from tests.hypencoder.released import synthetic_released_state_dict


def reference_qnet(sd: dict, prefix: str, hidden_states: torch.Tensor, mask: torch.Tensor, n_layers: int):
    """Build one query's q-net weights with explicit per-matrix code (brief §1), independent of HyperHead."""
    n_w = n_layers + 1
    weights, biases = [], []
    valid = mask.bool()
    h = hidden_states[valid]  # [T, hid]
    for i in range(n_w):
        q = sd[f"{prefix}weight_query_embeddings.{i}"][0]  # [out, in]
        out_dim = q.shape[0]
        k = h @ sd[f"{prefix}key_projections.{i}.weight"].T + sd[f"{prefix}key_projections.{i}.bias"]
        v = h @ sd[f"{prefix}value_projections.{i}.weight"].T + sd[f"{prefix}value_projections.{i}.bias"]
        a = torch.softmax(q @ k.T / math.sqrt(out_dim), dim=-1)
        c = F.layer_norm(torch.relu(a @ v), (v.shape[-1],))
        p = c @ sd[f"{prefix}weight_hyper_projection.{i}.weight"].T + sd[f"{prefix}weight_hyper_projection.{i}.bias"]
        weights.append((p + sd[f"{prefix}hyper_base_matrices.{i}"][0]).T)  # [in, out]
    for j in range(n_layers):
        q = sd[f"{prefix}bias_query_embeddings.{j}"][0]  # [1, out]
        k = h @ sd[f"{prefix}key_projections.{n_w + j}.weight"].T + sd[f"{prefix}key_projections.{n_w + j}.bias"]
        v = h @ sd[f"{prefix}value_projections.{n_w + j}.weight"].T + sd[f"{prefix}value_projections.{n_w + j}.bias"]
        a = torch.softmax(q @ k.T, dim=-1)
        c = F.layer_norm(torch.relu(a @ v), (v.shape[-1],))
        p = c @ sd[f"{prefix}bias_hyper_projection.{j}.weight"].T + sd[f"{prefix}bias_hyper_projection.{j}.bias"]
        biases.append(p[0] + sd[f"{prefix}hyper_base_vectors.{j}"][0])
    return weights, biases


def reference_score(weights, biases, doc: torch.Tensor) -> float:
    x = doc
    n = len(biases)
    for layer in range(n):
        y = F.layer_norm(torch.relu(x @ weights[layer] + biases[layer]), (weights[layer].shape[1],))
        x = y + x if layer < n - 1 else y  # residual except on the last hidden block
    return float(x @ weights[-1][:, 0])  # output layer has no bias


@pytest.fixture
def tiny_bert(tiny_st_model):
    return tiny_st_model[0]


@pytest.mark.parametrize("n_layers", [2, 4])
def test_converted_model_matches_reference(tiny_st_model, tmp_path, n_layers):
    transformer = tiny_st_model[0]
    bert_state = {k: v.clone() for k, v in transformer.auto_model.state_dict().items()}
    sd = synthetic_released_state_dict(n_layers, hidden=32, bert_state=bert_state, seed=n_layers)
    # saved as the module docstring says: without the passage copy of the tied BERT
    save_file(
        {k: v for k, v in sd.items() if not k.startswith("passage_encoder.")}, str(tmp_path / "model.safetensors")
    )
    model = convert_checkpoint(
        tmp_path / "model.safetensors",
        transformer.auto_model.config.to_dict(),
        transformer.tokenizer.name_or_path,
        output_path=tmp_path / "converted",
    )
    assert model.converter.vector_dimensions == [32] * (n_layers + 1) + [1]
    assert not model.converter.linear_skip

    queries = ["what is a hypernetwork", "cats and dogs"]
    docs = ["a hypernetwork writes weights", "the cat sat on the mat", "stock markets fell"]
    scores = model.similarity(
        model.encode_query(queries, convert_to_tensor=True), model.encode_document(docs, convert_to_tensor=True)
    )
    # reference: BERT token states (the same tied BERT), CLS document vectors, per-query explicit q-nets
    with torch.no_grad():
        feats_q = transformer.preprocess(queries)
        states = transformer(dict(feats_q))["token_embeddings"]
        doc_vecs = transformer(dict(transformer.preprocess(docs)))["token_embeddings"][:, 0]
    for qi in range(len(queries)):
        w, b = reference_qnet(sd, "query_encoder.", states[qi], feats_q["attention_mask"][qi], n_layers)
        for di in range(len(docs)):
            assert scores[qi, di].item() == pytest.approx(reference_score(w, b, doc_vecs[di]), rel=1e-4, abs=1e-4)

    from hydra_st.hypencoder import Hypencoder

    reloaded = Hypencoder(str(tmp_path / "converted"))
    again = reloaded.similarity(reloaded.encode_query(queries), reloaded.encode_document(docs))
    torch.testing.assert_close(again, scores, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_layers,head_params", [(2, 11.2e6), (4, 20.7e6), (6, 30.1e6), (8, 39.6e6)])
def test_bert_base_heads_convert(n_layers, head_params):
    # the hyper-heads of the released BERT-base checkpoints: names, shapes and sizes
    sd = synthetic_released_state_dict(n_layers, hidden=768)
    head = convert_hyper_head(sd)
    assert released_converter(sd).vector_dimensions == [768] * (n_layers + 1) + [1]
    assert sum(p.numel() for p in head.parameters()) == pytest.approx(head_params, rel=0.01)


def test_bert_base_two_layer_head_loads():
    sd = synthetic_released_state_dict(2, hidden=768)
    head = convert_hyper_head(sd)
    assert released_converter(sd).vector_dimensions == [768, 768, 768, 1]
    assert sum(p.numel() for p in head.parameters()) == pytest.approx(11.2e6, rel=0.01)
    torch.testing.assert_close(head.hyper_base_matrices[0], sd["query_encoder.hyper_base_matrices.0"])


def test_bad_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="not a Hypencoder checkpoint"):
        released_converter({"foo": torch.zeros(1)})
    sd = synthetic_released_state_dict(2, hidden=16)
    broken = dict(sd)
    broken["query_encoder.hyper_base_matrices.1"] = torch.zeros(1, 16, 8)
    with pytest.raises(ValueError, match="reads 8 features"):
        released_converter(broken)
    missing = {k: v for k, v in sd.items() if "value_projections.0" not in k}
    with pytest.raises(ValueError, match=r"missing \['value_projections\.0\.bias', 'value_projections\.0\.weight'\]"):
        convert_hyper_head(missing)
    with pytest.raises(ValueError, match="query_encoder.transformer"):
        convert_checkpoint(sd, {"hidden_size": 16}, "unused")
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_released_state_dict(tmp_path)
    with pytest.raises(ValueError, match="only .safetensors"):
        load_released_state_dict(tmp_path / "pytorch_model.bin")


def test_a_released_bin_converts_by_the_documented_recipe(tiny_st_model, tmp_path):
    # the released pytorch_model.bin ties the query and passage BERT: safetensors refuses it as it is
    bert = {k: v.clone() for k, v in tiny_st_model[0].auto_model.state_dict().items()}
    torch.save(synthetic_released_state_dict(2, hidden=32, bert_state=bert), tmp_path / "pytorch_model.bin")
    state = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    with pytest.raises(RuntimeError, match="share memory"):
        save_file(state, str(tmp_path / "as_is.safetensors"))
    # the recipe of hydra_st.hypencoder.convert's docstring
    save_file(
        {k: v for k, v in state.items() if not k.startswith("passage_encoder.")}, str(tmp_path / "m.safetensors")
    )
    model = convert_checkpoint(
        tmp_path / "m.safetensors", tiny_st_model[0].auto_model.config, tiny_st_model.tokenizer.name_or_path
    )
    assert model.converter.vector_dimensions == [32, 32, 32, 1]


def test_checkpoints_that_would_convert_wrongly_are_refused(tiny_st_model):
    bert = {k: v.clone() for k, v in tiny_st_model[0].auto_model.state_dict().items()}
    sd = synthetic_released_state_dict(2, hidden=32, bert_state=bert)
    config, tokenizer = tiny_st_model[0].auto_model.config, tiny_st_model.tokenizer.name_or_path
    # a key no Hypencoder has (another model's head, or a renamed key) is named, not dropped
    for extra in ("query_encoder.some_new_head.0", "key_projection.3.weight", "extra_top_level"):
        with pytest.raises(ValueError, match=re.escape(repr(extra))):
            convert_checkpoint({**sd, extra: torch.zeros(1)}, config, tokenizer)
    # an untied passage BERT would be dropped: the converted model shares one transformer
    untied = {k: v + 1 if k.startswith("passage_encoder.") and v.is_floating_point() else v for k, v in sd.items()}
    with pytest.raises(ValueError, match="passage encoder's BERT differs"):
        convert_checkpoint(untied, config, tokenizer)
    # a file that kept only the passage name of the tied BERT converts to the same model
    passage_only = {k: v for k, v in sd.items() if not k.startswith("query_encoder.transformer.")}
    a = convert_checkpoint(sd, config, tokenizer).encode_query(["a query"])
    b = convert_checkpoint(passage_only, config, tokenizer).encode_query(["a query"])
    assert (a == b).all()
    # damaged weights
    nan_head = {
        **sd,
        "query_encoder.hyper_base_vectors.0": torch.full_like(sd["query_encoder.hyper_base_vectors.0"], float("nan")),
    }
    with pytest.raises(ValueError, match=r"query_encoder\.hyper_base_vectors\.0 holds NaN"):
        convert_checkpoint(nan_head, config, tokenizer)
    # a missing last base matrix is named
    no_last = {k: v for k, v in sd.items() if k != "query_encoder.hyper_base_matrices.2"}
    with pytest.raises(ValueError, match=r"is 'query_encoder\.hyper_base_matrices\.2' missing"):
        released_converter(no_last)
    # a position_ids buffer (saved by some transformers versions) is neither missing nor unexpected
    position_ids = torch.arange(512)[None]
    ids = {f"{side}_encoder.transformer.embeddings.position_ids": position_ids for side in ("query", "passage")}
    assert convert_checkpoint({**sd, **ids}, config, tokenizer).converter.vector_dimensions == [32, 32, 32, 1]

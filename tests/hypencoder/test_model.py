"""Hypencoder model: routes, q-net similarity, save/load with and without the subclass."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from hydra_st.hypencoder import Hypencoder, HyperHead, QNetConverter
from hydra_st.hypencoder.model_card import render_model_card, save_with_card

QUERIES = ["what is a hypernetwork", "cats and dogs"]
DOCS = ["a hypernetwork writes the weights of a network", "the cat sat on the mat", "markets fell", "dogs bark"]


@pytest.fixture
def hyp(tiny_st_model):
    return Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 16, 16, 1], linear_skip=True))


def test_routes_and_similarity(hyp, tiny_st_model):
    q = hyp.encode_query(QUERIES, convert_to_tensor=True)
    d = hyp.encode_document(DOCS, convert_to_tensor=True)
    assert q.shape == (2, hyp.converter.num_parameters)
    # frozen base + mean pooling + normalise: document vectors are the base model's embeddings
    torch.testing.assert_close(d, tiny_st_model.encode(DOCS, convert_to_tensor=True), atol=1e-5, rtol=1e-5)
    scores = hyp.similarity(q, d)
    assert scores.shape == (2, 4)
    torch.testing.assert_close(scores, hyp.converter.score(q, d))
    torch.testing.assert_close(hyp.similarity_pairwise(q, d[:2]), scores.diagonal())
    # numpy input works too
    np.testing.assert_allclose(hyp.similarity(q.numpy(), d.numpy()).numpy(), scores.numpy(), atol=1e-6)


def test_untrained_skip_model_equals_base_cosine(hyp, tiny_st_model):
    q = hyp.encode_query(QUERIES, convert_to_tensor=True)
    d = hyp.encode_document(DOCS, convert_to_tensor=True)
    base = tiny_st_model.encode(QUERIES, convert_to_tensor=True) @ d.T
    torch.testing.assert_close(hyp.similarity(q, d), base, atol=1e-4, rtol=1e-4)


def test_learned_skip_starts_at_base_trains_and_round_trips(tiny_st_model, tmp_path):
    conv = QNetConverter([32, 16, 1], linear_skip=True)
    fixed = Hypencoder.from_base(tiny_st_model, converter=conv)
    learned = Hypencoder.from_base(tiny_st_model, converter=conv, learned_skip=True)
    head = learned.hyper_head
    assert head.learned_skip and not fixed.hyper_head.learned_skip
    # extra parameters: exactly one generated [32, 1] weight's worth (query vector, key/value, projection, base)
    extra = sum(p.numel() for p in head.parameters()) - sum(p.numel() for p in fixed.hyper_head.parameters())
    assert extra == 32 + 2 * (32 * 32 + 32) + (32 * 32 + 32) + 32
    # untrained, the correction is zero: same skip vector, same scores as the fixed-skip model
    q_fixed = fixed.encode_query(QUERIES, convert_to_tensor=True)
    q_learned = learned.encode_query(QUERIES, convert_to_tensor=True)
    torch.testing.assert_close(conv.unpack(q_learned).skip, conv.unpack(q_fixed).skip)
    # the correction is query-dependent and receives gradients
    features = learned.tokenize(QUERIES)
    out = learned[0](features)
    params = conv.unpack(head(out)["sentence_embedding"])
    params.skip.sum().backward()
    grad = head.skip_hyper_projection.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    with torch.no_grad():
        torch.nn.init.normal_(head.skip_hyper_projection.weight, std=0.5)
    q = learned.encode_query(QUERIES, convert_to_tensor=True)
    delta = conv.unpack(q).skip - conv.unpack(q_fixed).skip
    assert delta.abs().sum() > 0 and not torch.allclose(delta[0], delta[1])
    learned.save(str(tmp_path / "m"))
    config = json.loads((tmp_path / "m" / "1_Router" / "query_0_HyperHead" / "config.json").read_text())
    assert config["learned_skip"] is True
    reloaded = Hypencoder(str(tmp_path / "m"))
    torch.testing.assert_close(reloaded.encode_query(QUERIES, convert_to_tensor=True), q, atol=1e-5, rtol=1e-5)
    # a model saved before the option existed (no key in its config) loads with a fixed skip
    del config["learned_skip"]
    assert HyperHead(**config).learned_skip is False


def test_save_load_subclass_and_plain(hyp, tmp_path):
    q = hyp.encode_query(QUERIES, convert_to_tensor=True)
    for p in hyp.hyper_head.hyper_base_matrices:  # make the q-net part non-trivial
        torch.nn.init.normal_(p, std=0.3)
    q = hyp.encode_query(QUERIES, convert_to_tensor=True)
    d = hyp.encode_document(DOCS, convert_to_tensor=True)
    expected = hyp.similarity(q, d)
    hyp.save(str(tmp_path / "m"))

    loaded = Hypencoder(str(tmp_path / "m"))  # no trust_remote_code needed
    torch.testing.assert_close(
        loaded.similarity(loaded.encode_query(QUERIES), loaded.encode_document(DOCS)), expected, atol=1e-5, rtol=1e-5
    )

    plain = SentenceTransformer(str(tmp_path / "m"), trust_remote_code=True)
    assert type(plain) is Hypencoder  # the head gives the plain instance its class, so q-net scoring survives pickle
    torch.testing.assert_close(
        plain.similarity(plain.encode_query(QUERIES), plain.encode_document(DOCS)), expected, atol=1e-5, rtol=1e-5
    )
    unpickled = pickle.loads(pickle.dumps(plain))
    torch.testing.assert_close(
        unpickled.similarity(unpickled.encode_query(QUERIES), unpickled.encode_document(DOCS)),
        expected,
        atol=1e-5,
        rtol=1e-5,
    )
    torch.testing.assert_close(
        plain.similarity_pairwise(plain.encode_query(QUERIES), plain.encode_document(DOCS[:2])),
        expected.diagonal(),
        atol=1e-5,
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(tmp_path / "m"))


def test_separate_transformers(tiny_st_model, tmp_path):
    model = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 8, 1]), shared_transformer=False)
    assert len(model.transformers()) == 2
    q = model.encode_query(QUERIES, convert_to_tensor=True)
    d = model.encode_document(DOCS, convert_to_tensor=True)
    model.save(str(tmp_path / "sep"))
    again = Hypencoder(str(tmp_path / "sep"))
    torch.testing.assert_close(
        again.similarity(again.encode_query(QUERIES), again.encode_document(DOCS)),
        model.similarity(q, d),
        atol=1e-5,
        rtol=1e-5,
    )


def test_bad_inputs(hyp, tiny_st_model, tmp_path):
    q = hyp.encode_query(QUERIES, convert_to_tensor=True)
    with pytest.raises(ValueError, match="dimension 7"):
        hyp.similarity(q, torch.randn(3, 7))
    with pytest.raises(ValueError, match="q-net reads"):
        Hypencoder.from_base(tiny_st_model, converter=QNetConverter([16, 1]))
    with pytest.raises(ValueError, match="document_pooling"):
        Hypencoder.from_base(tiny_st_model, document_pooling="max")
    head = HyperHead(32, converter=QNetConverter([32, 1]))
    with pytest.raises(ValueError, match="token states of width 32"):
        head({"token_embeddings": torch.randn(1, 3, 16), "attention_mask": torch.ones(1, 3)})
    hyp.save(str(tmp_path / "m"))
    head_dir = tmp_path / "m" / "1_Router"
    weights = next(head_dir.rglob("model.safetensors"))
    weights.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt hyper-head weights"):
        Hypencoder(str(tmp_path / "m"))


def test_config_mismatch_detected(hyp, tmp_path):
    hyp.save(str(tmp_path / "m"))
    cfg_path = next(p for p in (tmp_path / "m").rglob("config.json") if "converter_config" in p.read_text())
    cfg = json.loads(cfg_path.read_text())
    cfg["converter_config"]["vector_dimensions"] = [32, 8, 1]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not match its config"):
        Hypencoder(str(tmp_path / "m"))


def test_model_card(hyp, tmp_path):
    text = render_model_card(hyp, "org/tiny", {"steps": 3, "freeze_base": True}, {"scifact nDCG@10": 0.5})
    assert "[32, 16, 16, 1]" in text and "org/tiny" in text and "0.5" in text
    save_with_card(hyp, tmp_path / "card", config={"steps": 3}, results={"x": 1})
    assert "Hypencoder" in (tmp_path / "card" / "README.md").read_text()
    assert json.loads((tmp_path / "card" / "results.json").read_text()) == {"x": 1}


def test_model_card_compares_with_the_matched_model_and_states_limitations(hyp, tmp_path):
    comparison = {"scifact": {"this model": 0.71, "bi-encoder": 0.69}, "nfcorpus": {"this model": 0.27}}
    save_with_card(hyp, tmp_path / "card", config={"datasets": ["scifact"]}, comparison=comparison,
                   limitations="- Below the base model on nfcorpus.")  # fmt: skip
    text = (tmp_path / "card" / "README.md").read_text()
    assert "| scifact | 0.7100 | 0.6900 |" in text and "| nfcorpus (not trained on) | 0.2700 | – |" in text
    assert "## Limitations\n\n- Below the base model on nfcorpus." in text
    assert json.loads((tmp_path / "card" / "results.json").read_text()) == {"comparison": comparison}
    assert "## Limitations" not in render_model_card(hyp)


def test_base_reference_saves_no_transformer_weights(tiny_st_model, tiny_st_model_dir, tmp_path):
    model = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 8, 1], linear_skip=True))
    with pytest.raises(ValueError, match="freeze"):
        model.reference_base(str(tiny_st_model_dir))
    model.freeze_transformer()
    model.reference_base(str(tiny_st_model_dir))
    expected = model.similarity(model.encode_query(QUERIES), model.encode_document(DOCS))
    model.save(str(tmp_path / "ref"))
    assert not (tmp_path / "ref" / "model.safetensors").exists()
    # the type every saved Hypencoder names, also now that the class lives in hypencoder/base_reference.py
    modules = json.loads((tmp_path / "ref" / "modules.json").read_text())
    assert modules[0]["type"] == "hydra_st.hypencoder.modules.BaseModelReference"
    again = Hypencoder(str(tmp_path / "ref"))
    torch.testing.assert_close(
        again.similarity(again.encode_query(QUERIES), again.encode_document(DOCS)), expected, atol=1e-5, rtol=1e-5
    )
    ref = tmp_path / "ref" / "base_model_reference.json"
    info = json.loads(ref.read_text())
    info["fingerprint"] = "0" * 24
    ref.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        Hypencoder(str(tmp_path / "ref"))


def test_base_reference_shares_the_base_models_embedding_cache_key(tiny_st_model):
    from sentence_transformers import SentenceTransformer

    from hydra_st.hypencoder.modules import BaseModelReference
    from hydra_st.utils.hashing import fingerprint_model

    ref = BaseModelReference.from_transformer(tiny_st_model[0], "org/tiny")
    referenced = SentenceTransformer(modules=[ref, *list(tiny_st_model)[1:]], device="cpu")
    # same weights, same encoding: a loaded Hypencoder reuses the base's cached corpus embeddings
    assert fingerprint_model(referenced) == fingerprint_model(tiny_st_model)


def test_encode_options_that_would_change_a_qnet_are_refused(hyp):
    for kwargs, match in (
        ({"precision": "int8"}, "quantize"),
        ({"normalize_embeddings": True}, "rescale"),
        ({"truncate_dim": 8}, "truncate_dim"),
    ):
        with pytest.raises(ValueError, match=match):
            hyp.encode_query(QUERIES, **kwargs)
    q = hyp.encode_query(QUERIES)
    d8 = hyp.encode_document(DOCS, precision="int8")  # quantized documents are not scored as if they were floats
    with pytest.raises(ValueError, match="floating point"):
        hyp.similarity(q, d8)


def test_similarity_name_is_a_placeholder_and_says_so(hyp):
    q, d = hyp.encode_query(QUERIES), hyp.encode_document(DOCS)
    expected = hyp.similarity(q, d)
    with pytest.warns(UserWarning, match="no effect on a Hypencoder"):
        hyp.similarity_fn_name = "dot"
    torch.testing.assert_close(hyp.similarity(q, d), expected)


def test_dimensions_name_the_document_vectors_and_the_qnet(hyp):
    assert hyp.get_embedding_dimension() == 32 == hyp.encode_document(DOCS).shape[1]
    assert hyp.query_dimension == hyp.converter.num_parameters == hyp.encode_query(QUERIES).shape[1]


def test_plain_save_writes_the_hypencoder_card_and_names_local_loads(hyp, tmp_path):
    hyp.save(str(tmp_path / "fresh-hyp"))
    text = (tmp_path / "fresh-hyp" / "README.md").read_text()
    assert "A **Hypencoder** retrieval model" in text and "Cosine Similarity" not in text
    assert Hypencoder(str(tmp_path / "fresh-hyp")).model_card_data.model_name == "local/fresh-hyp"


def test_model_card_describes_the_qnet_blocks_of_its_converter(tiny_st_model):
    default = Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 16, 16, 1], linear_skip=True))
    assert "| q-net blocks | ReLU, non-affine LayerNorm, residual (not on the last block), bias-free" in (
        render_model_card(default)
    )
    gelu = QNetConverter([32, 16, 16, 1], activation="gelu", layer_norm=False, residual=False, linear_skip=True)
    text = render_model_card(Hypencoder.from_base(tiny_st_model, converter=gelu))
    assert "| q-net blocks | GELU, no LayerNorm, no residual, bias-free output layer |" in text and "ReLU" not in text
    bi = render_model_card(Hypencoder.from_base(tiny_st_model, converter=QNetConverter([32, 1], linear_skip=True)))
    assert "| q-net blocks | none: one bias-free linear layer (an inner product) |" in bi


def test_learned_skip_needs_a_linear_skip_to_correct():
    with pytest.raises(ValueError, match="linear_skip=True"):
        HyperHead(8, converter=QNetConverter([8, 8, 1], linear_skip=False), learned_skip=True)
    with pytest.raises(ValueError, match="skip_from_pooling=True"):
        HyperHead(8, converter=QNetConverter([8, 8, 1], linear_skip=True), skip_from_pooling=False, learned_skip=True)
    assert HyperHead(8, converter=QNetConverter([8, 8, 1], linear_skip=True), learned_skip=True).learned_skip


def test_initialising_something_else_than_a_linear_layer_is_a_type_error():
    from hydra_st.hypencoder.initialisation import _uniform_fan_in

    with pytest.raises(TypeError, match="nn.Linear"):
        _uniform_fan_in(torch.nn.LayerNorm(4), torch.Generator().manual_seed(0), bias=True)


def test_the_family_exports_its_loss_training_and_converter():
    import hydra_st.hypencoder as hypencoder
    from hydra_st.hypencoder.convert import convert_checkpoint
    from hydra_st.hypencoder.losses import HypencoderLoss
    from hydra_st.hypencoder.training import HypencoderTrainingConfig, train_hypencoder

    exported = {"HypencoderLoss": HypencoderLoss, "HypencoderTrainingConfig": HypencoderTrainingConfig,
                "train_hypencoder": train_hypencoder, "convert_checkpoint": convert_checkpoint}  # fmt: skip
    for name, obj in exported.items():
        assert name in hypencoder.__all__ and getattr(hypencoder, name) is obj


def test_a_hyper_head_config_that_is_no_object_fails_clearly(hyp, tmp_path):
    hyp.save(str(tmp_path / "m"))
    cfg_path = next(p for p in (tmp_path / "m").rglob("config.json") if "converter_config" in p.read_text())
    cfg_path.write_text("null")
    with pytest.raises(ValueError, match="not a hyper-head config object; re-save or re-download"):
        Hypencoder(str(tmp_path / "m"))

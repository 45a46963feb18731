"""Q-net converter: shapes, packing, batched scoring against a per-document loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hydra_st.hypencoder.qnet import QNetConverter, QNetParams, converter_from_config


def loop_score(conv: QNetConverter, params: QNetParams, q: int, doc: torch.Tensor) -> float:
    """One q-net on one document, written plainly from the published equations."""
    h = doc
    n_hidden = len(params.biases)
    for layer in range(n_hidden):
        pre = torch.relu(h @ params.weights[layer][q] + params.biases[layer][q])
        out = F.layer_norm(pre, (pre.shape[-1],))
        h = out + h if (layer < n_hidden - 1 and out.shape == h.shape) else out
    score = h @ params.weights[-1][q][:, 0]
    if params.skip is not None:
        score = score + params.skip[q] @ doc
    return float(score)


def test_shapes_and_counts():
    conv = QNetConverter([8, 16, 16, 1])
    assert conv.weight_shapes == [(8, 16), (16, 16), (16, 1)]
    assert conv.bias_shapes == [16, 16]
    assert conv.num_parameters == 8 * 16 + 16 * 16 + 16 + 32
    assert QNetConverter([8, 16, 1], linear_skip=True).num_parameters == 8 * 16 + 16 + 16 + 8


@pytest.mark.parametrize("layers,floats", [(2, 1.18e6), (4, 2.36e6), (6, 3.54e6), (8, 4.73e6)])
def test_published_qnet_sizes(layers, floats):
    conv = QNetConverter([768] * (layers + 1) + [1])
    assert conv.num_parameters == pytest.approx(floats, rel=0.01)


def test_pack_unpack_roundtrip():
    conv = QNetConverter([6, 5, 4, 1], linear_skip=True)
    flat = torch.randn(3, conv.num_parameters)
    assert torch.equal(conv.pack(conv.unpack(flat)), flat)


@pytest.mark.parametrize("skip", [False, True])
def test_batched_scores_match_loop(skip):
    torch.manual_seed(0)
    conv = QNetConverter([8, 8, 8, 8, 1], linear_skip=skip)
    flat = torch.randn(3, conv.num_parameters)
    docs = torch.randn(5, 8)
    scores = conv.score(flat, docs)
    params = conv.unpack(flat)
    expected = torch.tensor([[loop_score(conv, params, q, docs[n]) for n in range(5)] for q in range(3)])
    assert scores.shape == (3, 5)
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)
    # per-query documents and pairwise scoring agree with the shared-document path
    per_query = conv.score(flat, docs.unsqueeze(0).expand(3, -1, -1))
    torch.testing.assert_close(per_query, scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv.score_pairwise(flat, docs[:3]), scores.diagonal(), atol=1e-5, rtol=1e-5)


def test_non_square_widths_have_no_residual():
    conv = QNetConverter([8, 4, 1])
    flat = torch.randn(2, conv.num_parameters)
    params = conv.unpack(flat)
    docs = torch.randn(3, 8)
    expected = torch.tensor([[loop_score(conv, params, q, docs[n]) for n in range(3)] for q in range(2)])
    torch.testing.assert_close(conv.score(flat, docs), expected, atol=1e-5, rtol=1e-5)


def test_config_roundtrip_and_errors():
    conv = QNetConverter([4, 4, 1], activation="gelu", linear_skip=True)
    assert converter_from_config(conv.get_config()).get_config() == conv.get_config()
    with pytest.raises(ValueError, match="last q-net width"):
        QNetConverter([4, 4, 2])
    with pytest.raises(ValueError, match="activation"):
        QNetConverter([4, 1], activation="tanh")
    with pytest.raises(ValueError, match="Unknown q-net converter"):
        converter_from_config({"type": "nope", "vector_dimensions": [4, 1]})
    flat = torch.randn(2, conv.num_parameters)
    with pytest.raises(ValueError, match="dimension 5"):
        conv.score(flat, torch.randn(3, 5))
    with pytest.raises(ValueError, match="q-net parameters must have shape"):
        conv.score(torch.randn(2, conv.num_parameters + 1), torch.randn(3, 4))
    with pytest.raises(ValueError, match="as many documents"):
        conv.score_pairwise(flat, torch.randn(3, 4))


def test_gradients_flow_to_params():
    conv = QNetConverter([4, 4, 1])
    flat = torch.randn(2, conv.num_parameters, requires_grad=True)
    conv.score(flat, torch.randn(3, 4)).sum().backward()
    assert flat.grad is not None and flat.grad.abs().sum() > 0


def test_custom_converter_roundtrips_through_a_saved_model(tiny_st_model, tmp_path):
    from hydra_st.hypencoder import Hypencoder, register_converter

    @register_converter
    class GatedConverter(QNetConverter):
        """A custom q-net: sigmoid-gated inner product (reuses the declared shapes, replaces the forward)."""

        name = "test_gated"

        def score_unpacked(self, params, docs):
            w = params.weights[0][:, :, 0]  # [B, d]
            lin = w @ docs.T if docs.dim() == 2 else torch.einsum("bd,bnd->bn", w, docs)
            return torch.sigmoid(lin) * lin

    model = Hypencoder.from_base(tiny_st_model, converter=GatedConverter([32, 1]))
    q = model.encode_query(["a query"], convert_to_tensor=True)
    d = model.encode_document(["doc one", "doc two"], convert_to_tensor=True)
    w = model.converter.unpack(q).weights[0][:, :, 0]
    torch.testing.assert_close(model.similarity(q, d), torch.sigmoid(w @ d.T) * (w @ d.T))
    model.save(str(tmp_path / "custom"))
    again = Hypencoder(str(tmp_path / "custom"))
    assert isinstance(again.converter, GatedConverter)

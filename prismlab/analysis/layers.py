"""Layer counting: the number of parametric layers on the longest input-to-output path.

The model is counted in its inference form (prismlab.models.fuse.inference_form): fused and with
every conv+BatchNorm pair folded.

Counted: convolutions and linear layers, as modules (nn.Conv*, nn.Linear, nn.Bilinear) or as
functions (F.conv2d, F.linear, ...), and matrix products with a weight that does not depend on
the input (x @ self.w). nn.MultiheadAttention counts 2 (the q/k/v projections run in parallel,
then the output projection); an RNN counts its stacked layers. Norms, pooling, parameter-free
activations and embeddings count 0, but a conv inside a custom module (an activation with a
depthwise conv, say) is counted, because torch.fx traces into every module that is not an
atomic torch.nn one. Parallel branches count once: the longest wins.

Convention: the first parametric layer on the path is the stem, the last the head, and the
rest the body, so body = total - 2 (never below 0).
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from prismlab.errors import ConfigError
from prismlab.models.fuse import inference_form


@dataclass
class LayerCount:
    total: int
    body: int
    path: list[str] = field(default_factory=list)  # one qualified name per counted layer, input to output


def count_layers(
    model: nn.Module, input_size: int | tuple[int, int] = 64, in_channels: int = 3, trace: str = "auto"
) -> LayerCount:
    """Count `model`'s parametric layers on its longest path, in inference form.

    trace: "symbolic" (torch.fx.symbolic_trace, module-level graph), "concrete" (make_fx on a real
    [1, in_channels, *input_size] input, aten-level graph; follows any Python control flow), or
    "auto": symbolic, and concrete when the forward cannot be traced symbolically.
    """
    if trace not in ("auto", "symbolic", "concrete"):
        raise ConfigError(f"unknown trace mode {trace!r} (choose auto, symbolic or concrete)")
    model = inference_form(model)
    if trace != "concrete":
        try:
            return _longest(*_symbolic(model))
        except Exception:  # fx cannot follow data- or shape-dependent Python control flow
            if trace == "symbolic":
                raise
    return _longest(*_concrete(model, input_size, in_channels))


def takes_channels(model: nn.Module) -> bool:
    """Whether `model` is a prismlab model, called as model(x, channels)."""
    return "channels" in inspect.signature(model.forward).parameters


# ---- symbolic: module-level graph ---------------------------------------------------------------

_CONV_LINEAR_FNS = {
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
    F.linear,
    F.bilinear,
}
_MATMUL_FNS = {torch.matmul, torch.mm, torch.bmm, torch.addmm, operator.matmul}
_MATMUL_METHODS = {"matmul", "mm", "bmm", "addmm", "__matmul__"}


class _Tracer(fx.Tracer):
    # Only atomic torch.nn modules stay opaque: everything else, including custom activations, is
    # traced into, so every conv inside them shows up. MultiheadAttention is weighed as a whole.
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, nn.MultiheadAttention):
            return True
        return type(m).__module__.startswith(("torch.nn", "torch.ao.nn")) and not any(m.children())


def _symbolic(model: nn.Module):
    concrete = {"channels": None} if takes_channels(model) else None
    graph = _Tracer().trace(model, concrete_args=concrete)
    mods = dict(model.named_modules())

    def names(node: fx.Node, from_input: set) -> list[str]:
        if node.op == "call_module":
            m = mods[node.target]
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear)):
                return [node.target]
            if isinstance(m, nn.MultiheadAttention):
                return [f"{node.target}.in_proj", f"{node.target}.out_proj"]
            if isinstance(m, nn.RNNBase):
                return [f"{node.target}.l{i}" for i in range(m.num_layers)]
            return []
        scope = list(node.meta.get("nn_module_stack", {}))
        label = f"{scope[-1]}.{node.name}" if scope else node.name
        if node.op == "call_function" and node.target in _CONV_LINEAR_FNS:
            return [label]
        if (node.op == "call_function" and node.target in _MATMUL_FNS) or (
            node.op == "call_method" and node.target in _MATMUL_METHODS
        ):
            return [label] if _has_weight(node, from_input) else []
        return []

    return graph, names


# ---- concrete: aten-level graph of one real forward ---------------------------------------------

_ATEN_CONV = {torch.ops.aten.convolution.default}
_ATEN_MATMUL = {
    torch.ops.aten.addmm.default,
    torch.ops.aten.mm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.baddbmm.default,
    torch.ops.aten.matmul.default,
    torch.ops.aten.linear.default,
}


def _concrete(model: nn.Module, input_size, in_channels: int):
    from torch.fx.experimental.proxy_tensor import make_fx

    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    p = next(model.parameters(), None)
    x = torch.randn(1, in_channels, h, w, device=p.device if p is not None else "cpu")
    fn = (lambda t: model(t, channels=None)) if takes_channels(model) else model
    gm = make_fx(fn)(x)
    # Parameters reach the graph as get_attr constants holding the very same tensors.
    param_name = {id(t): n.rsplit(".", 1)[0] for n, t in model.named_parameters()}

    def names(node: fx.Node, from_input: set) -> list[str]:
        if node.op != "call_function":
            return []
        if node.target in _ATEN_CONV:
            return [_weight_label(gm, node.args[1], param_name, node.name)]
        if node.target in _ATEN_MATMUL:
            if not _has_weight(node, from_input):
                return []
            weight = next(a for a in node.all_input_nodes if a not in from_input)
            return [_weight_label(gm, weight, param_name, node.name)]
        return []

    return gm.graph, names


def _weight_label(gm: fx.GraphModule, node, param_name: dict, default: str) -> str:
    # Walk back through views and transposes (w.t(), w.view(...)) to the parameter itself.
    while isinstance(node, fx.Node) and node.op != "get_attr" and node.all_input_nodes:
        node = node.all_input_nodes[0]
    if isinstance(node, fx.Node) and node.op == "get_attr":
        return param_name.get(id(getattr(gm, node.target)), default)
    return default


# ---- longest path -------------------------------------------------------------------------------


def _has_weight(node: fx.Node, from_input: set) -> bool:
    """A product of the input with a tensor that does not depend on it (a weight), not x @ x.T."""
    args = node.all_input_nodes
    return any(a in from_input for a in args) and any(a not in from_input for a in args)


def _longest(graph: fx.Graph, names) -> LayerCount:
    """DAG longest path from the input placeholder to the output; each node weighs len(names(node))."""
    nodes = list(graph.nodes)  # fx graphs are in topological order
    source = next(n for n in nodes if n.op == "placeholder")
    from_input = {source}
    for n in nodes:
        if any(a in from_input for a in n.all_input_nodes):
            from_input.add(n)
    best: dict[fx.Node, tuple[int, list[str]]] = {source: (0, [])}
    for n in nodes:
        preds = [best[a] for a in n.all_input_nodes if a in best]
        if n is source or not preds:
            continue
        depth, path = max(preds, key=lambda dp: dp[0])  # first of the deepest on a tie
        own = names(n, from_input)
        best[n] = (depth + len(own), path + own)
    out = next(n for n in reversed(nodes) if n.op == "output")
    total, path = best.get(out, (0, []))
    return LayerCount(total=total, body=max(0, total - 2), path=path)

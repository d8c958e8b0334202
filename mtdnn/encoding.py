"""How a training batch runs through the encoder: in full, or with the exact compute cut.

A sentence-level head reads one position (the first token) of one layer. In that layer only the
first token's query, attention output, feed-forward and LayerNorm are needed (the keys and values
of every token still are), and no layer above it is needed at all. A token-level head reads every
position of its layer: the layers above it are still not needed. `CutRun` computes exactly that:
the same hidden state, logits and gradients as the full forward, within float rounding (tests:
tests/test_encoding.py, per architecture). Which one a task uses is its type's choice: sentence
types call `MultiTaskModel.encode` (the first token), token types `hidden_states`.

The cut is used for training batches only: evaluation, `predict` and `evaluate` run the encoder's
own forward, the computation of an exported model, so export parity stays exact. With dropout
on, a cut batch draws fewer random numbers than a full one (there are fewer activations to drop),
so the two are equal in distribution, not draw for draw.

An architecture gets the cut when its layers are known to be the BERT layer (a registry entry,
checked by an exactness test); any other encoder runs in full, and the trainer says so at start.
Adding an architecture: one class with `check` and `run`, and one line in `RUNS`.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import torch
from torch import nn


class EncoderRun:
    """Runs a task's batch through an encoder up to a layer (1-based; `hidden_states` index)."""

    name: ClassVar[str] = "full"

    def check(self, encoder: nn.Module) -> str | None:
        """Why this encoder cannot run this way (None: it can)."""
        return None

    def run(self, encoder: nn.Module, inputs: dict[str, Any], layer: int, first_only: bool
            ) -> torch.Tensor:
        """The hidden states of `layer`: (B, 1, H) with first_only, else (B, T, H)."""
        if layer == encoder.config.num_hidden_layers:
            hidden = encoder(**inputs).last_hidden_state
        else:  # the layers above run too (transformers has no early exit), unused
            hidden = encoder(**inputs, output_hidden_states=True).hidden_states[layer]
        return hidden[:, :1] if first_only else hidden


class BertLayersCut(EncoderRun):
    """Encoders built of BERT's layer (BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA in transformers
    5): embeddings (ELECTRA: projected), the bidirectional mask, then `layer` layers, the last of
    them for the first token only when that is all the head reads."""

    name = "cut"

    def check(self, encoder: nn.Module) -> str | None:
        config = encoder.config
        try:
            from transformers.masking_utils import create_bidirectional_mask  # noqa: F401
        except ImportError:
            return "this transformers version has no masking_utils (transformers >= 5 has)"
        if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
            return "a decoder configuration"
        if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
            return f"position_embedding_type {config.position_embedding_type!r}"
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        if not isinstance(layers, nn.ModuleList) or not hasattr(encoder, "embeddings"):
            return "not the expected module layout (embeddings, encoder.layer)"
        attention = getattr(getattr(layers[0], "attention", None), "self", None)
        needed = ("query", "key", "value", "scaling", "attention_head_size")
        if attention is None or not all(hasattr(attention, a) for a in needed) \
                or not hasattr(layers[0], "feed_forward_chunk"):
            return "not the expected layer layout (attention.self.query/key/value, " \
                   "feed_forward_chunk)"
        return None

    def run(self, encoder: nn.Module, inputs: dict[str, Any], layer: int, first_only: bool
            ) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        hidden = encoder.embeddings(input_ids=inputs.get("input_ids"),
                                    token_type_ids=inputs.get("token_type_ids"),
                                    inputs_embeds=inputs.get("inputs_embeds"))
        if hasattr(encoder, "embeddings_project"):  # ELECTRA: embedding width -> hidden width
            hidden = encoder.embeddings_project(hidden)
        mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden,
                                         attention_mask=inputs["attention_mask"])
        layers = encoder.encoder.layer
        for block in layers[:layer - 1 if first_only else layer]:
            hidden = block(hidden, mask)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        return first_token_layer(layers[layer - 1], hidden, mask) if first_only else hidden


def first_token_layer(block: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None
                      ) -> torch.Tensor:
    """One BERT layer's output at the first position, (B, 1, H): the first token's query against
    every token's key and value, then the attention output, feed-forward and LayerNorms of that
    position only; the attention function is the one the model is configured with."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    attention = block.attention.self
    b, t, _ = hidden.shape
    d = attention.attention_head_size
    query = attention.query(hidden[:, :1]).view(b, 1, -1, d).transpose(1, 2)  # (B, heads, 1, d)
    key = attention.key(hidden).view(b, t, -1, d).transpose(1, 2)  # (B, heads, T, d)
    value = attention.value(hidden).view(b, t, -1, d).transpose(1, 2)
    if mask is not None and mask.dim() == 4 and mask.shape[-2] == t:
        mask = mask[:, :, :1]  # the first query's row
    eager = importlib.import_module(type(attention).__module__).eager_attention_forward
    function = ALL_ATTENTION_FUNCTIONS.get_interface(attention.config._attn_implementation, eager)
    context, _ = function(attention, query, key, value, mask,
                          dropout=attention.dropout.p if attention.training else 0.0,
                          scaling=attention.scaling)
    context = context.reshape(b, 1, -1)
    return block.feed_forward_chunk(block.attention.output(context, hidden[:, :1]))


# model_type -> how its training batches run; anything else runs in full.
RUNS: dict[str, type[EncoderRun]] = {
    "bert": BertLayersCut,
    "roberta": BertLayersCut,
    "xlm-roberta": BertLayersCut,
    "camembert": BertLayersCut,
    "electra": BertLayersCut,
}


def encoder_run(encoder: nn.Module, enabled: bool = True) -> tuple[EncoderRun, str]:
    """The way an encoder's training batches run, and a line saying which and why."""
    model_type = getattr(encoder.config, "model_type", "?")
    if not enabled:
        return EncoderRun(), "compute cut: off (train.compute_cut=false)"
    run_cls = RUNS.get(model_type)
    if run_cls is None:
        return EncoderRun(), (f"compute cut: off, {model_type} is not among the architectures "
                              f"it is verified for ({', '.join(RUNS)}): full computation")
    problem = run_cls().check(encoder)
    if problem is not None:
        return EncoderRun(), f"compute cut: off for this {model_type} ({problem}): full computation"
    return run_cls(), (f"compute cut: on ({model_type}): sentence-level heads compute their "
                       "layer for the first token only; layers above a head's are skipped")

"""A Dream or LLaDA checkpoint at run time: the Backend protocol over a transformers model.

The published checkpoints' networks are plain Qwen2 / Llama stacks run with bidirectional
attention; checkpoint.py builds them on the stock transformers classes, and this module
calls them with an all-allowed 4-D attention mask.

By default every step is a full forward over context + hole: with full attention the
context's keys and values depend on the hole, so nothing can be cached exactly.  Only
the hidden states at the hole go through the output head (150k vocabulary entries).
`approximate_cache=True` is Fast-dLLM's "DualCache": the context's keys and values are
computed with the hole all masks, and each step recomputes only the hole (and, for Dream,
the token before each hole run) against them.  Frozen for the whole hole by default;
with blocks (`cache_block=N`, or the llada preset's block_length) they are computed again
from the committed tokens whenever a row has committed another block (`refresh`), as
Fast-dLLM refreshes its prefix and suffix at the start of every block; that pass over the
whole sequence gives the block's first step its hole logits too.
Eager steps call the decoder layers themselves (`_layers`), with the positions' rotary tables
made once a request: per step, transformers' own forward around them is only host time.
`compile=MODE` runs the hole step under torch.compile at fixed shapes (compiled.py).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace

import torch
from tokenizers import Tokenizer

from ..request import InfillError
from .compiled import CompiledStep, StepInputs, context_inputs, step_inputs
from .model_spec import ModelSpec


@dataclass
class Positions:
    """The sequence positions [1, n] of the tokens an eager step computes, and their rotary
    tables: the same at every step of a request, so computed once, at `prepare`."""

    at: torch.Tensor
    rope: tuple[torch.Tensor, torch.Tensor]


@dataclass
class HoleState:
    positions: torch.Tensor  # [H] the hidden states that predict the hole's slots, in slot order
    active: torch.Tensor | None = None  # approximate cache: the positions recomputed every step
    context: "ContextKV | None" = None  # approximate cache: everything else's keys and values
    rows: torch.Tensor | None = None  # the prepared rows a step computes (None: all of them)
    graph: StepInputs | None = None  # compiled: the step's inputs at fixed shapes
    steps: Positions | None = None  # eager: where a step's tokens sit (None: remote code, or compiled)


class ContextKV:
    """Per-layer keys and values of the context, recorded at `prepare` (and again at `refresh`).

    Passed to the transformers model as its cache: attention layers hand every new
    key/value to `update` and attend over what it returns.  While recording (the
    full-sequence prefill) it keeps the context positions and returns its input; later
    it puts the frozen context in front of the active tokens' fresh keys and values.
    Bidirectional attention does not care about order; RoPE is in the keys already.
    """

    def __init__(self, context_positions: torch.Tensor):
        self.context_positions = context_positions
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.recording = True
        self.rows: torch.Tensor | None = None  # once some rows are done: the ones still computed

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self.recording:
            self.layers[layer_idx] = (key[:, :, self.context_positions], value[:, :, self.context_positions])
            return key, value
        k, v = self.layers[layer_idx]
        if self.rows is not None:
            k, v = k[self.rows], v[self.rows]
        return torch.cat([k, key], dim=2), torch.cat([v, value], dim=2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(self.context_positions.numel())

    def select(self, rows: torch.Tensor) -> "ContextKV":
        """The same frozen context for a subset of the prepared rows."""
        out = ContextKV(self.context_positions)
        out.layers, out.recording, out.rows = self.layers, False, rows
        return out


class FrozenKV:
    """The compiled step's cache: per-layer context keys and values passed in as tensors
    (made inside the compiled function, so the graph depends on no Python object)."""

    def __init__(self, layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]):
        self.layers = layers

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        k, v = self.layers[layer_idx]
        return torch.cat([k, key], dim=2), torch.cat([v, value], dim=2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[0][0].shape[2]


class HFBackend:
    """Backend protocol over a transformers model run bidirectionally."""

    # Dream and LLaDA were trained (and instruction-tuned) with the padding after the
    # answer, never inside it; the engine uses this to keep pads at the hole's end.
    pad_trails = True
    is_random = False

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        spec: ModelSpec,
        device: torch.device,
        dtype: torch.dtype,
        remote_code: bool = False,
        approximate_cache: bool = False,
        compile: str | None = None,
        cache_block: int | None = None,
    ):
        if cache_block is not None and (not approximate_cache or cache_block < 1):
            raise InfillError("cache_block refreshes the approximate context cache every N committed slots: "
                              "it needs approximate_cache=True and N >= 1")
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.remote_code = remote_code
        self.approximate_cache = approximate_cache
        self.cache_block = cache_block
        self.mask_id = spec.ids.mask_id
        self.pad_id = spec.ids.pad_id
        self.banned_ids = list(spec.ids.banned_ids)
        self.expand_id, self.delete_id = spec.ids.expand_id, spec.ids.delete_id
        self.frame = spec.ids.frame  # tokens around prefix and suffix (DreamOn: bos, eos)
        self.max_len = spec.max_len
        self.vocab_size = int(spec.config.vocab_size)
        self.generation_defaults: dict = {}  # sampler preset defaults from generation_config.json
        # Looked up once: per step they were an inspect.signature call and two index lists
        # copied to the device, each copy waiting for the queue to drain.
        self._cache_kwarg = "" if remote_code else self._cache_kwarg_name()
        ends = [e for e in spec.ids.end_ids if e < self.vocab_size]
        self._fold = None
        if self.pad_id is not None and ends:
            self._fold = (torch.tensor([self.pad_id, *ends], device=device), torch.tensor(ends, device=device))
        if compile is not None and remote_code:
            raise InfillError("compile needs diffill's own model classes; drop trust_remote_code")
        self.compiled = CompiledStep(self._step, compile, device) if compile is not None else None
        # The context pass runs once a request: graphs of the eager kernels take the host out of
        # it as well, and compile in seconds where inductor takes tens of seconds per shape.
        self.compiled_context = CompiledStep(self._record, "cudagraphs", device) if compile is not None else None
        self._masks: dict[tuple[int, int, int], torch.Tensor] = {}  # _allow_all's, by shape

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def prepare(self, ids: torch.Tensor, hole: torch.Tensor) -> HoleState:
        """The positions whose hidden states predict the hole's tokens (one before each
        hole slot for a shifted model; the first position predicts itself)."""
        slots = hole.nonzero().flatten().to(self.device)
        positions = (slots - 1).clamp(min=0) if self.spec.shifted else slots
        ids = ids.to(self.device)
        every = torch.arange(ids.shape[1], device=self.device)
        if not self.approximate_cache:
            if self.compiled is not None:
                return self._with_graph(HoleState(positions), ids, every, None)
            return HoleState(positions, steps=self._positions(every))
        active = torch.unique(torch.cat([slots, positions]))  # sorted
        is_context = torch.ones(ids.shape[1], dtype=torch.bool, device=self.device)
        is_context[active] = False
        context = ContextKV(is_context.nonzero().flatten())
        with torch.inference_mode():
            if self.compiled_context is not None:
                kv = self.compiled_context(*context_inputs(ids, self.dtype), context.context_positions)
                # [:B] and a copy: padding rows dropped, and a graph's outputs outlive no next call
                B = ids.shape[0]
                context.layers = {i: (k[:B].clone(), v[:B].clone()) for i, (k, v) in enumerate(kv)}
            else:
                self._hidden(ids, self._positions(every), context)
        context.recording = False
        state = HoleState(torch.searchsorted(active, positions), active, context)
        if self.compiled is not None:
            kv = tuple(context.layers[i] for i in range(len(context.layers)))
            return self._with_graph(state, ids[:, active], active, kv)
        return replace(state, steps=self._positions(active))

    @torch.inference_mode()
    def _positions(self, at: torch.Tensor) -> Positions | None:
        """Positions at [n] with their rotary tables (None for remote code, which makes its own)."""
        if self.remote_code:
            return None
        like = torch.empty(0, dtype=self.dtype, device=self.device)  # the tables' dtype and device
        return Positions(at[None], self.model.model.rotary_emb(like, at[None]))

    @torch.inference_mode()
    def _with_graph(self, state: HoleState, ids: torch.Tensor, positions: torch.Tensor, kv) -> HoleState:
        return replace(state, graph=step_inputs(ids, positions, kv, self.dtype))

    def refresh_block(self, settings) -> int | None:
        """Committed slots after which a row's frozen context is computed again (None: never).

        Counted in committed slots, not in slot positions: the diffill strategies commit
        anywhere in the hole, so a count is the only block they have; LLaDA's blocks commit
        exactly block_length slots each (the last step of a block takes what is left), so
        for the llada preset the count is exactly "decoding entered the next block"."""
        if not self.approximate_cache:
            return None
        if self.cache_block is not None:
            return self.cache_block
        return settings.block_length if settings.strategy == "llada" else None

    @torch.inference_mode()
    def refresh(self, state: HoleState, ids: torch.Tensor, rows: torch.Tensor | None,
                logits: bool = False) -> torch.Tensor | None:
        """Fast-dLLM's per-block refresh: the frozen context of `rows` ([R] indices of the
        prepared rows on the device; None: all) computed again from ids [B, L], every prepared
        row's current sequence: one pass over the whole sequence, written in place, so every
        `select_rows` view of the state (and the compiled step's padded copy) sees it.
        Nothing is read back from the device.

        With `logits`, also the hole logits [R, H, V] of those rows as the pass computed them
        (eager only, else None): the step after a refresh would compute them again from the
        same tokens against the context just recorded, so the engine takes them from here."""
        context, every = state.context, rows is None
        hole = None
        if self.compiled_context is not None:
            # All rows at the shape `prepare` compiled (a subset would be a new graph); only
            # `rows` are written, so a compiled run refreshes what an eager one does.
            kv = self.compiled_context(*context_inputs(ids, self.dtype), context.context_positions)
            B = ids.shape[0]
            fresh = [(k[:B], v[:B]) if every else (k[rows], v[rows]) for k, v in kv]
        else:
            recorder = ContextKV(context.context_positions)
            positions = self._positions(torch.arange(ids.shape[1], device=self.device))
            hidden = self._hidden(ids if every else ids[rows], positions, recorder)
            fresh = [recorder.layers[i] for i in range(len(recorder.layers))]
            if logits:  # the hole's predicting positions, in the sequence rather than the active tokens
                hole = self._head(hidden[:, state.active[state.positions]])
        for i, (k, v) in enumerate(fresh):
            targets = [context.layers[i]]
            if state.graph is not None:  # the compiled step's padded copy: the first C keys are real
                C = k.shape[2]
                targets.append((state.graph.kv[i][0][:, :, :C], state.graph.kv[i][1][:, :, :C]))
            for K, V in targets:
                if every:
                    K[: k.shape[0]].copy_(k)
                    V[: v.shape[0]].copy_(v)
                else:
                    K.index_copy_(0, rows, k)
                    V.index_copy_(0, rows, v)
        return hole

    def select_rows(self, state: HoleState, rows: torch.Tensor) -> HoleState:
        """The state for a step over some of the prepared rows (rows [R] indices): the
        context cache is per row, since each row's hole was part of its context's pass."""
        context = state.context.select(rows) if state.context is not None else None
        return replace(state, rows=rows, context=context)

    @torch.inference_mode()
    def hole_logits(self, state: object, ids: torch.Tensor) -> torch.Tensor:
        assert isinstance(state, HoleState)
        ids = ids.to(self.device)
        if state.graph is not None:
            return self._graph_logits(state, ids)
        if state.active is None:
            return self._logits_at(ids, state.positions, state.steps)
        hidden = self._hidden(ids[:, state.active], state.steps, state.context)
        return self._head(hidden[:, state.positions])

    def _graph_logits(self, state: HoleState, ids: torch.Tensor) -> torch.Tensor:
        """The compiled step: this step's rows written into the fixed-shape batch (padding
        rows keep what they had), then the real rows' logits taken out (a copy: the next
        replay of a CUDA graph overwrites its outputs)."""
        g = state.graph
        src = ids if state.active is None else ids[:, state.active]
        if state.rows is None:
            g.ids[: g.rows, : g.cols] = src
        else:
            g.ids[state.rows, : g.cols] = src
        logits = self.compiled(g.ids, g.positions, g.mask, state.positions, g.kv)
        return logits[g.take if state.rows is None else state.rows]

    def _step(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, head_at: torch.Tensor,
              kv: tuple | None) -> torch.Tensor:
        """The hole step as a function of tensors alone (what compiled.py compiles): logits
        [B, H, V] from the final hidden states at head_at [H] of ids [B, n] at positions [B, n],
        under the additive mask [B, 1, n, K] over the context keys kv (per layer (k, v)
        [B, heads, C, d], K = C + n) then ids' own."""
        hidden = self._layers(ids, positions, mask, FrozenKV(kv) if kv is not None else None)
        return self._head(hidden[:, head_at])

    def _record(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
                context_at: torch.Tensor) -> tuple:
        """The context cache's pass as a function of tensors alone (compiled like `_step`): per
        layer (k, v) [B, heads, C, d] of the positions context_at [C] of ids [B, L]."""
        context = ContextKV(context_at)
        self._layers(ids, positions, mask, context)
        return tuple(context.layers[i] for i in range(len(context.layers)))

    @torch.inference_mode()
    def sequence_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits predicting every position of ids [B, L] -> [B, L, V] (shift applied)."""
        positions = torch.arange(ids.shape[1], device=self.device)
        if self.spec.shifted:
            positions = (positions - 1).clamp(min=0)
        return self._logits_at(ids.to(self.device), positions)

    def _logits_at(self, ids: torch.Tensor, positions: torch.Tensor, where: Positions | None = None) -> torch.Tensor:
        """Logits at positions [H] of whole sequences ids [B, L] (where: the sequence's
        positions, if made already)."""
        if self.remote_code:
            out = self.model(input_ids=ids)
            return self._finish((out.logits if hasattr(out, "logits") else out[0])[:, positions])
        hidden = self._hidden(ids, where or self._positions(torch.arange(ids.shape[1], device=self.device)))
        return self._head(hidden[:, positions])

    def _hidden(self, ids: torch.Tensor, where: Positions, context: ContextKV | None = None) -> torch.Tensor:
        """Final hidden states [B, n, D] of tokens ids [B, n] at `where`, attending to each
        other and to the frozen context, if any."""
        batch, n = ids.shape
        keys = n + (context.get_seq_length() if context is not None and not context.recording else 0)
        return self._layers(ids, where.at, self._allow_all(batch, n, keys), context, where.rope)

    def _allow_all(self, batch: int, n: int, keys: int) -> torch.Tensor:
        """An additive mask of zeros [batch, 1, n, keys]: every position attends to every other
        (transformers never applies its own causal mask over an explicit 4-D one, and
        config.is_causal=False alone does not reach SDPA).  Kept for the last two shapes asked
        for (a request's steps, and its context passes between them) rather than allocated and
        zeroed at every step; nothing writes into it."""
        shape = (batch, n, keys)
        mask = self._masks.pop(shape, None)
        if mask is None:
            mask = torch.zeros(batch, 1, n, keys, dtype=self.dtype, device=self.device)
        self._masks[shape] = mask  # most recent last
        if len(self._masks) > 2:
            del self._masks[next(iter(self._masks))]
        return mask

    def _layers(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache=None,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Final hidden states [B, n, D] of ids [B, n] at positions [1 or B, n] under the additive
        mask [B, 1, n, K], after `cache`'s keys (K = its keys + n) if any; `rope`: the positions'
        rotary tables, if made already.  The transformers model's forward, op for op, without
        what it wraps around its layers (decorators, a mask utility that hands a 4-D mask back
        as it is, the output dataclass): host time paid at every step."""
        inner = self.model.model
        hidden = inner.embed_tokens(ids)
        if rope is None:
            rope = inner.rotary_emb(hidden, positions)
        kw = {self._cache_kwarg: cache, "use_cache": True} if cache is not None else {}
        for layer in inner.layers[: inner.config.num_hidden_layers]:
            hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=rope, **kw)
        return inner.norm(hidden)

    def _cache_kwarg_name(self) -> str:
        # transformers 5 renamed past_key_values to cache.
        params = inspect.signature(self.model.model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._finish(self.model.lm_head(hidden))

    def _finish(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()[..., : self.vocab_size]
        if self.spec.logit_scale != 1.0:
            logits = logits * self.spec.logit_scale
        return self._fold_ends_into_pad(logits)

    def _fold_ends_into_pad(self, logits: torch.Tensor) -> torch.Tensor:
        """An end-of-text token inside a hole means "nothing more here", which is what the
        pad means to the engine: move its probability onto the pad so auto-length
        infilling sees one "empty slot" choice."""
        if self._fold is None:
            return logits
        both_at, ends_at = self._fold
        logits[..., self.pad_id] = torch.logsumexp(logits.index_select(-1, both_at), dim=-1)
        return logits.index_fill_(-1, ends_at, float("-inf"))
